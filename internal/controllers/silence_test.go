package controllers

import (
	"context"
	"errors"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// TestCleanupWaitingOnTheLockIsNotSilent: CAPR's commands print their process group before anything else, so a
// cleanup that waits on the bootstrap lock behind a running bootstrap is not taken for a silent host and abandoned
// by the first-output deadline: it waits, then runs.
func TestCleanupWaitingOnTheLockIsNotSilent(t *testing.T) {
	g := NewWithT(t)
	h := sshdtest.Start(t)
	out, err := h.Exec("mkdir -p " + runDir + " && (setsid flock " + lockFile + " sleep 3 >/dev/null 2>&1 &) && sleep 0.2")
	g.Expect(err).NotTo(HaveOccurred(), out)
	cfg := testConfig(h)
	cfg.FirstOutputTimeout = time.Second
	start := time.Now()
	_, err = runCleanup(context.Background(), DialSSH, cleanupInput{Identity: "m1", Config: cfg, Commands: []string{"true"}})
	g.Expect(err).To(Succeed())
	g.Expect(time.Since(start)).To(BeNumerically(">", 2*time.Second), "the cleanup did not wait for the lock")
	out, _ = h.Exec("cat /var/lib/capr/cleaned")
	g.Expect(out).To(Equal("m1\n"))
}

// TestSilentHostFailsBeforeTheRun: a host that accepts the SSH connection and never answers (its setsid hangs, so
// not even CAPR's first line arrives) is given up on after the first-output deadline instead of the bootstrap
// timeout, as unreachable (tried again with backoff), not as a failed bootstrap: nothing ran on it.
func TestSilentHostFailsBeforeTheRun(t *testing.T) {
	g := NewWithT(t)
	h := sshdtest.StartWith(t, sshdtest.Options{Sbin: sshdtest.StandIns(t, map[string]string{"setsid": "exec sleep 600"})})
	cfg := testConfig(h)
	cfg.FirstOutputTimeout = time.Second
	start := time.Now()
	_, err := runBootstrap(context.Background(), DialSSH, bootstrapInput{Identity: "m1", Config: cfg, Data: []byte("#!/bin/sh\ntouch /run/ran\n")})
	g.Expect(time.Since(start)).To(BeNumerically("<", 5*time.Second))
	g.Expect(errors.Is(err, sshrunner.ErrUnreachable)).To(BeTrue(), "got %v", err)
	g.Expect(errors.Is(err, ErrBootstrapFailed)).To(BeFalse())
	reason, permanent := failureReason(err)
	g.Expect(reason).To(Equal(infrav1.HostUnreachableReason))
	g.Expect(permanent).To(BeFalse())
	out, _ := h.Exec("ls /run/ran " + markerFile + " 2>&1 | grep -c 'No such file'")
	g.Expect(out).To(Equal("2\n"), "nothing ran and no marker was written")
}

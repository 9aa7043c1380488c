//go:build integration

package sshhost

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// TestBootstrapRefusesAnotherMachinesUnfinishedRun checks that a host whose marker names another RemoteMachine is
// refused even when that machine's run never finished (no sentinel, no done record), that nothing of the new
// bootstrap runs on it, and that the refusal names every file to remove.
func TestBootstrapRefusesAnotherMachinesUnfinishedRun(t *testing.T) {
	g := NewWithT(t)
	h := sshdtest.Start(t)
	out, err := h.Exec("mkdir -p /var/lib/capr && echo another-machine > " + host.MarkerFile)
	g.Expect(err).NotTo(HaveOccurred(), out)

	cfg := sshrunner.Config{Endpoint: sshrunner.Endpoint{Address: h.Address, Port: h.Port, User: "root", Signer: h.ClientSigner,
		HostKeys: []string{h.HostKey}}, Log: logr.Discard()}
	_, err = (&Service{}).Bootstrap(context.Background(), host.BootstrapRequest{Identity: "this-machine", Config: cfg,
		Data: []byte("#!/bin/sh\ntouch /run/ran\n")})
	g.Expect(errors.Is(err, host.ErrHostAlreadyBootstrapped)).To(BeTrue(), "got %v", err)
	for _, file := range []string{host.SentinelFile, host.MarkerFile, host.DoneFile} {
		g.Expect(err.Error()).To(ContainSubstring(file))
	}
	out, _ = h.Exec("test -e /run/ran && echo ran; cat " + host.MarkerFile)
	g.Expect(out).To(Equal("another-machine\n"), "the bootstrap ran or the marker changed")

	// Once the host is cleaned as the message says, the bootstrap runs.
	out, err = h.Exec("rm -f " + host.SentinelFile + " " + host.MarkerFile + " " + host.DoneFile)
	g.Expect(err).NotTo(HaveOccurred(), out)
	_, err = (&Service{}).Bootstrap(context.Background(), host.BootstrapRequest{Identity: "this-machine", Config: cfg,
		Data: []byte("#!/bin/sh\ntouch /run/ran\n")})
	g.Expect(err).NotTo(HaveOccurred())
	out, _ = h.Exec("test -e /run/ran && echo ran")
	g.Expect(out).To(Equal("ran\n"))
}

func testConfig(h *sshdtest.Host) sshrunner.Config {
	return sshrunner.Config{Endpoint: sshrunner.Endpoint{Address: h.Address, Port: h.Port, User: "root", Signer: h.ClientSigner,
		HostKeys: []string{h.HostKey}}, Log: logr.Discard()}
}

// TestLateBootstrapAfterCleanupNeverRuns: cleanup keeps the lock file and records the machine as cleaned, so a
// bootstrap of the same machine arriving late (its cancel lost) finds the record and runs nothing.
func TestLateBootstrapAfterCleanupNeverRuns(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	cfg := testConfig(h)
	_, err := (&Service{}).Cleanup(ctx, host.CleanupRequest{Identity: "late-machine", Config: cfg, Commands: []string{"true"}})
	g.Expect(err).To(Succeed())
	out, _ := h.Exec("ls " + host.LockFile + "; cat /var/lib/capr/cleaned")
	g.Expect(out).To(Equal(host.LockFile + "\nlate-machine\n"))

	_, err = (&Service{}).Bootstrap(ctx, host.BootstrapRequest{Identity: "late-machine", Config: cfg, Data: []byte("#!/bin/sh\ntouch /run/ran\n")})
	g.Expect(errors.Is(err, host.ErrBootstrapFailed)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("the host was cleaned after this machine's bootstrap"))
	out, _ = h.Exec("ls /run/ran /var/lib/capr/bootstrap.uid 2>&1 | grep -c 'No such file'")
	g.Expect(out).To(Equal("2\n"), "nothing ran and no marker was written")

	// Another machine may still use the host.
	_, err = (&Service{}).Bootstrap(ctx, host.BootstrapRequest{Identity: "next-machine", Config: cfg, Data: []byte("#!/bin/sh\ntouch /run/ran\n")})
	g.Expect(err).NotTo(HaveOccurred())
}

// TestFailedRunIsNeverRepeated: a run whose step failed, or that was stopped by its deadline, is reported and
// never run again for the same machine: the host's failed record (or the unfinished marker) says so.
func TestFailedRunIsNeverRepeated(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	cfg := testConfig(h)
	failing := host.BootstrapRequest{Identity: "failing", Config: cfg, Data: []byte("#cloud-config\nruncmd:\n- echo run >> /run/runs\n- exit 4\n")}
	_, err := (&Service{}).Bootstrap(ctx, failing)
	g.Expect(errors.Is(err, host.ErrBootstrapFailed)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("step runcmd[1] failed"))
	_, err = (&Service{}).Bootstrap(ctx, failing)
	g.Expect(errors.Is(err, host.ErrBootstrapFailed)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("already ran on the host and failed (failing 98)"))
	out, _ := h.Exec("cat /run/runs")
	g.Expect(out).To(Equal("run\n"))

	// A run past its deadline is stopped, reported as failed, and not run again either.
	other := sshdtest.Start(t)
	slow := host.BootstrapRequest{Identity: "slow", Config: testConfig(other), Data: []byte("#cloud-config\nruncmd:\n- echo run >> /run/runs; sleep 30\n")}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = (&Service{}).Bootstrap(tctx, slow)
	g.Expect(errors.Is(err, host.ErrBootstrapFailed)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("timed out after it started"))
	g.Eventually(func() error {
		_, err := (&Service{}).Bootstrap(ctx, slow)
		if !errors.Is(err, host.ErrBootstrapFailed) {
			return fmt.Errorf("got %v", err)
		}
		return nil
	}, 10*time.Second, 200*time.Millisecond).Should(Succeed())
	out, _ = other.Exec("cat /run/runs")
	g.Expect(out).To(Equal("run\n"))
}

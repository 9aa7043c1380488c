//go:build integration

package controllers

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"

	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// TestBootstrapRefusesAnotherMachinesUnfinishedRun checks that a host whose marker names another RemoteMachine is
// refused even when that machine's run never finished (no sentinel, no done record), that nothing of the new
// bootstrap runs on it, and that the refusal names every file to remove.
func TestBootstrapRefusesAnotherMachinesUnfinishedRun(t *testing.T) {
	g := NewWithT(t)
	h := sshdtest.Start(t)
	out, err := h.Exec("mkdir -p /var/lib/capr && echo another-machine > " + markerFile)
	g.Expect(err).NotTo(HaveOccurred(), out)

	cfg := sshrunner.Config{Endpoint: sshrunner.Endpoint{Address: h.Address, Port: h.Port, User: "root", Signer: h.ClientSigner,
		HostKeys: []string{h.HostKey}}, Log: logr.Discard()}
	_, err = runBootstrap(context.Background(), DialSSH, bootstrapInput{Identity: "this-machine", Config: cfg,
		Data: []byte("#!/bin/sh\ntouch /run/ran\n")})
	g.Expect(errors.Is(err, ErrHostAlreadyBootstrapped)).To(BeTrue(), "got %v", err)
	for _, file := range []string{sentinelFile, markerFile, doneFile} {
		g.Expect(err.Error()).To(ContainSubstring(file))
	}
	out, _ = h.Exec("test -e /run/ran && echo ran; cat " + markerFile)
	g.Expect(out).To(Equal("another-machine\n"), "the bootstrap ran or the marker changed")

	// Once the host is cleaned as the message says, the bootstrap runs.
	out, err = h.Exec("rm -f " + sentinelFile + " " + markerFile + " " + doneFile)
	g.Expect(err).NotTo(HaveOccurred(), out)
	_, err = runBootstrap(context.Background(), DialSSH, bootstrapInput{Identity: "this-machine", Config: cfg,
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
	_, err := runCleanup(ctx, DialSSH, cleanupInput{Identity: "late-machine", Config: cfg, Commands: []string{"true"}})
	g.Expect(err).To(Succeed())
	out, _ := h.Exec("ls " + lockFile + "; cat /var/lib/capr/cleaned")
	g.Expect(out).To(Equal(lockFile + "\nlate-machine\n"))

	_, err = runBootstrap(ctx, DialSSH, bootstrapInput{Identity: "late-machine", Config: cfg, Data: []byte("#!/bin/sh\ntouch /run/ran\n")})
	g.Expect(errors.Is(err, ErrBootstrapFailed)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("the host was cleaned after this machine's bootstrap"))
	out, _ = h.Exec("ls /run/ran /var/lib/capr/bootstrap.uid 2>&1 | grep -c 'No such file'")
	g.Expect(out).To(Equal("2\n"), "nothing ran and no marker was written")

	// Another machine may still use the host.
	_, err = runBootstrap(ctx, DialSSH, bootstrapInput{Identity: "next-machine", Config: cfg, Data: []byte("#!/bin/sh\ntouch /run/ran\n")})
	g.Expect(err).NotTo(HaveOccurred())
}

// TestFailedRunIsNeverRepeated: a run whose step failed, or that was stopped by its deadline, is reported and
// never run again for the same machine: the host's failed record (or the unfinished marker) says so.
func TestFailedRunIsNeverRepeated(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)
	cfg := testConfig(h)
	failing := bootstrapInput{Identity: "failing", Config: cfg, Data: []byte("#cloud-config\nruncmd:\n- echo run >> /run/runs\n- exit 4\n")}
	_, err := runBootstrap(ctx, DialSSH, failing)
	g.Expect(errors.Is(err, ErrBootstrapFailed)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("step runcmd[1] failed"))
	_, err = runBootstrap(ctx, DialSSH, failing)
	g.Expect(errors.Is(err, ErrBootstrapFailed)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("already ran on the host and failed (failing 98)"))
	out, _ := h.Exec("cat /run/runs")
	g.Expect(out).To(Equal("run\n"))

	// A run past its deadline is stopped, reported as failed, and not run again either.
	other := sshdtest.Start(t)
	slow := bootstrapInput{Identity: "slow", Config: testConfig(other), Data: []byte("#cloud-config\nruncmd:\n- echo run >> /run/runs; sleep 30\n")}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = runBootstrap(tctx, DialSSH, slow)
	g.Expect(errors.Is(err, ErrBootstrapFailed)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring("timed out after it started"))
	g.Eventually(func() error {
		_, err := runBootstrap(ctx, DialSSH, slow)
		if !errors.Is(err, ErrBootstrapFailed) {
			return fmt.Errorf("got %v", err)
		}
		return nil
	}, 10*time.Second, 200*time.Millisecond).Should(Succeed())
	out, _ = other.Exec("cat /run/runs")
	g.Expect(out).To(Equal("run\n"))
}

// TestBackoff checks the waits between attempts that failed before anything ran: doubling, up to the cap.
func TestBackoff(t *testing.T) {
	g := NewWithT(t)
	r := &RemoteMachineReconciler{RetryInterval: time.Second, MaxRetryInterval: 10 * time.Second}
	var waits []time.Duration
	for range 6 {
		waits = append(waits, r.backoff("m"))
	}
	g.Expect(waits).To(Equal([]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}))
	g.Expect(r.backoff("other")).To(Equal(time.Second), "per machine")
}

// TestParseHostKeyLines reads the keys hostkeys.sh prints in pieces, and refuses what is not a key of the named type
// or more keys than an entry pins.
func TestParseHostKeyLines(t *testing.T) {
	g := NewWithT(t)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMBRNGdwJtXBkLOD2GQqtH6atsCQI0MACXSTooMtRa46"
	pieces := "capr-host-key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMBRNGdw JtXBkLOD2GQqtH6atsCQI0MACXSTooMt Ra46 "
	keys, err := parseHostKeyLines("noise\n" + pieces + "\n" + pieces + "\n")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(keys).To(Equal([]string{key}), "read once, whatever the pieces")

	for name, out := range map[string]string{
		"none":       "capr: done\n",
		"no key":     "capr-host-key=ssh-ed25519\n",
		"not base64": "capr-host-key=ssh-ed25519 !!!!\n",
		"wrong type": "capr-host-key=ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMBRNGdwJtXBkLOD2GQqtH6atsCQI0MACXSTooMtRa46\n",
	} {
		_, err := parseHostKeyLines(out)
		g.Expect(err).To(HaveOccurred(), name)
	}
	var many string
	for range maxHostKeys + 1 {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		g.Expect(err).NotTo(HaveOccurred())
		sshPub, err := ssh.NewPublicKey(pub)
		g.Expect(err).NotTo(HaveOccurred())
		many += hostKeyMarker + string(ssh.MarshalAuthorizedKey(sshPub))
	}
	_, err = parseHostKeyLines(many)
	g.Expect(err).To(MatchError(ContainSubstring("more than 16 host keys")))
}

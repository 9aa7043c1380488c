package controllers

import (
	"context"
	"errors"
	"testing"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/sshrunner/sshdtest"
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
	_, err = runBootstrap(context.Background(), DialSSH, bootstrapInput{UID: "this-machine", Config: cfg,
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
	_, err = runBootstrap(context.Background(), DialSSH, bootstrapInput{UID: "this-machine", Config: cfg,
		Data: []byte("#!/bin/sh\ntouch /run/ran\n")})
	g.Expect(err).NotTo(HaveOccurred())
	out, _ = h.Exec("test -e /run/ran && echo ran")
	g.Expect(out).To(Equal("ran\n"))
}

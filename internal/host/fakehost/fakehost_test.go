package fakehost_test

import (
	"context"
	"errors"
	"testing"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/capr-project/cluster-api-provider-remote/internal/controllers"
	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/host/fakehost"
	"github.com/capr-project/cluster-api-provider-remote/internal/host/sshhost"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// Both implementations serve the controllers.
var (
	_ controllers.HostService = (*fakehost.Service)(nil)
	_ controllers.HostService = (*sshhost.Service)(nil)
)

const script = "#!/bin/sh\ntrue\n"

func newHost(t *testing.T) (*fakehost.Service, sshrunner.Config) {
	t.Helper()
	s := fakehost.New()
	h := s.Add("10.0.0.1", 22, &fakehost.Host{Hostname: "Node-1", MachineID: "0123456789abcdef0123456789abcdef"})
	return s, sshrunner.Config{Endpoint: sshrunner.Endpoint{Address: "10.0.0.1", Port: 22, User: "root", HostKeys: h.Keys}, Log: logr.Discard()}
}

// TestBootstrapAtMostOncePerIdentity: the data runs once per identity; a second request adopts; another identity
// is refused with ErrHostAlreadyBootstrapped; after a cleanup the identity is never bootstrapped again.
func TestBootstrapAtMostOncePerIdentity(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	s, cfg := newHost(t)
	req := host.BootstrapRequest{Identity: "ns/m1/uid-1", Config: cfg, Data: []byte(script)}

	res, err := s.Bootstrap(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(*res).To(Equal(host.BootstrapResult{Hostname: "node-1", MachineID: "0123456789abcdef0123456789abcdef"}))
	res, err = s.Bootstrap(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Adopted).To(BeTrue())
	h, _ := s.Get("10.0.0.1", 22)
	g.Expect(h.Ran).To(Equal([]string{"ns/m1/uid-1"}), "run once")

	_, err = s.Bootstrap(ctx, host.BootstrapRequest{Identity: "ns/m2/uid-2", Config: cfg, Data: []byte(script)})
	g.Expect(errors.Is(err, host.ErrHostAlreadyBootstrapped)).To(BeTrue(), "got %v", err)

	// Cleanup only for the marker's identity.
	_, err = s.Cleanup(ctx, host.CleanupRequest{Identity: "ns/m2/uid-2", Config: cfg})
	g.Expect(errors.Is(err, host.ErrForeignBootstrap)).To(BeTrue(), "got %v", err)
	_, err = s.Cleanup(ctx, host.CleanupRequest{Identity: "ns/m1/uid-1", Config: cfg, Commands: []string{"kubeadm reset -f"}})
	g.Expect(err).NotTo(HaveOccurred())
	h, _ = s.Get("10.0.0.1", 22)
	g.Expect(h.Marker).To(BeEmpty())
	g.Expect(h.Sentinel).To(BeFalse())
	g.Expect(h.Commands).To(Equal([]string{"kubeadm reset -f"}))

	_, err = s.Bootstrap(ctx, req)
	g.Expect(errors.Is(err, host.ErrBootstrapFailed)).To(BeTrue(), "a cleaned identity never runs again: %v", err)
	_, err = s.Bootstrap(ctx, host.BootstrapRequest{Identity: "ns/m3/uid-3", Config: cfg, Data: []byte(script)})
	g.Expect(err).NotTo(HaveOccurred(), "a cleaned host takes another machine")
	h, _ = s.Get("10.0.0.1", 22)
	g.Expect(h.Ran).To(Equal([]string{"ns/m1/uid-1", "ns/m3/uid-3"}))
	g.Expect(s.Calls()).To(HaveLen(7))
	g.Expect(s.Calls()[0]).To(Equal(fakehost.Call{Op: "bootstrap", Address: "10.0.0.1:22", Identity: "ns/m1/uid-1"}))
}

// TestFailedStepIsNeverRepeated: a failing step fails the bootstrap for good, for that identity.
func TestFailedStepIsNeverRepeated(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	s, cfg := newHost(t)
	s.Update("10.0.0.1", 22, func(h *fakehost.Host) { h.FailStep = "runcmd[0]" })
	req := host.BootstrapRequest{Identity: "ns/m1/uid-1", Config: cfg, Data: []byte(script)}
	_, err := s.Bootstrap(ctx, req)
	g.Expect(errors.Is(err, host.ErrBootstrapFailed)).To(BeTrue())
	g.Expect(err.Error()).To(ContainSubstring("step runcmd[0] failed"))
	s.Update("10.0.0.1", 22, func(h *fakehost.Host) { h.FailStep = "" })
	_, err = s.Bootstrap(ctx, req)
	g.Expect(errors.Is(err, host.ErrBootstrapFailed)).To(BeTrue())
	g.Expect(err.Error()).To(ContainSubstring("already ran on the host and failed"))
	h, _ := s.Get("10.0.0.1", 22)
	g.Expect(h.Ran).To(HaveLen(1))
}

// TestAdoptOnlyAFinishedBootstrap: adoption needs the identity's finished run, and runs nothing.
func TestAdoptOnlyAFinishedBootstrap(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	s, cfg := newHost(t)
	_, err := s.Adopt(ctx, cfg, "ns/m1/uid-1")
	g.Expect(errors.Is(err, host.ErrBootstrapNotFound)).To(BeTrue())
	s.Update("10.0.0.1", 22, func(h *fakehost.Host) { h.Marker, h.Done = "uid-1", "uid-1" }) // an earlier release's marker
	res, err := s.Adopt(ctx, cfg, "ns/m1/uid-1")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Adopted).To(BeTrue())
	_, err = s.Adopt(ctx, cfg, "ns/m2/uid-2")
	g.Expect(errors.Is(err, host.ErrBootstrapNotFound)).To(BeTrue())
	h, _ := s.Get("10.0.0.1", 22)
	g.Expect(h.Ran).To(BeEmpty())
}

// TestInjectedFailures returns the errors the SSH service returns, wrapped in the same sentinels.
func TestInjectedFailures(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		fn   func(h *fakehost.Host)
		cfg  func(c *sshrunner.Config)
		want error
	}{
		"unreachable":   {fn: func(h *fakehost.Host) { h.Unreachable = true }, want: sshrunner.ErrUnreachable},
		"unknown host":  {cfg: func(c *sshrunner.Config) { c.Address = "10.9.9.9" }, want: sshrunner.ErrUnreachable},
		"auth failed":   {fn: func(h *fakehost.Host) { h.AuthFailed = true }, want: sshrunner.ErrAuthFailed},
		"key mismatch":  {fn: func(h *fakehost.Host) { h.Keys = []string{fakehost.NewKey()} }, want: sshrunner.ErrHostKeyMismatch},
		"key unknown":   {cfg: func(c *sshrunner.Config) { c.HostKeys = nil }, want: sshrunner.ErrHostKeyUnknown},
		"prerequisites": {fn: func(h *fakehost.Host) { h.Missing = "flock" }, want: host.ErrHostPrerequisites},
		"disk full":     {fn: func(h *fakehost.Host) { h.DiskFull = true }, want: host.ErrHostDiskFull},
		"unsupported":   {cfg: func(c *sshrunner.Config) {}, want: cloudinit.ErrUnsupported},
		"bastion changed": {fn: func(h *fakehost.Host) { h.BastionKey = fakehost.NewKey() }, cfg: func(c *sshrunner.Config) {
			c.Bastion = &sshrunner.Endpoint{Address: "10.0.0.254", Port: 22, HostKeys: []string{fakehost.NewKey()}}
		}, want: sshrunner.ErrHostKeyMismatch},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			s, cfg := newHost(t)
			if tc.fn != nil {
				s.Update("10.0.0.1", 22, tc.fn)
			}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			data := []byte(script)
			if name == "unsupported" {
				data = []byte("#include http://example.com/x\n")
			}
			_, err := s.Bootstrap(ctx, host.BootstrapRequest{Identity: "ns/m1/uid-1", Config: cfg, Data: data})
			g.Expect(errors.Is(err, tc.want)).To(BeTrue(), "got %v", err)
			h, _ := s.Get("10.0.0.1", 22)
			g.Expect(h.Ran).To(BeEmpty(), "nothing ran")
			g.Expect(h.Marker).To(BeEmpty(), "no marker written")
			if name == "bastion changed" {
				var mm *sshrunner.HostKeyMismatchError
				g.Expect(errors.As(err, &mm)).To(BeTrue())
				g.Expect(mm.Bastion).To(BeTrue())
			}
		})
	}
}

// TestScanRegenerateAndFacts: a scan reads the bastion's key while it is unpinned, then the host's; a cleanup with
// RegenerateHostKeys returns new keys, which the host presents from then on; a probe returns the host's facts.
func TestScanRegenerateAndFacts(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	s, cfg := newHost(t)
	bastionKey := fakehost.NewKey()
	s.Update("10.0.0.1", 22, func(h *fakehost.Host) {
		h.BastionKey = bastionKey
		h.Facts = host.Facts{Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")}}
	})
	old := cfg.HostKeys[0]
	cfg.Bastion = &sshrunner.Endpoint{Address: "10.0.0.254", Port: 22}
	res, err := s.Scan(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res).To(Equal(host.ScanResult{Key: bastionKey, Bastion: true}))
	cfg.Bastion.HostKeys = []string{bastionKey}
	res, err = s.Scan(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res).To(Equal(host.ScanResult{Key: old}))

	facts, err := s.Facts(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(facts.Capacity.Cpu().String()).To(Equal("4"))

	keys, err := s.Cleanup(ctx, host.CleanupRequest{Identity: "ns/m1/uid-1", Config: cfg, RegenerateHostKeys: true})
	g.Expect(err).NotTo(HaveOccurred(), "a host without a bootstrap is re-keyed too")
	g.Expect(keys).To(HaveLen(1))
	g.Expect(keys[0]).NotTo(Equal(old))
	_, err = s.Facts(ctx, cfg)
	g.Expect(errors.Is(err, sshrunner.ErrHostKeyMismatch)).To(BeTrue(), "the old key no longer matches")
	cfg.HostKeys = keys
	_, err = s.Facts(ctx, cfg)
	g.Expect(err).NotTo(HaveOccurred())
}

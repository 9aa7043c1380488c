// Package fakehost is an in-memory host service for the fast test tier: hosts keyed by address:port, with the keys
// they present, their bootstrap state by identity, their facts and injectable failures. It follows the contract of
// package host (a bootstrap runs at most once per identity, a foreign marker is refused, a cleanup needs the
// identity's marker, a cleaned identity never runs again) and returns the errors the SSH implementation returns.
package fakehost

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/ignition"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// Host is one fake host: what it presents and measures, the failures injected into it, and its state.
type Host struct {
	// Keys are the host keys it presents (authorized_keys format); a scan reads the first.
	Keys []string
	// BastionKey is the key of the bastion in front of it, presented when a request goes through a bastion.
	BastionKey string
	// Hostname and MachineID are what the host reports of itself.
	Hostname  string
	MachineID string
	// Facts is what a probe measures.
	Facts host.Facts

	// Unreachable refuses connections; AuthFailed refuses the login key.
	Unreachable bool
	AuthFailed  bool
	// Missing, when set, lists the prerequisites the host lacks: every login that runs a script fails with it.
	Missing string
	// DiskFull makes a bootstrap fail before anything runs, as when the marker cannot be written.
	DiskFull bool
	// FailStep, when set, names the step of the plan that fails: the bootstrap runs and fails.
	FailStep string

	// Marker, Done and Failed are CAPR's records (host.MarkerFile, DoneFile, FailedFile); Sentinel is Cluster
	// API's. Cleaned lists the identities the host was cleaned for. Ran lists the identities whose data ran, and
	// Commands the cleanup commands run, in order.
	Marker, Done, Failed string
	Sentinel             bool
	Cleaned              []string
	Ran                  []string
	Commands             []string
}

// Call is one request the service received.
type Call struct {
	// Op is "scan", "bootstrap", "adopt", "cleanup" or "facts".
	Op string
	// Address is the host's address:port.
	Address string
	// Identity is the RemoteMachine's identity, for bootstrap, adopt and cleanup.
	Identity string
}

// Service is the in-memory host service. Its methods are safe for concurrent use.
type Service struct {
	mu    sync.Mutex
	hosts map[string]*Host
	calls []Call
}

// New returns a service without hosts.
func New() *Service {
	return &Service{hosts: map[string]*Host{}}
}

// Add registers h at address:port (a host without keys gets a new ed25519 key) and returns it.
func (s *Service) Add(address string, port int, h *Host) *Host {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(h.Keys) == 0 {
		h.Keys = []string{NewKey()}
	}
	s.hosts[endpoint(address, port)] = h
	return h
}

// Update changes the host at address:port under the service's lock (to inject a failure, or read its state).
func (s *Service) Update(address string, port int, fn func(h *Host)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.hosts[endpoint(address, port)]; ok {
		fn(h)
	}
}

// Get returns a copy of the host at address:port.
func (s *Service) Get(address string, port int) (Host, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hosts[endpoint(address, port)]
	if !ok {
		return Host{}, false
	}
	c := *h
	c.Keys, c.Cleaned, c.Ran, c.Commands = slices.Clone(h.Keys), slices.Clone(h.Cleaned), slices.Clone(h.Ran), slices.Clone(h.Commands)
	return c, true
}

// Calls returns the requests received so far, oldest first.
func (s *Service) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// NewKey returns a new ed25519 public key in authorized_keys format.
func NewKey() string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func endpoint(address string, port int) string {
	if port == 0 {
		port = 22
	}
	return fmt.Sprintf("%s:%d", address, port)
}

// record notes a call and returns the host it names (nil when there is none); s.mu is held.
func (s *Service) record(op string, cfg sshrunner.Config, identity string) (*Host, string) {
	addr := endpoint(cfg.Address, cfg.Port)
	s.calls = append(s.calls, Call{Op: op, Address: addr, Identity: identity})
	return s.hosts[addr], addr
}

// mismatch is the error of a presented key that is not among the pinned ones, as sshrunner reports it.
func mismatch(addr, presented string, pinned []string, bastion bool) error {
	e := &sshrunner.HostKeyMismatchError{Host: addr, Presented: presented, Bastion: bastion}
	for _, p := range pinned {
		e.Pinned = append(e.Pinned, sshrunner.Fingerprint(p))
	}
	return e
}

// checkBastion verifies the bastion's pinned key, as a login through it does.
func checkBastion(cfg sshrunner.Config, h *Host) error {
	b := cfg.Bastion
	if b == nil {
		return nil
	}
	addr := endpoint(b.Address, b.Port)
	if len(b.HostKeys) == 0 {
		return fmt.Errorf("bastion %s: %w: %s presented %s and no host key is pinned; add the host's key to hostKeys",
			addr, sshrunner.ErrHostKeyUnknown, addr, sshrunner.Fingerprint(h.BastionKey))
	}
	if !slices.Contains(b.HostKeys, h.BastionKey) {
		return fmt.Errorf("bastion %s: %w", addr, mismatch(addr, h.BastionKey, b.HostKeys, true))
	}
	return nil
}

// login connects and logs in to the host as sshrunner.Dial does, and checks the prerequisites when script is true.
func login(h *Host, addr string, cfg sshrunner.Config, script bool) error {
	if h == nil || h.Unreachable {
		return fmt.Errorf("%w: %s: dial tcp %s: connect: connection refused", sshrunner.ErrUnreachable, addr, addr)
	}
	if err := checkBastion(cfg, h); err != nil {
		return err
	}
	if len(cfg.HostKeys) == 0 {
		return fmt.Errorf("%w: %s presented %s and no host key is pinned; add the host's key to hostKeys",
			sshrunner.ErrHostKeyUnknown, addr, sshrunner.Fingerprint(h.Keys[0]))
	}
	if !slices.ContainsFunc(h.Keys, func(k string) bool { return slices.Contains(cfg.HostKeys, k) }) {
		return mismatch(addr, h.Keys[0], cfg.HostKeys, false)
	}
	if h.AuthFailed {
		return fmt.Errorf("%w: %s refused the SSH key: ssh: unable to authenticate", sshrunner.ErrAuthFailed, addr)
	}
	if script && h.Missing != "" {
		return host.PrerequisitesError(h.Missing)
	}
	return nil
}

// Scan returns the key the host presents, or its bastion's when that is not pinned; a pinned bastion presenting
// another key is a mismatch (bastion true).
func (s *Service) Scan(_ context.Context, cfg sshrunner.Config) (host.ScanResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, addr := s.record("scan", cfg, "")
	if h == nil || h.Unreachable {
		return host.ScanResult{}, login(nil, addr, cfg, false)
	}
	if b := cfg.Bastion; b != nil {
		if len(b.HostKeys) == 0 {
			return host.ScanResult{Key: h.BastionKey, Bastion: true}, nil
		}
		if err := checkBastion(cfg, h); err != nil {
			return host.ScanResult{Bastion: true}, err
		}
	}
	return host.ScanResult{Key: h.Keys[0]}, nil
}

// owns says whether a marker names identity (or its UID alone, as an earlier release wrote it).
func owns(marker, identity string) bool {
	return marker != "" && (marker == identity || marker == identity[strings.LastIndex(identity, "/")+1:])
}

// Bootstrap runs the bootstrap data at most once per identity, as scripts/bootstrap-run.sh does.
func (s *Service) Bootstrap(_ context.Context, in host.BootstrapRequest) (*host.BootstrapResult, error) {
	// Parsed before connecting, as the SSH service does: data it cannot apply never reaches the host.
	var err error
	if in.Format == ignition.Format {
		_, err = ignition.Parse(in.Data)
	} else {
		_, err = cloudinit.Parse(in.Data, in.Format, cloudinit.Vars{Hostname: "localhost"})
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, addr := s.record("bootstrap", in.Config, in.Identity)
	if err := login(h, addr, in.Config, true); err != nil {
		return nil, err
	}
	switch {
	case slices.Contains(h.Cleaned, in.Identity):
		return nil, host.RefusedError([]string{host.MessagePrefix + "the host was cleaned after this machine's bootstrap; it is not bootstrapped for it again"})
	case owns(h.Marker, in.Identity) && (h.Sentinel || owns(h.Done, in.Identity)):
		return s.result(h, true), nil
	case owns(h.Marker, in.Identity) && h.Failed != "":
		return nil, host.RefusedError([]string{host.MessagePrefix + "this machine's bootstrap already ran on the host and failed (" + h.Failed + "); bootstrap data is not run twice"})
	case owns(h.Marker, in.Identity):
		return nil, host.RefusedError([]string{host.MessagePrefix + "this machine's bootstrap started on the host and never finished (the host rebooted or the run was killed); bootstrap data is not run twice"})
	case h.Marker != "", h.Sentinel, h.Done != "":
		return nil, host.AlreadyBootstrappedError()
	}
	workDir := in.WorkingDir
	if workDir == "" {
		workDir = "/tmp"
	}
	if h.DiskFull {
		return nil, host.DiskFullError(workDir, []string{host.MessagePrefix + "cannot record this machine's bootstrap in " + host.MarkerFile + " (No space left on device?); nothing was run"})
	}
	h.Marker, h.Failed = in.Identity, ""
	h.Ran = append(h.Ran, in.Identity)
	if h.FailStep != "" {
		h.Failed = fmt.Sprintf("%s %d", in.Identity, host.ExitStepFailed)
		return nil, host.StepFailedError([]string{host.StepMarker + h.FailStep})
	}
	h.Sentinel, h.Done = true, in.Identity
	return s.result(h, false), nil
}

// result is what the host reports of itself after a bootstrap or an adoption.
func (s *Service) result(h *Host, adopted bool) *host.BootstrapResult {
	res := &host.BootstrapResult{Adopted: adopted, MachineID: host.ValidMachineID(h.MachineID)}
	res.Hostname, _ = host.CheckHostname(h.Hostname)
	return res
}

// Adopt reports the finished bootstrap of identity, as scripts/adopt.sh does; it runs nothing.
func (s *Service) Adopt(_ context.Context, cfg sshrunner.Config, identity string) (*host.BootstrapResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, addr := s.record("adopt", cfg, identity)
	if err := login(h, addr, cfg, false); err != nil {
		return nil, err
	}
	if (h.Sentinel || h.Done != "") && owns(h.Marker, identity) {
		return s.result(h, true), nil
	}
	return nil, host.NotAdoptableError(identity)
}

// Cleanup cleans a host whose marker names the identity, as scripts/cleanup.sh does, then gives it new host keys
// when asked (whether or not it held a bootstrap) and returns them.
func (s *Service) Cleanup(_ context.Context, in host.CleanupRequest) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, addr := s.record("cleanup", in.Config, in.Identity)
	if err := login(h, addr, in.Config, true); err != nil {
		return nil, err
	}
	switch {
	case h.Marker == "" && !h.Sentinel && h.Done == "":
		// Holds no bootstrap: left as it is.
	case !owns(h.Marker, in.Identity):
		msg := "the host's marker names another machine"
		if h.Marker == "" {
			msg = "the host holds a bootstrap without CAPR's marker"
		}
		return nil, host.ForeignCleanupError([]string{host.MessagePrefix + msg})
	default:
		h.Commands = append(h.Commands, in.Commands...)
		h.Marker, h.Done, h.Failed, h.Sentinel = "", "", "", false
	}
	h.Cleaned = append(h.Cleaned, in.Identity)
	if len(h.Cleaned) > 1000 {
		h.Cleaned = h.Cleaned[len(h.Cleaned)-1000:]
	}
	if !in.RegenerateHostKeys {
		return nil, nil
	}
	h.Keys = []string{NewKey()}
	return slices.Clone(h.Keys), nil
}

// Facts logs in, checks the prerequisites and returns the host's facts.
func (s *Service) Facts(_ context.Context, cfg sshrunner.Config) (*host.Facts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, addr := s.record("facts", cfg, "")
	if err := login(h, addr, cfg, true); err != nil {
		return nil, err
	}
	f := h.Facts
	f.Capacity = h.Facts.Capacity.DeepCopy()
	return &f, nil
}

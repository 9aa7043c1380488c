// Package sshhost is the host service over SSH: it scans, bootstraps, adopts, cleans and probes hosts by running
// CAPR's host scripts (scripts/), which receive the contract of package host.
package sshhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"golang.org/x/sync/semaphore"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/ignition"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// Conn is what the service needs of a connection to a host. The real one is an *sshrunner.Client.
type Conn interface {
	Run(ctx context.Context, script string, stdin io.Reader) error
	Output(ctx context.Context, script string, stdin io.Reader) (string, error)
	Close() error
}

// DialSSH connects to a host over SSH; it is the Service's Dial when that is nil.
func DialSSH(ctx context.Context, cfg sshrunner.Config) (Conn, error) {
	c, err := sshrunner.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Service is the host service over SSH. The zero value is ready to use.
type Service struct {
	// Dial connects to a host; DialSSH when nil. Tests wrap it to count, record or drop connections.
	Dial func(ctx context.Context, cfg sshrunner.Config) (Conn, error)
	// ScanKey reads the key a host (or its unpinned bastion) presents; sshrunner.ScanHostKey when nil.
	ScanKey func(ctx context.Context, cfg sshrunner.Config) (key string, bastion bool, err error)
	// Memory bounds the bootstrap data held at once by the bootstraps in flight (see NewMemoryBudget); nil leaves
	// it unbounded. A bootstrap takes its plan's size from it before it connects and gives it back when it ends.
	Memory *MemoryBudget
}

// MemoryBudget is the bytes of bootstrap plans (the data, its decoded file contents and commands) the bootstraps in
// flight may hold together. An SSH session alone costs the manager little (a connection, a few goroutines and
// buffers); what one bootstrap may cost is its data, up to cloudinit.MaxDecodedSize. So the number of bootstraps
// at once (--bootstrap-concurrency) can be large while this bounds their memory: many small plans run together,
// large ones wait for each other.
type MemoryBudget struct {
	sem   *semaphore.Weighted
	limit int64
}

// MinMemory is the smallest memory budget: what one bootstrap of the largest data CAPR accepts takes from it.
const MinMemory = 2 * cloudinit.MaxDecodedSize

// NewMemoryBudget returns a budget of limit bytes (at least MinMemory).
func NewMemoryBudget(limit int64) *MemoryBudget {
	limit = max(limit, MinMemory)
	return &MemoryBudget{sem: semaphore.NewWeighted(limit), limit: limit}
}

// take waits for n bytes of the budget (at most its limit) and returns the function that gives them back.
func (b *MemoryBudget) take(ctx context.Context, n int64) (func(), error) {
	if b == nil {
		return func() {}, nil
	}
	n = min(max(n, 1), b.limit)
	if err := b.sem.Acquire(ctx, n); err != nil {
		return nil, err
	}
	return func() { b.sem.Release(n) }, nil
}

// decoding bounds how many bootstraps decode their data at once: decoding is CPU work, and each one may briefly
// hold up to cloudinit.MaxDecodedSize before its plan's size is known and taken from the memory budget.
var decoding = semaphore.NewWeighted(int64(max(runtime.GOMAXPROCS(0), 2)))

// parseBounded parses bootstrap data while holding one of the decoding slots.
func parseBounded(ctx context.Context, data []byte, format string, vars cloudinit.Vars) (*cloudinit.Plan, error) {
	if err := decoding.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	defer decoding.Release(1)
	return parseBootstrap(data, format, vars)
}

// planSize is the bytes a plan holds: its file contents and commands.
func planSize(plan *cloudinit.Plan) int64 {
	var n int64
	for _, s := range plan.Steps {
		n += int64(len(s.Command))
		if s.File != nil {
			n += int64(len(s.File.Content))
		}
	}
	return n
}

func (s *Service) dial(ctx context.Context, cfg sshrunner.Config) (Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, cfg)
	}
	return DialSSH(ctx, cfg)
}

// Scan reads the key a host presents (or its bastion's, when that is not pinned yet) without logging in.
func (s *Service) Scan(ctx context.Context, cfg sshrunner.Config) (host.ScanResult, error) {
	scan := s.ScanKey
	if scan == nil {
		scan = sshrunner.ScanHostKey
	}
	key, bastion, err := scan(ctx, cfg)
	return host.ScanResult{Key: key, Bastion: bastion}, err
}

// Bootstrap runs bootstrap data on a host at most once. The whole run happens inside one remote command holding
// flock on the host's lock file (scripts/bootstrap.sh and bootstrap-run.sh): a second run (a restarted manager,
// another replica, a retry after a dropped connection) waits for the first and then adopts its result, or reports
// its failure, and never runs the data again. The host's key must be pinned (Config.HostKeys) before this runs.
func (s *Service) Bootstrap(ctx context.Context, in host.BootstrapRequest) (*host.BootstrapResult, error) {
	res := &host.BootstrapResult{}
	cfg := in.Config
	// Parse before connecting: unsupported data, or data that decodes past cloudinit.MaxDecodedSize, fails without
	// touching the host, and the values the plan holds (file contents decoded from base64, commands) are redacted
	// from the output too.
	plan, err := parseBounded(ctx, in.Data, in.Format, cloudinit.Vars{Hostname: "localhost"})
	if err != nil {
		return nil, err
	}
	// The plan is held, and redacted from the output, until the run ends: its size (twice: the plan and what the
	// redactor keeps of it) and the data's are taken from the memory budget first.
	release, err := s.Memory.take(ctx, int64(len(in.Data))+2*planSize(plan))
	if err != nil {
		return nil, err
	}
	defer release()
	cfg.Secrets = append(append([]string(nil), cfg.Secrets...), planValues(plan)...)
	conn, err := s.dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	// Only jinja templates need the host name before the plan is made; otherwise the run reports it.
	if in.Format != ignition.Format && bytes.HasPrefix(in.Data, []byte("## template: jinja")) {
		hostname, err := conn.Output(ctx, "hostname -s 2>/dev/null || hostname", nil)
		if err != nil {
			return nil, err
		}
		if res.Hostname = reportedHostname(ctx, hostname); res.Hostname == "" {
			return nil, fmt.Errorf("the host reported no valid host name (see the log), which the jinja template needs; nothing was run")
		}
		plan = nil //nolint:ineffassign // one plan in memory at a time: the first is freed while the second is made
		if plan, err = parseBounded(ctx, in.Data, in.Format, cloudinit.Vars{Hostname: res.Hostname}); err != nil {
			return nil, err
		}
	}
	workDir := in.WorkingDir
	if workDir == "" {
		workDir = "/tmp"
	}
	// One SSH session: the prerequisites are checked, then the script arrives on stdin, made as it is sent, and the
	// wrapper stores, runs and removes it.
	command := withPrerequisites(hostScript("capr-bootstrap", bootstrapScript, in.Identity, workDir, withContract(bootstrapRunScript)))
	script := cloudinit.NewScriptReader(plan)
	defer script.Close()
	out, err := conn.Output(ctx, command, script)
	started := strings.Contains(out, host.HostnameMarker)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) {
		switch code := cmdErr.ExitCode; {
		case code == host.ExitPrerequisites:
			return nil, host.PrerequisitesError(host.MissingPrerequisites(cmdErr.Tail))
		case code == host.ExitStateUnwritable, code >= 0 && !started && strings.Contains(strings.Join(cmdErr.Tail, "\n"), "No space left on device"):
			return nil, host.DiskFullError(workDir, cmdErr.Tail)
		case code == host.ExitForeignBootstrap:
			return nil, host.AlreadyBootstrappedError()
		case code == host.ExitStepFailed:
			return nil, host.StepFailedError(cmdErr.Tail)
		case code == host.ExitAlreadyRan, code == host.ExitCleaned:
			return nil, host.RefusedError(cmdErr.Tail)
		case code >= 0 && started:
			return nil, fmt.Errorf("%w: the run ended with status %d; it is not run again. Last output: %s", host.ErrBootstrapFailed, code, host.OutputTail(cmdErr.Tail))
		case code >= 0:
			return nil, fmt.Errorf("the bootstrap command failed with status %d before the run started: %s", code, host.OutputTail(cmdErr.Tail))
		}
		// No status: the connection dropped. The run goes on on the host; the next attempt finds its result.
		return nil, host.ConnectionLostError("during the bootstrap; its result is read at the next attempt")
	}
	if err != nil && started && errors.Is(err, sshrunner.ErrTimeout) {
		return nil, fmt.Errorf("%w: it timed out after it started on the host, and was stopped; it is not run again: %w", host.ErrBootstrapFailed, err)
	}
	if err != nil {
		return nil, err
	}
	readIdentity(ctx, out, res)
	res.Adopted = strings.Contains(out, host.AdoptedMarker)
	return res, nil
}

// readIdentity fills res's host name and machine-id from the scripts' output, the first of each.
func readIdentity(ctx context.Context, out string, res *host.BootstrapResult) {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if h, ok := strings.CutPrefix(line, host.HostnameMarker); ok && res.Hostname == "" {
			res.Hostname = reportedHostname(ctx, h)
		}
		if id, ok := strings.CutPrefix(line, host.MachineIDMarker); ok && res.MachineID == "" {
			res.MachineID = host.ValidMachineID(id)
		}
	}
}

// reportedHostname returns the host name a host reported when it is valid (host.CheckHostname); otherwise "",
// and the host's text is logged, cut and already redacted, saying why it was not used.
func reportedHostname(ctx context.Context, reported string) string {
	name, err := host.CheckHostname(reported)
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("The host reported an invalid host name; it is not used", "reason", err.Error())
		return ""
	}
	return name
}

// parseBootstrap makes the plan of bootstrap data by its format: Ignition (package ignition), or cloud-config and
// shell scripts (package cloudinit). Both refuse what they cannot apply with cloudinit.ErrUnsupported.
func parseBootstrap(data []byte, format string, vars cloudinit.Vars) (*cloudinit.Plan, error) {
	if format == ignition.Format {
		return ignition.Parse(data)
	}
	return cloudinit.Parse(data, format, vars)
}

// Bounds of what planValues hands to the redactor, which keeps each value, its lines and its words: a value larger
// than maxRedactedValue (a binary, an image; CAPR's scripts never print a file's content) is left out, and so is
// everything past maxRedactedTotal. Keys, tokens and configs are far smaller, and whatever is plain text in the
// bootstrap data is redacted anyway, with the Secret's value.
const (
	maxRedactedValue = 64 << 10
	maxRedactedTotal = 4 << 20
)

// planValues returns what a plan writes and runs, to be redacted from the host's output, within the bounds above.
func planValues(plan *cloudinit.Plan) []string {
	var out []string
	total := 0
	for _, s := range plan.Steps {
		n := len(s.Command)
		if s.File != nil {
			n = len(s.File.Content)
		}
		if n > maxRedactedValue || total+n > maxRedactedTotal {
			continue
		}
		total += n
		if s.File != nil {
			out = append(out, string(s.File.Content))
		} else {
			out = append(out, s.Command)
		}
	}
	return out
}

// Adopt checks, under the bootstrap lock, that the host holds a finished bootstrap whose marker names identity,
// and reports it adopted; it never runs anything else (a RemoteMachine copied by clusterctl move).
func (s *Service) Adopt(ctx context.Context, cfg sshrunner.Config, identity string) (*host.BootstrapResult, error) {
	conn, err := s.dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	out, err := conn.Output(ctx, lockedHostScript("capr-adopt", adoptScript, identity), nil)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) {
		if cmdErr.ExitCode == host.ExitNotAdoptable {
			return nil, host.NotAdoptableError(identity)
		}
		return nil, fmt.Errorf("%w: checking the host's bootstrap failed with status %d: %s", sshrunner.ErrUnreachable, cmdErr.ExitCode, host.OutputTail(cmdErr.Tail))
	}
	if err != nil {
		return nil, err
	}
	res := &host.BootstrapResult{Adopted: true}
	readIdentity(ctx, out, res)
	return res, nil
}

// Cleanup runs the cleanup commands, then removes the sentinel and CAPR's files (scripts/cleanup.sh). It runs under
// the bootstrap lock (a bootstrap still running finishes first) and only when the host's marker names this
// RemoteMachine; it records the identity as cleaned, so a late bootstrap of it never runs. A host never bootstrapped
// is left as it is; a host holding another bootstrap is an error (host.ErrForeignBootstrap), so the entry is
// quarantined rather than handed out dirty. With RegenerateHostKeys, the host then gets new SSH host keys in the
// same session (scripts/hostkeys.sh), whether or not it held a bootstrap (a root claimant may have removed CAPR's
// marker), and Cleanup returns them in authorized_keys format.
func (s *Service) Cleanup(ctx context.Context, in host.CleanupRequest) ([]string, error) {
	conn, err := s.dial(ctx, in.Config)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	workDir := in.WorkingDir
	if workDir == "" {
		workDir = "/tmp"
	}
	args := append([]string{in.Identity, workDir}, in.Commands...)
	err = conn.Run(ctx, withPrerequisites(lockedHostScript("capr-cleanup", cleanupScript, args...)), nil)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) {
		switch cmdErr.ExitCode {
		case host.ExitForeignCleanup:
			return nil, host.ForeignCleanupError(cmdErr.Tail)
		case host.ExitPrerequisites:
			return nil, host.PrerequisitesError(host.MissingPrerequisites(cmdErr.Tail))
		case -1:
			return nil, host.ConnectionLostError("during the cleanup")
		}
		return nil, fmt.Errorf("the cleanup failed with status %d: %s", cmdErr.ExitCode, host.OutputTail(cmdErr.Tail))
	}
	if err != nil || !in.RegenerateHostKeys {
		return nil, err
	}
	return regenerateHostKeys(ctx, conn)
}

// regenerateHostKeys gives the host new SSH host keys and returns their public halves, as the host printed them in
// the session whose old key was verified.
func regenerateHostKeys(ctx context.Context, conn Conn) ([]string, error) {
	out, err := conn.Output(ctx, hostScript("capr-hostkeys", hostKeysScript), nil)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) {
		if cmdErr.ExitCode == -1 {
			return nil, host.ConnectionLostError("while its SSH host keys were regenerated")
		}
		return nil, fmt.Errorf("regenerating the host's SSH host keys (spec.machine.regenerateHostKeys) failed with status %d: %s",
			cmdErr.ExitCode, host.OutputTail(cmdErr.Tail))
	}
	if err != nil {
		return nil, err
	}
	return host.ParseHostKeyLines(out)
}

// Facts logs in with the pinned keys, checks CAPR's prerequisites on the host and measures it (scripts/facts.sh).
func (s *Service) Facts(ctx context.Context, cfg sshrunner.Config) (*host.Facts, error) {
	conn, err := s.dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	out, err := conn.Output(ctx, withPrerequisites(hostScript("capr-facts", factsScript)), nil)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) && cmdErr.ExitCode == host.ExitPrerequisites {
		return nil, host.PrerequisitesError(host.MissingPrerequisites(cmdErr.Tail))
	}
	if err != nil {
		return nil, err
	}
	facts := host.ParseFacts(out)
	return &facts, nil
}

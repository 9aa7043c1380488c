package controllers

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/ignition"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// Files on the host. The sentinel is Cluster API's, in /run, which a reboot empties; CAPR's marker (the UID of the
// RemoteMachine whose bootstrap the host holds, written before it starts), done record (written when it succeeds),
// failed record (written when it fails) and cleaned list (the UIDs whose hosts were cleaned) live in stateDir,
// which survives reboots, so a rebooted node is still known as bootstrapped: it is cleaned when its RemoteMachine
// is deleted, never bootstrapped twice, and adopted after clusterctl move. The scripts are in scripts/.
const (
	runDir       = "/run/cluster-api"
	sentinelFile = runDir + "/bootstrap-success.complete"
	stateDir     = "/var/lib/capr"
	markerFile   = stateDir + "/bootstrap.uid"
	doneFile     = stateDir + "/bootstrap.done"
	failedFile   = stateDir + "/bootstrap.failed"
	lockFile     = runDir + "/capr-bootstrap.lock"
)

// Exit codes of CAPR's scripts on the host that mean something to CAPR.
const (
	exitStateUnwritable  = 91                       // bootstrap: the marker could not be written (disk full); nothing ran
	exitPrerequisites    = 92                       // prerequisites.sh: the host lacks a command CAPR needs
	exitAlreadyRan       = 93                       // bootstrap: this machine's bootstrap ran on the host before and did not succeed
	exitCleaned          = 94                       // bootstrap: the host was cleaned for this machine
	exitForeignCleanup   = 95                       // cleanup: the host holds a bootstrap that is not this machine's
	exitNotAdoptable     = 96                       // adopt: the host does not hold the bootstrap of the moved RemoteMachine
	exitForeignBootstrap = 97                       // bootstrap: the host holds another machine's bootstrap, finished or not
	exitStepFailed       = cloudinit.ExitStepFailed // bootstrap: a step of the plan failed
)

// ErrForeignBootstrap: cleanup found a bootstrap that is not this machine's on the host; the host is quarantined at
// once, without retries.
var ErrForeignBootstrap = errors.New("the host holds a bootstrap that is not this machine's")

// ErrHostAlreadyBootstrapped: the host holds another machine's bootstrap, finished or not (its marker names another
// RemoteMachine).
var ErrHostAlreadyBootstrapped = errors.New("host already bootstrapped by another machine")

// ErrBootstrapNotFound: a RemoteMachine moved by clusterctl found its host without the bootstrap it was moved with.
var ErrBootstrapNotFound = errors.New("the host does not hold this RemoteMachine's bootstrap")

// ErrBootstrapFailed: the bootstrap ran on the host and failed (a step exited non-zero, it was stopped or timed out,
// or it ran before and did not succeed). Bootstrap data is not idempotent: it is never run again for this machine.
var ErrBootstrapFailed = errors.New("bootstrap failed on the host")

// ErrHostDiskFull: the host had no room for the plan or CAPR's record of the run, so nothing ran.
var ErrHostDiskFull = errors.New("the host's disk is full")

// ErrHostPrerequisites: the host lacks a command CAPR's scripts need.
var ErrHostPrerequisites = errors.New("the host lacks what CAPR needs")

// bootstrapInput is what a bootstrap task needs; it is built by the reconciler and holds no Kubernetes client.
type bootstrapInput struct {
	// Identity is what the host's marker records: the RemoteMachine's namespace/name/UID (see hostIdentity).
	Identity string
	// AdoptOnly adopts a finished bootstrap of Identity and never runs one (a copy made by clusterctl move).
	AdoptOnly  bool
	Config     sshrunner.Config
	Data       []byte
	Format     string
	WorkingDir string
}

// bootstrapResult is what a successful bootstrap reports.
type bootstrapResult struct {
	// Adopted is true when the host had already been bootstrapped for this RemoteMachine.
	Adopted bool
	// Hostname is the host's own name.
	Hostname string
	// MachineID is the host's /etc/machine-id, empty when it has none or reported something else.
	MachineID string
}

// runBootstrap runs bootstrap data on a host at most once. The whole run happens inside one remote command holding
// flock on the host's lock file (scripts/bootstrap.sh and bootstrap-run.sh): a second run (a restarted manager,
// another replica, a retry after a dropped connection) waits for the first and then adopts its result, or reports
// its failure, and never runs the data again. The host's key must be pinned (Config.HostKeys) before this runs.
func runBootstrap(ctx context.Context, dial Dialer, in bootstrapInput) (*bootstrapResult, error) {
	res := &bootstrapResult{}
	cfg := in.Config
	var plan *cloudinit.Plan
	if !in.AdoptOnly {
		// Parse before connecting: unsupported data, or data that decodes past cloudinit.MaxDecodedSize, fails
		// without touching the host, and the values the plan holds (file contents decoded from base64, commands)
		// are redacted from the output too.
		var err error
		if plan, err = parseBootstrap(in.Data, in.Format, cloudinit.Vars{Hostname: "localhost"}); err != nil {
			return nil, err
		}
		cfg.Secrets = append(append([]string(nil), cfg.Secrets...), planValues(plan)...)
	}
	host, err := dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer host.Close()

	if in.AdoptOnly {
		return adopt(ctx, host, in.Identity, res)
	}
	// Only jinja templates need the host name before the plan is made; otherwise the run reports it.
	if in.Format != ignition.Format && bytes.HasPrefix(in.Data, []byte("## template: jinja")) {
		hostname, err := host.Output(ctx, "hostname -s 2>/dev/null || hostname", nil)
		if err != nil {
			return nil, err
		}
		if res.Hostname = reportedHostname(ctx, hostname); res.Hostname == "" {
			return nil, fmt.Errorf("the host reported no valid host name (see the log), which the jinja template needs; nothing was run")
		}
		plan = nil //nolint:ineffassign // one plan in memory at a time: the first is freed while the second is made
		if plan, err = parseBootstrap(in.Data, in.Format, cloudinit.Vars{Hostname: res.Hostname}); err != nil {
			return nil, err
		}
	}
	workDir := in.WorkingDir
	if workDir == "" {
		workDir = "/tmp"
	}
	// One SSH session: the prerequisites are checked, then the script arrives on stdin, made as it is sent, and the
	// wrapper stores, runs and removes it.
	command := withPrerequisites(hostScript("capr-bootstrap", bootstrapScript, in.Identity, workDir, bootstrapRunScript))
	script := cloudinit.NewScriptReader(plan)
	defer script.Close()
	out, err := host.Output(ctx, command, script)
	started := strings.Contains(out, hostnameMarker)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) {
		switch code := cmdErr.ExitCode; {
		case code == exitPrerequisites:
			return nil, prerequisitesError(cmdErr)
		case code == exitStateUnwritable, code >= 0 && !started && strings.Contains(strings.Join(cmdErr.Tail, "\n"), "No space left on device"):
			return nil, fmt.Errorf("%w: nothing was run; free space in the working directory (%s), /run and /var/lib/capr on the host. Last output: %s",
				ErrHostDiskFull, workDir, outputTail(cmdErr.Tail))
		case code == exitForeignBootstrap:
			return nil, fmt.Errorf("%w: %s names another RemoteMachine; clean the host (kubeadm reset -f or k0s reset) and "+
				"remove %s, %s, %s and %s before using it", ErrHostAlreadyBootstrapped, markerFile, sentinelFile, markerFile, doneFile, failedFile)
		case code == exitStepFailed:
			return nil, fmt.Errorf("%w: step %s failed; it is not run again (delete the Machine, or let a MachineHealthCheck replace it, to get a cleaned host). Last output: %s",
				ErrBootstrapFailed, failedStep(cmdErr.Tail), outputTail(cmdErr.Tail))
		case code == exitAlreadyRan, code == exitCleaned:
			return nil, fmt.Errorf("%w: %s", ErrBootstrapFailed, lastLine(cmdErr.Tail))
		case code >= 0 && started:
			return nil, fmt.Errorf("%w: the run ended with status %d; it is not run again. Last output: %s", ErrBootstrapFailed, code, outputTail(cmdErr.Tail))
		case code >= 0:
			return nil, fmt.Errorf("the bootstrap command failed with status %d before the run started: %s", code, outputTail(cmdErr.Tail))
		}
		// No status: the connection dropped. The run goes on on the host; the next attempt finds its result.
		return nil, fmt.Errorf("%w: the connection to the host ended during the bootstrap; its result is read at the next attempt", sshrunner.ErrUnreachable)
	}
	if err != nil && started && errors.Is(err, sshrunner.ErrTimeout) {
		return nil, fmt.Errorf("%w: it timed out after it started on the host, and was stopped; it is not run again: %w", ErrBootstrapFailed, err)
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if h, ok := strings.CutPrefix(line, hostnameMarker); ok && res.Hostname == "" {
			res.Hostname = reportedHostname(ctx, h)
		}
		if id, ok := strings.CutPrefix(line, machineIDMarker); ok && res.MachineID == "" {
			res.MachineID = validMachineID(id)
		}
	}
	res.Adopted = strings.Contains(out, "capr-adopted")
	return res, nil
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

// prerequisitesError names what prerequisites.sh found missing.
func prerequisitesError(cmdErr *sshrunner.CommandError) error {
	missing := "(unknown)"
	for _, l := range cmdErr.Tail {
		if m, ok := strings.CutPrefix(l, "capr-missing:"); ok {
			missing = strings.TrimSpace(m)
		}
	}
	return fmt.Errorf("%w: missing %s. CAPR needs a POSIX sh, flock and setsid (util-linux), GNU tail with --pid, mktemp, base64, nohup, grep and hostname, and root (log in as root, or set useSudo with passwordless sudo)",
		ErrHostPrerequisites, missing)
}

// outputTail joins the last lines of a command's (redacted) output, without CAPR's own markers.
func outputTail(lines []string) string {
	var keep []string
	for _, l := range lines {
		if !strings.HasPrefix(l, hostnameMarker) && !strings.HasPrefix(l, machineIDMarker) && !strings.HasPrefix(l, stepMarker) {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return "(none)"
	}
	return strings.Join(keep, " | ")
}

func lastLine(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			return strings.TrimPrefix(lines[i], "capr: ")
		}
	}
	return "(no output)"
}

const (
	hostnameMarker  = "capr-hostname="
	machineIDMarker = "capr-machine-id="
)

// machineIDPattern is the shape of /etc/machine-id (systemd's machine-id(5)): 32 lower-case hex digits.
var machineIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// validMachineID returns the machine-id a host reported, or "" when it is not one.
func validMachineID(s string) string {
	s = strings.TrimSpace(s)
	if machineIDPattern.MatchString(s) {
		return s
	}
	return ""
}

// adopt checks, under the bootstrap lock, that the host holds a finished bootstrap whose marker names identity, and
// reports it adopted; it never runs anything else.
func adopt(ctx context.Context, host Host, identity string, res *bootstrapResult) (*bootstrapResult, error) {
	out, err := host.Output(ctx, lockedHostScript("capr-adopt", adoptScript, identity), nil)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) {
		if cmdErr.ExitCode == exitNotAdoptable {
			return nil, fmt.Errorf("%w: it was moved from another management cluster with its host's bootstrap (UID %s), but the host holds no finished bootstrap of %s (%s or %s missing, or %s names another machine); check the host, then delete this RemoteMachine",
				ErrBootstrapNotFound, identity[strings.LastIndex(identity, "/")+1:], identity, sentinelFile, doneFile, markerFile)
		}
		return nil, fmt.Errorf("%w: checking the host's bootstrap failed with status %d: %s", sshrunner.ErrUnreachable, cmdErr.ExitCode, outputTail(cmdErr.Tail))
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), hostnameMarker); ok && res.Hostname == "" {
			res.Hostname = reportedHostname(ctx, h)
		}
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), machineIDMarker); ok && res.MachineID == "" {
			res.MachineID = validMachineID(id)
		}
	}
	res.Adopted = true
	return res, nil
}

const stepMarker = cloudinit.StepMarker

func failedStep(tail []string) string {
	for i := len(tail) - 1; i >= 0; i-- {
		if s, ok := strings.CutPrefix(tail[i], stepMarker); ok {
			return s
		}
	}
	return "(unknown)"
}

// cleanupInput is what a cleanup task needs.
type cleanupInput struct {
	// Identity is the RemoteMachine's namespace/name/UID: the host is cleaned only if its marker names it.
	Identity   string
	Config     sshrunner.Config
	Commands   []string
	WorkingDir string
	// RegenerateHostKeys gives the host new SSH host keys after the cleanup (the pool entry's regenerateHostKeys).
	RegenerateHostKeys bool
}

// defaultCleanup returns the cleanup for a bootstrap config kind.
func defaultCleanup(bootstrapKind string) []string {
	switch {
	case strings.HasPrefix(bootstrapKind, "K0s"):
		return []string{"k0s stop || true", "k0s reset"}
	case bootstrapKind == "KubeadmConfig":
		return []string{"kubeadm reset -f"}
	}
	return []string{"if command -v kubeadm >/dev/null; then kubeadm reset -f; fi", "if command -v k0s >/dev/null; then k0s stop || true; k0s reset; fi"}
}

// runCleanup runs the cleanup commands, then removes the sentinel and CAPR's files (scripts/cleanup.sh). It runs
// under the bootstrap lock (a bootstrap still running finishes first) and only when the host's marker names this
// RemoteMachine; it records the UID as cleaned, so a late bootstrap of it never runs. A host never bootstrapped is
// left as it is; a host holding another bootstrap is an error, so the entry is quarantined rather than handed out
// dirty. With RegenerateHostKeys, the host then gets new SSH host keys in the same session (scripts/hostkeys.sh),
// whether or not it held a bootstrap (a root claimant may have removed CAPR's marker), and runCleanup returns them
// in authorized_keys format.
func runCleanup(ctx context.Context, dial Dialer, in cleanupInput) ([]string, error) {
	host, err := dial(ctx, in.Config)
	if err != nil {
		return nil, err
	}
	defer host.Close()
	workDir := in.WorkingDir
	if workDir == "" {
		workDir = "/tmp"
	}
	args := append([]string{in.Identity, workDir}, in.Commands...)
	err = host.Run(ctx, withPrerequisites(lockedHostScript("capr-cleanup", cleanupScript, args...)), nil)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) {
		switch cmdErr.ExitCode {
		case exitForeignCleanup:
			return nil, fmt.Errorf("%w (%s); it was not cleaned", ErrForeignBootstrap, strings.Join(cmdErr.Tail, " "))
		case exitPrerequisites:
			return nil, prerequisitesError(cmdErr)
		case -1:
			return nil, fmt.Errorf("%w: the connection to the host ended during the cleanup", sshrunner.ErrUnreachable)
		}
		return nil, fmt.Errorf("the cleanup failed with status %d: %s", cmdErr.ExitCode, outputTail(cmdErr.Tail))
	}
	if err != nil || !in.RegenerateHostKeys {
		return nil, err
	}
	return regenerateHostKeys(ctx, host)
}

// hostKeyMarker starts each line in which scripts/hostkeys.sh prints a new public host key.
const hostKeyMarker = "capr-host-key="

// maxHostKeys is how many host keys a host may report, as many as spec.machine.hostKeys holds.
const maxHostKeys = 16

// regenerateHostKeys gives the host new SSH host keys and returns their public halves, as the host printed them in
// the session whose old key was verified.
func regenerateHostKeys(ctx context.Context, host Host) ([]string, error) {
	out, err := host.Output(ctx, hostScript("capr-hostkeys", hostKeysScript), nil)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) {
		if cmdErr.ExitCode == -1 {
			return nil, fmt.Errorf("%w: the connection to the host ended while its SSH host keys were regenerated", sshrunner.ErrUnreachable)
		}
		return nil, fmt.Errorf("regenerating the host's SSH host keys (spec.machine.regenerateHostKeys) failed with status %d: %s",
			cmdErr.ExitCode, outputTail(cmdErr.Tail))
	}
	if err != nil {
		return nil, err
	}
	return parseHostKeyLines(out)
}

// parseHostKeyLines reads the public keys scripts/hostkeys.sh printed: "capr-host-key=<type> <base64 in pieces>".
func parseHostKeyLines(out string) ([]string, error) {
	var keys []string
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), hostKeyMarker)
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			return nil, fmt.Errorf("the host printed a malformed host key line %q", sshrunner.Truncate(line, 200))
		}
		raw, err := base64.StdEncoding.DecodeString(strings.Join(fields[1:], ""))
		if err != nil {
			return nil, fmt.Errorf("the host printed a %s host key that is not base64: %w", sshrunner.Truncate(fields[0], 64), err)
		}
		key, err := ssh.ParsePublicKey(raw)
		if err != nil || key.Type() != fields[0] {
			return nil, fmt.Errorf("the host printed a %s host key that does not parse as one", sshrunner.Truncate(fields[0], 64))
		}
		text := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
		if !slices.Contains(keys, text) {
			keys = append(keys, text)
		}
		if len(keys) > maxHostKeys {
			return nil, fmt.Errorf("the host printed more than %d host keys", maxHostKeys)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("regenerating the host's SSH host keys printed no key")
	}
	return keys, nil
}

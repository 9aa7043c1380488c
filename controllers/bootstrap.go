package controllers

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"strings"

	"al.essio.dev/pkg/shellescape"
	"k8s.io/apimachinery/pkg/types"

	"github.com/capr-project/cluster-api-provider-remote/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/sshrunner/cloudinit"
)

// Files on the host. The sentinel is Cluster API's, in /run, which a reboot empties; CAPR's marker (the UID of the
// RemoteMachine whose bootstrap the host holds, written when it starts) and done record (written when it succeeds)
// live in stateDir, which survives reboots, so a rebooted node is still known as bootstrapped: it is cleaned when
// its RemoteMachine is deleted, never bootstrapped twice, and adopted after clusterctl move. Cleanup removes them.
const (
	runDir       = "/run/cluster-api"
	sentinelFile = runDir + "/bootstrap-success.complete"
	stateDir     = "/var/lib/capr"
	markerFile   = stateDir + "/bootstrap.uid"
	doneFile     = stateDir + "/bootstrap.done"
	lockFile     = runDir + "/capr-bootstrap.lock"
)

// Exit codes of CAPR's scripts on the host that mean something to CAPR.
const (
	exitForeignBootstrap = 97 // bootstrap: the host holds another machine's bootstrap, finished or not
	exitStepFailed       = 98 // bootstrap: a step of the plan failed
	exitNotAdoptable     = 96 // adopt: the host does not hold the bootstrap of the moved RemoteMachine
	exitForeignCleanup   = 95 // cleanup: the host holds a bootstrap that is not this machine's
)

// ErrForeignBootstrap: cleanup found a bootstrap that is not this machine's on the host; the host is quarantined at
// once, without retries.
var ErrForeignBootstrap = errors.New("the host holds a bootstrap that is not this machine's")

// ErrHostAlreadyBootstrapped: the host holds another machine's bootstrap, finished or not (its marker names another
// RemoteMachine).
var ErrHostAlreadyBootstrapped = errors.New("host already bootstrapped by another machine")

// ErrBootstrapNotFound: a RemoteMachine moved by clusterctl found its host without the bootstrap it was moved with.
var ErrBootstrapNotFound = errors.New("the host does not hold this RemoteMachine's bootstrap")

// bootstrapInput is what a bootstrap task needs; it is built by the reconciler and holds no Kubernetes client.
type bootstrapInput struct {
	UID types.UID
	// AdoptOnly adopts a finished bootstrap of UID and never runs one (a copy made by clusterctl move).
	AdoptOnly  bool
	Config     sshrunner.Config
	Data       []byte
	Format     string
	WorkingDir string
}

// bootstrapResult is what a successful bootstrap reports.
type bootstrapResult struct {
	// NewHostKey and NewBastionKey are the keys to pin on first use (AcceptNew), "" when pinned keys were used.
	NewHostKey    string
	NewBastionKey string
	// Adopted is true when the host had already been bootstrapped for this RemoteMachine.
	Adopted bool
	// Hostname is the host's own name.
	Hostname string
}

// runBootstrap runs bootstrap data on a host exactly once. The whole run happens inside one remote command holding
// flock on the host's lock file: a second run (a restarted manager, another replica) waits for the first and then
// finds the sentinel with this RemoteMachine's UID in the marker, and adopts the result instead of running again.
func runBootstrap(ctx context.Context, dial Dialer, in bootstrapInput) (*bootstrapResult, error) {
	res := &bootstrapResult{}
	cfg := in.Config
	cfg.OnNewHostKey = func(bastion bool, key string) {
		if bastion {
			res.NewBastionKey = key
		} else {
			res.NewHostKey = key
		}
	}
	host, err := dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer host.Close()

	if in.AdoptOnly {
		return adopt(ctx, host, in.UID, res)
	}
	// Only jinja templates need the host name before the plan is made; otherwise the run reports it.
	if bytes.HasPrefix(in.Data, []byte("## template: jinja")) {
		hostname, err := host.Output(ctx, "hostname -s 2>/dev/null || hostname", nil)
		if err != nil {
			return nil, err
		}
		res.Hostname = strings.TrimSpace(hostname)
	}
	plan, err := cloudinit.Parse(in.Data, in.Format, cloudinit.Vars{Hostname: res.Hostname})
	if err != nil {
		return nil, err
	}
	workDir := in.WorkingDir
	if workDir == "" {
		workDir = "/tmp"
	}
	// One SSH session: the script arrives on stdin and the wrapper stores, runs and removes it.
	out, err := host.Output(ctx, wrapper(in.UID, workDir), strings.NewReader(planScript(plan)))
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) {
		switch cmdErr.ExitCode {
		case exitForeignBootstrap:
			return nil, fmt.Errorf("%w: %s names another RemoteMachine; clean the host (kubeadm reset -f or k0s reset) and "+
				"remove %s, %s and %s before using it", ErrHostAlreadyBootstrapped, markerFile, sentinelFile, markerFile, doneFile)
		case exitStepFailed:
			return nil, fmt.Errorf("bootstrap step %s failed: %w", failedStep(cmdErr.Tail), err)
		}
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if h, ok := strings.CutPrefix(line, hostnameMarker); ok && res.Hostname == "" {
			res.Hostname = strings.TrimSpace(h)
		}
	}
	res.Adopted = strings.Contains(out, "capr-adopted")
	return res, nil
}

const hostnameMarker = "capr-hostname="

// adopt checks, under the bootstrap lock, that the host holds a finished bootstrap whose marker names uid, and
// reports it adopted; it never runs anything else.
func adopt(ctx context.Context, host Host, uid types.UID, res *bootstrapResult) (*bootstrapResult, error) {
	q := shellescape.Quote
	check := fmt.Sprintf(`if { [ -f %s ] || [ -f %s ]; } && [ "$(cat %s 2>/dev/null)" = %s ]; then echo %s"$(hostname -s 2>/dev/null || hostname)"; exit 0; fi; exit %d`,
		q(sentinelFile), q(doneFile), q(markerFile), q(string(uid)), hostnameMarker, exitNotAdoptable)
	out, err := host.Output(ctx, fmt.Sprintf("mkdir -p %s && flock -o %s sh -c %s", q(runDir), q(lockFile), q(check)), nil)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) && cmdErr.ExitCode == exitNotAdoptable {
		return nil, fmt.Errorf("%w: it was moved from another management cluster as bootstrapped (UID %s), but %s is missing or %s names another machine; check the host, then delete this RemoteMachine or re-create it without the annotation",
			ErrBootstrapNotFound, uid, sentinelFile, markerFile)
	}
	if err != nil {
		return nil, err
	}
	res.Hostname = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), hostnameMarker))
	res.Adopted = true
	return res, nil
}

// wrapper is the remote command around the bootstrap script, which it reads from stdin into a private file in
// workDir. The run itself is detached from the SSH session (its own session, output to a log file on the host) and
// holds flock on the host's lock file: if the connection drops or the manager stops, it goes on to the end, and a
// later run waits for the lock and adopts the result. Inside the lock it adopts a finished bootstrap of the same
// RemoteMachine, refuses another machine's, finished or not (a marker naming another UID), else records the UID,
// runs the script and writes the sentinel; the
// script file is removed either way. The SSH command follows the log and returns the run's exit status; cancelled
// (TERM), it stops the detached run too.
func wrapper(uid types.UID, workDir string) string {
	q := shellescape.Quote
	inner := fmt.Sprintf(`s=%s; m=%s; d=%s; f=$1; trap 'rm -f "$f"' EXIT; trap 'rm -f "$f"; exit 143' HUP INT TERM
if [ -f "$s" ] || [ -f "$d" ]; then
  if [ "$(cat "$m" 2>/dev/null)" = %s ]; then echo capr-adopted; exit 0; fi
  echo "capr: the host was bootstrapped for another machine" >&2; exit %d
fi
if [ -s "$m" ] && [ "$(cat "$m")" != %s ]; then
  echo "capr: the host holds the bootstrap of another machine, which did not finish" >&2; exit %d
fi
echo %s > "$m"
sh "$f" || exit $?
echo success > "$s"; echo %s > "$d"`, q(sentinelFile), q(markerFile), q(doneFile), q(string(uid)), exitForeignBootstrap, q(string(uid)), exitForeignBootstrap, q(string(uid)), q(string(uid)))
	return fmt.Sprintf(`set -e; mkdir -p %[1]s %[4]s `+stateDir+`
f=$(mktemp %[4]s/.capr-bootstrap-%[5]s.XXXXXX); cat > "$f"
echo %[6]s"$(hostname -s 2>/dev/null || hostname)"
log=$(mktemp %[1]s/capr-bootstrap-log.XXXXXX)
set +e
setsid nohup flock -o %[2]s sh -c %[3]s sh "$f" > "$log" 2>&1 < /dev/null &
bg=$!
trap 'kill -TERM -- -$bg 2>/dev/null; rm -f "$f" "$log"; exit 143' TERM INT HUP
tail -s 0.05 -n +1 -f --pid=$bg "$log" &
wait $bg; rc=$?
wait; rm -f "$log" "$f"; exit $rc`, q(runDir), q(lockFile), q(inner), q(workDir), string(uid), hostnameMarker)
}

const stepMarker = "capr-failed-step: "

func failedStep(tail []string) string {
	for i := len(tail) - 1; i >= 0; i-- {
		if s, ok := strings.CutPrefix(tail[i], stepMarker); ok {
			return s
		}
	}
	return "(unknown)"
}

// planScript renders a plan as one shell script: files are written from base64 (atomically, via a temporary file
// beside the target), commands run in order, and the first failing step stops the script and names itself.
func planScript(plan *cloudinit.Plan) string {
	q := shellescape.Quote
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# Written by CAPR; removed when the bootstrap ends.\nfail() { echo \"" + stepMarker + "$1\" >&2; exit " + fmt.Sprint(exitStepFailed) + "; }\n")
	for _, s := range plan.Steps {
		fmt.Fprintf(&b, "# %s\n", s.Source)
		if f := s.File; f != nil {
			dir := path.Dir(f.Path)
			enc := base64.StdEncoding.EncodeToString(f.Content)
			target := q(f.Path)
			if f.Append {
				fmt.Fprintf(&b, "mkdir -p %s && base64 -d >> %s <<'CAPR_EOF' || fail %s\n%s\nCAPR_EOF\n", q(dir), target, q(s.Source), wrap(enc))
				continue
			}
			fmt.Fprintf(&b, "mkdir -p %s && t=$(mktemp %s) && base64 -d > \"$t\" <<'CAPR_EOF' || fail %s\n%s\nCAPR_EOF\n",
				q(dir), q(dir+"/.capr-write.XXXXXX"), q(s.Source), wrap(enc))
			fmt.Fprintf(&b, "chmod %o \"$t\" && { chown %s \"$t\" 2>/dev/null || echo %s >&2; } && mv -f \"$t\" %s || fail %s\n",
				f.Permissions, q(f.Owner), q("capr: owner "+f.Owner+" does not exist yet, keeping root"), target, q(s.Source))
			continue
		}
		if plan.Format == "shell" {
			// Run as its own file, so its #! line chooses the interpreter and it cannot read the rest of this one.
			fmt.Fprintf(&b, "t=$(mktemp) && base64 -d > \"$t\" <<'CAPR_EOF' && chmod 700 \"$t\" || fail %s\n%s\nCAPR_EOF\n", q(s.Source), wrap(base64.StdEncoding.EncodeToString([]byte(s.Command))))
			fmt.Fprintf(&b, "\"$t\" < /dev/null; rc=$?; rm -f \"$t\"; [ $rc -eq 0 ] || fail %s\n", q(s.Source))
			continue
		}
		fmt.Fprintf(&b, "sh -c %s < /dev/null || fail %s\n", q(s.Command), q(s.Source))
	}
	return b.String()
}

func wrap(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}

// cleanupInput is what a cleanup task needs.
type cleanupInput struct {
	UID        types.UID
	Config     sshrunner.Config
	Commands   []string
	WorkingDir string
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

// runCleanup runs the cleanup commands, then removes the sentinel and CAPR's own files. It runs under the
// bootstrap lock (a bootstrap still running finishes first) and only when the host's marker names this
// RemoteMachine. A host never bootstrapped is left as it is; a host holding another bootstrap is an error, so the
// entry is quarantined rather than handed out dirty.
func runCleanup(ctx context.Context, dial Dialer, in cleanupInput) error {
	host, err := dial(ctx, in.Config)
	if err != nil {
		return err
	}
	defer host.Close()
	q := shellescape.Quote
	workDir := in.WorkingDir
	if workDir == "" {
		workDir = "/tmp"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mk=$(cat %s 2>/dev/null || true)\n", q(markerFile))
	fmt.Fprintf(&b, "if [ -z \"$mk\" ] && [ ! -f %s ] && [ ! -f %s ]; then echo 'capr: the host holds no bootstrap; nothing to clean'; exit 0; fi\n", q(sentinelFile), q(doneFile))
	fmt.Fprintf(&b, "if [ \"$mk\" != %s ]; then echo \"capr: marker: ${mk:-none}\" >&2; exit %d; fi\n", q(string(in.UID)), exitForeignCleanup)
	b.WriteString("set -e\n")
	for _, c := range in.Commands {
		b.WriteString(c + "\n")
	}
	fmt.Fprintf(&b, "rm -f %s %s %s %s/.capr-bootstrap-%s.* %s/capr-bootstrap-log.*\n", q(sentinelFile), q(markerFile), q(doneFile), q(workDir), q(string(in.UID)), q(runDir))
	err = host.Run(ctx, fmt.Sprintf("mkdir -p %s && flock -o %s sh -c %s && rm -f %s", q(runDir), q(lockFile), q(b.String()), q(lockFile)), nil)
	var cmdErr *sshrunner.CommandError
	if errors.As(err, &cmdErr) && cmdErr.ExitCode == exitForeignCleanup {
		return fmt.Errorf("%w (%s); it was not cleaned", ErrForeignBootstrap, strings.Join(cmdErr.Tail, " "))
	}
	return err
}

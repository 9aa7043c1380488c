package cloudinit_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path"
	"strings"
	"testing"

	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
)

// planProbe replaces every command the plan script runs with a shell function that records its arguments, and
// runs nothing else: PATH leads nowhere, so a value that escaped its quoting could not run a program either.
const planProbe = `PATH=/nonexistent
rec() { printf '<%s>' "$@" >> "$REC"; printf '\n' >> "$REC"; }
mkdir() { rec mkdir "$@"; }
mktemp() { echo tmpfile; }
base64() { while IFS= read -r _; do :; done; }
chmod() { rec chmod "$@"; }
chown() { rec chown "$@"; }
mv() { rec mv "$@"; return 1; }
sh() { rec sh "$@"; }
`

// FuzzPlanScript renders a plan with arbitrary file paths, owners, contents and step names, runs the script with
// every command replaced by a recorder, and checks that each value reached its command as one whole argument: no
// value escapes its quoting. The failing mv checks the step name reaches the failure message whole too.
func FuzzPlanScript(f *testing.F) {
	f.Add("/etc/kubernetes/admin.conf", "root:root", "apiVersion: v1\n", "write_files[0]", "true")
	f.Add("/etc/a b/'quoted'\"$(touch pwned)\"`x`", "nobody:nogroup; touch pwned", "CAPR_EOF\n$(x)\n", "runcmd[0]'; touch pwned; '", "echo hi")
	f.Add("/x\ny", "a\nb", "\x00\xff", "s\nt", "$(rm -rf .)")
	f.Fuzz(func(t *testing.T, file, owner, content, source, command string) {
		if file == "" || strings.ContainsRune(file+owner+source+command, 0) {
			return // a NUL cannot be in a shell argument
		}
		plan := &cloudinit.Plan{Format: "cloud-config", Steps: []cloudinit.Step{
			{Source: "cmd", Command: command},
			{Source: source, File: &cloudinit.File{Path: file, Content: []byte(content), Permissions: 0o640, Owner: owner}},
		}}
		dir := t.TempDir()
		rec := dir + "/rec"
		cmd := exec.Command("/bin/sh", "-c", planProbe+cloudinit.Script(plan))
		cmd.Dir, cmd.Env = dir, []string{"REC=" + rec}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if err == nil || !errors.As(err, &exit) || exit.ExitCode() != cloudinit.ExitStepFailed {
			t.Fatalf("the script did not stop at the failing mv with %d: %v\nstderr: %s", cloudinit.ExitStepFailed, err, stderr.String())
		}
		data, _ := os.ReadFile(rec)
		got := string(data)
		want := "<sh><-c><" + command + ">\n" +
			"<mkdir><-p><" + path.Dir(file) + ">\n" +
			"<chmod><640><tmpfile>\n" +
			"<chown><" + owner + "><tmpfile>\n" +
			"<mv><-f><tmpfile><" + file + ">\n"
		if got != want {
			t.Fatalf("the commands did not get the values whole:\ngot:  %q\nwant: %q", got, want)
		}
		if !strings.Contains(stderr.String(), cloudinit.StepMarker+source+"\n") && !strings.HasSuffix(stderr.String(), cloudinit.StepMarker+source) {
			t.Fatalf("the failing step is not named whole: %q", stderr.String())
		}
	})
}

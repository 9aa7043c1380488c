package sshhost

import (
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/internal/host"
)

// scriptFiles returns every host script by file name, read from the embedded files and the directory alike, so a
// script added to scripts/ is checked even before it is embedded.
func scriptFiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(osDir("scripts"), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".sh") {
			return err
		}
		b, err := fs.ReadFile(osDir("scripts"), path)
		out[path] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// code returns a script without its comment lines (the comments may name the contract's values).
func code(script string) string {
	var keep []string
	for _, l := range strings.Split(script, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

var contractRef = regexp.MustCompile(`\$\{?(CAPR_[A-Z0-9_]+)`)

// TestScriptsReceiveTheContract fails when a script and the Go contract (package host) differ: a script that writes a
// path, marker or exit code of the contract itself instead of reading its variable, a script that reads a variable
// the contract does not set, or a contract value that no script reads. An edit of one side only (a path changed in
// Go, or in a script) used to leave the other side silently stale.
func TestScriptsReceiveTheContract(t *testing.T) {
	g := NewWithT(t)
	scripts := scriptFiles(t)
	g.Expect(scripts).To(HaveLen(7), "every script in scripts/ is checked")
	embedded := map[string]string{"bootstrap.sh": bootstrapScript, "bootstrap-run.sh": bootstrapRunScript, "adopt.sh": adoptScript,
		"cleanup.sh": cleanupScript, "prerequisites.sh": prerequisitesScript, "facts.sh": factsScript, "hostkeys.sh": hostKeysScript}
	g.Expect(scripts).To(Equal(embedded), "every script in scripts/ is embedded")

	defined := map[string]bool{}
	for _, v := range contractVars {
		g.Expect(defined).NotTo(HaveKey(v.name), "one variable per value")
		defined[v.name] = true
	}
	literals := []string{host.RunDir, host.StateDir, host.HostnameMarker, host.MachineIDMarker, host.HostKeyMarker,
		strings.TrimSpace(host.FactMarker), host.MissingMarker, host.AdoptedMarker, strings.TrimSpace(host.StepMarker),
		host.PlanFilePrefix, host.LogFilePrefix, "bootstrap.uid", "bootstrap.done", "bootstrap.failed", "bootstrap-success.complete", "capr-bootstrap.lock"}
	codes := []int{host.ExitStateUnwritable, host.ExitPrerequisites, host.ExitAlreadyRan, host.ExitCleaned, host.ExitForeignCleanup,
		host.ExitNotAdoptable, host.ExitForeignBootstrap, host.ExitStepFailed}
	used := map[string]bool{}
	for name, script := range scripts {
		body := code(script)
		for _, m := range contractRef.FindAllStringSubmatch(body, -1) {
			g.Expect(defined).To(HaveKey(m[1]), "%s reads %s, which the contract does not set", name, m[1])
			used[m[1]] = true
		}
		for _, l := range literals {
			g.Expect(body).NotTo(ContainSubstring(l), "%s writes %q itself: read the contract's variable instead", name, l)
		}
		for _, c := range codes {
			g.Expect(regexp.MustCompile(`\b`+strconv.Itoa(c)+`\b`).MatchString(body)).To(BeFalse(),
				"%s writes the exit code %d itself: read the contract's variable instead", name, c)
		}
		// The script parses after the contract.
		out, err := exec.Command("sh", "-n", "-c", withContract(script)).CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), "%s: %s", name, out)
	}
	for _, v := range contractVars {
		g.Expect(used).To(HaveKey(v.name), "no script reads %s", v.name)
	}
}

// TestContractValues checks that the shell sees each contract variable with Go's value, and read-only.
func TestContractValues(t *testing.T) {
	g := NewWithT(t)
	want := map[string]string{
		"CAPR_RUN_DIR": host.RunDir, "CAPR_SENTINEL_FILE": host.SentinelFile, "CAPR_STATE_DIR": host.StateDir,
		"CAPR_MARKER_FILE": host.MarkerFile, "CAPR_DONE_FILE": host.DoneFile, "CAPR_FAILED_FILE": host.FailedFile,
		"CAPR_CLEANED_FILE": host.CleanedFile, "CAPR_LOCK_FILE": host.LockFile, "CAPR_PLAN_FILE_PREFIX": host.PlanFilePrefix,
		"CAPR_LOG_FILE_PREFIX":       host.LogFilePrefix,
		"CAPR_EXIT_STATE_UNWRITABLE": "91", "CAPR_EXIT_PREREQUISITES": "92", "CAPR_EXIT_ALREADY_RAN": "93", "CAPR_EXIT_CLEANED": "94",
		"CAPR_EXIT_FOREIGN_CLEANUP": "95", "CAPR_EXIT_NOT_ADOPTABLE": "96", "CAPR_EXIT_FOREIGN_BOOTSTRAP": "97",
		"CAPR_HOSTNAME_MARKER": host.HostnameMarker, "CAPR_MACHINE_ID_MARKER": host.MachineIDMarker, "CAPR_HOST_KEY_MARKER": host.HostKeyMarker,
		"CAPR_FACT_MARKER": host.FactMarker, "CAPR_MISSING_MARKER": host.MissingMarker, "CAPR_ADOPTED_MARKER": host.AdoptedMarker,
	}
	g.Expect(contractVars).To(HaveLen(len(want)))
	for name, value := range want {
		out, err := exec.Command("sh", "-c", contract+`printf '%s|' "$`+name+`"`).CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), string(out))
		g.Expect(string(out)).To(Equal(value+"|"), name)
		out, err = exec.Command("sh", "-c", contract+name+"=x").CombinedOutput()
		g.Expect(err).To(HaveOccurred(), "%s is read-only: %s", name, out)
	}
}

// osDir is the package's directory on disk.
func osDir(dir string) fs.FS { return os.DirFS(dir) }

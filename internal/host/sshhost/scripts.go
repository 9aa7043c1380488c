package sshhost

import (
	_ "embed"
	"strconv"
	"strings"

	"al.essio.dev/pkg/shellescape"

	"github.com/capr-project/cluster-api-provider-remote/internal/host"
)

// The scripts CAPR runs on hosts. They are plain files, checked by shellcheck in `make lint`, and take their
// values as arguments, so no value is ever pasted into a script's text. The host contract (paths, exit codes,
// markers) reaches them as read-only variables set before their text (contract), built from package host.
var (
	//go:embed scripts/bootstrap.sh
	bootstrapScript string
	//go:embed scripts/bootstrap-run.sh
	bootstrapRunScript string
	//go:embed scripts/adopt.sh
	adoptScript string
	//go:embed scripts/cleanup.sh
	cleanupScript string
	//go:embed scripts/prerequisites.sh
	prerequisitesScript string
	//go:embed scripts/facts.sh
	factsScript string
	//go:embed scripts/hostkeys.sh
	hostKeysScript string
)

// contractVars are the values of the host contract every script receives, by variable name.
var contractVars = []struct{ name, value string }{
	{"CAPR_RUN_DIR", host.RunDir},
	{"CAPR_SENTINEL_FILE", host.SentinelFile},
	{"CAPR_STATE_DIR", host.StateDir},
	{"CAPR_MARKER_FILE", host.MarkerFile},
	{"CAPR_DONE_FILE", host.DoneFile},
	{"CAPR_FAILED_FILE", host.FailedFile},
	{"CAPR_CLEANED_FILE", host.CleanedFile},
	{"CAPR_LOCK_FILE", host.LockFile},
	{"CAPR_PLAN_FILE_PREFIX", host.PlanFilePrefix},
	{"CAPR_LOG_FILE_PREFIX", host.LogFilePrefix},
	{"CAPR_EXIT_STATE_UNWRITABLE", strconv.Itoa(host.ExitStateUnwritable)},
	{"CAPR_EXIT_PREREQUISITES", strconv.Itoa(host.ExitPrerequisites)},
	{"CAPR_EXIT_ALREADY_RAN", strconv.Itoa(host.ExitAlreadyRan)},
	{"CAPR_EXIT_CLEANED", strconv.Itoa(host.ExitCleaned)},
	{"CAPR_EXIT_FOREIGN_CLEANUP", strconv.Itoa(host.ExitForeignCleanup)},
	{"CAPR_EXIT_NOT_ADOPTABLE", strconv.Itoa(host.ExitNotAdoptable)},
	{"CAPR_EXIT_FOREIGN_BOOTSTRAP", strconv.Itoa(host.ExitForeignBootstrap)},
	{"CAPR_HOSTNAME_MARKER", host.HostnameMarker},
	{"CAPR_MACHINE_ID_MARKER", host.MachineIDMarker},
	{"CAPR_HOST_KEY_MARKER", host.HostKeyMarker},
	{"CAPR_FACT_MARKER", host.FactMarker},
	{"CAPR_MISSING_MARKER", host.MissingMarker},
	{"CAPR_ADOPTED_MARKER", host.AdoptedMarker},
}

// contract is the shell text that sets contractVars, read-only, before each script.
var contract = func() string {
	var b strings.Builder
	for _, v := range contractVars {
		b.WriteString("readonly " + v.name + "=" + shellescape.Quote(v.value) + "\n")
	}
	return b.String()
}()

// withContract returns a script's text after the contract.
func withContract(script string) string {
	return contract + script
}

// hostScript returns the shell command that runs script, after the contract, with args ($0 is name). Every part
// is quoted.
func hostScript(name, script string, args ...string) string {
	var b strings.Builder
	b.WriteString("sh -c " + shellescape.Quote(withContract(script)) + " " + shellescape.Quote(name))
	for _, a := range args {
		b.WriteString(" " + shellescape.Quote(a))
	}
	return b.String()
}

// lockedHostScript is hostScript run under flock on the host's bootstrap lock (created if missing, never removed).
func lockedHostScript(name, script string, args ...string) string {
	return "mkdir -p " + host.RunDir + " && flock -o " + host.LockFile + " " + hostScript(name, script, args...)
}

// withPrerequisites runs the prerequisite check first, then command.
func withPrerequisites(command string) string {
	return hostScript("capr-prerequisites", prerequisitesScript) + " && " + command
}

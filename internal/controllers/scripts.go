package controllers

import (
	_ "embed"
	"strings"

	"al.essio.dev/pkg/shellescape"
)

// The scripts CAPR runs on hosts. They are plain files, checked by shellcheck in `make lint`, and take their
// values as arguments, so no value is ever pasted into a script's text.
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

// hostScript returns the shell command that runs script with args ($0 is name). Every part is quoted.
func hostScript(name, script string, args ...string) string {
	var b strings.Builder
	b.WriteString("sh -c " + shellescape.Quote(script) + " " + shellescape.Quote(name))
	for _, a := range args {
		b.WriteString(" " + shellescape.Quote(a))
	}
	return b.String()
}

// lockedHostScript is hostScript run under flock on the host's bootstrap lock (created if missing, never removed).
func lockedHostScript(name, script string, args ...string) string {
	return "mkdir -p " + runDir + " && flock -o " + lockFile + " " + hostScript(name, script, args...)
}

// withPrerequisites runs the prerequisite check first, then command.
func withPrerequisites(command string) string {
	return hostScript("capr-prerequisites", prerequisitesScript) + " && " + command
}

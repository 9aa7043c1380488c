package host

import (
	"fmt"
	"strings"

	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// The errors a host service returns for each outcome of the contract, so every implementation words and wraps
// them alike. tail is the last lines of the host's (redacted) output.

// DiskFullError: the host had no room for the plan or the marker; nothing ran.
func DiskFullError(workDir string, tail []string) error {
	return fmt.Errorf("%w: nothing was run; free space in the working directory (%s), %s and %s on the host. Last output: %s",
		ErrHostDiskFull, workDir, RunDir, StateDir, OutputTail(tail))
}

// AlreadyBootstrappedError: the host's marker names another RemoteMachine.
func AlreadyBootstrappedError() error {
	return fmt.Errorf("%w: %s names another RemoteMachine; clean the host (kubeadm reset -f or k0s reset) and "+
		"remove %s, %s, %s and %s before using it", ErrHostAlreadyBootstrapped, MarkerFile, SentinelFile, MarkerFile, DoneFile, FailedFile)
}

// StepFailedError: a step of the plan failed.
func StepFailedError(tail []string) error {
	return fmt.Errorf("%w: step %s failed; it is not run again (delete the Machine, or let a MachineHealthCheck replace it, to get a cleaned host). Last output: %s",
		ErrBootstrapFailed, FailedStep(tail), OutputTail(tail))
}

// RefusedError: the host refused to run this machine's bootstrap again (it ran before, or the host was cleaned).
func RefusedError(tail []string) error {
	return fmt.Errorf("%w: %s", ErrBootstrapFailed, LastLine(tail))
}

// NotAdoptableError: the host holds no finished bootstrap of identity.
func NotAdoptableError(identity string) error {
	return fmt.Errorf("%w: it was moved from another management cluster with its host's bootstrap (UID %s), but the host holds no finished bootstrap of %s (%s or %s missing, or %s names another machine); check the host, then delete this RemoteMachine",
		ErrBootstrapNotFound, identity[strings.LastIndex(identity, "/")+1:], identity, SentinelFile, DoneFile, MarkerFile)
}

// ForeignCleanupError: the cleanup found another machine's bootstrap, and did not clean.
func ForeignCleanupError(tail []string) error {
	return fmt.Errorf("%w (%s); it was not cleaned", ErrForeignBootstrap, strings.Join(tail, " "))
}

// ConnectionLostError: the connection ended while doing what, before its status arrived.
func ConnectionLostError(what string) error {
	return fmt.Errorf("%w: the connection to the host ended %s", sshrunner.ErrUnreachable, what)
}

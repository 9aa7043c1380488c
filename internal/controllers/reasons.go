package controllers

import (
	"errors"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/metrics"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// failure is how the API names one kind of failure.
type failure struct {
	err    error
	reason string
	// terminal: no retry of the same spec can change it.
	terminal bool
	// ssh: a failure of the SSH connection itself, counted in capr_ssh_errors_total.
	ssh bool
}

// failures names CAPR's failures, the first match winning, with one reason wherever they show: a RemoteMachine's
// BootstrapSucceeded condition, a PooledRemoteMachine's Reachable condition, their events and the SSH error metric.
var failures = []failure{
	{err: sshrunner.ErrHostKeyMismatch, reason: infrav1.HostKeyMismatchReason, terminal: true, ssh: true},
	{err: cloudinit.ErrTooLarge, reason: infrav1.BootstrapDataTooLargeReason, terminal: true},
	{err: cloudinit.ErrUnsupported, reason: infrav1.UnsupportedBootstrapFormatReason, terminal: true},
	{err: host.ErrHostAlreadyBootstrapped, reason: infrav1.HostAlreadyBootstrappedReason},
	{err: host.ErrBootstrapNotFound, reason: infrav1.BootstrapNotFoundReason, terminal: true},
	{err: host.ErrBootstrapFailed, reason: infrav1.BootstrapFailedReason, terminal: true},
	{err: host.ErrHostPrerequisites, reason: infrav1.HostPrerequisitesMissingReason},
	{err: host.ErrHostDiskFull, reason: infrav1.HostDiskFullReason},
	{err: ErrMissingSecret, reason: infrav1.WaitingForSecretReason},
	{err: sshrunner.ErrHostKeyUnknown, reason: infrav1.HostKeyUnknownReason, terminal: true, ssh: true},
	{err: sshrunner.ErrAuthFailed, reason: infrav1.AuthFailedReason, ssh: true},
	{err: sshrunner.ErrSudo, reason: infrav1.SudoUnavailableReason, ssh: true},
	{err: sshrunner.ErrUnreachable, reason: infrav1.HostUnreachableReason, ssh: true},
	{err: sshrunner.ErrTimeout, reason: infrav1.HostUnreachableReason, ssh: true},
}

// knownFailure returns the first of failures err is.
func knownFailure(err error) (failure, bool) {
	for _, f := range failures {
		if errors.Is(err, f.err) {
			return f, true
		}
	}
	return failure{}, false
}

// failureReason names err with the API's reason and says whether retrying unchanged is pointless. Anything else (an
// apiserver error, a command that failed before the run started) is HostUnreachable, and tried again.
func failureReason(err error) (string, bool) {
	if f, ok := knownFailure(err); ok {
		return f.reason, f.terminal
	}
	return infrav1.HostUnreachableReason, false
}

// countSSHError counts an SSH failure by reason in capr_ssh_errors_total.
func countSSHError(err error) {
	if f, ok := knownFailure(err); ok && f.ssh {
		metrics.SSHErrorsTotal.WithLabelValues(f.reason).Inc()
	}
}

// isTerminalReason says whether reason names a failure no retry of the same spec can change.
func isTerminalReason(reason string) bool {
	for _, f := range failures {
		if f.reason == reason {
			return f.terminal
		}
	}
	return false
}

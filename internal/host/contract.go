// Package host is the contract between CAPR and the hosts it bootstraps: the files CAPR keeps on a host, the exit
// codes and output lines of its host scripts, the errors they map to, and the requests and results of the host
// service. The SSH implementation (package sshhost) hands these values to its scripts, so they are written once.
package host

import (
	"errors"

	corev1 "k8s.io/api/core/v1"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/provisioning/cloudinit"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
)

// Files on the host. The sentinel is Cluster API's, in /run, which a reboot empties; CAPR's marker (the identity of
// the RemoteMachine whose bootstrap the host holds, written before it starts), done record (written when it
// succeeds), failed record (written when it fails) and cleaned list (the identities whose hosts were cleaned) live
// in StateDir, which survives reboots, so a rebooted node is still known as bootstrapped: it is cleaned when its
// RemoteMachine is deleted, never bootstrapped twice, and adopted after clusterctl move.
const (
	// RunDir holds Cluster API's sentinel, the bootstrap lock and the logs of running bootstraps.
	RunDir = "/run/cluster-api"
	// SentinelFile is Cluster API's record of a successful bootstrap.
	SentinelFile = RunDir + "/bootstrap-success.complete"
	// StateDir holds CAPR's records, which survive reboots.
	StateDir = "/var/lib/capr"
	// MarkerFile names the RemoteMachine whose bootstrap the host holds (written before the run starts).
	MarkerFile = StateDir + "/bootstrap.uid"
	// DoneFile names the RemoteMachine whose bootstrap succeeded.
	DoneFile = StateDir + "/bootstrap.done"
	// FailedFile records the RemoteMachine and status of a bootstrap that failed.
	FailedFile = StateDir + "/bootstrap.failed"
	// CleanedFile lists the RemoteMachines the host was cleaned for, one a line (the last 1000).
	CleanedFile = StateDir + "/cleaned"
	// LockFile is the bootstrap lock: bootstraps, adoptions and cleanups hold it (flock); it is never removed.
	LockFile = RunDir + "/capr-bootstrap.lock"
	// PlanFilePrefix starts the name of the plan file a bootstrap stores in its working directory.
	PlanFilePrefix = ".capr-bootstrap-"
	// LogFilePrefix starts the name of a running bootstrap's log file in RunDir.
	LogFilePrefix = "capr-bootstrap-log."
)

// Exit codes of CAPR's scripts on the host that mean something to CAPR.
const (
	// ExitStateUnwritable: bootstrap: the marker could not be written (disk full); nothing ran.
	ExitStateUnwritable = 91
	// ExitPrerequisites: prerequisites.sh: the host lacks a command CAPR needs.
	ExitPrerequisites = 92
	// ExitAlreadyRan: bootstrap: this machine's bootstrap ran on the host before and did not succeed.
	ExitAlreadyRan = 93
	// ExitCleaned: bootstrap: the host was cleaned for this machine.
	ExitCleaned = 94
	// ExitForeignCleanup: cleanup: the host holds a bootstrap that is not this machine's.
	ExitForeignCleanup = 95
	// ExitNotAdoptable: adopt: the host does not hold the finished bootstrap of the moved RemoteMachine.
	ExitNotAdoptable = 96
	// ExitForeignBootstrap: bootstrap: the host holds another machine's bootstrap, finished or not.
	ExitForeignBootstrap = 97
	// ExitStepFailed: bootstrap: a step of the plan failed (the plan script, package cloudinit, exits with it).
	ExitStepFailed = cloudinit.ExitStepFailed
)

// Lines CAPR's scripts print that CAPR reads.
const (
	// HostnameMarker starts the line with the host's name.
	HostnameMarker = "capr-hostname="
	// MachineIDMarker starts the line with the host's /etc/machine-id.
	MachineIDMarker = "capr-machine-id="
	// HostKeyMarker starts each line with a new public host key: "capr-host-key=<type> <base64 in pieces>".
	HostKeyMarker = "capr-host-key="
	// FactMarker starts each line with a fact of the host: "capr-fact key=value".
	FactMarker = "capr-fact "
	// MissingMarker starts the line listing what prerequisites.sh found missing.
	MissingMarker = "capr-missing:"
	// AdoptedMarker is the line a bootstrap prints when it found this machine's finished run and adopted it.
	AdoptedMarker = "capr-adopted"
	// StepMarker starts the line naming the step of the plan that failed (printed by the plan script).
	StepMarker = cloudinit.StepMarker
	// MessagePrefix starts the scripts' own messages to the person reading an error.
	MessagePrefix = "capr: "
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

// BootstrapRequest is what a bootstrap needs; it holds no Kubernetes client.
type BootstrapRequest struct {
	// Identity is what the host's marker records: the RemoteMachine's namespace/name/UID.
	Identity string
	// Config reaches the host; its key must be pinned.
	Config sshrunner.Config
	// Data and Format are the bootstrap data and its format (cloud-config, a shell script, or Ignition).
	Data   []byte
	Format string
	// WorkingDir is where the plan is stored on the host while it runs (/tmp when empty).
	WorkingDir string
}

// BootstrapResult is what a successful bootstrap or adoption reports.
type BootstrapResult struct {
	// Adopted is true when the host had already been bootstrapped for this RemoteMachine.
	Adopted bool
	// Hostname is the host's own name, empty when it reported none that is valid.
	Hostname string
	// MachineID is the host's /etc/machine-id, empty when it has none or reported something else.
	MachineID string
}

// CleanupRequest is what a cleanup needs.
type CleanupRequest struct {
	// Identity is the RemoteMachine's namespace/name/UID: the host is cleaned only if its marker names it.
	Identity string
	Config   sshrunner.Config
	// Commands run in order before CAPR's files are removed.
	Commands   []string
	WorkingDir string
	// RegenerateHostKeys gives the host new SSH host keys after the cleanup (the pool entry's regenerateHostKeys).
	RegenerateHostKeys bool
}

// ScanResult is a key read by a scan: the host's, or its bastion's when that is not pinned (or no longer matches).
type ScanResult struct {
	Key     string
	Bastion bool
}

// Facts is what a probe measures of a host.
type Facts struct {
	// Capacity holds the host's cpu and memory; nil when neither could be read.
	Capacity corev1.ResourceList
	// NodeInfo holds the host's architecture and operating system by Kubernetes' names.
	NodeInfo infrav1.NodeInfo
}

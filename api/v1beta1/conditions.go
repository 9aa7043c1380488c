package v1beta1

// RemoteMachineTemplate conditions.
const (
	// CapacityKnownCondition is True when the pool probe has measured at least one host of the template's pool, so
	// that status.capacity and status.nodeInfo tell Cluster API's autoscaler what a new machine would have.
	CapacityKnownCondition = "CapacityKnown"
	// MeasuredReason: hosts of the pool were measured.
	MeasuredReason = "Measured"
	// NotMeasuredReason: no host of the pool was measured (the pool probe is off, or has not run yet).
	NotMeasuredReason = "NotMeasured"
)

// Finalizers.
const (
	// RemoteMachineFinalizer keeps a RemoteMachine until its host is cleaned and its pool entry released.
	RemoteMachineFinalizer = "remotemachine.infrastructure.cluster.x-k8s.io"
)

// Condition types and reasons shared by every kind.
const (
	// ReadyCondition summarises an object's other conditions.
	ReadyCondition = "Ready"
	// PausedCondition is True while the object or its Cluster is paused.
	PausedCondition = "Paused"
	// ReadyReason: the object is ready.
	ReadyReason = "Ready"
	// DeletingCondition is True while the object is being deleted (on a RemoteMachine, while its host is cleaned);
	// Ready is False meanwhile, with its reason and message.
	DeletingCondition = "Deleting"
	// NotDeletingReason: the object is not being deleted.
	NotDeletingReason = "NotDeleting"
)

// RemoteMachine conditions.
const (
	// BootstrapSucceededCondition is True once the bootstrap data has run on the host.
	BootstrapSucceededCondition = "BootstrapSucceeded"

	// WaitingForMachineReason: the RemoteMachine has no owner Machine yet.
	WaitingForMachineReason = "WaitingForMachine"
	// WaitingForClusterInfrastructureReason: the Cluster's infrastructure is not provisioned yet.
	WaitingForClusterInfrastructureReason = "WaitingForClusterInfrastructure"
	// WaitingForBootstrapDataReason: the Machine's bootstrap data secret is not ready yet.
	WaitingForBootstrapDataReason = "WaitingForBootstrapData"
	// BootstrappingReason: bootstrap is running on the host.
	BootstrappingReason = "Bootstrapping"
	// BootstrapSucceededReason: bootstrap finished successfully.
	BootstrapSucceededReason = "BootstrapSucceeded"
	// BootstrapFailedReason: the bootstrap ran on the host and failed (a step exited non-zero, or it timed out or
	// was stopped after it started). Terminal: bootstrap data is not idempotent, so it is never run again for this
	// machine; the Machine is replaced (a MachineHealthCheck on InfrastructureReady False does it), and deleting it
	// cleans the host.
	BootstrapFailedReason = "BootstrapFailed"
	// HostKeyMismatchReason: the host (or its bastion) presented a key that is not in hostKeys (terminal: nothing is
	// sent to it). The message names the pinned fingerprint(s), the presented one (SHA256:..., as ssh-keygen -l
	// prints it) and the command that accepts the presented key once, if the host was rebuilt: the annotation
	// infrastructure.cluster.x-k8s.io/accept-host-key=SHA256:... on the RemoteMachine (or on an unclaimed
	// PooledRemoteMachine whose probe met the key). A key is never trusted silently: only the key whose fingerprint
	// equals the annotation's value replaces the pinned ones, once.
	HostKeyMismatchReason = "HostKeyMismatch"
	// HostKeyReplacedReason (event): a person accepted the new key of a rebuilt host with the accept-host-key
	// annotation; CAPR replaced the pinned key(s) with it, consumed the annotation and recorded who accepted it in
	// status.lastHostKeyReplacement.
	HostKeyReplacedReason = "HostKeyReplaced"
	// HostKeyNotAcceptedReason (event): the accept-host-key annotation names a key the host does not present (or
	// the key could not be read); nothing changed, and the pinned keys are still required.
	HostKeyNotAcceptedReason = "HostKeyNotAccepted"
	// UnsupportedBootstrapFormatReason: the bootstrap data cannot be run by CAPR (terminal).
	UnsupportedBootstrapFormatReason = "UnsupportedBootstrapFormat"
	// BootstrapDataTooLargeReason: the bootstrap data decodes (base64, gzip, YAML aliases) to more than CAPR's limit
	// for one bootstrap, 64 MiB; nothing was sent to the host (terminal).
	BootstrapDataTooLargeReason = "BootstrapDataTooLarge"
	// WaitingForSecretReason: the SSH key Secret or the bootstrap data Secret is missing or incomplete.
	WaitingForSecretReason = "WaitingForSecret"
	// HostKeyUnknownReason: hostKeyPolicy is Strict and no host key is pinned (terminal until hostKeys are set).
	HostKeyUnknownReason = "HostKeyUnknown"
	// HostPrerequisitesMissingReason: the host lacks a command CAPR's scripts need (POSIX sh, flock, setsid, GNU
	// tail --pid, ...) or root; retried with backoff, as it may be installed.
	HostPrerequisitesMissingReason = "HostPrerequisitesMissing"
	// HostDiskFullReason: the host had no room for the bootstrap plan (in the working directory) or for CAPR's record
	// of the run (/run, /var/lib/capr), so nothing ran; retried with backoff, as space may be freed.
	HostDiskFullReason = "HostDiskFull"
	// AuthFailedReason: the host refused the SSH key; retried with backoff, as the key Secret may be fixed.
	AuthFailedReason = "AuthFailed"
	// SudoUnavailableReason: the user has no passwordless sudo; retried with backoff, as sudoers may be fixed.
	SudoUnavailableReason = "SudoUnavailable"
	// HostUnreachableReason: the host could not be reached, or the connection ended before the run's result was
	// read; retried with backoff (a run still going on the host is waited for, never started again).
	HostUnreachableReason = "HostUnreachable"
	// HostAlreadyBootstrappedReason: the host carries another machine's bootstrap; retried, so a cleaned host is
	// picked up.
	HostAlreadyBootstrappedReason = "HostAlreadyBootstrapped"
	// FailureDomainMatchedCondition compares the failure domain Cluster API gave the Machine (spec.failureDomain)
	// with the one of the pool entry the RemoteMachine's host came from; it is set on pooled machines when either
	// names one. False means the host is not where Cluster API thinks, and the message names both.
	FailureDomainMatchedCondition = "FailureDomainMatched"
	// FailureDomainMatchedReason: the host is in the Machine's failure domain.
	FailureDomainMatchedReason = "FailureDomainMatched"
	// FailureDomainMismatchReason: the host is in another failure domain than the Machine's.
	FailureDomainMismatchReason = "FailureDomainMismatch"
	// DeletingReason: the RemoteMachine (or RemoteCluster) is being deleted and its host cleaned.
	DeletingReason = "Deleting"
)

// PooledRemoteMachine conditions.
const (
	// ClaimedCondition is True while a RemoteMachine holds the entry.
	ClaimedCondition = "Claimed"
	// ReachableCondition reports the last SSH probe of the host.
	ReachableCondition = "Reachable"
	// ReachableReason: the last probe logged in to the host with a matching host key.
	ReachableReason = "Reachable"
	// ClaimedReason: a RemoteMachine holds the entry.
	ClaimedReason = "Claimed"
	// NotClaimedReason: no RemoteMachine holds the entry.
	NotClaimedReason = "NotClaimed"
	// QuarantinedReason: cleanup of the host failed and a person must check it.
	QuarantinedReason = "Quarantined"
	// CleanupFailedReason: the cleanup commands failed on the host.
	CleanupFailedReason = "CleanupFailed"
	// CleanupSkippedReason: a pooled host's RemoteMachine was deleted with the skip-cleanup annotation after its
	// bootstrap touched the host, so the host went uncleaned and its entry is quarantined, never handed out dirty.
	CleanupSkippedReason = "CleanupSkipped"
	// BootstrapNotFoundReason: a RemoteMachine moved by clusterctl found its host without the bootstrap it was
	// moved with.
	BootstrapNotFoundReason = "BootstrapNotFound"
	// RemoteMachineVanishedReason: the RemoteMachine bound to a claim disappeared without CAPR cleaning its host.
	RemoteMachineVanishedReason = "RemoteMachineVanished"
	// HostLockedCondition is True while the entry holds its host's lock, the Lease that keeps a host in one pool
	// entry cluster-wide.
	HostLockedCondition = "HostLocked"
	// HostLockedReason: the entry holds its host's Lease.
	HostLockedReason = "HostLocked"
	// HostOfferedElsewhereReason: another live entry holds the host's Lease; this entry should be deleted.
	HostOfferedElsewhereReason = "HostOfferedElsewhere"
	// HostKeysRegeneratedReason: the cleanup gave the host new SSH host keys (spec.machine.regenerateHostKeys); the
	// entry is offered again once a probe logged in with them.
	HostKeysRegeneratedReason = "HostKeysRegenerated"
)

// Event reasons (events only: no condition carries them).
const (
	// HostKeyPinnedReason (event): hostKeyPolicy AcceptNew pinned the key the host (or its bastion) presented on
	// first contact.
	HostKeyPinnedReason = "HostKeyPinned"
	// CleanupSucceededReason (event): the cleanup commands ran on the host of a deleted RemoteMachine.
	CleanupSucceededReason = "CleanupSucceeded"
	// ReleasedReason (event): a deleted RemoteMachine's pool entry was returned to its pool.
	ReleasedReason = "Released"
	// OrphanClaimReleasedReason (event): a claim whose RemoteMachine was never stored was released.
	OrphanClaimReleasedReason = "OrphanClaimReleased"
	// NodeProviderIDSetReason (event): CAPR set the providerID on the workload cluster's Node of the host.
	NodeProviderIDSetReason = "NodeProviderIDSet"
	// NodeAmbiguousReason (event): more than one Node of the workload cluster may be the host's, so no providerID
	// was set.
	NodeAmbiguousReason = "NodeAmbiguous"
	// PoolExhaustedReason (event): a RemoteMachine create was refused because its pool had no free entry; the event
	// goes to the MachineSet or control plane that creates the RemoteMachines.
	PoolExhaustedReason = "PoolExhausted"
)

// BootstrapUIDAnnotation records, on a RemoteMachine whose bootstrap was sent to its host, the UID the host's marker
// names: its own UID, set and stored by CAPR before the first run sends anything, so the host counts as touched
// (cleaned, or its entry quarantined, on deletion) whatever fails afterwards. clusterctl move recreates the
// RemoteMachine with a new UID and without status but keeps this annotation, so the copy adopts its host's
// bootstrap (checked over SSH) instead of running it again, and cleans the host when it is deleted. Admission keeps
// it from being changed, or set on a RemoteMachine that claims a new pool entry.
const BootstrapUIDAnnotation = "infrastructure.cluster.x-k8s.io/bootstrap-uid"

// AcceptHostKeyAnnotation, set by a person on a RemoteMachine (or an unclaimed PooledRemoteMachine) whose host was
// rebuilt and now presents a new key, accepts that key once: its value is the key's SHA-256 fingerprint as
// ssh-keygen -l prints it (SHA256:...), copied from the HostKeyMismatch message after checking it on the host. CAPR
// reads the key the host presents; only if its fingerprint equals the value does it replace the pinned key(s)
// (the pool entry's first), then removes the annotation. Another value changes nothing.
const AcceptHostKeyAnnotation = "infrastructure.cluster.x-k8s.io/accept-host-key"

// AcceptHostKeyByAnnotation records who set AcceptHostKeyAnnotation: CAPR's admission webhook sets it to the
// requesting user's name whenever the accept-host-key annotation is set or changed, and removes it with it; a value
// set by hand is overwritten.
const AcceptHostKeyByAnnotation = "infrastructure.cluster.x-k8s.io/accept-host-key-by"

// HostKeysRegeneratedAnnotation is set by CAPR on a PooledRemoteMachine, in the same write that releases it, when
// its cleanup gave the host new SSH host keys (spec.machine.regenerateHostKeys); its value is when (RFC 3339). An
// entry carrying it is not claimed; CAPR removes it once a probe logged in to the host with the new keys.
const HostKeysRegeneratedAnnotation = "infrastructure.cluster.x-k8s.io/host-keys-regenerated"

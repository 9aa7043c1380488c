package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// PooledMachineSpec is the host a pool entry offers. It is copied into the RemoteMachine that claims the entry.
// +kubebuilder:validation:XValidation:rule="has(self.address) && size(self.address) > 0",fieldPath=".address",reason="FieldValueRequired",message="address is required: set it to the machine's IP address or DNS name"
// +kubebuilder:validation:XValidation:rule="has(self.sshKeyRef)",fieldPath=".sshKeyRef",reason="FieldValueRequired",message="sshKeyRef is required: name the Secret whose data key 'value' holds the SSH private key for this machine"
type PooledMachineSpec struct {
	RemoteHost `json:",inline"`

	// regenerateHostKeys gives the host new SSH host keys each time it is cleaned after a RemoteMachine held it,
	// and offers the entry again only once a probe logged in with them. Whoever the host ran for had root on it
	// (bootstrap data runs as root) and could have copied its private host keys, to impersonate the host to the
	// next claimant later; new keys make such a copy useless. After the cleanup commands succeed, in the same SSH
	// session (authenticated with the old pinned key), CAPR removes sshd's keys in /etc/ssh, makes new ones with
	// `ssh-keygen -A`, reads their public halves and makes sshd load them (systemctl reload of an active ssh or
	// sshd unit, else SIGHUP to the pid in /run/sshd.pid, else rc-service sshd reload). The entry's hostKeys are
	// then replaced by the new keys, and the entry waits for a probe (annotation
	// infrastructure.cluster.x-k8s.io/host-keys-regenerated) before it is claimed again. A failure fails the
	// cleanup, which is retried and then quarantines the entry. This is not sanitisation: a root claimant may
	// have changed anything else on the host (binaries, sshd itself, firmware), and pool reuse is not a
	// reinstall; restrict reuse to one cluster (spec.allowedClusters) or reinstall hosts that served an
	// untrusted cluster.
	// +optional
	RegenerateHostKeys bool `json:"regenerateHostKeys,omitempty"`
}

// PooledMachineClaim records which RemoteMachine holds a pool entry, like a PersistentVolume's claimRef.
type PooledMachineClaim struct {
	// name of the RemoteMachine in the same namespace that holds this entry.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// uid of the RemoteMachine, recorded once the RemoteMachine is stored. An entry claimed for a name whose
	// RemoteMachine has another UID is released.
	// +optional
	UID types.UID `json:"uid,omitempty"`

	// claimedAt is when admission claimed the entry; a claim whose RemoteMachine never appears is released after
	// a grace period.
	// +optional
	ClaimedAt *metav1.Time `json:"claimedAt,omitempty"`

	// bootstrapUID is the UID of the RemoteMachine whose bootstrap the host holds, recorded by CAPR before the
	// first run sends anything to the host. A RemoteMachine recreated under this claim (clusterctl move gives it a
	// new UID) is bound to the claim only if it carries this UID in its bootstrap-uid annotation; otherwise the
	// entry is quarantined, never released uncleaned.
	// +optional
	BootstrapUID types.UID `json:"bootstrapUID,omitempty"`

	// clusterName is the Cluster API cluster of the RemoteMachine (its cluster.x-k8s.io/cluster-name label). While
	// that Cluster is paused (clusterctl move creates it paused and resumes it last), a claim whose RemoteMachine
	// is missing waits for it, however long the move takes.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ClusterName string `json:"clusterName,omitempty"`
}

// PooledMachineQuarantine records why an entry was taken out of service after a failed cleanup.
type PooledMachineQuarantine struct {
	// reason is a short machine-readable reason, for example CleanupFailed.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason"`

	// message explains to a person what failed and what to check on the host.
	// +optional
	// +kubebuilder:validation:MaxLength=10240
	Message string `json:"message,omitempty"`

	// since is when the entry was quarantined.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// PooledRemoteMachineSpec is one host offered to RemoteMachines through a pool.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.claimRef) || !has(self.claimRef) || self.pool == oldSelf.pool",fieldPath=".pool",messageExpression="'pool cannot change while the entry is claimed by RemoteMachine ' + oldSelf.claimRef.name"
type PooledRemoteMachineSpec struct {
	// pool is the name of the pool this entry belongs to; RemoteMachines name it in their spec.pool.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Pool string `json:"pool"`

	// machine is the host this entry offers: address, port, user, SSH key and how to manage it.
	// +required
	Machine PooledMachineSpec `json:"machine"`

	// failureDomain is the failure domain the host is in; claims spread a cluster's control-plane machines across
	// failure domains.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	FailureDomain string `json:"failureDomain,omitempty"`

	// allowedClusters, when set, lets only RemoteMachines of these Cluster API clusters (their
	// cluster.x-k8s.io/cluster-name label, in the entry's namespace) claim the entry; empty lets any cluster claim
	// it. A previous claimant had root on the host and may have left anything behind (changed binaries, removed
	// CAPR's markers, kept the host's keys): restricting a host to one cluster keeps what one cluster did to it
	// from reaching another cluster's workloads. It does not protect against a user who may create RemoteMachines
	// in this namespace and labels one with an allowed cluster's name: the namespace stays the tenant boundary.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	AllowedClusters []string `json:"allowedClusters,omitempty"`

	// maintenance keeps the entry from being claimed. An entry already claimed stays with its RemoteMachine.
	// +optional
	Maintenance bool `json:"maintenance,omitempty"`

	// claimRef names the RemoteMachine that holds this entry. Only CAPR sets and clears it.
	// +optional
	ClaimRef *PooledMachineClaim `json:"claimRef,omitempty"`

	// quarantine is set by CAPR when cleaning the host after use failed; a quarantined entry is never claimed.
	// After checking the host, a person returns it to service by removing this field.
	// +optional
	Quarantine *PooledMachineQuarantine `json:"quarantine,omitempty"`
}

// PooledRemoteMachinePhase is where a pool entry is in its lifecycle.
// +kubebuilder:validation:Enum=Available;Claimed;Cleaning;Quarantined;Maintenance;Unreachable
type PooledRemoteMachinePhase string

const (
	// PooledRemoteMachinePhaseAvailable means the entry can be claimed.
	PooledRemoteMachinePhaseAvailable PooledRemoteMachinePhase = "Available"
	// PooledRemoteMachinePhaseClaimed means a RemoteMachine holds the entry.
	PooledRemoteMachinePhaseClaimed PooledRemoteMachinePhase = "Claimed"
	// PooledRemoteMachinePhaseCleaning means the host is being cleaned after its RemoteMachine was deleted, or, with
	// regenerateHostKeys, waits for a probe to log in with the new host keys the cleanup gave it.
	PooledRemoteMachinePhaseCleaning PooledRemoteMachinePhase = "Cleaning"
	// PooledRemoteMachinePhaseQuarantined means cleanup failed and a person must check the host.
	PooledRemoteMachinePhaseQuarantined PooledRemoteMachinePhase = "Quarantined"
	// PooledRemoteMachinePhaseMaintenance means the entry is in maintenance and is not claimed.
	PooledRemoteMachinePhaseMaintenance PooledRemoteMachinePhase = "Maintenance"
	// PooledRemoteMachinePhaseUnreachable means the SSH probe could not reach or log in to the host.
	PooledRemoteMachinePhaseUnreachable PooledRemoteMachinePhase = "Unreachable"
)

// RemoteMachineReference names a RemoteMachine.
type RemoteMachineReference struct {
	// name of the RemoteMachine.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// namespace of the RemoteMachine.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
}

// PooledRemoteMachineStatus is the observed state of a pool entry.
type PooledRemoteMachineStatus struct {
	// phase is where the entry is in its lifecycle.
	// +optional
	Phase PooledRemoteMachinePhase `json:"phase,omitempty"`

	// reserved is true while a RemoteMachine holds the entry (as k0smotron reports it).
	// +optional
	Reserved bool `json:"reserved,omitempty"`

	// machineRef names the RemoteMachine holding the entry (as k0smotron reports it).
	// +optional
	MachineRef *RemoteMachineReference `json:"machineRef,omitempty"`

	// conditions describe the entry's state.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=32
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// lastHostKeyReplacement records the last time a pinned host key (or the bastion's) was replaced because a
	// person accepted a rebuilt host's new key with the infrastructure.cluster.x-k8s.io/accept-host-key annotation:
	// the fingerprints before and after, who accepted it and when.
	// +optional
	LastHostKeyReplacement *HostKeyReplacement `json:"lastHostKeyReplacement,omitempty"`

	// observedGeneration is the generation the status was last computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// capacity is the host's cpu and memory as the pool probe last measured them (nproc, MemTotal).
	// +optional
	Capacity corev1.ResourceList `json:"capacity,omitempty"`

	// nodeInfo is the host's architecture and operating system as the pool probe last measured them (uname).
	// +optional
	NodeInfo NodeInfo `json:"nodeInfo,omitempty,omitzero"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=pooledremotemachines,scope=Namespaced,categories=cluster-api,shortName=prm
// +kubebuilder:metadata:labels={"cluster.x-k8s.io/v1beta1=v1beta1","cluster.x-k8s.io/v1beta2=v1beta1","cluster.x-k8s.io/provider=infrastructure-remote","clusterctl.cluster.x-k8s.io=","clusterctl.cluster.x-k8s.io/move-hierarchy="}
// +kubebuilder:printcolumn:name="Pool",type="string",JSONPath=".spec.pool",description="Pool the entry belongs to"
// +kubebuilder:printcolumn:name="Address",type="string",JSONPath=".spec.machine.address",description="Address of the host"
// +kubebuilder:printcolumn:name="Phase",type="string",JSONPath=".status.phase",description="Lifecycle phase"
// +kubebuilder:printcolumn:name="Machine",type="string",JSONPath=".spec.claimRef.name",description="RemoteMachine holding the entry"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"

// PooledRemoteMachine is an existing host offered to RemoteMachines through a named pool. Its labels in the
// node.cluster.x-k8s.io domain (node.cluster.x-k8s.io/rack, gpu.node.cluster.x-k8s.io/model, ...) describe the
// host: they are copied to the RemoteMachine that claims it and to its Machine, and Cluster API puts them on the
// Node; changing or removing one here changes or removes it there.
type PooledRemoteMachine struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the host offered and its claim.
	// +required
	Spec PooledRemoteMachineSpec `json:"spec"`

	// status is the observed state of the entry.
	// +optional
	Status PooledRemoteMachineStatus `json:"status,omitempty,omitzero"`
}

// GetConditions returns the entry's conditions, for CAPI's conditions utilities.
func (m *PooledRemoteMachine) GetConditions() []metav1.Condition { return m.Status.Conditions }

// SetConditions sets the entry's conditions, for CAPI's conditions utilities.
func (m *PooledRemoteMachine) SetConditions(c []metav1.Condition) { m.Status.Conditions = c }

// +kubebuilder:object:root=true

// PooledRemoteMachineList is a list of PooledRemoteMachines.
type PooledRemoteMachineList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the PooledRemoteMachines.
	Items []PooledRemoteMachine `json:"items"`
}

func init() {
	objectTypes = append(objectTypes, &PooledRemoteMachine{}, &PooledRemoteMachineList{})
}

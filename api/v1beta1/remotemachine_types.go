package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// RemoteMachineSpec says which existing host a Machine runs on and how CAPR reaches it. Either address (and
// sshKeyRef) is given directly, or pool/selector names a pool of PooledRemoteMachines and admission fills the host
// fields from the entry it claims.
// +kubebuilder:validation:XValidation:rule="(has(self.address) && size(self.address) > 0) || has(self.pool) || has(self.selector)",fieldPath=".address",reason="FieldValueRequired",message="address is required: set it to the machine's IP address or DNS name, or set pool (or selector) to take a machine from a PooledRemoteMachine pool"
type RemoteMachineSpec struct {
	RemoteHost `json:",inline"`

	// providerID is the machine's identity for Cluster API, set by CAPR after a successful bootstrap as
	// `remote-machine://<address>:<port>`. It is set once and never changes.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	ProviderID string `json:"providerID,omitempty"`

	// pool names the pool of PooledRemoteMachines (their spec.pool) to take a machine from. When set and address is
	// empty, admission claims a free entry of the pool and fills address, port, user, sshKeyRef and the other host
	// fields from it.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Pool string `json:"pool,omitempty"`

	// selector restricts the pool entries that may be claimed to those whose labels match. With no pool it selects
	// among all PooledRemoteMachines of the namespace.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// pooledRemoteMachineRef names the PooledRemoteMachine this RemoteMachine holds. Admission sets it when it
	// claims a pool entry; the entry is released when the RemoteMachine is deleted.
	// +optional
	PooledRemoteMachineRef *PooledRemoteMachineReference `json:"pooledRemoteMachineRef,omitempty"`
}

// PooledRemoteMachineReference names a PooledRemoteMachine in the same namespace.
type PooledRemoteMachineReference struct {
	// name of the PooledRemoteMachine.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// RemoteMachineInitializationStatus reports the RemoteMachine's initialization (Cluster API contract v1beta2).
// +kubebuilder:validation:MinProperties=1
type RemoteMachineInitializationStatus struct {
	// provisioned is true once the bootstrap data has run successfully on the machine.
	// +optional
	Provisioned *bool `json:"provisioned,omitempty"`
}

// RemoteMachineStatus is the observed state of a RemoteMachine.
type RemoteMachineStatus struct {
	// conditions describe the RemoteMachine's state. Ready summarises the others and is mirrored by Cluster API
	// into the Machine's InfrastructureReady condition.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=32
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// initialization reports when the machine is provisioned (Cluster API contract v1beta2).
	// +optional
	Initialization RemoteMachineInitializationStatus `json:"initialization,omitempty,omitzero"`

	// ready is true once the machine is provisioned (Cluster API contract v1beta1).
	// +optional
	Ready bool `json:"ready,omitempty"`

	// addresses are the machine's addresses: an IP type for an IP address, a DNS type for a name.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Addresses []clusterv1.MachineAddress `json:"addresses,omitempty"`

	// failureDomain is the failure domain of the pool entry the machine was taken from, if it names one.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	FailureDomain string `json:"failureDomain,omitempty"`

	// failureReason is set, with failureMessage, when the bootstrap failed on the host (the BootstrapFailed
	// condition reason), for tools written against the Cluster API v1beta1 contract; Cluster API v1.14 acts on the
	// conditions only.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	FailureReason *string `json:"failureReason,omitempty"`

	// failureMessage explains a terminal failure to a person (Cluster API contract v1beta1).
	// +optional
	// +kubebuilder:validation:MaxLength=10240
	FailureMessage *string `json:"failureMessage,omitempty"`

	// machineID is the host's /etc/machine-id, read over SSH (whose host key is pinned) by the bootstrap. The
	// workload cluster's Node is matched by it (the kubelet reports it in status.nodeInfo.machineID) and by the
	// host name read over SSH, never by an address a kubelet reports.
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{32}$`
	MachineID string `json:"machineID,omitempty"`

	// lastHostKeyReplacement records the last time a pinned host key (or the bastion's) was replaced because a
	// person accepted a rebuilt host's new key with the infrastructure.cluster.x-k8s.io/accept-host-key annotation:
	// the fingerprints before and after, who accepted it and when.
	// +optional
	LastHostKeyReplacement *HostKeyReplacement `json:"lastHostKeyReplacement,omitempty"`

	// observedGeneration is the generation the status was last computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=remotemachines,scope=Namespaced,categories=cluster-api,shortName=rmachine
// +kubebuilder:metadata:labels={"cluster.x-k8s.io/v1beta1=v1beta1","cluster.x-k8s.io/v1beta2=v1beta1","cluster.x-k8s.io/provider=infrastructure-remote","clusterctl.cluster.x-k8s.io="}
// +kubebuilder:printcolumn:name="Cluster",type="string",JSONPath=".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']",description="Cluster the machine belongs to"
// +kubebuilder:printcolumn:name="Machine",type="string",JSONPath=".metadata.ownerReferences[?(@.kind==\"Machine\")].name",description="Machine that owns this RemoteMachine"
// +kubebuilder:printcolumn:name="Address",type="string",JSONPath=".spec.address",description="Address of the host"
// +kubebuilder:printcolumn:name="Pool",type="string",JSONPath=".spec.pool",description="Pool the host was taken from"
// +kubebuilder:printcolumn:name="Provisioned",type="boolean",JSONPath=".status.initialization.provisioned",description="Bootstrap has run on the host"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"

// RemoteMachine is a Cluster API infrastructure machine backed by an existing host reached over SSH.
type RemoteMachine struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says which host to use and how to reach it. The host's address, port, user, sshKeyRef, pool,
	// pooledRemoteMachineRef and providerID never change once set.
	// +kubebuilder:validation:XValidation:rule="!has(oldSelf.address) || size(oldSelf.address) == 0 || (has(self.address) && self.address == oldSelf.address)",fieldPath=".address",message="address cannot change once set; delete the RemoteMachine and create a new one to use another host"
	// +kubebuilder:validation:XValidation:rule="!has(oldSelf.port) || (has(self.port) && self.port == oldSelf.port)",fieldPath=".port",message="port cannot change once set"
	// +kubebuilder:validation:XValidation:rule="!has(oldSelf.user) || (has(self.user) && self.user == oldSelf.user)",fieldPath=".user",message="user cannot change once set"
	// +kubebuilder:validation:XValidation:rule="!has(oldSelf.sshKeyRef) || (has(self.sshKeyRef) && self.sshKeyRef.name == oldSelf.sshKeyRef.name)",fieldPath=".sshKeyRef",message="sshKeyRef cannot change once set; update the key inside the Secret instead"
	// +kubebuilder:validation:XValidation:rule="has(self.pool) == has(oldSelf.pool) && (!has(self.pool) || self.pool == oldSelf.pool)",fieldPath=".pool",message="pool cannot change"
	// +kubebuilder:validation:XValidation:rule="!has(oldSelf.pooledRemoteMachineRef) || (has(self.pooledRemoteMachineRef) && self.pooledRemoteMachineRef == oldSelf.pooledRemoteMachineRef)",fieldPath=".pooledRemoteMachineRef",message="pooledRemoteMachineRef cannot change once set"
	// +kubebuilder:validation:XValidation:rule="!has(oldSelf.providerID) || (has(self.providerID) && self.providerID == oldSelf.providerID)",fieldPath=".providerID",message="providerID is set once by the provider and cannot change"
	// +required
	Spec RemoteMachineSpec `json:"spec"`

	// status is the observed state of the RemoteMachine.
	// +optional
	Status RemoteMachineStatus `json:"status,omitempty,omitzero"`
}

// GetConditions returns the RemoteMachine's conditions, for CAPI's conditions utilities.
func (m *RemoteMachine) GetConditions() []metav1.Condition { return m.Status.Conditions }

// SetConditions sets the RemoteMachine's conditions, for CAPI's conditions utilities.
func (m *RemoteMachine) SetConditions(c []metav1.Condition) { m.Status.Conditions = c }

// +kubebuilder:object:root=true

// RemoteMachineList is a list of RemoteMachines.
type RemoteMachineList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the RemoteMachines.
	Items []RemoteMachine `json:"items"`
}

func init() {
	objectTypes = append(objectTypes, &RemoteMachine{}, &RemoteMachineList{})
}

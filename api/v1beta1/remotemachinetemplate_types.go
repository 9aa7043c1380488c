package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// RemoteMachineTemplateSpec holds the template RemoteMachines are created from.
type RemoteMachineTemplateSpec struct {
	// template is the RemoteMachine each Machine of a MachineDeployment, MachineSet or control plane gets.
	// +required
	Template RemoteMachineTemplateResource `json:"template"`
}

// RemoteMachineTemplateResource is the metadata and spec of the RemoteMachines a template creates.
type RemoteMachineTemplateResource struct {
	// metadata is copied onto the RemoteMachines created from this template.
	// +optional
	ObjectMeta clusterv1.ObjectMeta `json:"metadata,omitempty,omitzero"`

	// spec of the RemoteMachines created from this template; usually just pool (and optionally selector).
	// +required
	Spec RemoteMachineSpec `json:"spec"`
}

// RemoteMachineTemplateStatus is what Cluster API's autoscaler reads to scale a MachineDeployment from zero, as
// measured on the template's pool by CAPR's pool probe, and how many hosts the pool has free.
type RemoteMachineTemplateStatus struct {
	// capacity is what every measured host of the template's pool has at least: cpu and memory (the smallest of
	// the measured hosts, so that a machine the autoscaler plans for fits wherever it lands). It is the field of
	// Cluster API's "autoscaling from zero" contract for infrastructure machine templates.
	// +optional
	Capacity corev1.ResourceList `json:"capacity,omitempty"`

	// nodeInfo is the architecture and operating system of the pool's measured hosts, when they all agree.
	// +optional
	NodeInfo NodeInfo `json:"nodeInfo,omitempty,omitzero"`

	// pool counts the entries of the template's pool: the free ones are the most a MachineDeployment on this
	// template can grow by now.
	// +optional
	Pool *PoolSummary `json:"pool,omitempty"`

	// conditions describe whether capacity is known (CapacityKnown).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=32
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// PoolSummary counts a pool's entries.
type PoolSummary struct {
	// total is the number of entries in the pool (matching the template's selector, if any).
	Total int32 `json:"total"`
	// free is the number of entries a new machine could claim now.
	Free int32 `json:"free"`
	// measured is the number of entries whose hardware the pool probe has measured.
	Measured int32 `json:"measured"`
}

// GetConditions returns the template's conditions.
func (t *RemoteMachineTemplate) GetConditions() []metav1.Condition { return t.Status.Conditions }

// SetConditions sets the template's conditions.
func (t *RemoteMachineTemplate) SetConditions(c []metav1.Condition) { t.Status.Conditions = c }

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=remotemachinetemplates,scope=Namespaced,categories=cluster-api,shortName=rmt
// +kubebuilder:metadata:labels={"cluster.x-k8s.io/v1beta1=v1beta1","cluster.x-k8s.io/v1beta2=v1beta1","cluster.x-k8s.io/provider=infrastructure-remote","clusterctl.cluster.x-k8s.io="}
// +kubebuilder:printcolumn:name="Pool",type="string",JSONPath=".spec.template.spec.pool",description="Pool the machines are taken from"
// +kubebuilder:printcolumn:name="Free",type="integer",JSONPath=".status.pool.free",description="Entries of the pool free now"
// +kubebuilder:printcolumn:name="CPU",type="string",JSONPath=".status.capacity.cpu",description="CPUs every measured host of the pool has"
// +kubebuilder:printcolumn:name="Memory",type="string",JSONPath=".status.capacity.memory",description="Memory every measured host of the pool has"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"

// RemoteMachineTemplate is the template RemoteMachines are created from by MachineDeployments and control planes.
type RemoteMachineTemplate struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec holds the template.
	// +required
	Spec RemoteMachineTemplateSpec `json:"spec"`

	// status reports the pool's measured capacity and free entries.
	// +optional
	Status RemoteMachineTemplateStatus `json:"status,omitempty,omitzero"`
}

// +kubebuilder:object:root=true

// RemoteMachineTemplateList is a list of RemoteMachineTemplates.
type RemoteMachineTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the RemoteMachineTemplates.
	Items []RemoteMachineTemplate `json:"items"`
}

func init() {
	objectTypes = append(objectTypes, &RemoteMachineTemplate{}, &RemoteMachineTemplateList{})
}

package v1beta1

import (
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

// +kubebuilder:object:root=true
// +kubebuilder:resource:path=remotemachinetemplates,scope=Namespaced,categories=cluster-api,shortName=rmt
// +kubebuilder:metadata:labels={"cluster.x-k8s.io/v1beta1=v1beta1","cluster.x-k8s.io/v1beta2=v1beta1","cluster.x-k8s.io/provider=infrastructure-remote","clusterctl.cluster.x-k8s.io="}
// +kubebuilder:printcolumn:name="Pool",type="string",JSONPath=".spec.template.spec.pool",description="Pool the machines are taken from"
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

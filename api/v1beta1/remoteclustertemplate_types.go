package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// RemoteClusterTemplateSpec holds the template RemoteClusters are created from.
type RemoteClusterTemplateSpec struct {
	// template is the RemoteCluster each Cluster of a ClusterClass gets.
	// +required
	Template RemoteClusterTemplateResource `json:"template"`
}

// RemoteClusterTemplateResource is the metadata and spec of the RemoteClusters a template creates.
type RemoteClusterTemplateResource struct {
	// metadata is copied onto the RemoteClusters created from this template.
	// +optional
	ObjectMeta clusterv1.ObjectMeta `json:"metadata,omitempty,omitzero"`

	// spec of the RemoteClusters created from this template.
	// +optional
	Spec RemoteClusterSpec `json:"spec,omitempty,omitzero"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:path=remoteclustertemplates,scope=Namespaced,categories=cluster-api,shortName=rct
// +kubebuilder:metadata:labels={"cluster.x-k8s.io/v1beta1=v1beta1","cluster.x-k8s.io/v1beta2=v1beta1","cluster.x-k8s.io/provider=infrastructure-remote","clusterctl.cluster.x-k8s.io="}
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"

// RemoteClusterTemplate is the template RemoteClusters are created from by ClusterClass.
type RemoteClusterTemplate struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec holds the template.
	// +required
	Spec RemoteClusterTemplateSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// RemoteClusterTemplateList is a list of RemoteClusterTemplates.
type RemoteClusterTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the RemoteClusterTemplates.
	Items []RemoteClusterTemplate `json:"items"`
}

func init() {
	objectTypes = append(objectTypes, &RemoteClusterTemplate{}, &RemoteClusterTemplateList{})
}

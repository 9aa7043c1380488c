package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
)

// RemoteClusterSpec is the infrastructure of a cluster built on existing hosts. There is nothing to create, so
// every field is optional: the seed's `spec:` with no fields is valid.
type RemoteClusterSpec struct {
	// controlPlaneEndpoint is the address clients use to reach the cluster's API server, for example a load
	// balancer or virtual IP in front of the control-plane hosts. When the control plane runs on RemoteMachines it
	// must be set here or on the Cluster (spec.controlPlaneEndpoint).
	// +optional
	ControlPlaneEndpoint clusterv1.APIEndpoint `json:"controlPlaneEndpoint,omitempty,omitzero"`

	// failureDomains are the failure domains of the cluster's hosts (PooledRemoteMachine spec.failureDomain);
	// CAPR reports them in status so Cluster API can spread control-plane machines across them.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=100
	FailureDomains []clusterv1.FailureDomain `json:"failureDomains,omitempty"`
}

// RemoteClusterInitializationStatus reports the RemoteCluster's initialization (Cluster API contract v1beta2).
// +kubebuilder:validation:MinProperties=1
type RemoteClusterInitializationStatus struct {
	// provisioned is true once the cluster's infrastructure is ready: the endpoint is valid or not needed.
	// +optional
	Provisioned *bool `json:"provisioned,omitempty"`
}

// RemoteClusterStatus is the observed state of a RemoteCluster.
type RemoteClusterStatus struct {
	// conditions describe the RemoteCluster's state; Ready summarises them.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=32
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// initialization reports when the cluster's infrastructure is provisioned (Cluster API contract v1beta2).
	// +optional
	Initialization RemoteClusterInitializationStatus `json:"initialization,omitempty,omitzero"`

	// ready is true once the cluster's infrastructure is provisioned (Cluster API contract v1beta1).
	// +optional
	Ready bool `json:"ready,omitempty"`

	// failureDomains lists the failure domains from spec (Cluster API contract v1beta2).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=100
	FailureDomains []clusterv1.FailureDomain `json:"failureDomains,omitempty"`

	// observedGeneration is the generation the status was last computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// deprecated holds status fields in the shapes of older Cluster API contracts.
	// +optional
	Deprecated *RemoteClusterDeprecatedStatus `json:"deprecated,omitempty"`
}

// RemoteClusterDeprecatedStatus holds status fields in the shapes of older Cluster API contracts.
type RemoteClusterDeprecatedStatus struct {
	// v1beta1 holds status fields in the shapes of the Cluster API v1beta1 contract.
	// +optional
	V1Beta1 *RemoteClusterV1Beta1DeprecatedStatus `json:"v1beta1,omitempty"`
}

// RemoteClusterV1Beta1DeprecatedStatus holds status fields in the shapes of the Cluster API v1beta1 contract.
type RemoteClusterV1Beta1DeprecatedStatus struct {
	// failureDomains are status.failureDomains as a map from name to domain, the v1beta1 contract's shape,
	// for tools written against it.
	// +optional
	// +kubebuilder:validation:MaxProperties=100
	FailureDomains map[string]V1Beta1FailureDomain `json:"failureDomains,omitempty"`
}

// V1Beta1FailureDomain is a failure domain in the Cluster API v1beta1 contract's shape: a value of its map, keyed
// by the domain's name.
type V1Beta1FailureDomain struct {
	// controlPlane says whether control-plane machines may be placed in this failure domain.
	// +optional
	ControlPlane bool `json:"controlPlane,omitempty"`

	// attributes are free-form attributes of the failure domain.
	// +optional
	Attributes map[string]string `json:"attributes,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:path=remoteclusters,scope=Namespaced,categories=cluster-api,shortName=rcluster
// +kubebuilder:metadata:labels={"cluster.x-k8s.io/v1beta1=v1beta1","cluster.x-k8s.io/v1beta2=v1beta1","cluster.x-k8s.io/provider=infrastructure-remote","clusterctl.cluster.x-k8s.io="}
// +kubebuilder:printcolumn:name="Cluster",type="string",JSONPath=".metadata.labels['cluster\\.x-k8s\\.io/cluster-name']",description="Cluster this RemoteCluster belongs to"
// +kubebuilder:printcolumn:name="Endpoint",type="string",JSONPath=".spec.controlPlaneEndpoint.host",description="Control-plane endpoint host"
// +kubebuilder:printcolumn:name="Provisioned",type="boolean",JSONPath=".status.initialization.provisioned",description="Infrastructure is ready"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"

// RemoteCluster is the Cluster API infrastructure cluster for clusters built on existing hosts.
type RemoteCluster struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the cluster's infrastructure; it may be empty.
	// +optional
	Spec RemoteClusterSpec `json:"spec,omitempty,omitzero"`

	// status is the observed state of the RemoteCluster.
	// +optional
	Status RemoteClusterStatus `json:"status,omitempty,omitzero"`
}

// GetConditions returns the RemoteCluster's conditions, for CAPI's conditions utilities.
func (c *RemoteCluster) GetConditions() []metav1.Condition { return c.Status.Conditions }

// SetConditions sets the RemoteCluster's conditions, for CAPI's conditions utilities.
func (c *RemoteCluster) SetConditions(conds []metav1.Condition) { c.Status.Conditions = conds }

// +kubebuilder:object:root=true

// RemoteClusterList is a list of RemoteClusters.
type RemoteClusterList struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the RemoteClusters.
	Items []RemoteCluster `json:"items"`
}

func init() {
	objectTypes = append(objectTypes, &RemoteCluster{}, &RemoteClusterList{})
}

// Package v1beta1 holds CAPR's API: RemoteCluster, RemoteClusterTemplate, RemoteMachine, RemoteMachineTemplate and
// PooledRemoteMachine in the infrastructure.cluster.x-k8s.io group.
// +kubebuilder:object:generate=true
// +groupName=infrastructure.cluster.x-k8s.io
package v1beta1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of every CAPR kind.
	GroupVersion = schema.GroupVersion{Group: "infrastructure.cluster.x-k8s.io", Version: "v1beta1"}

	// SchemeBuilder registers CAPR's kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds CAPR's kinds to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

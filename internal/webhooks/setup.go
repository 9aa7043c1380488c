// Package webhooks holds CAPR's admission webhooks: the pool claim when a RemoteMachine is created, validation of
// CAPR's kinds, and the control-plane-endpoint guard on Cluster API's Cluster and control-plane objects.
package webhooks

import (
	"errors"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=selfsubjectreviews,verbs=create
// +kubebuilder:rbac:groups=controlplane.cluster.x-k8s.io,resources=kubeadmcontrolplanes;k0scontrolplanes;k0smotroncontrolplanes,verbs=get
// +kubebuilder:rbac:groups=infrastructure.cluster.x-k8s.io,resources=remoteclusters;remotemachinetemplates;remoteclustertemplates,verbs=get;list;watch

// SetupWithManager registers every CAPR webhook with the manager's webhook server. The claimer's reader needs the
// field indexes of pool.SetupIndexes. namespace is the manager's own, which holds the hosts' Leases.
func SetupWithManager(mgr ctrl.Manager, claimer *pool.Claimer, namespace string) error {
	if namespace == "" {
		return errors.New("the webhooks need the manager's namespace, for the Leases that keep a host in one pool entry")
	}
	locks := pool.NewEndpointLocks(mgr, namespace)
	guard := &EndpointGuard{APIReader: mgr.GetAPIReader(), Mapper: mgr.GetRESTMapper()}
	self := &Identity{Client: mgr.GetClient()}
	for _, w := range []interface{ SetupWebhookWithManager(ctrl.Manager) error }{
		&RemoteMachine{Claimer: claimer, Guard: guard, Identity: self, Locks: locks,
			Exhausted: NewExhaustedNotifier(mgr.GetEventRecorder("remotemachine-webhook"))},
		&PooledRemoteMachine{Locks: locks, Identity: self},
		&RemoteCluster{},
		&RemoteMachineTemplate{Locks: locks, Reader: claimer.Reader, Identity: self},
		&RemoteClusterTemplate{},
		guard,
	} {
		if err := w.SetupWebhookWithManager(mgr); err != nil {
			return err
		}
	}
	return nil
}

package controllers

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/controllers/clustercache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// nodePollInterval is how often a provisioned RemoteMachine looks for its Node until Cluster API has linked it.
const nodePollInterval = 10 * time.Second

// reconcileNodeProviderID sets spec.providerID on the workload cluster's Node of a provisioned RemoteMachine when
// nothing else did (no cloud provider sets it on existing hosts), so Cluster API can match Machine and Node. The
// Node is the one named like the host, or with the host's address.
func (r *RemoteMachineReconciler) reconcileNodeProviderID(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine, cluster *clusterv1.Cluster) (ctrl.Result, error) {
	if r.ClusterCache == nil || machine == nil || cluster == nil || machine.Status.NodeRef.IsDefined() || rm.Spec.ProviderID == "" {
		return ctrl.Result{}, nil
	}
	log := ctrl.LoggerFrom(ctx)
	c, err := r.ClusterCache.GetClient(ctx, client.ObjectKeyFromObject(cluster))
	if err != nil {
		if errors.Is(err, clustercache.ErrClusterNotConnected) {
			return ctrl.Result{RequeueAfter: nodePollInterval}, nil
		}
		return ctrl.Result{}, err
	}
	nodes := &corev1.NodeList{}
	if err := c.List(ctx, nodes); err != nil {
		return ctrl.Result{}, err
	}
	for i := range nodes.Items {
		node := &nodes.Items[i]
		if node.Spec.ProviderID == rm.Spec.ProviderID {
			return ctrl.Result{}, nil
		}
		if !isNodeOf(node, rm) {
			continue
		}
		if node.Spec.ProviderID != "" {
			log.Info("Node of this host already has another providerID; leaving it", "Node", klog.KObj(node), "providerID", node.Spec.ProviderID)
			return ctrl.Result{}, nil
		}
		orig := node.DeepCopy()
		node.Spec.ProviderID = rm.Spec.ProviderID
		log.Info("Setting the Node's providerID", "Node", klog.KObj(node), "providerID", rm.Spec.ProviderID)
		if err := c.Patch(ctx, node, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, "NodeProviderIDSet", "SetProviderID", "Set providerID %s on Node %s", rm.Spec.ProviderID, node.Name)
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: nodePollInterval}, nil
}

// isNodeOf says whether a Node is the RemoteMachine's host: same name as the host, or one of its addresses.
func isNodeOf(node *corev1.Node, rm *infrav1.RemoteMachine) bool {
	for _, a := range rm.Status.Addresses {
		if _, err := checkHostname(a.Address); err == nil && a.Type == clusterv1.MachineHostName && a.Address == node.Name {
			return true
		}
	}
	for _, a := range node.Status.Addresses {
		if a.Address == rm.Spec.Address {
			return true
		}
	}
	return false
}

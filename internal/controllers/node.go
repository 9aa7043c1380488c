package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/controllers/clustercache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host"
)

// nodePollInterval is how often a provisioned RemoteMachine looks for its Node until Cluster API has linked it.
const nodePollInterval = 10 * time.Second

// reconcileNodeProviderID sets spec.providerID on the workload cluster's Node of a provisioned RemoteMachine when
// nothing else did (no cloud provider sets it on existing hosts), so Cluster API can match Machine and Node. The
// Node is the only one matching what the host proved over SSH (isNodeOf).
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
	var candidates []*corev1.Node
	for i := range nodes.Items {
		node := &nodes.Items[i]
		if node.Spec.ProviderID == rm.Spec.ProviderID {
			return ctrl.Result{}, nil
		}
		if isNodeOf(node, rm) {
			candidates = append(candidates, node)
		}
	}
	if len(candidates) > 1 {
		// Cloned hosts may share a machine-id: the host name read over SSH tells them apart.
		var named []*corev1.Node
		for _, n := range candidates {
			if hasHostName(rm, n.Name) {
				named = append(named, n)
			}
		}
		if len(named) == 1 {
			candidates = named
		}
	}
	switch {
	case len(candidates) == 0:
		return ctrl.Result{RequeueAfter: nodePollInterval}, nil
	case len(candidates) > 1:
		// Two Nodes claim to be this host: which is real cannot be told, so neither gets the providerID.
		names := make([]string, 0, len(candidates))
		for _, n := range candidates {
			names = append(names, n.Name)
		}
		msg := fmt.Sprintf("Nodes %s all match the host %s (its name or machine-id); none is given providerID %s until only one does: delete the Nodes that are not this host's",
			strings.Join(names, ", "), hostPort(rm), rm.Spec.ProviderID)
		log.Info("Several Nodes match the host; setting no providerID", "nodes", names)
		r.Recorder.Eventf(rm, nil, corev1.EventTypeWarning, infrav1.NodeAmbiguousReason, "SetProviderID", msg)
		return ctrl.Result{RequeueAfter: nodePollInterval}, nil
	}
	node := candidates[0]
	if node.Spec.ProviderID != "" {
		log.Info("Node of this host already has another providerID; leaving it", "Node", klog.KObj(node), "providerID", node.Spec.ProviderID)
		return ctrl.Result{}, nil
	}
	orig := node.DeepCopy()
	node.Spec.ProviderID = rm.Spec.ProviderID
	log.Info("Setting the Node's providerID", "Node", klog.KObj(node), "providerID", rm.Spec.ProviderID)
	// Conditioned on the Node as read, so a Node changed meanwhile (a rogue kubelet rewriting its status) is read
	// again rather than patched.
	if err := c.Patch(ctx, node, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, infrav1.NodeProviderIDSetReason, "SetProviderID", "Set providerID %s on Node %s", rm.Spec.ProviderID, node.Name)
	return ctrl.Result{}, nil
}

// isNodeOf says whether a Node is the RemoteMachine's host, by what the host told CAPR over SSH (whose key is
// pinned): its machine-id, which the kubelet reports in status.nodeInfo.machineID, or, for a host that reported
// none, its host name. An address a kubelet reports proves nothing (any kubelet may report any address), so it is
// never used.
func isNodeOf(node *corev1.Node, rm *infrav1.RemoteMachine) bool {
	if rm.Status.MachineID != "" {
		return node.Status.NodeInfo.MachineID == rm.Status.MachineID
	}
	return hasHostName(rm, node.Name)
}

// hasHostName says whether name is the (valid) host name the RemoteMachine's host reported over SSH.
func hasHostName(rm *infrav1.RemoteMachine, name string) bool {
	for _, a := range rm.Status.Addresses {
		if _, err := host.CheckHostname(a.Address); err == nil && a.Type == clusterv1.MachineHostName && strings.EqualFold(a.Address, name) {
			return true
		}
	}
	return false
}

package controllers

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/util"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// +kubebuilder:rbac:groups=cluster.x-k8s.io,resources=machines,verbs=patch

// syncHardwareLabels takes a pool entry's hardware labels (pool.HardwareLabels: the node.cluster.x-k8s.io domain)
// to the RemoteMachine holding it and to that RemoteMachine's Machine, from where Cluster API's Machine controller
// syncs them to the Node. Admission copied them at the claim; this keeps them in step when the entry's labels
// change, and removes those taken off the entry. Nothing is written while the Cluster is paused (clusterctl move)
// or to objects being deleted.
func (r *PooledRemoteMachineReconciler) syncHardwareLabels(ctx context.Context, entry *infrav1.PooledRemoteMachine, rm *infrav1.RemoteMachine) error {
	if !rm.DeletionTimestamp.IsZero() {
		return nil
	}
	if paused, err := r.clusterPaused(ctx, rm.Namespace, rm.Labels[clusterv1.ClusterNameLabel]); err != nil || paused {
		return err
	}
	desired := pool.HardwareLabels(entry)
	if err := applyHardwareLabels(ctx, r.Client, r.APIReader, rm, infrav1.GroupVersion.WithKind("RemoteMachine"), desired); err != nil {
		return err
	}
	machine, err := util.GetOwnerMachine(ctx, r.Client, rm.ObjectMeta)
	if err != nil || machine == nil || !machine.DeletionTimestamp.IsZero() {
		// Not owned yet, or not in the cache yet: the Machine's own event brings the entry back (machineToEntry).
		return client.IgnoreNotFound(err)
	}
	return applyHardwareLabels(ctx, r.Client, r.APIReader, machine, clusterv1.GroupVersion.WithKind("Machine"), desired)
}

// applyHardwareLabels makes the hardware labels obj carries under CAPR's field manager (infrav1.
// HardwareLabelsFieldManager) those of desired, with a server-side apply of nothing but those labels: a label CAPR
// applied before and desired no longer has is removed (unless another field manager set it too), and the
// labels others apply (Cluster API's MachineSet applies its template's labels to Machines and RemoteMachines with
// its own field managers) are left alone. A key obj already carries with another value that CAPR did not write
// (a MachineDeployment template's label, say) is not overwritten: the template wins, and CAPR never fights over
// it. Nothing is written when obj already matches.
//
// The manager's cache strips managed fields, so which labels CAPR applied is read from the apiserver (reader), and
// only when obj's cached labels are not already exactly desired.
func applyHardwareLabels(ctx context.Context, c client.Client, reader client.Reader, obj client.Object, gvk schema.GroupVersionKind, desired map[string]string) error {
	if len(obj.GetManagedFields()) == 0 {
		if hasExactly(obj.GetLabels(), desired) {
			return nil
		}
		fresh := &unstructured.Unstructured{}
		fresh.SetGroupVersionKind(gvk)
		if err := reader.Get(ctx, client.ObjectKeyFromObject(obj), fresh); err != nil {
			return client.IgnoreNotFound(err)
		}
		obj = fresh
	}
	mine := labelsManagedBy(obj, infrav1.HardwareLabelsFieldManager)
	current := obj.GetLabels()
	want := map[string]string{}
	var overridden []string
	for k, v := range desired {
		if cur, ok := current[k]; ok && cur != v && !mine[k] {
			overridden = append(overridden, k)
			continue
		}
		want[k] = v
	}
	if len(overridden) > 0 {
		slices.Sort(overridden)
		ctrl.LoggerFrom(ctx).V(4).Info("Hardware labels set otherwise are left as they are", gvk.Kind, klog.KObj(obj), "labels", strings.Join(overridden, ","))
	}
	upToDate := len(want) == len(mine)
	for k, v := range want {
		if cur, ok := current[k]; !ok || cur != v || !mine[k] {
			upToDate = false
		}
	}
	if upToDate {
		return nil
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(obj.GetNamespace())
	u.SetName(obj.GetName())
	// The UID makes the apply fail rather than create an object that was deleted meanwhile.
	u.SetUID(obj.GetUID())
	if len(want) > 0 {
		u.SetLabels(want)
	}
	// Forced: every key applied is absent, has the value wanted, or was CAPR's, so forcing only takes over a key
	// whose co-owner agreed with CAPR's old value (kubectl label, say), which would otherwise conflict forever.
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(infrav1.HardwareLabelsFieldManager), client.ForceOwnership); err != nil {
		return client.IgnoreNotFound(err)
	}
	ctrl.LoggerFrom(ctx).V(2).Info("Applied hardware labels", gvk.Kind, klog.KObj(obj), "labels", strings.Join(slices.Sorted(maps.Keys(want)), ","))
	return nil
}

// hasExactly says whether labels hold every desired label with its value and no other hardware label.
func hasExactly(labels, desired map[string]string) bool {
	for k, v := range desired {
		if labels[k] != v {
			return false
		}
	}
	for k := range labels {
		if _, ok := desired[k]; !ok && pool.IsHardwareLabel(k) {
			return false
		}
	}
	return true
}

// labelsManagedBy returns the label keys a field manager owns on obj through server-side apply.
func labelsManagedBy(obj client.Object, manager string) map[string]bool {
	out := map[string]bool{}
	for _, f := range obj.GetManagedFields() {
		if f.Manager != manager || f.Operation != metav1.ManagedFieldsOperationApply || f.Subresource != "" || f.FieldsV1 == nil {
			continue
		}
		var fields struct {
			Metadata struct {
				Labels map[string]json.RawMessage `json:"f:labels"`
			} `json:"f:metadata"`
		}
		if err := json.Unmarshal(f.FieldsV1.GetRawBytes(), &fields); err != nil {
			continue
		}
		for k := range fields.Metadata.Labels {
			if key, ok := strings.CutPrefix(k, "f:"); ok {
				out[key] = true
			}
		}
	}
	return out
}

// machineToEntry maps a Machine whose infrastructure is a pooled RemoteMachine to the entry it holds, so the
// entry's hardware labels reach a Machine that appears (or loses them) after its RemoteMachine was claimed.
func (r *PooledRemoteMachineReconciler) machineToEntry(ctx context.Context, o client.Object) []reconcile.Request {
	m, ok := o.(*clusterv1.Machine)
	if !ok || m.Spec.InfrastructureRef.Kind != "RemoteMachine" || m.Spec.InfrastructureRef.APIGroup != infrav1.GroupVersion.Group {
		return nil
	}
	rm := &infrav1.RemoteMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.InfrastructureRef.Name}, rm); err != nil || rm.Spec.PooledRemoteMachineRef == nil {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: rm.Namespace, Name: rm.Spec.PooledRemoteMachineRef.Name}}}
}

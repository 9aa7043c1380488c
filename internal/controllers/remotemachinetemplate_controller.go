package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/cluster-api/util/patch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// +kubebuilder:rbac:groups=infrastructure.cluster.x-k8s.io,resources=remotemachinetemplates,verbs=get;list;watch
// +kubebuilder:rbac:groups=infrastructure.cluster.x-k8s.io,resources=remotemachinetemplates/status,verbs=get;update;patch

// RemoteMachineTemplateReconciler reports, on each RemoteMachineTemplate that takes its hosts from a pool, what
// Cluster API's autoscaler reads to scale a MachineDeployment from zero (status.capacity, status.nodeInfo), from
// what the pool probe measured on the pool's hosts, and how many of the pool's entries are free.
type RemoteMachineTemplateReconciler struct {
	Client client.Client
}

// SetupWithManager watches templates and pool entries.
func (r *RemoteMachineTemplateReconciler) SetupWithManager(_ context.Context, mgr ctrl.Manager, options controller.Options) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&infrav1.RemoteMachineTemplate{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&infrav1.PooledRemoteMachine{}, handler.EnqueueRequestsFromMapFunc(r.templatesOfEntry)).
		WithOptions(options).
		Named("remotemachinetemplate").
		Complete(r)
}

// templatesOfEntry maps a pool entry to the templates of its namespace that may take it.
func (r *RemoteMachineTemplateReconciler) templatesOfEntry(ctx context.Context, o client.Object) []reconcile.Request {
	entry, ok := o.(*infrav1.PooledRemoteMachine)
	if !ok {
		return nil
	}
	templates := &infrav1.RemoteMachineTemplateList{}
	if err := r.Client.List(ctx, templates, client.InNamespace(entry.Namespace)); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, t := range templates.Items {
		spec := t.Spec.Template.Spec
		if spec.Pool == entry.Spec.Pool || (spec.Pool == "" && spec.Selector != nil) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&t)})
		}
	}
	return out
}

// Reconcile summarises the template's pool in its status.
func (r *RemoteMachineTemplateReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	t := &infrav1.RemoteMachineTemplate{}
	if err := r.Client.Get(ctx, req.NamespacedName, t); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	spec := t.Spec.Template.Spec
	if spec.Pool == "" && spec.Selector == nil {
		return ctrl.Result{}, nil // a template of direct machines: no pool to report on
	}
	var selector labels.Selector
	if spec.Selector != nil {
		var err error
		if selector, err = metav1.LabelSelectorAsSelector(spec.Selector); err != nil {
			return ctrl.Result{}, nil // refused at admission; nothing to report
		}
	}
	entries := &infrav1.PooledRemoteMachineList{}
	opts := []client.ListOption{client.InNamespace(t.Namespace)}
	if spec.Pool != "" {
		opts = append(opts, client.MatchingFields{pool.IndexPool: spec.Pool})
	}
	if err := r.Client.List(ctx, entries, opts...); err != nil {
		return ctrl.Result{}, err
	}

	helper, err := patch.NewHelper(t, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	defer func() {
		if err := helper.Patch(ctx, t, patch.WithOwnedConditions{Conditions: []string{infrav1.CapacityKnownCondition}}); err != nil {
			retErr = err
		}
	}()
	summary, capacity, info := summarisePool(entries.Items, spec.Pool, selector)
	t.Status.Pool, t.Status.Capacity, t.Status.NodeInfo = summary, capacity, info
	where := fmt.Sprintf("pool %q", spec.Pool)
	if spec.Pool == "" {
		where = "the entries matching the selector"
	}
	if summary.Measured == 0 {
		conditions.Set(t, metav1.Condition{Type: infrav1.CapacityKnownCondition, Status: metav1.ConditionFalse, Reason: infrav1.NotMeasuredReason,
			Message: fmt.Sprintf("No host of %s has been measured yet: the pool probe measures free hosts (run the manager with --pool-probe-interval)", where)})
	} else {
		msg := fmt.Sprintf("%d of %d hosts of %s measured; capacity is the least of them", summary.Measured, summary.Total, where)
		if info.Architecture == "" {
			msg += "; their architectures differ or are not ones Cluster API names, so nodeInfo.architecture is left out"
		}
		conditions.Set(t, metav1.Condition{Type: infrav1.CapacityKnownCondition, Status: metav1.ConditionTrue, Reason: infrav1.MeasuredReason, Message: msg})
	}
	return ctrl.Result{}, nil
}

// summarisePool counts a pool's entries and finds what every measured host has at least: the smallest cpu and
// memory, and the architecture and operating system when all measured hosts agree.
func summarisePool(items []infrav1.PooledRemoteMachine, poolName string, selector labels.Selector) (*infrav1.PoolSummary, corev1.ResourceList, infrav1.NodeInfo) {
	summary := &infrav1.PoolSummary{}
	var capacity corev1.ResourceList
	var info infrav1.NodeInfo
	for i := range items {
		e := &items[i]
		if (poolName != "" && e.Spec.Pool != poolName) || (selector != nil && !selector.Matches(labels.Set(e.Labels))) || !e.DeletionTimestamp.IsZero() {
			continue
		}
		summary.Total++
		if pool.SkipReason(e) == "" {
			summary.Free++
		}
		if len(e.Status.Capacity) == 0 {
			continue
		}
		if summary.Measured == 0 {
			capacity, info = corev1.ResourceList{}, e.Status.NodeInfo
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := e.Status.Capacity[name]; ok {
					capacity[name] = q.DeepCopy()
				}
			}
		} else {
			for name, least := range capacity {
				q, ok := e.Status.Capacity[name]
				if !ok {
					delete(capacity, name) // not known for every measured host
					continue
				}
				if q.Cmp(least) < 0 {
					capacity[name] = q.DeepCopy()
				}
			}
			if e.Status.NodeInfo.Architecture != info.Architecture {
				info.Architecture = ""
			}
			if e.Status.NodeInfo.OperatingSystem != info.OperatingSystem {
				info.OperatingSystem = ""
			}
		}
		summary.Measured++
	}
	if len(capacity) == 0 {
		capacity = nil
	}
	return summary, capacity, info
}

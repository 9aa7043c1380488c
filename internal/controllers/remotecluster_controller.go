package controllers

import (
	"context"

	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/util"
	"sigs.k8s.io/cluster-api/util/patch"
	"sigs.k8s.io/cluster-api/util/paused"
	"sigs.k8s.io/cluster-api/util/predicates"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// +kubebuilder:rbac:groups=infrastructure.cluster.x-k8s.io,resources=remoteclusters;remoteclusters/status,verbs=get;list;watch;update;patch

// RemoteClusterReconciler reports a RemoteCluster provisioned (there is nothing to create for existing hosts) and
// surfaces its failure domains in status for Cluster API.
type RemoteClusterReconciler struct {
	Client           client.Client
	WatchFilterValue string
}

// SetupWithManager registers the controller.
func (r *RemoteClusterReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, options controller.Options) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&infrav1.RemoteCluster{}).
		WithOptions(options).
		WithEventFilter(predicates.ResourceHasFilterLabel(mgr.GetScheme(), ctrl.LoggerFrom(ctx), r.WatchFilterValue)).
		Watches(&clusterv1.Cluster{}, handler.EnqueueRequestsFromMapFunc(util.ClusterToInfrastructureMapFunc(ctx,
			infrav1.GroupVersion.WithKind("RemoteCluster"), mgr.GetClient(), &infrav1.RemoteCluster{}))).
		Complete(r)
}

// Reconcile follows CAPD's shape: fetch, pause, patch helper with a deferred Ready, then the normal path.
func (r *RemoteClusterReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	rc := &infrav1.RemoteCluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, rc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	cluster, err := util.GetOwnerCluster(ctx, r.Client, rc.ObjectMeta)
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if cluster != nil {
		ctx = ctrl.LoggerInto(ctx, ctrl.LoggerFrom(ctx).WithValues("Cluster", klog.KObj(cluster)))
		if isPaused, requeue, err := paused.EnsurePausedCondition(ctx, r.Client, cluster, rc); err != nil || isPaused || requeue {
			return ctrl.Result{}, err
		}
	}
	helper, err := patch.NewHelper(rc, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	defer func() {
		if err := setRemoteClusterReady(rc); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
		patchOnExit(ctx, helper, rc, &retErr, infrav1.ReadyCondition, infrav1.DeletingCondition, infrav1.PausedCondition)
	}()
	if !rc.DeletionTimestamp.IsZero() {
		setDeleting(rc, "")
		return ctrl.Result{}, nil
	}
	// Existing hosts need no infrastructure: the endpoint, when set, was validated at admission; when the
	// control plane runs on RemoteMachines, admission also made sure one is set here or on the Cluster.
	rc.Status.FailureDomains = rc.Spec.FailureDomains
	rc.Status.Deprecated = v1beta1FailureDomains(rc.Spec.FailureDomains)
	rc.Status.Initialization.Provisioned = ptr.To(true)
	rc.Status.Ready = true
	rc.Status.ObservedGeneration = rc.Generation
	return ctrl.Result{}, nil
}

// v1beta1FailureDomains returns failure domains in the v1beta1 contract's map shape, or nil when there are none.
func v1beta1FailureDomains(domains []clusterv1.FailureDomain) *infrav1.RemoteClusterDeprecatedStatus {
	if len(domains) == 0 {
		return nil
	}
	m := make(map[string]infrav1.V1Beta1FailureDomain, len(domains))
	for _, d := range domains {
		m[d.Name] = infrav1.V1Beta1FailureDomain{ControlPlane: ptr.Deref(d.ControlPlane, false), Attributes: d.Attributes}
	}
	return &infrav1.RemoteClusterDeprecatedStatus{V1Beta1: &infrav1.RemoteClusterV1Beta1DeprecatedStatus{FailureDomains: m}}
}

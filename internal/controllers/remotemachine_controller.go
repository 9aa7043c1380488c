// Package controllers holds CAPR's reconcilers. The RemoteMachine controller has two jobs: run the bootstrap data
// on the host over SSH, and clean the host when the RemoteMachine is deleted.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	"sigs.k8s.io/cluster-api/controllers/clustercache"
	"sigs.k8s.io/cluster-api/util"
	"sigs.k8s.io/cluster-api/util/annotations"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/cluster-api/util/patch"
	"sigs.k8s.io/cluster-api/util/paused"
	"sigs.k8s.io/cluster-api/util/predicates"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/metrics"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
)

// +kubebuilder:rbac:groups=infrastructure.cluster.x-k8s.io,resources=remotemachines;remotemachines/status;remotemachines/finalizers,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=infrastructure.cluster.x-k8s.io,resources=pooledremotemachines,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=cluster.x-k8s.io,resources=machines;clusters,verbs=get;list;watch
// Secrets (get: SSH keys, bootstrap data, kubeconfigs) are granted by config/rbac/secrets_role.yaml, apart.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=cluster.x-k8s.io,resources=clusters/status,verbs=get

// errCleanupSkipped: a pooled host was left uncleaned by the skip-cleanup annotation.
var errCleanupSkipped = errors.New("cleanup skipped by the " + SkipCleanupAnnotation + " annotation")

// SkipCleanupAnnotation on a RemoteMachine skips the host cleanup when it is deleted. A pooled host its bootstrap
// touched is then quarantined, not released: the pool's owner decides how its hosts are cleaned.
const SkipCleanupAnnotation = "infrastructure.cluster.x-k8s.io/skip-cleanup"

// hostMarker is the UID the host's marker holds for rm: the UID of the RemoteMachine that bootstrapped it (another
// UID for a copy made by clusterctl move).
func hostMarker(rm *infrav1.RemoteMachine) types.UID {
	if uid := rm.Annotations[infrav1.BootstrapUIDAnnotation]; uid != "" {
		return types.UID(uid)
	}
	return rm.UID
}

// hostIdentity is what the host's marker records for rm: its namespace, name and bootstrap UID. Adoption and cleanup
// need all three to match, so a RemoteMachine of another namespace or name never adopts or cleans a host by
// another's UID (clusterctl move keeps namespace and name, and carries the UID in the bootstrap-uid annotation).
func hostIdentity(rm *infrav1.RemoteMachine) string {
	return rm.Namespace + "/" + rm.Name + "/" + string(hostMarker(rm))
}

// RemoteMachineReconciler bootstraps RemoteMachines' hosts and cleans them on deletion.
type RemoteMachineReconciler struct {
	Client client.Client
	// APIReader reads Secrets directly: CAPR never lists or watches Secrets.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Tasks     *tasks.Runner
	// Hosts reaches the hosts (scan, bootstrap, adoption, cleanup): *sshhost.Service, or a fake in tests.
	Hosts   HostService
	Claimer *pool.Claimer
	// WatchFilterValue limits reconciliation to objects with this cluster.x-k8s.io/watch-filter label value.
	WatchFilterValue string
	// BootstrapTimeout bounds one bootstrap run; CleanupTimeout is how long after deletion cleanup is retried
	// before the pool entry is quarantined.
	BootstrapTimeout time.Duration
	CleanupTimeout   time.Duration
	// RetryInterval is the wait before a bootstrap that failed before anything ran on the host is tried again; it
	// doubles with each failure up to MaxRetryInterval. It is also the wait between cleanup attempts.
	RetryInterval    time.Duration
	MaxRetryInterval time.Duration
	// ClusterCache reaches workload clusters, to set the providerID of the Node; nil skips that.
	ClusterCache clustercache.ClusterCache
	// Written records the manager's writes (Client must be Written.Client): a RemoteMachine the cache shows older
	// than the manager's last write of it waits for the cache. The manager shares one with every reconciler; nil
	// makes one for this reconciler alone.
	Written *WrittenVersions

	// retries maps a RemoteMachine's UID to the backoff of its failed attempts. Terminal failures are not here:
	// they are the BootstrapSucceeded condition itself (see terminalFailure), which survives a restart.
	retries    sync.Map
	moveLabels moveLabeller
	// acceptTried maps a RemoteMachine's UID to the accept-host-key value last compared with the key its host
	// presents and found to name another key: it is not compared again until it changes.
	acceptTried sync.Map
	// cleanupMismatch holds the UIDs of RemoteMachines being deleted whose cleanup stopped on a host key mismatch:
	// the accept-host-key annotation re-pins their host, as it does before the bootstrap.
	cleanupMismatch sync.Map
	// newHostKeys maps the UID of a RemoteMachine being deleted to the SSH host keys its cleanup gave the host
	// (spec.machine.regenerateHostKeys of its pool entry), until the entry is released with them: a failed release
	// is retried with them, not by cleaning (and re-keying) the host again.
	newHostKeys sync.Map
	// deletionSeen holds the UIDs of RemoteMachines being deleted whose tasks were cancelled (see stopTasks).
	deletionSeen sync.Map
}

// retryGate holds back a failed attempt until notBefore; attempts counts the failures in a row.
type retryGate struct {
	notBefore time.Time
	attempts  int
}

// backoff records one more failure of key and returns the wait before the next attempt: RetryInterval, doubled
// with each failure in a row, up to MaxRetryInterval.
func (r *RemoteMachineReconciler) backoff(key string) time.Duration {
	gate := retryGate{}
	if v, ok := r.retries.Load(key); ok {
		gate = v.(retryGate)
	}
	gate.attempts++
	d := r.RetryInterval << min(gate.attempts-1, 16)
	if d <= 0 || d > r.MaxRetryInterval {
		d = r.MaxRetryInterval
	}
	gate.notBefore = time.Now().Add(d)
	r.retries.Store(key, gate)
	return d
}

// terminalFailure says whether rm's bootstrap failed in a way that waits for a person: the condition records a
// terminal reason for the current generation. A changed spec (say, replaced hostKeys) tries again; for
// BootstrapFailed the host itself then refuses to run the data twice, so the Machine is replaced (by a
// MachineHealthCheck, or by hand), never re-run.
func terminalFailure(rm *infrav1.RemoteMachine) bool {
	c := conditions.Get(rm, infrav1.BootstrapSucceededCondition)
	return c != nil && c.Status == metav1.ConditionFalse && isTerminalReason(c.Reason) && c.ObservedGeneration == rm.Generation
}

// SetupWithManager registers the controller.
func (r *RemoteMachineReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, options controller.Options) error {
	if r.BootstrapTimeout == 0 {
		r.BootstrapTimeout = 30 * time.Minute
	}
	if r.CleanupTimeout == 0 {
		r.CleanupTimeout = 10 * time.Minute
	}
	if r.RetryInterval == 0 {
		r.RetryInterval = 20 * time.Second
	}
	if r.MaxRetryInterval == 0 {
		r.MaxRetryInterval = 10 * time.Minute
	}
	if r.Written == nil {
		r.Written = NewWrittenVersions(mgr.GetScheme(), &infrav1.RemoteMachine{})
		r.Client = r.Written.Client(r.Client)
	}
	log := ctrl.LoggerFrom(ctx)
	clusterToMachines, err := util.ClusterToTypedObjectsMapper(mgr.GetClient(), &infrav1.RemoteMachineList{}, mgr.GetScheme())
	if err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&infrav1.RemoteMachine{}).
		WithOptions(options).
		WithEventFilter(predicates.ResourceHasFilterLabel(mgr.GetScheme(), log, r.WatchFilterValue)).
		Watches(&clusterv1.Machine{}, handler.EnqueueRequestsFromMapFunc(util.MachineToInfrastructureMapFunc(infrav1.GroupVersion.WithKind("RemoteMachine")))).
		Watches(&clusterv1.Cluster{}, handler.EnqueueRequestsFromMapFunc(clusterToMachines)).
		WatchesRawSource(source.Channel(r.Tasks.Events, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// Reconcile follows CAPD's shape: fetch, pause, finalizer, patch helper with a deferred summary, then normal or
// delete.
func (r *RemoteMachineReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	log := ctrl.LoggerFrom(ctx)
	rm := &infrav1.RemoteMachine{}
	if err := r.Client.Get(ctx, req.NamespacedName, rm); err != nil {
		if apierrors.IsNotFound(err) {
			rm.Namespace, rm.Name = req.Namespace, req.Name
			r.Written.Forget(rm)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	// The cache has not caught up with this manager's last write of rm: acting now would repeat or undo it. The
	// cache's update enqueues rm again.
	if r.Written.Behind(rm) {
		return ctrl.Result{RequeueAfter: cacheCatchUp}, nil
	}
	machine, err := util.GetOwnerMachine(ctx, r.Client, rm.ObjectMeta)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	var cluster *clusterv1.Cluster
	if machine != nil {
		log = log.WithValues("Machine", klog.KObj(machine), "Cluster", klog.KRef(rm.Namespace, machine.Spec.ClusterName))
		ctx = ctrl.LoggerInto(ctx, log)
		if cluster, err = util.GetClusterFromMetadata(ctx, r.Client, machine.ObjectMeta); err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
	}
	recordOnly := false
	if cluster != nil && rm.DeletionTimestamp.IsZero() {
		isPaused, requeue, err := paused.EnsurePausedCondition(ctx, r.Client, cluster, rm)
		if err != nil || requeue {
			return ctrl.Result{}, err
		}
		// Paused (clusterctl move pauses the Cluster, then waits for block-move to go): nothing starts, but a run
		// that ends is recorded, and its block-move removed, so the move carries its result.
		if isPaused && !r.Tasks.Done(string(rm.UID), tasks.Bootstrap) && !r.Tasks.Done(string(rm.UID), tasks.Scan) {
			return ctrl.Result{}, nil
		}
		recordOnly = isPaused
	}

	helper, err := patch.NewHelper(rm, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	defer func() {
		if err := setRemoteMachineReady(rm); err != nil {
			retErr = kerrors.NewAggregate([]error{retErr, err})
		}
		rm.Status.ObservedGeneration = rm.Generation
		patchOnExit(ctx, helper, rm, &retErr, infrav1.ReadyCondition, infrav1.DeletingCondition, infrav1.BootstrapSucceededCondition, infrav1.PausedCondition, infrav1.FailureDomainMatchedCondition)
	}()

	if !rm.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, rm, machine)
	}
	if recordOnly {
		if res, ok := r.Tasks.Take(string(rm.UID), tasks.Bootstrap); ok {
			return r.bootstrapFinished(ctx, rm, res)
		}
		if res, ok := r.Tasks.Take(string(rm.UID), tasks.Scan); ok {
			return r.scanFinished(ctx, rm, res)
		}
		return ctrl.Result{}, nil
	}
	if controllerutil.AddFinalizer(rm, infrav1.RemoteMachineFinalizer) {
		return ctrl.Result{}, nil
	}
	return r.reconcileNormal(ctx, rm, machine, cluster)
}

// patchOnExit patches obj through its helper, owning the given conditions, and adds a failure to *retErr. It is
// deferred by every reconciler.
func patchOnExit(ctx context.Context, helper *patch.Helper, obj client.Object, retErr *error, owned ...string) {
	if err := helper.Patch(ctx, obj, patch.WithOwnedConditions{Conditions: owned}); err != nil {
		*retErr = kerrors.NewAggregate([]error{*retErr, err})
	}
}

func setBootstrapCondition(rm *infrav1.RemoteMachine, status metav1.ConditionStatus, reason, message string) {
	conditions.Set(rm, metav1.Condition{Type: infrav1.BootstrapSucceededCondition, Status: status, Reason: reason, Message: message})
}

func (r *RemoteMachineReconciler) reconcileNormal(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine, cluster *clusterv1.Cluster) (ctrl.Result, error) {
	r.moveLabels.ensure(ctx, r.Client, r.APIReader, rm.Namespace, &rm.Spec.RemoteHost)
	r.reconcileFailureDomain(ctx, rm, machine)
	if ptr.Deref(rm.Status.Initialization.Provisioned, false) {
		return r.reconcileProvisioned(ctx, rm, machine, cluster)
	}
	// A copy made by clusterctl move only adopts its host's finished bootstrap, and needs no bootstrap data.
	adoptOnly := hostMarker(rm) != rm.UID
	if !adoptOnly && !bootstrapCanStart(rm, machine, cluster) {
		return ctrl.Result{}, nil
	}
	if res, handled, err := r.reconcileTasks(ctx, rm); handled {
		return res, err
	}
	if res, held := r.holdBack(rm); held {
		return res, nil
	}
	return r.startProvisioning(ctx, rm, machine, adoptOnly)
}

// reconcileProvisioned keeps a provisioned RemoteMachine's record (bootstrap-uid, no block-move, BootstrapSucceeded)
// and sets the providerID on its Node.
func (r *RemoteMachineReconciler) reconcileProvisioned(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine, cluster *clusterv1.Cluster) (ctrl.Result, error) {
	r.Tasks.Take(string(rm.UID), tasks.Bootstrap) // a late result of a run that adopted this one's
	if _, ok := rm.Annotations[infrav1.BootstrapUIDAnnotation]; !ok {
		annotations.AddAnnotations(rm, map[string]string{infrav1.BootstrapUIDAnnotation: string(rm.UID)})
	}
	delete(rm.Annotations, clusterctlv1.BlockMoveAnnotation)
	if !conditions.IsTrue(rm, infrav1.BootstrapSucceededCondition) {
		setBootstrapCondition(rm, metav1.ConditionTrue, infrav1.BootstrapSucceededReason, "Bootstrap succeeded on "+hostPort(rm))
	}
	return r.reconcileNodeProviderID(ctx, rm, machine, cluster)
}

// bootstrapCanStart says whether the Machine, the Cluster's infrastructure and the bootstrap data are there; if not,
// BootstrapSucceeded says which one is waited for.
func bootstrapCanStart(rm *infrav1.RemoteMachine, machine *clusterv1.Machine, cluster *clusterv1.Cluster) bool {
	switch {
	case machine == nil:
		setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.WaitingForMachineReason, "Waiting for a Machine to own this RemoteMachine")
	case cluster == nil || !ptr.Deref(cluster.Status.Initialization.InfrastructureProvisioned, false):
		setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.WaitingForClusterInfrastructureReason, "Waiting for the Cluster's infrastructure to be provisioned")
	case machine.Spec.Bootstrap.DataSecretName == nil:
		setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.WaitingForBootstrapDataReason, "Waiting for the bootstrap provider to write the bootstrap data")
	default:
		return true
	}
	return false
}

// reconcileTasks records a finished scan, bootstrap or key acceptance, waits for a running one, and starts a key
// acceptance a person asked for; handled says that it did one of these, and reconcileNormal stops there.
func (r *RemoteMachineReconciler) reconcileTasks(ctx context.Context, rm *infrav1.RemoteMachine) (_ ctrl.Result, handled bool, _ error) {
	key := string(rm.UID)
	if res, ok := r.Tasks.Take(key, tasks.Scan); ok {
		out, err := r.scanFinished(ctx, rm, res)
		return out, true, err
	}
	if res, ok := r.Tasks.Take(key, tasks.Bootstrap); ok {
		out, err := r.bootstrapFinished(ctx, rm, res)
		return out, true, err
	}
	if res, ok := r.Tasks.Take(key, tasks.Accept); ok {
		out, err := r.acceptFinished(ctx, rm, res)
		return out, true, err
	}
	if r.Tasks.Running(key, tasks.Bootstrap) || r.Tasks.Running(key, tasks.Scan) || r.Tasks.Running(key, tasks.Accept) {
		return ctrl.Result{}, true, nil
	}
	// A person accepted the new key of a rebuilt host: compare it with the key the host presents.
	started, err := r.startAccept(ctx, rm)
	return ctrl.Result{}, started || err != nil, err
}

// holdBack says whether nothing may start now: a terminal failure waits for a person, a failed attempt for its
// backoff. (A cache behind this manager's own writes, such as a pinned key or a success, held the whole reconcile
// back already: see Written.)
func (r *RemoteMachineReconciler) holdBack(rm *infrav1.RemoteMachine) (_ ctrl.Result, held bool) {
	if terminalFailure(rm) {
		return ctrl.Result{}, true // waits for a person: a changed spec, or the Machine replaced
	}
	if v, ok := r.retries.Load(string(rm.UID)); ok && time.Now().Before(v.(retryGate).notBefore) {
		return ctrl.Result{RequeueAfter: time.Until(v.(retryGate).notBefore)}, true
	}
	return ctrl.Result{}, false
}

// startProvisioning starts the next task on rm's host: a scan that pins its key on first contact, else the
// bootstrap (or, for a moved copy, the adoption of its result), once the host counts as touched.
func (r *RemoteMachineReconciler) startProvisioning(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine, adoptOnly bool) (ctrl.Result, error) {
	key := string(rm.UID)
	in, err := r.bootstrapInput(ctx, rm, machine, adoptOnly)
	if err != nil {
		if errors.Is(err, ErrMissingSecret) {
			setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.WaitingForSecretReason, err.Error())
			return ctrl.Result{RequeueAfter: r.RetryInterval}, nil
		}
		return ctrl.Result{}, err
	}
	if needsPin(&rm.Spec.RemoteHost) {
		// First contact: read the key, and store it in spec before any connection carries data or a command.
		cfg, hosts := in.Config, r.Hosts
		r.Tasks.Start(ctx, key, tasks.Scan, rm, func(ctx context.Context) (any, error) {
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			res, err := hosts.Scan(ctx, cfg)
			countSSHError(err)
			return res, err
		})
		setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.BootstrappingReason, "Reading the host key of "+hostPort(rm)+" to pin it")
		return ctrl.Result{}, nil
	}
	touched, err := r.recordTouched(ctx, rm, adoptOnly)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !touched {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	ctrl.LoggerFrom(ctx).Info("Running bootstrap", "address", rm.Spec.Address, "adoptOnly", adoptOnly)
	timeout, hosts := r.BootstrapTimeout, r.Hosts
	r.Tasks.Start(ctx, key, tasks.Bootstrap, rm, func(ctx context.Context) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		var res *host.BootstrapResult
		var err error
		if adoptOnly {
			res, err = hosts.Adopt(ctx, in.Config, in.Identity)
		} else {
			res, err = hosts.Bootstrap(ctx, in)
		}
		metrics.BootstrapDuration.Observe(time.Since(start).Seconds())
		countSSHError(err)
		return res, err
	})
	setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.BootstrappingReason, "Running the bootstrap data on "+hostPort(rm))
	return ctrl.Result{}, nil
}

// recordTouched records, before a bootstrap sends anything, that rm's host holds rm's bootstrap: on the pool entry's
// claim, so a RemoteMachine recreated under the claim without it never takes the host over, nor releases it
// uncleaned; and in rm's bootstrap-uid and block-move annotations, stored first (touched is false until they are):
// a deletion then cleans or quarantines the host whatever happens next, clusterctl move carries the record, and it
// waits for the run to end. A moved copy records nothing: it only adopts.
func (r *RemoteMachineReconciler) recordTouched(ctx context.Context, rm *infrav1.RemoteMachine, adoptOnly bool) (touched bool, _ error) {
	if adoptOnly {
		return true, nil
	}
	if err := r.recordBootstrapOnEntry(ctx, rm); err != nil {
		return false, err
	}
	if rm.Annotations[infrav1.BootstrapUIDAnnotation] != string(rm.UID) || !hasAnnotation(rm, clusterctlv1.BlockMoveAnnotation) {
		annotations.AddAnnotations(rm, map[string]string{infrav1.BootstrapUIDAnnotation: string(rm.UID), clusterctlv1.BlockMoveAnnotation: ""})
		return false, nil
	}
	return true, nil
}

// reconcileFailureDomain says whether the pooled host is in the failure domain Cluster API gave the Machine. The
// claim follows Cluster API's choice where it can (see the RemoteMachine webhook); KubeadmControlPlane breaks ties
// at random, and a pool may have no free host in the domain asked for: then the condition names both.
func (r *RemoteMachineReconciler) reconcileFailureDomain(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine) {
	ref := rm.Spec.PooledRemoteMachineRef
	if machine == nil || ref == nil {
		return
	}
	entry := &infrav1.PooledRemoteMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: rm.Namespace, Name: ref.Name}, entry); err != nil {
		return
	}
	want, have := machine.Spec.FailureDomain, entry.Spec.FailureDomain
	switch {
	case want == "" && have == "":
		conditions.Delete(rm, infrav1.FailureDomainMatchedCondition)
	case want == have:
		conditions.Set(rm, metav1.Condition{Type: infrav1.FailureDomainMatchedCondition, Status: metav1.ConditionTrue, Reason: infrav1.FailureDomainMatchedReason,
			Message: fmt.Sprintf("The host (PooledRemoteMachine %s) is in failure domain %q, as Machine %s asks", entry.Name, have, machine.Name)})
	default:
		msg := fmt.Sprintf("Machine %s asks for failure domain %q, but its host (PooledRemoteMachine %s) is in failure domain %q", machine.Name, want, entry.Name, have)
		if c := conditions.Get(rm, infrav1.FailureDomainMatchedCondition); c == nil || c.Message != msg {
			r.Recorder.Eventf(rm, machine, corev1.EventTypeWarning, infrav1.FailureDomainMismatchReason, "Claim", msg)
		}
		conditions.Set(rm, metav1.Condition{Type: infrav1.FailureDomainMatchedCondition, Status: metav1.ConditionFalse, Reason: infrav1.FailureDomainMismatchReason, Message: msg})
	}
}

func hasAnnotation(obj client.Object, key string) bool {
	_, ok := obj.GetAnnotations()[key]
	return ok
}

// scanFinished pins the key a scan read (the host's, or its bastion's), on the RemoteMachine and on its pool entry.
func (r *RemoteMachineReconciler) scanFinished(ctx context.Context, rm *infrav1.RemoteMachine, res tasks.Result) (ctrl.Result, error) {
	if res.Err != nil {
		return r.attemptFailed(ctx, rm, res.Err, "Reading the host key")
	}
	out := res.Value.(host.ScanResult)
	if err := pin(rm.Spec.RemoteHost.DeepCopy(), out); err != nil {
		return r.attemptFailed(ctx, rm, err, "Reading the host key")
	}
	// The entry first: if that fails, nothing is pinned, and the next attempt scans again.
	if err := r.pinPoolEntry(ctx, rm, out); err != nil {
		return ctrl.Result{}, err
	}
	_ = pin(&rm.Spec.RemoteHost, out)
	what := "host"
	if out.Bastion {
		what = "bastion"
	}
	ctrl.LoggerFrom(ctx).Info("Pinned the "+what+" key seen first (hostKeyPolicy AcceptNew)", "key", fingerprint(out.Key))
	r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, infrav1.HostKeyPinnedReason, "Pin", "Pinned the %s key %s of %s (hostKeyPolicy AcceptNew)", what, fingerprint(out.Key), hostPort(rm))
	return ctrl.Result{RequeueAfter: time.Second}, nil
}

// attemptFailed records a failed scan or bootstrap: terminal failures wait in the condition; the others are tried
// again after a backoff.
func (r *RemoteMachineReconciler) attemptFailed(ctx context.Context, rm *infrav1.RemoteMachine, err error, what string) (ctrl.Result, error) {
	reason, terminal := failureReason(err)
	msg := sshrunner.Truncate(mismatchMessage(err, "remotemachine", rm.Name, rm.Namespace), 4096)
	delete(rm.Annotations, clusterctlv1.BlockMoveAnnotation)
	setBootstrapCondition(rm, metav1.ConditionFalse, reason, msg)
	r.Recorder.Eventf(rm, nil, corev1.EventTypeWarning, reason, "Bootstrap", "%s on %s failed: %s", what, hostPort(rm), sshrunner.Truncate(msg, 900))
	if reason == infrav1.BootstrapFailedReason {
		rm.Status.FailureReason = ptr.To("CreateError")
		rm.Status.FailureMessage = ptr.To(msg)
	}
	if terminal {
		r.retries.Delete(string(rm.UID))
		ctrl.LoggerFrom(ctx).Info(what+" failed; not retried", "reason", reason, "error", msg)
		return ctrl.Result{}, nil
	}
	wait := r.backoff(string(rm.UID))
	ctrl.LoggerFrom(ctx).Info(what+" failed; retrying", "reason", reason, "after", wait.String(), "error", msg)
	return ctrl.Result{RequeueAfter: wait}, nil
}

// bootstrapInput reads the bootstrap data (unless adoptOnly: the request then holds no data) and the SSH keys
// (directly, uncached).
func (r *RemoteMachineReconciler) bootstrapInput(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine, adoptOnly bool) (host.BootstrapRequest, error) {
	if adoptOnly {
		cfg, _, err := hostConfig(ctx, r.APIReader, rm.Namespace, &rm.Spec.RemoteHost, ctrl.LoggerFrom(ctx))
		return host.BootstrapRequest{Identity: hostIdentity(rm), Config: cfg}, err
	}
	data := &corev1.Secret{}
	name := *machine.Spec.Bootstrap.DataSecretName
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: rm.Namespace, Name: name}, data); err != nil {
		if apierrors.IsNotFound(err) {
			return host.BootstrapRequest{}, fmt.Errorf("%w: bootstrap data Secret %s does not exist yet", ErrMissingSecret, name)
		}
		return host.BootstrapRequest{}, err
	}
	value := data.Data["value"]
	if len(value) == 0 {
		return host.BootstrapRequest{}, fmt.Errorf("%w: bootstrap data Secret %s has no data key 'value'", ErrMissingSecret, name)
	}
	cfg, _, err := hostConfig(ctx, r.APIReader, rm.Namespace, &rm.Spec.RemoteHost, ctrl.LoggerFrom(ctx))
	if err != nil {
		return host.BootstrapRequest{}, err
	}
	cfg.Secrets = append(cfg.Secrets, string(value))
	return host.BootstrapRequest{Identity: hostIdentity(rm), Config: cfg, Data: value, Format: string(data.Data["format"]), WorkingDir: rm.Spec.WorkingDir}, nil
}

// bootstrapFinished records a bootstrap's outcome.
func (r *RemoteMachineReconciler) bootstrapFinished(ctx context.Context, rm *infrav1.RemoteMachine, res tasks.Result) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	if res.Err != nil {
		return r.attemptFailed(ctx, rm, res.Err, "Bootstrap")
	}
	r.retries.Delete(string(rm.UID))
	out := res.Value.(*host.BootstrapResult)
	rm.Spec.ProviderID = "remote-machine://" + hostPort(rm)
	annotations.AddAnnotations(rm, map[string]string{infrav1.BootstrapUIDAnnotation: string(hostMarker(rm))})
	delete(rm.Annotations, clusterctlv1.BlockMoveAnnotation)
	rm.Status.Addresses = machineAddresses(rm.Spec.Address, out.Hostname)
	rm.Status.MachineID = out.MachineID
	rm.Status.Initialization.Provisioned = ptr.To(true)
	rm.Status.Ready = true
	if ref := rm.Spec.PooledRemoteMachineRef; ref != nil {
		entry := &infrav1.PooledRemoteMachine{}
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: rm.Namespace, Name: ref.Name}, entry); err == nil {
			rm.Status.FailureDomain = entry.Spec.FailureDomain
		}
	}
	msg := "Bootstrap succeeded on " + hostPort(rm)
	switch {
	case out.Adopted && hostMarker(rm) != rm.UID:
		msg = "The host was bootstrapped before this RemoteMachine was moved (as UID " + string(hostMarker(rm)) + "); adopted the result"
	case out.Adopted:
		msg = "The host had already been bootstrapped for this RemoteMachine; adopted the result"
	}
	setBootstrapCondition(rm, metav1.ConditionTrue, infrav1.BootstrapSucceededReason, msg)
	r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, infrav1.BootstrapSucceededReason, "Bootstrap", msg)
	log.Info("Bootstrap succeeded", "providerID", rm.Spec.ProviderID, "adopted", out.Adopted)
	// Look for the Node once the kubelet had time to register it.
	return ctrl.Result{RequeueAfter: time.Second}, nil
}

// recordBootstrapOnEntry records, on the claim of the pool entry rm holds, that the host is about to hold rm's
// bootstrap (claimRef.bootstrapUID). An entry whose claim is not rm's is an error: nothing is sent to its host.
func (r *RemoteMachineReconciler) recordBootstrapOnEntry(ctx context.Context, rm *infrav1.RemoteMachine) error {
	ref := rm.Spec.PooledRemoteMachineRef
	if ref == nil {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		entry := &infrav1.PooledRemoteMachine{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: rm.Namespace, Name: ref.Name}, entry); err != nil {
			return err
		}
		claim := entry.Spec.ClaimRef
		if claim == nil || claim.Name != rm.Name {
			return fmt.Errorf("PooledRemoteMachine %s is not claimed by this RemoteMachine; nothing is sent to its host", ref.Name)
		}
		if claim.BootstrapUID != "" {
			return nil // this machine's, or another's that the host then refuses
		}
		orig := entry.DeepCopy()
		entry.Spec.ClaimRef.BootstrapUID = rm.UID
		return r.Client.Patch(ctx, entry, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	})
}

// pinPoolEntry records a key pinned on first contact on the pool entry too, so every later claim of the host
// verifies it.
func (r *RemoteMachineReconciler) pinPoolEntry(ctx context.Context, rm *infrav1.RemoteMachine, res host.ScanResult) error {
	_, err := r.patchHeldEntry(ctx, rm, func(h *infrav1.RemoteHost) { _ = pin(h, res) })
	return err
}

// patchHeldEntry changes the host of the pool entry rm holds (re-read from the apiserver, retried on conflict) and
// returns the entry when a pinned key changed; nil when rm holds no entry or nothing changed.
func (r *RemoteMachineReconciler) patchHeldEntry(ctx context.Context, rm *infrav1.RemoteMachine, change func(*infrav1.RemoteHost)) (*infrav1.PooledRemoteMachine, error) {
	ref := rm.Spec.PooledRemoteMachineRef
	if ref == nil {
		return nil, nil
	}
	var changed *infrav1.PooledRemoteMachine
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		changed = nil
		entry := &infrav1.PooledRemoteMachine{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: rm.Namespace, Name: ref.Name}, entry); err != nil {
			return err
		}
		if entry.Spec.ClaimRef == nil || entry.Spec.ClaimRef.Name != rm.Name {
			return nil
		}
		orig := entry.DeepCopy()
		change(&entry.Spec.Machine.RemoteHost)
		if pinnedEqual(orig, entry) {
			return nil
		}
		if err := r.Client.Patch(ctx, entry, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return err
		}
		changed = entry
		return nil
	})
	return changed, client.IgnoreNotFound(err)
}

// hostPort returns "address:port", IPv6 in brackets.
func hostPort(rm *infrav1.RemoteMachine) string {
	return hostPortOf(&rm.Spec.RemoteHost)
}

// hostPortOf returns a host's "address:port", IPv6 in brackets.
func hostPortOf(h *infrav1.RemoteHost) string {
	return net.JoinHostPort(h.Address, strconv.Itoa(int(h.Port)))
}

// machineAddresses: an IP is an InternalIP, a name an InternalDNS; the host's own name is a Hostname.
func machineAddresses(address, hostname string) []clusterv1.MachineAddress {
	t := clusterv1.MachineInternalDNS
	if net.ParseIP(address) != nil {
		t = clusterv1.MachineInternalIP
	}
	out := []clusterv1.MachineAddress{{Type: t, Address: address}}
	if hostname != "" {
		out = append(out, clusterv1.MachineAddress{Type: clusterv1.MachineHostName, Address: hostname})
	}
	return out
}

// needsCleanup says whether CAPR may have changed the host: the bootstrap-uid annotation is recorded (and stored)
// before a run sends anything to the host, and carried by clusterctl move; spec.providerID is set only by a
// successful bootstrap.
func needsCleanup(rm *infrav1.RemoteMachine) bool {
	return ptr.Deref(rm.Status.Initialization.Provisioned, false) || rm.Spec.ProviderID != "" || hasAnnotation(rm, infrav1.BootstrapUIDAnnotation)
}

func (r *RemoteMachineReconciler) reconcileDelete(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine) (ctrl.Result, error) {
	key := string(rm.UID)
	setDeleting(rm, "Cleaning the host")
	if deletedForMove(rm) {
		// clusterctl move has copied the RemoteMachine to another management cluster: the copy holds the host. A
		// run still going on the host is left to finish (the copy adopts its result).
		ctrl.LoggerFrom(ctx).Info("Deleted by clusterctl move; the host is left to the moved copy")
		controllerutil.RemoveFinalizer(rm, infrav1.RemoteMachineFinalizer)
		return ctrl.Result{}, nil
	}
	if res, done, err := r.deleteWithoutCleanup(ctx, rm); done {
		return res, err
	}
	// A rebuilt host's new key is accepted during the cleanup as before the bootstrap.
	if res, ok := r.Tasks.Take(key, tasks.Accept); ok {
		return r.acceptFinished(ctx, rm, res)
	}
	if r.Tasks.Running(key, tasks.Accept) {
		return ctrl.Result{}, nil
	}
	if started, err := r.startAccept(ctx, rm); started || err != nil {
		return ctrl.Result{}, err
	}
	if keys, ok := r.newHostKeys.Load(key); ok {
		return r.finishDelete(ctx, rm, nil, keys.([]string))
	}
	if res, ok := r.Tasks.Take(key, tasks.Cleanup); ok {
		return r.cleanupFinished(ctx, rm, res)
	}
	if r.Tasks.Running(key, tasks.Cleanup) {
		return ctrl.Result{}, nil
	}
	return r.startCleanup(ctx, rm, machine)
}

// deleteWithoutCleanup stops rm's tasks and finishes the deletion at once when the host needs no cleanup (nothing
// was sent to it) or must not get one (the skip-cleanup annotation; a host that held another bootstrap, which is
// quarantined); done says that it did.
func (r *RemoteMachineReconciler) deleteWithoutCleanup(ctx context.Context, rm *infrav1.RemoteMachine) (_ ctrl.Result, done bool, _ error) {
	wasRunning := r.stopTasks(ctx, rm)
	_, skip := rm.Annotations[SkipCleanupAnnotation]
	var cleanupErr error
	switch c := conditions.Get(rm, infrav1.BootstrapSucceededCondition); {
	case !skip && c != nil && c.Reason == infrav1.HostAlreadyBootstrappedReason:
		// The host held another bootstrap when it was handed to this machine: never return it to the pool as is.
		cleanupErr = errors.New(c.Message)
	case !wasRunning && !needsCleanup(rm):
		// Nothing was sent to the host: released as it is.
	case skip && rm.Spec.PooledRemoteMachineRef != nil:
		cleanupErr = errCleanupSkipped // the pool's owner decides how its hosts are cleaned: quarantined
	case skip:
		// A host of the user's own, left as it is.
	default:
		return ctrl.Result{}, false, nil
	}
	res, err := r.finishDelete(ctx, rm, cleanupErr, nil)
	return res, true, err
}

// cleanupFinished records a cleanup's outcome: the pool entry is released (with the host's new keys, if it got
// some); a failure is retried until CleanupTimeout, then the entry is quarantined.
func (r *RemoteMachineReconciler) cleanupFinished(ctx context.Context, rm *infrav1.RemoteMachine, res tasks.Result) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	key := string(rm.UID)
	if errors.Is(res.Err, sshrunner.ErrHostKeyMismatch) {
		r.cleanupMismatch.Store(key, true)
		res.Err = errors.New(mismatchMessage(res.Err, "remotemachine", rm.Name, rm.Namespace))
	}
	if res.Err == nil {
		r.cleanupMismatch.Delete(key)
		r.retries.Delete(key)
		r.acceptTried.Delete(key)
		log.Info("Cleanup succeeded")
		r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, infrav1.CleanupSucceededReason, "Cleanup", "Cleaned %s", hostPort(rm))
		keys, _ := res.Value.([]string)
		if len(keys) > 0 {
			r.newHostKeys.Store(key, keys)
		}
		return r.finishDelete(ctx, rm, nil, keys)
	}
	conditions.Set(rm, metav1.Condition{Type: infrav1.DeletingCondition, Status: metav1.ConditionTrue, Reason: infrav1.CleanupFailedReason, Message: sshrunner.Truncate(res.Err.Error(), 4096)})
	if time.Since(rm.DeletionTimestamp.Time) < r.CleanupTimeout && !errors.Is(res.Err, host.ErrForeignBootstrap) {
		log.Info("Cleanup failed, retrying", "error", res.Err.Error())
		return ctrl.Result{RequeueAfter: r.RetryInterval}, nil
	}
	return r.finishDelete(ctx, rm, res.Err, nil)
}

// startCleanup starts the cleanup of rm's host, once block-move is stored; a host whose key cannot be read is not
// cleaned (its entry is quarantined), never waited for.
func (r *RemoteMachineReconciler) startCleanup(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	if !hasAnnotation(rm, clusterctlv1.BlockMoveAnnotation) {
		// clusterctl move waits while the host is cleaned; stored before the cleanup starts.
		annotations.AddAnnotations(rm, map[string]string{clusterctlv1.BlockMoveAnnotation: ""})
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	cfg, _, err := hostConfig(ctx, r.APIReader, rm.Namespace, &rm.Spec.RemoteHost, log)
	if err != nil {
		// Without a usable key the host cannot be cleaned: never hang, never hand it out dirty. Other errors
		// (the apiserver briefly unavailable) are retried.
		if errors.Is(err, ErrMissingSecret) || time.Since(rm.DeletionTimestamp.Time) > r.CleanupTimeout {
			return r.finishDelete(ctx, rm, err, nil)
		}
		return ctrl.Result{}, err
	}
	in := r.cleanupPlan(ctx, rm, machine)
	in.Identity, in.Config = hostIdentity(rm), cfg
	log.Info("Running cleanup", "address", rm.Spec.Address)
	timeout := r.CleanupTimeout
	hosts := r.Hosts
	r.Tasks.Start(ctx, string(rm.UID), tasks.Cleanup, rm, func(ctx context.Context) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		keys, err := hosts.Cleanup(ctx, in)
		countSSHError(err)
		return keys, err
	})
	return ctrl.Result{}, nil
}

// cleanupPlan returns how rm's host is cleaned: the pool entry's commands, working directory and host key
// regeneration for a pooled host (the pool's owner decides), else rm's own, else the default for the Machine's
// bootstrap provider.
func (r *RemoteMachineReconciler) cleanupPlan(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine) host.CleanupRequest {
	in := host.CleanupRequest{Commands: rm.Spec.CustomCleanUpCommands, WorkingDir: rm.Spec.WorkingDir}
	if entry := r.poolEntry(ctx, rm); entry != nil {
		in.Commands, in.WorkingDir = entry.Spec.Machine.CustomCleanUpCommands, entry.Spec.Machine.WorkingDir
		in.RegenerateHostKeys = entry.Spec.Machine.RegenerateHostKeys
	}
	if len(in.Commands) == 0 {
		kind := ""
		if machine != nil && machine.Spec.Bootstrap.ConfigRef.IsDefined() {
			kind = machine.Spec.Bootstrap.ConfigRef.Kind
		}
		in.Commands = defaultCleanup(kind)
	}
	return in
}

// stopTasks cancels everything rm had going when its deletion is first seen (the deletion's own tasks, a key
// acceptance and the cleanup, start after that), and says whether a bootstrap was running.
func (r *RemoteMachineReconciler) stopTasks(ctx context.Context, rm *infrav1.RemoteMachine) bool {
	if _, seen := r.deletionSeen.LoadOrStore(rm.UID, true); seen {
		return false
	}
	stopped := r.Tasks.CancelAll(string(rm.UID))
	if slices.Contains(stopped, tasks.Bootstrap) {
		ctrl.LoggerFrom(ctx).Info("Cancelled the bootstrap of a deleted RemoteMachine")
		return true
	}
	return false
}

// poolEntry returns the pool entry rm holds, read from the apiserver; nil if none (or it cannot be read).
func (r *RemoteMachineReconciler) poolEntry(ctx context.Context, rm *infrav1.RemoteMachine) *infrav1.PooledRemoteMachine {
	ref := rm.Spec.PooledRemoteMachineRef
	if ref == nil {
		return nil
	}
	entry := &infrav1.PooledRemoteMachine{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: rm.Namespace, Name: ref.Name}, entry); err != nil {
		return nil
	}
	if entry.Spec.ClaimRef == nil || entry.Spec.ClaimRef.Name != rm.Name {
		return nil
	}
	return entry
}

// finishDelete returns the pool entry (quarantined when cleanupErr is set; with newHostKeys pinned, and waiting for
// a probe with them, when the cleanup regenerated the host's keys) and removes the finalizer.
func (r *RemoteMachineReconciler) finishDelete(ctx context.Context, rm *infrav1.RemoteMachine, cleanupErr error, newHostKeys []string) (ctrl.Result, error) {
	if ref := rm.Spec.PooledRemoteMachineRef; ref != nil {
		if cleanupErr != nil {
			if err := r.quarantine(ctx, rm, cleanupErr); err != nil {
				return ctrl.Result{}, err
			}
		} else if entry := r.poolEntry(ctx, rm); entry != nil && entry.Spec.ClaimRef.BootstrapUID != "" && entry.Spec.ClaimRef.BootstrapUID != hostMarker(rm) {
			// The host holds the bootstrap of a RemoteMachine this one is not a copy of: never released uncleaned.
			if err := r.quarantine(ctx, rm, fmt.Errorf("the host holds the bootstrap of RemoteMachine UID %s, which this RemoteMachine (UID %s) does not carry", entry.Spec.ClaimRef.BootstrapUID, hostMarker(rm))); err != nil {
				return ctrl.Result{}, err
			}
		} else if len(newHostKeys) > 0 {
			if err := r.Claimer.ReleaseWithNewHostKeys(ctx, rm.Namespace, ref.Name, rm.Name, newHostKeys); err != nil {
				return ctrl.Result{}, err
			}
			ctrl.LoggerFrom(ctx).Info("Released the pool entry with the host's new SSH host keys", "PooledRemoteMachine", klog.KRef(rm.Namespace, ref.Name), "keys", fingerprints(newHostKeys))
			r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, infrav1.HostKeysRegeneratedReason, "Release",
				"Gave the host new SSH host keys (%s) and returned PooledRemoteMachine %s to pool %q once a probe logs in with them", strings.Join(fingerprints(newHostKeys), ", "), ref.Name, rm.Spec.Pool)
		} else if err := r.Claimer.Release(ctx, rm.Namespace, ref.Name, rm.Name); err != nil {
			return ctrl.Result{}, err
		} else {
			r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, infrav1.ReleasedReason, "Release", "Returned PooledRemoteMachine %s to pool %q", ref.Name, rm.Spec.Pool)
		}
	} else if cleanupErr != nil {
		r.Recorder.Eventf(rm, nil, corev1.EventTypeWarning, infrav1.CleanupFailedReason, "Cleanup", "The host %s was not cleaned: %s", hostPort(rm), sshrunner.Truncate(cleanupErr.Error(), 900))
	}
	r.newHostKeys.Delete(string(rm.UID))
	r.deletionSeen.Delete(rm.UID)
	controllerutil.RemoveFinalizer(rm, infrav1.RemoteMachineFinalizer)
	return ctrl.Result{}, nil
}

// quarantine takes a pool entry whose host could not be cleaned out of service and releases its claim.
func (r *RemoteMachineReconciler) quarantine(ctx context.Context, rm *infrav1.RemoteMachine, cause error) error {
	ref := rm.Spec.PooledRemoteMachineRef
	entry := &infrav1.PooledRemoteMachine{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: rm.Namespace, Name: ref.Name}, entry); err != nil {
		return client.IgnoreNotFound(err)
	}
	if entry.Spec.ClaimRef == nil || entry.Spec.ClaimRef.Name != rm.Name {
		return nil // not this machine's to quarantine
	}
	reason := infrav1.CleanupFailedReason
	msg := fmt.Sprintf("Cleaning the host after RemoteMachine %s failed: %s. Check the host, then remove spec.quarantine to return it to the pool.", rm.Name, sshrunner.Truncate(cause.Error(), 4000))
	if errors.Is(cause, errCleanupSkipped) {
		reason = infrav1.CleanupSkippedReason
		msg = fmt.Sprintf("RemoteMachine %s was deleted with the %s annotation after its bootstrap touched the host, which was not cleaned. "+
			"Clean the host (kubeadm reset -f or k0s reset), then remove spec.quarantine to return it to the pool.", rm.Name, SkipCleanupAnnotation)
	}
	if err := quarantineEntry(ctx, r.Client, r.Claimer, entry, reason, msg); err != nil {
		return err
	}
	ctrl.LoggerFrom(ctx).Info("Quarantined pool entry", "PooledRemoteMachine", klog.KObj(entry), "reason", reason)
	r.Recorder.Eventf(entry, nil, corev1.EventTypeWarning, infrav1.QuarantinedReason, "Quarantine", "Quarantined (%s) after RemoteMachine %s", reason, rm.Name)
	r.Recorder.Eventf(rm, nil, corev1.EventTypeWarning, reason, "Cleanup", "The host was not cleaned; PooledRemoteMachine %s quarantined", ref.Name)
	return nil
}

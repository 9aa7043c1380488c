package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/util/annotations"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/cluster-api/util/patch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
)

// +kubebuilder:rbac:groups=infrastructure.cluster.x-k8s.io,resources=pooledremotemachines/status,verbs=get;update;patch

// PooledRemoteMachineReconciler reports each pool entry's phase, binds a claim to its RemoteMachine's UID,
// releases claims whose RemoteMachine was never stored (refused later in admission, or lost), and keeps the entry's
// hardware labels on the RemoteMachine holding it and on its Machine (syncHardwareLabels).
type PooledRemoteMachineReconciler struct {
	Client client.Client
	// APIReader checks a claim's RemoteMachine without trusting a cache that may lag.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Claimer   *pool.Claimer
	// OrphanGracePeriod is how long a claim may wait for its RemoteMachine to be stored (default 2m).
	OrphanGracePeriod time.Duration
	// ProbeInterval, when not zero, is how often a free entry's host is checked over SSH (reachability, login,
	// host key) before it is offered; ProbeSelector limits the probe to matching entries (nil: all).
	ProbeInterval time.Duration
	ProbeSelector labels.Selector
	// Hosts reaches the hosts (scan, probe); nil turns the probe and key acceptance off.
	Hosts HostService
	// Tasks runs the probes and key acceptances off the reconcile workers: the manager's one runner, shared with
	// the RemoteMachine controller.
	Tasks *tasks.Runner
	// Locks holds the hosts' Leases (one entry per host): the controller re-asserts the Lease of every live entry
	// and deletes the Leases of entries that are gone. The manager's cache must watch the Leases of Locks.Namespace.
	Locks *pool.EndpointLocks
	// Written records the manager's writes (Client must be Written.Client): an entry the cache shows older than
	// the manager's last write of it waits for the cache. The manager shares one with every reconciler; nil makes
	// one for this reconciler alone.
	Written *WrittenVersions

	lastProbe  sync.Map // entry UID → time of its last probe
	moveLabels moveLabeller
	// acceptTried maps an entry's UID to the accept-host-key value last found to name another key than the one its
	// host presents: it is not compared again until it changes.
	acceptTried sync.Map
}

// SetupWithManager registers the controller; the pool indexes must be registered (pool.SetupIndexes).
func (r *PooledRemoteMachineReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, options controller.Options) error {
	if r.OrphanGracePeriod == 0 {
		r.OrphanGracePeriod = 2 * time.Minute
	}
	if r.Written == nil {
		r.Written = NewWrittenVersions(mgr.GetScheme(), &infrav1.PooledRemoteMachine{})
		r.Client = r.Written.Client(r.Client)
	}
	b := ctrl.NewControllerManagedBy(mgr).
		For(&infrav1.PooledRemoteMachine{}).
		WithOptions(options).
		Watches(&infrav1.RemoteMachine{}, handler.EnqueueRequestsFromMapFunc(r.entriesOfMachine)).
		// A Machine appearing, or its labels changing, brings back the entry whose hardware labels it carries.
		Watches(&clusterv1.Machine{}, handler.EnqueueRequestsFromMapFunc(r.machineToEntry), builder.WithPredicates(predicate.LabelChangedPredicate{}))
	if r.Tasks != nil {
		// A finished probe or key acceptance brings its entry back, to store the result.
		b = b.WatchesRawSource(source.Channel(r.Tasks.EventsFor(&infrav1.PooledRemoteMachine{}), &handler.EnqueueRequestForObject{}))
	}
	if r.Locks != nil {
		if err := mgr.GetFieldIndexer().IndexField(ctx, &coordinationv1.Lease{}, indexLeaseHolder, func(o client.Object) []string {
			if h := pool.LeaseHolder(o.(*coordinationv1.Lease)); h != "" {
				return []string{pool.HashedKey(h)}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("indexing Leases by holder: %w", err)
		}
		// A host's Lease changing or deleted (by hand) brings back the entry it names, which re-asserts it; a Lease
		// taken over by another entry (seen as one update when its deletion and re-creation arrive together) brings
		// back both.
		enqueue := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], objs ...client.Object) {
			for _, o := range objs {
				for _, req := range leaseToEntry(context.Background(), o) {
					q.Add(req)
				}
			}
		}
		b = b.Watches(&coordinationv1.Lease{}, handler.Funcs{
			CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueue(q, e.Object)
			},
			UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueue(q, e.ObjectOld, e.ObjectNew)
			},
			DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueue(q, e.Object)
			},
			GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueue(q, e.Object)
			},
		}, builder.WithPredicates(
			predicate.NewPredicateFuncs(func(o client.Object) bool {
				_, ok := o.GetLabels()[pool.EndpointLockLabel]
				return ok && o.GetNamespace() == r.Locks.Namespace
			})))
	}
	return b.Complete(r)
}

// indexLeaseHolder maps a host's Lease to pool.HashedKey of the "namespace/name" of the entry it names.
const indexLeaseHolder = "capr.holder"

func leaseToEntry(_ context.Context, o client.Object) []reconcile.Request {
	lease, ok := o.(*coordinationv1.Lease)
	if !ok {
		return nil
	}
	ns, name, ok := strings.Cut(pool.LeaseHolder(lease), "/")
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}}}
}

// entriesOfMachine maps a RemoteMachine to the entry it holds and the entries claimed in its name.
func (r *PooledRemoteMachineReconciler) entriesOfMachine(ctx context.Context, o client.Object) []reconcile.Request {
	rm, ok := o.(*infrav1.RemoteMachine)
	if !ok {
		return nil
	}
	var reqs []reconcile.Request
	if ref := rm.Spec.PooledRemoteMachineRef; ref != nil {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: rm.Namespace, Name: ref.Name}})
	}
	if names, err := pool.EntriesClaimedBy(ctx, r.Client, rm.Namespace, rm.Name); err == nil {
		for _, name := range names {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: rm.Namespace, Name: name}})
		}
	}
	return reqs
}

// claimHolder reads the RemoteMachine an entry's claim names. The cache answers when it shows the claim settled
// (the RemoteMachine holds this entry, with the claim's UID); anything else, which may release or quarantine the
// entry, is read from the apiserver, as a cache may lag behind a RemoteMachine just created.
func (r *PooledRemoteMachineReconciler) claimHolder(ctx context.Context, entry *infrav1.PooledRemoteMachine) (*infrav1.RemoteMachine, error) {
	claim := entry.Spec.ClaimRef
	key := client.ObjectKey{Namespace: entry.Namespace, Name: claim.Name}
	rm := &infrav1.RemoteMachine{}
	if err := r.Client.Get(ctx, key, rm); err == nil && claim.UID != "" && claim.UID == rm.UID &&
		rm.Spec.PooledRemoteMachineRef != nil && rm.Spec.PooledRemoteMachineRef.Name == entry.Name {
		return rm, nil
	}
	rm = &infrav1.RemoteMachine{}
	return rm, r.APIReader.Get(ctx, key, rm)
}

// Reconcile checks the claim, then reports phase, reserved, machineRef and the Claimed condition.
func (r *PooledRemoteMachineReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	log := ctrl.LoggerFrom(ctx)
	entry := &infrav1.PooledRemoteMachine{}
	if err := r.Client.Get(ctx, req.NamespacedName, entry); err != nil {
		if apierrors.IsNotFound(err) {
			entry.Namespace, entry.Name = req.Namespace, req.Name
			r.Written.Forget(entry)
			return r.releaseGoneLocks(ctx, req.NamespacedName, "")
		}
		return ctrl.Result{}, err
	}
	// The cache has not caught up with this manager's last write of the entry (a claim, a pinned key, a status):
	// acting now would repeat or undo it. The cache's update enqueues the entry again.
	if r.Written.Behind(entry) {
		return ctrl.Result{RequeueAfter: cacheCatchUp}, nil
	}
	r.moveLabels.ensure(ctx, r.Client, r.APIReader, entry.Namespace, &entry.Spec.Machine.RemoteHost)
	var holder *infrav1.RemoteMachine
	var requeue time.Duration
	if claim := entry.Spec.ClaimRef; claim != nil {
		log = log.WithValues("RemoteMachine", klog.KRef(entry.Namespace, claim.Name))
		rm, err := r.claimHolder(ctx, entry)
		switch {
		case apierrors.IsNotFound(err):
			if moving, err := r.clusterPaused(ctx, entry.Namespace, claim.ClusterName); err != nil {
				return ctrl.Result{}, err
			} else if moving {
				// clusterctl move creates the Cluster paused, then its objects, and resumes it last: the RemoteMachine
				// may still come, however long the move takes.
				requeue = 10 * time.Second
				break
			}
			// The grace counts from the claim, or from the entry's creation in this cluster if later: clusterctl move
			// recreates a claimed entry well after its claim, and its RemoteMachine a moment after it.
			since := entry.CreationTimestamp.Time
			if claim.ClaimedAt != nil && claim.ClaimedAt.After(since) {
				since = claim.ClaimedAt.Time
			}
			age := time.Since(since)
			if age < r.OrphanGracePeriod {
				requeue = r.OrphanGracePeriod - age
				break
			}
			if claim.UID != "" {
				return r.quarantineVanished(ctx, entry, "RemoteMachine "+claim.Name+" (UID "+string(claim.UID)+") is gone")
			}
			return r.releaseOrphan(ctx, entry, "RemoteMachine "+claim.Name+" was never stored")
		case err != nil:
			return ctrl.Result{}, err
		case rm.Spec.PooledRemoteMachineRef == nil || rm.Spec.PooledRemoteMachineRef.Name != entry.Name:
			if claim.UID != "" && claim.UID != rm.UID {
				return r.quarantineVanished(ctx, entry, "RemoteMachine "+claim.Name+" (UID "+string(claim.UID)+") is gone; another RemoteMachine has its name")
			}
			return r.releaseOrphan(ctx, entry, "RemoteMachine "+claim.Name+" holds another host")
		case claim.UID != rm.UID && !controllerutil.ContainsFinalizer(rm, infrav1.RemoteMachineFinalizer):
			// Bound only once CAPR's finalizer guarantees the cleanup: a RemoteMachine deleted before that never
			// touched the host, and its claim is released as an orphan.
			holder = rm
			requeue = time.Second
		case claim.UID != "" && claim.UID != rm.UID && claim.BootstrapUID != "" && types.UID(rm.Annotations[infrav1.BootstrapUIDAnnotation]) != claim.BootstrapUID:
			// Recreated under the claim without what CAPR recorded of the host (the bootstrap it holds): not a copy
			// made by clusterctl move. The host is never handed to it, nor released uncleaned.
			return r.quarantineVanished(ctx, entry, "RemoteMachine "+claim.Name+" (UID "+string(claim.UID)+") is gone; another RemoteMachine of its name does not carry the bootstrap the host holds (UID "+string(claim.BootstrapUID)+")")
		case claim.UID != rm.UID:
			// Not bound yet, or the RemoteMachine was recreated with its reference to this entry (clusterctl move
			// gives objects new UIDs): bind the claim to the RemoteMachine that holds the entry.
			orig := entry.DeepCopy()
			entry.Spec.ClaimRef.UID = rm.UID
			if err := r.Client.Patch(ctx, entry, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
				return ctrl.Result{}, err
			}
			log.V(2).Info("Bound the claim to its RemoteMachine", "uid", rm.UID)
			r.Recorder.Eventf(entry, rm, corev1.EventTypeNormal, infrav1.ClaimedReason, "Claim", "Claimed by RemoteMachine %s", rm.Name)
			holder = rm
		default:
			holder = rm
		}
	}

	// A person accepted the new key of a rebuilt host: read in a task, stored at once, and probed again with it.
	key := string(entry.UID)
	if res, ok := r.tasks().Take(key, tasks.AcceptEntry); ok {
		if r.acceptKeyFinished(ctx, entry, res) {
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
	} else if !r.tasks().Running(key, tasks.AcceptEntry) {
		r.startAcceptKey(ctx, entry)
	}
	helper, err := patch.NewHelper(entry, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	defer patchOnExit(ctx, helper, entry, &retErr, infrav1.ClaimedCondition, infrav1.ReachableCondition, infrav1.HostLockedCondition)
	if result, err := r.reconcileHostLock(ctx, entry); err != nil {
		return ctrl.Result{}, err
	} else if result > 0 && (requeue == 0 || result < requeue) {
		requeue = result
	}
	awaitingProbe := awaitsNewKeyProbe(entry)
	if awaitingProbe && !conditions.IsFalse(entry, infrav1.ReachableCondition) {
		// No probe has logged in with the new keys yet: whatever the last probe said was about the old ones.
		conditions.Set(entry, metav1.Condition{Type: infrav1.ReachableCondition, Status: metav1.ConditionUnknown, Reason: infrav1.HostKeysRegeneratedReason,
			Message: "The cleanup gave the host new SSH host keys; the entry is offered again once a probe logs in with them"})
	}
	if res, ok := r.tasks().Take(key, tasks.Probe); ok {
		r.probeFinished(ctx, entry, res)
	}
	if r.probeDue(entry) && !r.tasks().Running(key, tasks.Probe) && !r.tasks().Running(key, tasks.AcceptEntry) {
		r.startProbe(ctx, entry)
	}
	if r.ProbeInterval > 0 && (requeue == 0 || requeue > r.ProbeInterval) {
		requeue = r.ProbeInterval
	}
	if awaitingProbe && (requeue == 0 || requeue > newKeyProbeInterval) {
		requeue = newKeyProbeInterval
	}
	entry.Status.Phase = phaseOf(entry, holder)
	entry.Status.Reserved = entry.Spec.ClaimRef != nil
	entry.Status.MachineRef = nil
	entry.Status.ObservedGeneration = entry.Generation
	if claim := entry.Spec.ClaimRef; claim != nil {
		entry.Status.MachineRef = &infrav1.RemoteMachineReference{Name: claim.Name, Namespace: entry.Namespace}
		conditions.Set(entry, metav1.Condition{Type: infrav1.ClaimedCondition, Status: metav1.ConditionTrue, Reason: infrav1.ClaimedReason, Message: "Held by RemoteMachine " + claim.Name})
	} else {
		conditions.Set(entry, metav1.Condition{Type: infrav1.ClaimedCondition, Status: metav1.ConditionFalse, Reason: infrav1.NotClaimedReason})
	}
	if holder != nil {
		if err := r.syncHardwareLabels(ctx, entry, holder); err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// reconcileHostLock holds the Lease of the entry's host (re-created if someone deleted it) and reports it in the
// HostLocked condition: another live entry holding the host is reported, never displaced. Leases still naming the
// entry for another host are deleted once stale.
func (r *PooledRemoteMachineReconciler) reconcileHostLock(ctx context.Context, entry *infrav1.PooledRemoteMachine) (time.Duration, error) {
	if r.Locks == nil || entry.Spec.Machine.Address == "" {
		return 0, nil
	}
	name := pool.EndpointLockName(pool.Endpoint(entry.Spec.Machine.Address, entry.Spec.Machine.Port))
	// The cached Lease saves an apiserver read per reconcile when it is this entry's already; a Lease deleted since
	// brings the entry back through the watch.
	cached := &coordinationv1.Lease{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Locks.Namespace, Name: name}, cached)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	if err != nil || !pool.HoldsStored(cached, entry) {
		err := r.Locks.Assert(ctx, entry)
		var held *pool.HeldError
		switch {
		case errors.As(err, &held):
			msg := held.Error() + "; delete this entry, or the other one"
			if !conditions.IsFalse(entry, infrav1.HostLockedCondition) {
				r.Recorder.Eventf(entry, nil, corev1.EventTypeWarning, infrav1.HostOfferedElsewhereReason, "LockHost", "%s", msg)
			}
			conditions.Set(entry, metav1.Condition{Type: infrav1.HostLockedCondition, Status: metav1.ConditionFalse, Reason: infrav1.HostOfferedElsewhereReason, Message: msg})
			// Looked at again: the other entry may be gone, or its Lease one an admission left behind.
			return r.Locks.Grace, nil
		case err != nil:
			return 0, err
		}
	}
	conditions.Set(entry, metav1.Condition{Type: infrav1.HostLockedCondition, Status: metav1.ConditionTrue, Reason: infrav1.HostLockedReason})
	res, err := r.releaseGoneLocks(ctx, client.ObjectKeyFromObject(entry), name)
	return res.RequeueAfter, err
}

// releaseGoneLocks deletes the Leases naming an entry (but keep) whose entry no longer offers their host: the
// entry is gone, or offers another host now. A Lease of an entry that may still be being created is looked at again
// after the grace.
func (r *PooledRemoteMachineReconciler) releaseGoneLocks(ctx context.Context, key client.ObjectKey, keep string) (ctrl.Result, error) {
	if r.Locks == nil {
		return ctrl.Result{}, nil
	}
	leases := &coordinationv1.LeaseList{}
	// Read-only: the cached Leases are not copied; the few this entry holds are.
	if err := r.Client.List(ctx, leases, client.InNamespace(r.Locks.Namespace), client.MatchingFields{indexLeaseHolder: pool.HashedKey(key.String())}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}
	var result ctrl.Result
	for i := range leases.Items {
		if leases.Items[i].Name == keep || pool.LeaseHolder(&leases.Items[i]) != key.String() {
			continue
		}
		again, err := r.Locks.ReleaseGone(ctx, leases.Items[i].DeepCopy())
		if err != nil {
			return ctrl.Result{}, err
		}
		if again > 0 && (result.RequeueAfter == 0 || again < result.RequeueAfter) {
			result.RequeueAfter = again
		}
	}
	return result, nil
}

// clusterPaused says whether the claim's Cluster exists and is paused (spec.paused or the paused annotation).
func (r *PooledRemoteMachineReconciler) clusterPaused(ctx context.Context, namespace, name string) (bool, error) {
	if name == "" {
		return false, nil
	}
	cluster := &clusterv1.Cluster{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, cluster); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return annotations.IsPaused(cluster, cluster), nil
}

// phaseOf derives an entry's phase from its spec, its holder and the last probe.
func phaseOf(entry *infrav1.PooledRemoteMachine, holder *infrav1.RemoteMachine) infrav1.PooledRemoteMachinePhase {
	switch {
	case entry.Spec.Quarantine != nil:
		return infrav1.PooledRemoteMachinePhaseQuarantined
	case entry.Spec.ClaimRef != nil && holder != nil && !holder.DeletionTimestamp.IsZero():
		return infrav1.PooledRemoteMachinePhaseCleaning
	case entry.Spec.ClaimRef != nil:
		return infrav1.PooledRemoteMachinePhaseClaimed
	case entry.Spec.Maintenance:
		return infrav1.PooledRemoteMachinePhaseMaintenance
	case conditions.IsFalse(entry, infrav1.ReachableCondition):
		return infrav1.PooledRemoteMachinePhaseUnreachable
	case awaitsNewKeyProbe(entry):
		// The last step of the cleanup: a login with the host's new keys.
		return infrav1.PooledRemoteMachinePhaseCleaning
	}
	return infrav1.PooledRemoteMachinePhaseAvailable
}

// awaitsNewKeyProbe says whether the entry's host got new SSH host keys that no probe has logged in with yet.
func awaitsNewKeyProbe(entry *infrav1.PooledRemoteMachine) bool {
	_, ok := entry.Annotations[infrav1.HostKeysRegeneratedAnnotation]
	return ok && entry.Spec.ClaimRef == nil
}

// newKeyProbeInterval is how often the host of an entry awaiting a probe with its new host keys is probed, whatever
// ProbeInterval and ProbeSelector say (the entry is not offered until a probe succeeds).
const newKeyProbeInterval = 5 * time.Second

func (r *PooledRemoteMachineReconciler) releaseOrphan(ctx context.Context, entry *infrav1.PooledRemoteMachine, why string) (ctrl.Result, error) {
	name := entry.Spec.ClaimRef.Name
	if err := r.Claimer.Release(ctx, entry.Namespace, entry.Name, name); err != nil {
		return ctrl.Result{}, err
	}
	ctrl.LoggerFrom(ctx).Info("Released an orphan claim", "reason", why)
	r.Recorder.Eventf(entry, nil, corev1.EventTypeNormal, infrav1.OrphanClaimReleasedReason, "Release", "Released the claim of %s: %s", name, why)
	return ctrl.Result{RequeueAfter: time.Second}, nil
}

// quarantineVanished takes an entry out of service whose bound RemoteMachine disappeared without CAPR's cleanup
// (its finalizer removed by hand, or a clusterctl move that stopped half-way): the host may be dirty, and a person
// must check it.
func (r *PooledRemoteMachineReconciler) quarantineVanished(ctx context.Context, entry *infrav1.PooledRemoteMachine, why string) (ctrl.Result, error) {
	msg := why + " without CAPR cleaning the host. Check the host (kubeadm reset / k0s reset), then remove spec.quarantine to return it to the pool."
	if err := quarantineEntry(ctx, r.Client, r.Claimer, entry, infrav1.RemoteMachineVanishedReason, msg); err != nil {
		return ctrl.Result{}, err
	}
	ctrl.LoggerFrom(ctx).Info("Quarantined a pool entry whose RemoteMachine vanished", "reason", why)
	r.Recorder.Eventf(entry, nil, corev1.EventTypeWarning, infrav1.QuarantinedReason, "Quarantine", "Quarantined: %s", why)
	return ctrl.Result{RequeueAfter: time.Second}, nil
}

// quarantineEntry records a quarantine on an entry and clears its claim, failing on a concurrent change.
func quarantineEntry(ctx context.Context, c client.Client, claimer *pool.Claimer, entry *infrav1.PooledRemoteMachine, reason, message string) error {
	orig := entry.DeepCopy()
	entry.Spec.Quarantine = &infrav1.PooledMachineQuarantine{Reason: reason, Message: sshrunner.Truncate(message, 10000), Since: &metav1.Time{Time: time.Now()}}
	entry.Spec.ClaimRef = nil
	if err := c.Patch(ctx, entry, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	claimer.Forget(entry.Namespace, entry.Name)
	return nil
}

// probeDue says whether a free entry's host should be checked now.
func (r *PooledRemoteMachineReconciler) probeDue(entry *infrav1.PooledRemoteMachine) bool {
	if entry.Spec.ClaimRef != nil || entry.Spec.Quarantine != nil || entry.Spec.Maintenance || r.Hosts == nil || r.Tasks == nil {
		return false
	}
	interval := r.ProbeInterval
	if awaitsNewKeyProbe(entry) {
		if interval == 0 || interval > newKeyProbeInterval {
			interval = newKeyProbeInterval
		}
	} else if r.ProbeInterval == 0 || (r.ProbeSelector != nil && !r.ProbeSelector.Matches(labels.Set(entry.Labels))) {
		return false
	}
	last, ok := r.lastProbe.Load(entry.UID)
	return !ok || time.Since(last.(time.Time)) >= interval
}

// tasks returns the runner, or an idle one when the controller has none (the probe is off then).
func (r *PooledRemoteMachineReconciler) tasks() *tasks.Runner {
	if r.Tasks == nil {
		return idleTasks
	}
	return r.Tasks
}

// idleTasks is a runner no task is ever started on.
var idleTasks = tasks.NewWithLimits(tasks.Limits{Total: 1})

// probeResult is what a probe task found: the keys it pinned (first contact under AcceptNew: nothing was sent to
// the host), or what it measured after logging in with the pinned keys.
type probeResult struct {
	Pinned *infrav1.RemoteHost
	Facts  *host.Facts
}

// startProbe checks the entry's host over SSH in a task ("probe"), off the reconcile workers; probeFinished records
// the result in the Reachable condition. Under AcceptNew, while a key (the bastion's, then the host's) is still to
// be pinned, the task only reads the key, without logging in, and probeFinished stores it on the entry before the
// next task logs in with it. Logged in, the task checks CAPR's prerequisites on the host and measures it. A changed
// key is reported (condition and event), never trusted.
func (r *PooledRemoteMachineReconciler) startProbe(ctx context.Context, entry *infrav1.PooledRemoteMachine) {
	r.lastProbe.Store(entry.UID, time.Now())
	h := entry.Spec.Machine.RemoteHost.DeepCopy()
	cfg, _, err := hostConfig(ctx, r.APIReader, entry.Namespace, h, ctrl.LoggerFrom(ctx))
	if err != nil {
		r.probeFailed(entry, err)
		return
	}
	hosts := r.Hosts
	r.Tasks.Start(ctx, string(entry.UID), tasks.Probe, entry, func(ctx context.Context) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		res, err := probeHost(ctx, hosts, cfg, h)
		countSSHError(err)
		return res, err
	})
}

// probeHost pins the keys h still needs (at most the bastion's, then the host's) and returns them, or, when all
// are pinned, logs in and measures the host.
func probeHost(ctx context.Context, hosts HostService, cfg sshrunner.Config, h *infrav1.RemoteHost) (probeResult, error) {
	if !needsPin(h) {
		facts, err := hosts.Facts(ctx, cfg)
		return probeResult{Facts: facts}, err
	}
	for i := 0; needsPin(h) && i < 2; i++ {
		res, err := hosts.Scan(ctx, cfg)
		if err == nil {
			err = pin(h, res)
		}
		if err != nil {
			return probeResult{}, err
		}
		cfg.HostKeys = h.HostKeys
		if h.Bastion != nil && cfg.Bastion != nil {
			b := *cfg.Bastion
			b.HostKeys = h.Bastion.HostKeys
			cfg.Bastion = &b
		}
	}
	return probeResult{Pinned: h}, nil
}

// probeFinished records a probe task's result on the entry: keys it pinned are stored (and the host probed again
// at once, logging in with them); a failure, or the host's facts, go to the Reachable condition and status.
func (r *PooledRemoteMachineReconciler) probeFinished(ctx context.Context, entry *infrav1.PooledRemoteMachine, task tasks.Result) {
	log := ctrl.LoggerFrom(ctx)
	if task.Err != nil {
		r.probeFailed(entry, task.Err)
		return
	}
	res := task.Value.(probeResult)
	if res.Pinned != nil {
		if entry.Spec.ClaimRef != nil || entry.Spec.Quarantine != nil {
			return // claimed meanwhile: the RemoteMachine pins its own
		}
		r.lastProbe.Delete(entry.UID) // logged in with the pinned keys at once
		pinned := entry.DeepCopy()
		h := &pinned.Spec.Machine.RemoteHost
		if !sameEndpoints(h, res.Pinned) {
			return // the entry names another host (or bastion) now: its keys are read again
		}
		// Only what is still unpinned: keys a person pinned meanwhile stay.
		if len(h.HostKeys) == 0 {
			h.HostKeys = res.Pinned.HostKeys
		}
		if h.Bastion != nil && len(h.Bastion.HostKeys) == 0 {
			h.Bastion.HostKeys = res.Pinned.Bastion.HostKeys
		}
		if equality.Semantic.DeepEqual(pinned.Spec, entry.Spec) {
			return
		}
		// Stored before the first login.
		if err := r.Client.Patch(ctx, pinned, client.MergeFromWithOptions(entry, client.MergeFromWithOptimisticLock{})); err != nil {
			log.Info("Could not pin the probed host key; the next probe tries again", "error", err.Error())
			return
		}
		pinned.Status = entry.Status
		*entry = *pinned
		return
	}
	if awaitsNewKeyProbe(entry) {
		// Logged in with the new keys: the entry is offered again.
		offered := entry.DeepCopy()
		delete(offered.Annotations, infrav1.HostKeysRegeneratedAnnotation)
		if err := r.Client.Patch(ctx, offered, client.MergeFromWithOptions(entry, client.MergeFromWithOptimisticLock{})); err != nil {
			log.Info("Could not record the probe with the host's new keys; the next probe tries again", "error", err.Error())
			r.lastProbe.Delete(entry.UID)
			return
		}
		offered.Status = entry.Status
		*entry = *offered
		log.Info("Logged in with the host's new SSH host keys; the entry is offered again")
		r.Recorder.Eventf(entry, nil, corev1.EventTypeNormal, infrav1.HostKeysRegeneratedReason, "Probe", "Logged in with the host's new SSH host keys; offered again")
	}
	if res.Facts != nil {
		entry.Status.Capacity, entry.Status.NodeInfo = res.Facts.Capacity, res.Facts.NodeInfo
	}
	conditions.Set(entry, metav1.Condition{Type: infrav1.ReachableCondition, Status: metav1.ConditionTrue, Reason: infrav1.ReachableReason})
}

// sameEndpoints says whether a and b name the same host and bastion.
func sameEndpoints(a, b *infrav1.RemoteHost) bool {
	if a.Address != b.Address || a.Port != b.Port || (a.Bastion == nil) != (b.Bastion == nil) {
		return false
	}
	return a.Bastion == nil || (a.Bastion.Address == b.Bastion.Address && a.Bastion.Port == b.Bastion.Port)
}

// probeFailed reports a failed probe in the Reachable condition, with an event when the reason changes.
func (r *PooledRemoteMachineReconciler) probeFailed(entry *infrav1.PooledRemoteMachine, err error) {
	reason, _ := failureReason(err)
	msg := sshrunner.Truncate(mismatchMessage(err, "pooledremotemachine", entry.Name, entry.Namespace), 4096)
	if !conditions.IsFalse(entry, infrav1.ReachableCondition) || conditions.GetReason(entry, infrav1.ReachableCondition) != reason {
		eventType := corev1.EventTypeNormal
		if errors.Is(err, sshrunner.ErrHostKeyMismatch) {
			eventType = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(entry, nil, eventType, reason, "Probe", "Host probe failed: %s", sshrunner.Truncate(msg, 900))
	}
	conditions.Set(entry, metav1.Condition{Type: infrav1.ReachableCondition, Status: metav1.ConditionFalse, Reason: reason, Message: msg})
}

// Package controllers holds CAPR's reconcilers. The RemoteMachine controller has two jobs: run the bootstrap data
// on the host over SSH, and clean the host when the RemoteMachine is deleted.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
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
	"github.com/capr-project/cluster-api-provider-remote/metrics"
	"github.com/capr-project/cluster-api-provider-remote/pool"
	"github.com/capr-project/cluster-api-provider-remote/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/sshrunner/cloudinit"
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

// hostMarker is the identity the host's marker holds for rm: the UID of the RemoteMachine that bootstrapped it
// (another UID for a copy made by clusterctl move).
func hostMarker(rm *infrav1.RemoteMachine) types.UID {
	if uid := rm.Annotations[infrav1.BootstrapUIDAnnotation]; uid != "" {
		return types.UID(uid)
	}
	return rm.UID
}

// RemoteMachineReconciler bootstraps RemoteMachines' hosts and cleans them on deletion.
type RemoteMachineReconciler struct {
	Client client.Client
	// APIReader reads Secrets directly: CAPR never lists or watches Secrets.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Tasks     *TaskRunner
	Dial      Dialer
	Claimer   *pool.Claimer
	// WatchFilterValue limits reconciliation to objects with this cluster.x-k8s.io/watch-filter label value.
	WatchFilterValue string
	// BootstrapTimeout bounds one bootstrap run; CleanupTimeout is how long after deletion cleanup is retried
	// before the pool entry is quarantined.
	BootstrapTimeout time.Duration
	CleanupTimeout   time.Duration
	// RetryInterval is the wait before a failed bootstrap or cleanup is tried again.
	RetryInterval time.Duration
	// ClusterCache reaches workload clusters, to set the providerID of the Node; nil skips that.
	ClusterCache clustercache.ClusterCache

	// retries maps a RemoteMachine's UID to the retry gate of its last failed bootstrap.
	retries    sync.Map
	moveLabels moveLabeller
}

// retryGate holds back a failed bootstrap: until a time, or (terminal failures) until the spec changes.
type retryGate struct {
	notBefore  time.Time
	generation int64
	terminal   bool
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
		return ctrl.Result{}, client.IgnoreNotFound(err)
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
	if cluster != nil && rm.DeletionTimestamp.IsZero() {
		if isPaused, requeue, err := paused.EnsurePausedCondition(ctx, r.Client, cluster, rm); err != nil || isPaused || requeue {
			return ctrl.Result{}, err
		}
	}

	helper, err := patch.NewHelper(rm, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	defer func() {
		setReadyCondition(rm)
		patchOnExit(ctx, helper, rm, &retErr, infrav1.ReadyCondition, infrav1.BootstrapSucceededCondition, infrav1.PausedCondition)
	}()

	if !rm.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, rm, machine)
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

// setReadyCondition summarises: Ready mirrors BootstrapSucceeded, and is False while deleting.
func setReadyCondition(rm *infrav1.RemoteMachine) {
	if !rm.DeletionTimestamp.IsZero() {
		ready := conditions.Get(rm, infrav1.ReadyCondition)
		if ready == nil || ready.Reason != infrav1.CleanupFailedReason {
			conditions.Set(rm, metav1.Condition{Type: infrav1.ReadyCondition, Status: metav1.ConditionFalse, Reason: infrav1.DeletingReason, Message: "Cleaning the host"})
		}
		return
	}
	b := conditions.Get(rm, infrav1.BootstrapSucceededCondition)
	if b == nil {
		conditions.Set(rm, metav1.Condition{Type: infrav1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: infrav1.WaitingForMachineReason})
		return
	}
	conditions.Set(rm, metav1.Condition{Type: infrav1.ReadyCondition, Status: b.Status, Reason: b.Reason, Message: b.Message})
}

func (r *RemoteMachineReconciler) reconcileNormal(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine, cluster *clusterv1.Cluster) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	key := string(rm.UID)
	r.moveLabels.ensure(ctx, r.Client, r.APIReader, rm.Namespace, &rm.Spec.RemoteHost)
	if ptr.Deref(rm.Status.Initialization.Provisioned, false) {
		r.Tasks.Take(key, "bootstrap") // a late result of a run that adopted this one's
		if _, ok := rm.Annotations[infrav1.BootstrapUIDAnnotation]; !ok {
			annotations.AddAnnotations(rm, map[string]string{infrav1.BootstrapUIDAnnotation: string(rm.UID)})
		}
		if !conditions.IsTrue(rm, infrav1.BootstrapSucceededCondition) {
			setBootstrapCondition(rm, metav1.ConditionTrue, infrav1.BootstrapSucceededReason, "Bootstrap succeeded on "+hostPort(rm))
		}
		return r.reconcileNodeProviderID(ctx, rm, machine, cluster)
	}
	adoptOnly := hostMarker(rm) != rm.UID
	switch {
	case adoptOnly:
		// A copy made by clusterctl move: it only adopts its host's finished bootstrap, and needs no bootstrap data.
	case machine == nil:
		setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.WaitingForMachineReason, "Waiting for a Machine to own this RemoteMachine")
		return ctrl.Result{}, nil
	case cluster == nil || !ptr.Deref(cluster.Status.Initialization.InfrastructureProvisioned, false):
		setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.WaitingForClusterInfrastructureReason, "Waiting for the Cluster's infrastructure to be provisioned")
		return ctrl.Result{}, nil
	case machine.Spec.Bootstrap.DataSecretName == nil:
		setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.WaitingForBootstrapDataReason, "Waiting for the bootstrap provider to write the bootstrap data")
		return ctrl.Result{}, nil
	}

	if res, ok := r.Tasks.Take(key, "bootstrap"); ok {
		return r.bootstrapFinished(ctx, rm, res)
	}
	if r.Tasks.Running(key, "bootstrap") {
		return ctrl.Result{}, nil
	}
	if v, ok := r.retries.Load(key); ok {
		gate := v.(retryGate)
		switch {
		case gate.terminal && gate.generation == rm.Generation:
			return ctrl.Result{}, nil // waits for a change of the spec, e.g. new hostKeys
		case !gate.terminal && time.Now().Before(gate.notBefore):
			return ctrl.Result{RequeueAfter: time.Until(gate.notBefore)}, nil
		}
	}
	// The cache may not show a success this controller has just written: check before starting another run.
	fresh := &infrav1.RemoteMachine{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(rm), fresh); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if fresh.ResourceVersion != rm.ResourceVersion {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	in, err := r.bootstrapInput(ctx, rm, machine, adoptOnly)
	if err != nil {
		if errors.Is(err, ErrMissingSecret) {
			setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.WaitingForSecretReason, err.Error())
			return ctrl.Result{RequeueAfter: r.RetryInterval}, nil
		}
		return ctrl.Result{}, err
	}
	log.Info("Running bootstrap", "address", rm.Spec.Address, "adoptOnly", adoptOnly)
	timeout := r.BootstrapTimeout
	r.Tasks.Start(ctx, key, "bootstrap", rm, func(ctx context.Context) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		res, err := runBootstrap(ctx, r.Dial, in)
		metrics.BootstrapDuration.Observe(time.Since(start).Seconds())
		countSSHError(err)
		return res, err
	})
	setBootstrapCondition(rm, metav1.ConditionFalse, infrav1.BootstrappingReason, "Running the bootstrap data on "+hostPort(rm))
	return ctrl.Result{}, nil
}

// bootstrapInput reads the bootstrap data (unless adoptOnly) and the SSH keys (directly, uncached).
func (r *RemoteMachineReconciler) bootstrapInput(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine, adoptOnly bool) (bootstrapInput, error) {
	if adoptOnly {
		cfg, _, err := hostConfig(ctx, r.APIReader, rm.Namespace, &rm.Spec.RemoteHost, ctrl.LoggerFrom(ctx))
		return bootstrapInput{UID: hostMarker(rm), AdoptOnly: true, Config: cfg}, err
	}
	data := &corev1.Secret{}
	name := *machine.Spec.Bootstrap.DataSecretName
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: rm.Namespace, Name: name}, data); err != nil {
		if apierrors.IsNotFound(err) {
			return bootstrapInput{}, fmt.Errorf("%w: bootstrap data Secret %s does not exist yet", ErrMissingSecret, name)
		}
		return bootstrapInput{}, err
	}
	value := data.Data["value"]
	if len(value) == 0 {
		return bootstrapInput{}, fmt.Errorf("%w: bootstrap data Secret %s has no data key 'value'", ErrMissingSecret, name)
	}
	cfg, _, err := hostConfig(ctx, r.APIReader, rm.Namespace, &rm.Spec.RemoteHost, ctrl.LoggerFrom(ctx))
	if err != nil {
		return bootstrapInput{}, err
	}
	cfg.Secrets = append(cfg.Secrets, string(value))
	return bootstrapInput{UID: hostMarker(rm), Config: cfg, Data: value, Format: string(data.Data["format"]), WorkingDir: rm.Spec.WorkingDir}, nil
}

// bootstrapFinished records a bootstrap's outcome.
func (r *RemoteMachineReconciler) bootstrapFinished(ctx context.Context, rm *infrav1.RemoteMachine, res TaskResult) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	if res.Err != nil {
		reason, terminal := bootstrapFailureReason(res.Err)
		msg := sshrunner.Truncate(res.Err.Error(), 4096)
		log.Info("Bootstrap failed", "reason", reason, "error", msg)
		setBootstrapCondition(rm, metav1.ConditionFalse, reason, msg)
		r.Recorder.Eventf(rm, nil, corev1.EventTypeWarning, reason, "Bootstrap", "Bootstrap on %s failed: %s", hostPort(rm), sshrunner.Truncate(msg, 900))
		r.retries.Store(string(rm.UID), retryGate{notBefore: time.Now().Add(r.RetryInterval), generation: rm.Generation, terminal: terminal})
		if terminal {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{RequeueAfter: r.RetryInterval}, nil
	}
	r.retries.Delete(string(rm.UID))
	out := res.Value.(*bootstrapResult)
	if b := rm.Spec.Bastion; b != nil && out.NewBastionKey != "" && len(b.HostKeys) == 0 {
		b.HostKeys = []string{out.NewBastionKey}
	}
	if out.NewHostKey != "" && len(rm.Spec.HostKeys) == 0 {
		rm.Spec.HostKeys = []string{out.NewHostKey}
		if err := r.pinPoolEntryHostKey(ctx, rm, out.NewHostKey); err != nil {
			return ctrl.Result{}, err
		}
	}
	rm.Spec.ProviderID = "remote-machine://" + hostPort(rm)
	annotations.AddAnnotations(rm, map[string]string{infrav1.BootstrapUIDAnnotation: string(hostMarker(rm))})
	rm.Status.Addresses = machineAddresses(rm.Spec.Address, out.Hostname)
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

// pinPoolEntryHostKey records a key pinned on first use on the pool entry too, so the next claim of the host
// verifies it.
func (r *RemoteMachineReconciler) pinPoolEntryHostKey(ctx context.Context, rm *infrav1.RemoteMachine, key string) error {
	ref := rm.Spec.PooledRemoteMachineRef
	if ref == nil {
		return nil
	}
	entry := &infrav1.PooledRemoteMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: rm.Namespace, Name: ref.Name}, entry); err != nil {
		return client.IgnoreNotFound(err)
	}
	if len(entry.Spec.Machine.HostKeys) > 0 || entry.Spec.ClaimRef == nil || entry.Spec.ClaimRef.Name != rm.Name {
		return nil
	}
	orig := entry.DeepCopy()
	entry.Spec.Machine.HostKeys = []string{key}
	return r.Client.Patch(ctx, entry, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// bootstrapFailureReason maps an error to a condition reason, and says whether retrying unchanged is pointless.
func bootstrapFailureReason(err error) (string, bool) {
	switch {
	case errors.Is(err, sshrunner.ErrHostKeyMismatch):
		return infrav1.HostKeyMismatchReason, true
	case errors.Is(err, cloudinit.ErrUnsupported):
		return infrav1.UnsupportedBootstrapFormatReason, true
	case errors.Is(err, ErrHostAlreadyBootstrapped):
		return infrav1.HostAlreadyBootstrappedReason, false
	case errors.Is(err, ErrBootstrapNotFound):
		return infrav1.BootstrapNotFoundReason, true
	case errors.Is(err, sshrunner.ErrHostKeyUnknown):
		return infrav1.HostKeyUnknownReason, false
	case errors.Is(err, sshrunner.ErrAuthFailed):
		return infrav1.AuthFailedReason, false
	case errors.Is(err, sshrunner.ErrSudo):
		return infrav1.SudoUnavailableReason, false
	case errors.Is(err, sshrunner.ErrUnreachable), errors.Is(err, sshrunner.ErrTimeout):
		return infrav1.HostUnreachableReason, false
	}
	return infrav1.BootstrapFailedReason, false
}

// countSSHError counts an SSH failure by reason in capr_ssh_errors_total.
func countSSHError(err error) {
	if err == nil {
		return
	}
	if reason := sshrunner.Reason(err); reason != "Error" {
		metrics.SSHErrorsTotal.WithLabelValues(reason).Inc()
	}
}

// hostPort returns "address:port", IPv6 in brackets.
func hostPort(rm *infrav1.RemoteMachine) string {
	return net.JoinHostPort(rm.Spec.Address, strconv.Itoa(int(rm.Spec.Port)))
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

// needsCleanup says whether CAPR may have changed the host: a bootstrap ran (or was running), here or before
// clusterctl move made this copy (spec.providerID is set only by a successful bootstrap).
func needsCleanup(rm *infrav1.RemoteMachine) bool {
	if ptr.Deref(rm.Status.Initialization.Provisioned, false) || rm.Spec.ProviderID != "" || hostMarker(rm) != rm.UID {
		return true
	}
	c := conditions.Get(rm, infrav1.BootstrapSucceededCondition)
	if c == nil {
		return false
	}
	switch c.Reason {
	case infrav1.WaitingForMachineReason, infrav1.WaitingForClusterInfrastructureReason, infrav1.WaitingForBootstrapDataReason,
		infrav1.WaitingForSecretReason, infrav1.HostKeyMismatchReason, infrav1.HostKeyUnknownReason, infrav1.AuthFailedReason,
		infrav1.UnsupportedBootstrapFormatReason, infrav1.HostAlreadyBootstrappedReason:
		return false
	}
	return true
}

func (r *RemoteMachineReconciler) reconcileDelete(ctx context.Context, rm *infrav1.RemoteMachine, machine *clusterv1.Machine) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	key := string(rm.UID)
	wasRunning := r.Tasks.Running(key, "bootstrap")
	if wasRunning {
		log.Info("Cancelling bootstrap of a deleted RemoteMachine")
		r.Tasks.Cancel(key, "bootstrap")
	}
	r.Tasks.Take(key, "bootstrap")
	r.retries.Delete(key)
	if deletedForMove(rm) {
		// clusterctl move has copied the RemoteMachine to another management cluster: the copy holds the host.
		log.Info("Deleted by clusterctl move; the host is left to the moved copy")
		controllerutil.RemoveFinalizer(rm, infrav1.RemoteMachineFinalizer)
		return ctrl.Result{}, nil
	}
	_, skip := rm.Annotations[SkipCleanupAnnotation]
	if c := conditions.Get(rm, infrav1.BootstrapSucceededCondition); !skip && c != nil && c.Reason == infrav1.HostAlreadyBootstrappedReason {
		// The host held another bootstrap when it was handed to this machine: never return it to the pool as is.
		return r.finishDelete(ctx, rm, errors.New(c.Message))
	}
	if !wasRunning && !needsCleanup(rm) {
		return r.finishDelete(ctx, rm, nil)
	}
	if skip {
		if rm.Spec.PooledRemoteMachineRef != nil {
			return r.finishDelete(ctx, rm, errCleanupSkipped)
		}
		return r.finishDelete(ctx, rm, nil)
	}
	if res, ok := r.Tasks.Take(key, "cleanup"); ok {
		if res.Err == nil {
			log.Info("Cleanup succeeded")
			r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, "CleanupSucceeded", "Cleanup", "Cleaned %s", hostPort(rm))
			return r.finishDelete(ctx, rm, nil)
		}
		conditions.Set(rm, metav1.Condition{Type: infrav1.ReadyCondition, Status: metav1.ConditionFalse, Reason: infrav1.CleanupFailedReason, Message: sshrunner.Truncate(res.Err.Error(), 4096)})
		if time.Since(rm.DeletionTimestamp.Time) < r.CleanupTimeout && !errors.Is(res.Err, ErrForeignBootstrap) {
			log.Info("Cleanup failed, retrying", "error", res.Err.Error())
			return ctrl.Result{RequeueAfter: r.RetryInterval}, nil
		}
		return r.finishDelete(ctx, rm, res.Err)
	}
	if r.Tasks.Running(key, "cleanup") {
		return ctrl.Result{}, nil
	}
	cfg, _, err := hostConfig(ctx, r.APIReader, rm.Namespace, &rm.Spec.RemoteHost, log)
	if err != nil {
		// Without a usable key the host cannot be cleaned: never hang, never hand it out dirty. Other errors
		// (the apiserver briefly unavailable) are retried.
		if errors.Is(err, ErrMissingSecret) || time.Since(rm.DeletionTimestamp.Time) > r.CleanupTimeout {
			return r.finishDelete(ctx, rm, err)
		}
		return ctrl.Result{}, err
	}
	commands := rm.Spec.CustomCleanUpCommands
	if len(commands) == 0 {
		kind := ""
		if machine != nil && machine.Spec.Bootstrap.ConfigRef.IsDefined() {
			kind = machine.Spec.Bootstrap.ConfigRef.Kind
		}
		commands = defaultCleanup(kind)
	}
	log.Info("Running cleanup", "address", rm.Spec.Address)
	timeout := r.CleanupTimeout
	in := cleanupInput{UID: hostMarker(rm), Config: cfg, Commands: commands, WorkingDir: rm.Spec.WorkingDir}
	r.Tasks.Start(ctx, key, "cleanup", rm, func(ctx context.Context) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := runCleanup(ctx, r.Dial, in)
		countSSHError(err)
		return nil, err
	})
	return ctrl.Result{}, nil
}

// finishDelete returns the pool entry (quarantined when cleanupErr is set) and removes the finalizer.
func (r *RemoteMachineReconciler) finishDelete(ctx context.Context, rm *infrav1.RemoteMachine, cleanupErr error) (ctrl.Result, error) {
	if ref := rm.Spec.PooledRemoteMachineRef; ref != nil {
		if cleanupErr != nil {
			if err := r.quarantine(ctx, rm, cleanupErr); err != nil {
				return ctrl.Result{}, err
			}
		} else if err := r.Claimer.Release(ctx, rm.Namespace, ref.Name, rm.Name); err != nil {
			return ctrl.Result{}, err
		} else {
			r.Recorder.Eventf(rm, nil, corev1.EventTypeNormal, "Released", "Release", "Returned PooledRemoteMachine %s to pool %q", ref.Name, rm.Spec.Pool)
		}
	} else if cleanupErr != nil {
		r.Recorder.Eventf(rm, nil, corev1.EventTypeWarning, infrav1.CleanupFailedReason, "Cleanup", "The host %s was not cleaned: %s", hostPort(rm), sshrunner.Truncate(cleanupErr.Error(), 900))
	}
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

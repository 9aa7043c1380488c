package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/storage/names"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// +kubebuilder:webhook:verbs=create;update,path=/mutate-infrastructure-cluster-x-k8s-io-v1beta1-remotemachine,mutating=true,failurePolicy=fail,matchPolicy=Equivalent,groups=infrastructure.cluster.x-k8s.io,resources=remotemachines,versions=v1beta1,name=default.remotemachine.infrastructure.cluster.x-k8s.io,sideEffects=NoneOnDryRun,admissionReviewVersions=v1
// +kubebuilder:webhook:verbs=create;update,path=/validate-infrastructure-cluster-x-k8s-io-v1beta1-remotemachine,mutating=false,failurePolicy=fail,matchPolicy=Equivalent,groups=infrastructure.cluster.x-k8s.io,resources=remotemachines,versions=v1beta1,name=validation.remotemachine.infrastructure.cluster.x-k8s.io,sideEffects=None,admissionReviewVersions=v1

// RemoteMachine admits RemoteMachines. Its defaulting claims a pool entry for a new pooled RemoteMachine and fills
// the host fields from it; its validation checks the host fields and the control-plane endpoint backstop.
type RemoteMachine struct {
	Claimer *pool.Claimer
	Guard   *EndpointGuard
	// Identity is the user name CAPR's manager acts as: only it may record the bootstrap-uid annotation.
	Identity *Identity
	// Locks tells which hosts a pool offers: a RemoteMachine cannot name one directly.
	Locks *pool.EndpointLocks
	// Exhausted tells the owner of a refused RemoteMachine (a MachineSet, a control plane) that its pool is
	// exhausted; nil tells no one.
	Exhausted *ExhaustedNotifier
}

var bootstrapUIDPath = field.NewPath("metadata", "annotations").Key(infrav1.BootstrapUIDAnnotation)

// SetupWebhookWithManager registers the RemoteMachine webhooks.
func (w *RemoteMachine) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &infrav1.RemoteMachine{}).WithDefaulter(w).WithValidator(w).Complete()
}

var remoteMachineGK = infrav1.GroupVersion.WithKind("RemoteMachine").GroupKind()

// Default claims a pool entry on create and keeps the claimed fields on update.
func (w *RemoteMachine) Default(ctx context.Context, m *infrav1.RemoteMachine) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return err
	}
	switch req.Operation {
	case admissionv1.Create:
		if err := w.claim(ctx, req, m); err != nil {
			return err
		}
		recordAcceptedBy(req.UserInfo.Username, nil, m)
	case admissionv1.Update:
		old := &infrav1.RemoteMachine{}
		if err := json.Unmarshal(req.OldObject.Raw, old); err != nil {
			return apierrors.NewBadRequest(fmt.Sprintf("decoding the stored RemoteMachine: %v", err))
		}
		if old.Spec.PooledRemoteMachineRef != nil && m.DeletionTimestamp.IsZero() {
			if errs := overriddenEntryFields(old, m); len(errs) > 0 {
				return apierrors.NewInvalid(remoteMachineGK, m.Name, errs)
			}
		}
		pool.KeepClaimedFields(old, m)
		recordAcceptedBy(req.UserInfo.Username, old.Annotations, m)
	}
	return nil
}

// overriddenEntryFields refuses an update of a pooled RemoteMachine that sets cleanup fields other than its entry's
// (kept from the stored object): the pool's owner decides how its hosts are cleaned.
func overriddenEntryFields(old, m *infrav1.RemoteMachine) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if len(m.Spec.CustomCleanUpCommands) > 0 && !slices.Equal(m.Spec.CustomCleanUpCommands, old.Spec.CustomCleanUpCommands) {
		errs = append(errs, field.Forbidden(spec.Child("customCleanUpCommands"), entryOwnsMessage(old.Spec.PooledRemoteMachineRef.Name)))
	}
	if m.Spec.WorkingDir != "" && m.Spec.WorkingDir != old.Spec.WorkingDir {
		errs = append(errs, field.Forbidden(spec.Child("workingDir"), entryOwnsMessage(old.Spec.PooledRemoteMachineRef.Name)))
	}
	return errs
}

func entryOwnsMessage(entry string) string {
	where := "its PooledRemoteMachine"
	if entry != "" {
		where = "PooledRemoteMachine " + entry
	}
	return "a pooled host is cleaned the way its pool entry says: set it on " + where + " (spec.machine), not on the RemoteMachine"
}

// claim takes a pool entry for a RemoteMachine that names a pool or selector and no address, or takes over the
// entry a RemoteMachine recreated by clusterctl move names.
func (w *RemoteMachine) claim(ctx context.Context, req admission.Request, m *infrav1.RemoteMachine) error {
	if ref := m.Spec.PooledRemoteMachineRef; ref != nil {
		return w.reclaim(ctx, req, m, ref)
	}
	if m.Spec.Address != "" || (m.Spec.Pool == "" && m.Spec.Selector == nil) {
		return nil
	}
	if m.Namespace == "" {
		m.Namespace = req.Namespace
	}
	selector, err := w.checkNewClaim(ctx, m)
	if err != nil {
		return err
	}
	return w.claimEntry(ctx, req, m, selector)
}

// reclaim fills a RemoteMachine recreated (by clusterctl move) under the claim of the pool entry ref names: only an
// entry claimed for this very name may be named, and the recreation must carry the bootstrap the entry recorded.
func (w *RemoteMachine) reclaim(ctx context.Context, req admission.Request, m *infrav1.RemoteMachine, ref *infrav1.PooledRemoteMachineReference) error {
	entry := &infrav1.PooledRemoteMachine{}
	err := w.Claimer.APIReader.Get(ctx, client.ObjectKey{Namespace: req.Namespace, Name: ref.Name}, entry)
	if err != nil && !apierrors.IsNotFound(err) {
		return apierrors.NewInternalError(err)
	}
	if err != nil || m.Name == "" || entry.Spec.ClaimRef == nil || entry.Spec.ClaimRef.Name != m.Name {
		return apierrors.NewInvalid(remoteMachineGK, m.Name, field.ErrorList{field.Forbidden(field.NewPath("spec", "pooledRemoteMachineRef"),
			"is set by CAPR when it claims a pool entry for this RemoteMachine; remove it and set spec.pool (or spec.selector) instead")})
	}
	// A recreation carries what CAPR recorded about the host: the bootstrap the host holds, and the entry's host
	// fields (taken from the entry, whatever the request says).
	if uid := entry.Spec.ClaimRef.BootstrapUID; uid != "" && types.UID(m.Annotations[infrav1.BootstrapUIDAnnotation]) != uid {
		return apierrors.NewInvalid(remoteMachineGK, m.Name, field.ErrorList{field.Forbidden(bootstrapUIDPath, fmt.Sprintf(
			"PooledRemoteMachine %s holds the bootstrap of RemoteMachine UID %s: only a copy of that RemoteMachine carrying it (as clusterctl move makes) may take the entry over", ref.Name, uid))})
	}
	pool.Fill(m, entry)
	return nil
}

// checkNewClaim refuses, before anything is claimed, what validation would refuse anyway (so no claim is left
// behind) and what a new claim may not bring; it returns the parsed selector.
func (w *RemoteMachine) checkNewClaim(ctx context.Context, m *infrav1.RemoteMachine) (labels.Selector, error) {
	if _, ok := m.Annotations[infrav1.BootstrapUIDAnnotation]; ok {
		// Only a RemoteMachine recreated with its claimed entry (clusterctl move) may carry it: on a new claim it
		// would make CAPR adopt whatever bootstrap the host holds.
		return nil, apierrors.NewInvalid(remoteMachineGK, m.Name, field.ErrorList{field.Forbidden(bootstrapUIDPath,
			"is set by CAPR when it first runs the bootstrap on the host; remove it from a RemoteMachine that takes a new host from a pool")})
	}
	if errs := validateSelectorSize(field.NewPath("spec", "selector"), m.Spec.Selector); len(errs) > 0 {
		return nil, apierrors.NewInvalid(remoteMachineGK, m.Name, errs)
	}
	var selector labels.Selector
	if m.Spec.Selector != nil {
		var err error
		if selector, err = metav1.LabelSelectorAsSelector(m.Spec.Selector); err != nil {
			return nil, apierrors.NewInvalid(remoteMachineGK, m.Name, field.ErrorList{field.Invalid(field.NewPath("spec", "selector"), m.Spec.Selector, err.Error())})
		}
	}
	var own field.ErrorList
	for _, f := range pool.OwnHostFields(&m.Spec.RemoteHost) {
		own = append(own, field.Forbidden(field.NewPath("spec", f), entryOwnsMessage("")))
	}
	if len(own) > 0 {
		return nil, apierrors.NewInvalid(remoteMachineGK, m.Name, own)
	}
	if errs := w.Guard.CheckRemoteMachine(ctx, m); len(errs) > 0 {
		return nil, apierrors.NewInvalid(remoteMachineGK, m.Name, errs)
	}
	return selector, nil
}

// claimEntry claims (or, on a dry run, picks) a free entry of m's pool and fills m from it.
func (w *RemoteMachine) claimEntry(ctx context.Context, req admission.Request, m *infrav1.RemoteMachine, selector labels.Selector) error {
	// The apiserver names generateName objects after admission; the claim needs the name now.
	if m.Name == "" && m.GenerateName != "" {
		m.Name = names.SimpleNameGenerator.GenerateName(m.GenerateName)
	}
	domains, err := wantedFailureDomains(ctx, w.Claimer.APIReader, m)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	preq := pool.Request{
		FailureDomains: domains,
		Namespace:      m.Namespace,
		Pool:           m.Spec.Pool,
		Selector:       selector,
		MachineName:    m.Name,
		ClusterName:    m.Labels[pool.ClusterNameLabel],
		ControlPlane:   hasLabel(m.Labels, pool.ControlPlaneLabel),
	}
	var entry *infrav1.PooledRemoteMachine
	if req.DryRun != nil && *req.DryRun {
		entry, err = w.Claimer.Pick(ctx, preq)
	} else {
		entry, err = w.Claimer.Claim(ctx, preq)
	}
	if errors.Is(err, pool.ErrExhausted) {
		path := field.NewPath("spec", "pool")
		if m.Spec.Pool == "" {
			path = field.NewPath("spec", "selector")
		}
		message := err.Error() + "; add PooledRemoteMachines to the pool or free one by deleting a RemoteMachine that holds one"
		if req.DryRun == nil || !*req.DryRun {
			w.Exhausted.Notify(m, message)
		}
		return apierrors.NewInvalid(remoteMachineGK, m.Name, field.ErrorList{field.Forbidden(path, message)})
	}
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	pool.Fill(m, entry)
	// Stored holding a host, the machine carries the finalizer by which its deletion releases the host at once,
	// even when it is deleted before CAPR's controller first sees it (else the orphan sweep frees the entry later).
	controllerutil.AddFinalizer(m, infrav1.RemoteMachineFinalizer)
	return nil
}

func hasLabel(l map[string]string, key string) bool {
	_, ok := l[key]
	return ok
}

// uidPattern is the shape of a Kubernetes UID.
var uidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// ValidateCreate checks a new RemoteMachine after defaulting.
func (w *RemoteMachine) ValidateCreate(ctx context.Context, m *infrav1.RemoteMachine) (admission.Warnings, error) {
	errs := validateRemoteMachineSpec(field.NewPath("spec"), &m.Spec)
	moveErrs, err := w.checkMoveAnnotations(ctx, m.Namespace, nil, m.Annotations, true)
	if err != nil {
		return nil, err
	}
	errs = append(errs, moveErrs...)
	errs = append(errs, validateAcceptHostKey("remotemachine", nil, m)...)
	errs = append(errs, w.Guard.CheckRemoteMachine(ctx, m)...)
	poolErrs, err := w.checkPooledHost(ctx, m)
	if err != nil {
		return nil, err
	}
	errs = append(errs, poolErrs...)
	return nil, invalid("RemoteMachine", m.Name, errs)
}

// ValidateUpdate checks a changed RemoteMachine. CAPR's move annotations are checked on every update; on an object
// being deleted, only they and the spec (which must not change) are, so its finalizer can always be removed.
func (w *RemoteMachine) ValidateUpdate(ctx context.Context, old, m *infrav1.RemoteMachine) (admission.Warnings, error) {
	spec := field.NewPath("spec")
	errs, err := w.checkMoveAnnotations(ctx, m.Namespace, old.Annotations, m.Annotations, false)
	if err != nil {
		return nil, err
	}
	_, wasDeletingForMove := old.Annotations[clusterctlv1.DeleteForMoveAnnotation]
	_, deletingForMove := m.Annotations[clusterctlv1.DeleteForMoveAnnotation]
	if wasDeletingForMove && !deletingForMove {
		errs = append(errs, field.Forbidden(annotationPath(clusterctlv1.DeleteForMoveAnnotation),
			"marks a RemoteMachine clusterctl move is deleting; it cannot be removed"))
	}
	errs = append(errs, validateAcceptHostKey("remotemachine", old.Annotations, m)...)
	if !m.DeletionTimestamp.IsZero() {
		deleting, err := w.checkDeletingUpdate(ctx, old, m)
		if err != nil {
			return nil, err
		}
		return nil, invalid("RemoteMachine", m.Name, append(errs, deleting...))
	}
	errs = append(errs, validateRemoteMachineSpec(spec, &m.Spec)...)
	if old.Spec.PooledRemoteMachineRef == nil && m.Spec.PooledRemoteMachineRef != nil {
		errs = append(errs, field.Forbidden(spec.Child("pooledRemoteMachineRef"), "is set by CAPR when it claims a pool entry at creation; it cannot be added later"))
	}
	if len(old.Spec.HostKeys) > 0 && len(m.Spec.HostKeys) == 0 {
		errs = append(errs, field.Forbidden(spec.Child("hostKeys"),
			"pinned host keys cannot be removed, or the next connection would trust any key; replace them with the host's new keys instead"))
	}
	if old.Spec.Bastion != nil && len(old.Spec.Bastion.HostKeys) > 0 && (m.Spec.Bastion == nil || len(m.Spec.Bastion.HostKeys) == 0) {
		errs = append(errs, field.Forbidden(spec.Child("bastion", "hostKeys"),
			"the bastion's pinned host keys cannot be removed, or the next connection would trust any key; replace them with its new keys instead"))
	}
	if m.Spec.PooledRemoteMachineRef == nil && (old.Spec.Address != m.Spec.Address || old.Spec.Port != m.Spec.Port || !equality.Semantic.DeepEqual(old.Spec.SSHKeyRef, m.Spec.SSHKeyRef) ||
		!equality.Semantic.DeepEqual(old.Spec.Bastion, m.Spec.Bastion)) {
		poolErrs, err := w.checkPooledHost(ctx, m)
		if err != nil {
			return nil, err
		}
		errs = append(errs, poolErrs...)
	}
	return nil, invalid("RemoteMachine", m.Name, errs)
}

// ValidateDelete allows every delete; cleanup runs in the controller.
func (w *RemoteMachine) ValidateDelete(context.Context, *infrav1.RemoteMachine) (admission.Warnings, error) {
	return nil, nil
}

func validateRemoteMachineSpec(path *field.Path, s *infrav1.RemoteMachineSpec) field.ErrorList {
	errs := validateRemoteHost(path, &s.RemoteHost)
	errs = append(errs, validateSelectorSize(path.Child("selector"), s.Selector)...)
	if s.Address == "" {
		errs = append(errs, field.Required(path.Child("address"),
			"set the host's IP address or DNS name, or set spec.pool to take a host from a PooledRemoteMachine pool"))
	}
	if s.SSHKeyRef == nil {
		errs = append(errs, field.Required(path.Child("sshKeyRef"),
			"name the Secret whose data key 'value' holds the SSH private key for this host"))
	}
	return errs
}

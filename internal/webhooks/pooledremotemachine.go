package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// +kubebuilder:webhook:verbs=create;update,path=/mutate-infrastructure-cluster-x-k8s-io-v1beta1-pooledremotemachine,mutating=true,failurePolicy=fail,matchPolicy=Equivalent,groups=infrastructure.cluster.x-k8s.io,resources=pooledremotemachines,versions=v1beta1,name=default.pooledremotemachine.infrastructure.cluster.x-k8s.io,sideEffects=None,admissionReviewVersions=v1
// +kubebuilder:webhook:verbs=create;update;delete,path=/validate-infrastructure-cluster-x-k8s-io-v1beta1-pooledremotemachine,mutating=false,failurePolicy=fail,matchPolicy=Equivalent,groups=infrastructure.cluster.x-k8s.io,resources=pooledremotemachines,versions=v1beta1,name=validation.pooledremotemachine.infrastructure.cluster.x-k8s.io,sideEffects=NoneOnDryRun,admissionReviewVersions=v1

// PooledRemoteMachine admits pool entries: host fields parse, a host is offered by one entry cluster-wide (its
// Lease, see pool.EndpointLocks), only CAPR changes a claim, and a claimed entry is not deleted.
type PooledRemoteMachine struct {
	// Locks holds each offered host's Lease.
	Locks *pool.EndpointLocks
	// Identity is the user name CAPR's manager acts as.
	Identity *Identity
}

// SetupWebhookWithManager registers the PooledRemoteMachine webhooks.
func (w *PooledRemoteMachine) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &infrav1.PooledRemoteMachine{}).WithDefaulter(w).WithValidator(w).Complete()
}

// Default records who accepts a rebuilt host's key (the accept-host-key-by annotation).
func (w *PooledRemoteMachine) Default(ctx context.Context, m *infrav1.PooledRemoteMachine) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return err
	}
	var old map[string]string
	if req.Operation == admissionv1.Update {
		stored := &infrav1.PooledRemoteMachine{}
		if err := json.Unmarshal(req.OldObject.Raw, stored); err != nil {
			return apierrors.NewBadRequest(fmt.Sprintf("decoding the stored PooledRemoteMachine: %v", err))
		}
		old = stored.Annotations
	}
	recordAcceptedBy(req.UserInfo.Username, old, m)
	return nil
}

// ValidateCreate checks a new pool entry. A claim on a new entry is accepted, so that clusterctl move can recreate
// claimed entries.
func (w *PooledRemoteMachine) ValidateCreate(ctx context.Context, m *infrav1.PooledRemoteMachine) (admission.Warnings, error) {
	errs := validatePooledRemoteMachineSpec(&m.Spec)
	errs = append(errs, validateAcceptHostKey("pooledremotemachine", nil, m)...)
	if len(errs) == 0 {
		var err error
		if errs, err = w.lockEndpoint(ctx, m); err != nil {
			return nil, apierrors.NewInternalError(err)
		}
	}
	return nil, invalid("PooledRemoteMachine", m.Name, errs)
}

// ValidateUpdate checks a changed pool entry. An entry being deleted is not checked, so a finalizer can always be
// removed.
func (w *PooledRemoteMachine) ValidateUpdate(ctx context.Context, old, m *infrav1.PooledRemoteMachine) (admission.Warnings, error) {
	if !m.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	errs := validatePooledRemoteMachineSpec(&m.Spec)
	if len(errs) == 0 && pool.Endpoint(old.Spec.Machine.Address, old.Spec.Machine.Port) != pool.Endpoint(m.Spec.Machine.Address, m.Spec.Machine.Port) {
		dup, err := w.lockEndpoint(ctx, m)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		errs = append(errs, dup...)
	}
	errs = append(errs, validateAcceptHostKey("pooledremotemachine", old.Annotations, m)...)
	if claim := old.Spec.ClaimRef; claim != nil && acceptHostKeyChanged(old.Annotations, m) {
		errs = append(errs, field.Forbidden(acceptHostKeyPath, fmt.Sprintf(
			"the entry is claimed by RemoteMachine %s, which holds a copy of its pinned keys: accept the key on it instead, and CAPR replaces the key on both (the entry first): "+
				"kubectl annotate remotemachine %s -n %s %s=%s", claim.Name, claim.Name, m.Namespace, infrav1.AcceptHostKeyAnnotation, m.Annotations[infrav1.AcceptHostKeyAnnotation])))
	}
	if old.Spec.ClaimRef != nil && m.Spec.ClaimRef != nil && !sameHostExceptPinnedKeys(&old.Spec.Machine, &m.Spec.Machine) {
		// Only CAPR replaces a claimed entry's pinned keys, when a person accepted a rebuilt host's new key on the
		// RemoteMachine holding it.
		byCAPR := false
		if sameHostExceptKeys(&old.Spec.Machine, &m.Spec.Machine) {
			var err error
			if byCAPR, err = w.Identity.Requested(ctx); err != nil {
				return nil, err
			}
		}
		if !byCAPR {
			errs = append(errs, field.Invalid(field.NewPath("spec", "machine"), "(changed)", fmt.Sprintf(
				"machine cannot change while the entry is claimed by RemoteMachine %s; delete that RemoteMachine first, or set maintenance: true to keep the entry from being claimed again"+
					" (a rebuilt host's new key is accepted on the RemoteMachine: see its HostKeyMismatch condition)", old.Spec.ClaimRef.Name)))
		}
	}
	if !equality.Semantic.DeepEqual(old.Spec.ClaimRef, m.Spec.ClaimRef) {
		byCAPR, err := w.Identity.Requested(ctx)
		if err != nil {
			return nil, err
		}
		if !byCAPR {
			errs = append(errs, field.Forbidden(field.NewPath("spec", "claimRef"),
				"the claim is managed by CAPR: a RemoteMachine claims the entry when it is created and releases it when it is deleted; set spec.maintenance to keep the entry from being claimed"))
		}
	}
	return nil, invalid("PooledRemoteMachine", m.Name, errs)
}

// ValidateDelete refuses to delete an entry while a RemoteMachine holds it, unless clusterctl move deletes it
// after copying it (and its claim) to another management cluster.
func (w *PooledRemoteMachine) ValidateDelete(ctx context.Context, m *infrav1.PooledRemoteMachine) (admission.Warnings, error) {
	if _, moved := m.Annotations[clusterctlv1.DeleteForMoveAnnotation]; m.Spec.ClaimRef == nil || moved {
		if req, err := admission.RequestFromContext(ctx); err == nil && !ptr.Deref(req.DryRun, false) {
			// The Lease stays held: this delete may still be refused by a later webhook, or wait on a finalizer.
			// Marked as the lock of a stored entry, it is stale, and the host free, as soon as the entry is gone.
			if err := w.Locks.MarkStored(ctx, m); err != nil {
				ctrl.LoggerFrom(ctx).Info("Could not mark the host's Lease; it is taken over once stale", "error", err.Error())
			}
		}
		return nil, nil
	}
	return nil, apierrors.NewForbidden(infrav1.GroupVersion.WithResource("pooledremotemachines").GroupResource(), m.Name,
		fmt.Errorf("it is claimed by RemoteMachine %q: delete that RemoteMachine first (its cleanup releases the entry), and set spec.maintenance: true to keep the entry from being claimed again", m.Spec.ClaimRef.Name))
}

func validatePooledRemoteMachineSpec(s *infrav1.PooledRemoteMachineSpec) field.ErrorList {
	return validateRemoteHost(field.NewPath("spec", "machine"), &s.Machine.RemoteHost)
}

// lockEndpoint takes the host's Lease for m, or refuses the host another entry offers.
func (w *PooledRemoteMachine) lockEndpoint(ctx context.Context, m *infrav1.PooledRemoteMachine) (field.ErrorList, error) {
	if m.Spec.Machine.Address == "" {
		return nil, nil
	}
	dryRun := false
	if req, err := admission.RequestFromContext(ctx); err == nil {
		dryRun = ptr.Deref(req.DryRun, false)
	}
	err := w.Locks.Acquire(ctx, m, dryRun)
	if held := (*pool.HeldError)(nil); errors.As(err, &held) {
		return field.ErrorList{field.Invalid(field.NewPath("spec", "machine", "address"), m.Spec.Machine.Address, held.Error())}, nil
	}
	return nil, err
}

// Identity is the user name the manager authenticates as, asked of the apiserver once.
type Identity struct {
	// Client creates the SelfSubjectReview.
	Client client.Client

	mu   sync.Mutex
	name string
}

// Get returns the manager's user name.
func (i *Identity) Get(ctx context.Context) (string, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.name != "" {
		return i.name, nil
	}
	review := &authenticationv1.SelfSubjectReview{}
	if err := i.Client.Create(ctx, review); err != nil {
		return "", fmt.Errorf("asking the apiserver who the manager is: %w", err)
	}
	i.name = review.Status.UserInfo.Username
	return i.name, nil
}

// Requested says whether the admission request in ctx was made by CAPR's manager itself.
func (i *Identity) Requested(ctx context.Context) (bool, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return false, err
	}
	self, err := i.Get(ctx)
	if err != nil {
		return false, apierrors.NewInternalError(err)
	}
	return req.UserInfo.Username == self, nil
}

// sameHostExceptPinnedKeys says whether two machine specs are equal, allowing the host's and the bastion's keys to
// go from none to pinned (CAPR pins the first key seen under AcceptNew).
func sameHostExceptPinnedKeys(old, m *infrav1.PooledMachineSpec) bool {
	o, n := old.DeepCopy(), m.DeepCopy()
	if len(o.HostKeys) == 0 {
		o.HostKeys, n.HostKeys = nil, nil
	}
	if o.Bastion != nil && n.Bastion != nil && len(o.Bastion.HostKeys) == 0 {
		o.Bastion.HostKeys, n.Bastion.HostKeys = nil, nil
	}
	return equality.Semantic.DeepEqual(o, n)
}

// sameHostExceptKeys says whether two machine specs are equal apart from the host's and the bastion's pinned keys,
// which must stay pinned.
func sameHostExceptKeys(old, m *infrav1.PooledMachineSpec) bool {
	o, n := old.DeepCopy(), m.DeepCopy()
	if len(n.HostKeys) == 0 && len(o.HostKeys) > 0 {
		return false
	}
	o.HostKeys, n.HostKeys = nil, nil
	if o.Bastion != nil && n.Bastion != nil {
		if len(n.Bastion.HostKeys) == 0 && len(o.Bastion.HostKeys) > 0 {
			return false
		}
		o.Bastion.HostKeys, n.Bastion.HostKeys = nil, nil
	}
	return equality.Semantic.DeepEqual(o, n)
}

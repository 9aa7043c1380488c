package webhooks

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// The annotations only CAPR and the move path may set, change or remove on a RemoteMachine: they decide which host
// a RemoteMachine adopts (bootstrap-uid), whether its deletion cleans the host (delete-for-move) and whether
// clusterctl move waits for it (block-move).
var moveAnnotations = []string{infrav1.BootstrapUIDAnnotation, clusterctlv1.DeleteForMoveAnnotation, clusterctlv1.BlockMoveAnnotation}

// MayMove says whether the request in ctx comes from CAPR's manager or from the move path: a requester who may read
// the namespace's Secrets, as clusterctl move must (it copies them), which a cluster user cannot. Adopting a host
// by its bootstrap-uid, or deleting a RemoteMachine without cleaning its host, gives as much as the host's key does,
// so it takes the right to read that key.
func (i *Identity) MayMove(ctx context.Context, namespace string) (bool, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return false, err
	}
	if self, err := i.Requested(ctx); err != nil || self {
		return self, err
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range req.UserInfo.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: req.UserInfo.Username, UID: req.UserInfo.UID, Groups: req.UserInfo.Groups, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "get", Resource: "secrets"},
	}}
	if err := i.Client.Create(ctx, review); err != nil {
		return false, apierrors.NewInternalError(fmt.Errorf("asking the apiserver whether %s may read Secrets in %s: %w", req.UserInfo.Username, namespace, err))
	}
	return review.Status.Allowed, nil
}

func annotationPath(key string) *field.Path {
	return field.NewPath("metadata", "annotations").Key(key)
}

// moveAnnotationMessage explains who may set one of moveAnnotations.
func moveAnnotationMessage(key string) string {
	return fmt.Sprintf("%s is CAPR's record of what the host holds and how it is handed on; only CAPR's manager, or clusterctl move run by a user who may read "+
		"this namespace's Secrets, may set, change or remove it", key)
}

// changedMoveAnnotations returns the move annotations m adds, changes or removes against old (nil on create).
func changedMoveAnnotations(old, m map[string]string) []string {
	var out []string
	for _, key := range moveAnnotations {
		was, wasSet := old[key]
		is, isSet := m[key]
		if was != is || wasSet != isSet {
			out = append(out, key)
		}
	}
	return out
}

// checkMoveAnnotations refuses a change of CAPR's move annotations by anyone but CAPR and the move path, one error per
// annotation. clusterctl move, deleting a moved RemoteMachine, replaces its annotations with delete-for-move:
// removing bootstrap-uid and block-move then is part of the move path too, and as such needs the same right.
func (w *RemoteMachine) checkMoveAnnotations(ctx context.Context, namespace string, old, m map[string]string, creating bool) (field.ErrorList, error) {
	changed := changedMoveAnnotations(old, m)
	if len(changed) == 0 {
		return nil, nil
	}
	may, err := w.Identity.MayMove(ctx, namespace)
	if err != nil {
		return nil, err
	}
	var errs field.ErrorList
	for _, key := range changed {
		switch {
		case !may:
			errs = append(errs, field.Forbidden(annotationPath(key), moveAnnotationMessage(key)))
		case key == infrav1.BootstrapUIDAnnotation:
			e, err := w.checkBootstrapUID(ctx, old, m, creating)
			if err != nil {
				return nil, err
			}
			errs = append(errs, e...)
		}
	}
	return errs, nil
}

// checkBootstrapUID checks a change of the bootstrap-uid annotation by CAPR or the move path: a RemoteMachine
// recreated by clusterctl move carries a UID (a new pooled claim may not: see claim), clusterctl's delete-for-move
// drops it, CAPR records it once; nothing else adds, changes or removes it.
func (w *RemoteMachine) checkBootstrapUID(ctx context.Context, old, m map[string]string, creating bool) (field.ErrorList, error) {
	was, is := old[infrav1.BootstrapUIDAnnotation], m[infrav1.BootstrapUIDAnnotation]
	_, deletingForMove := m[clusterctlv1.DeleteForMoveAnnotation]
	switch {
	case creating:
		if !uidPattern.MatchString(is) {
			return field.ErrorList{field.Invalid(bootstrapUIDPath, is, "must be the UID of the RemoteMachine whose bootstrap the host holds")}, nil
		}
		return nil, nil
	case is == "" && deletingForMove:
		return nil, nil
	case was == "":
		if byCAPR, err := w.Identity.Requested(ctx); err != nil || byCAPR {
			return nil, err
		}
	}
	return field.ErrorList{field.Forbidden(bootstrapUIDPath,
		"is set by CAPR when it first runs the bootstrap on the host and names the machine the host's marker belongs to; it cannot be added, changed or removed")}, nil
}

// checkDeletingUpdate refuses, on a RemoteMachine being deleted, any change of spec but CAPR's own (it replaces a
// rebuilt host's pinned key when a person accepts it): the cleanup runs with what was stored when the deletion began.
// Metadata may change, so the finalizer can always be removed.
func (w *RemoteMachine) checkDeletingUpdate(ctx context.Context, old, m *infrav1.RemoteMachine) (field.ErrorList, error) {
	if equality.Semantic.DeepEqual(old.Spec, m.Spec) {
		return nil, nil
	}
	self, err := w.Identity.Requested(ctx)
	if err != nil || self {
		return nil, err
	}
	return field.ErrorList{field.Forbidden(field.NewPath("spec"),
		"cannot change while the RemoteMachine is being deleted: its host is cleaned as it was stored when the deletion began")}, nil
}

// checkPooledHost refuses a RemoteMachine that names its host directly (no claim) when that host, or the key that
// reaches it, belongs to a pool: a pooled host is reached only through a claim, so its maintenance, quarantine and
// cleanup rules cannot be bypassed. Another namespace's entry is not named.
func (w *RemoteMachine) checkPooledHost(ctx context.Context, m *infrav1.RemoteMachine) (field.ErrorList, error) {
	if m.Spec.PooledRemoteMachineRef != nil {
		return nil, nil
	}
	return checkDirectHost(ctx, w.Locks, w.Claimer.Reader, w.Identity, field.NewPath("spec"), m.Namespace, &m.Spec.RemoteHost)
}

// checkDirectHost refuses a host named directly (spec at path) that a pool offers, whoever asks; and a pool entry's
// key Secret, unless the requester may read the namespace's Secrets (the platform team, or clusterctl move: they hold
// the key anyway, and may share one key between pooled and named hosts).
func checkDirectHost(ctx context.Context, locks *pool.EndpointLocks, reader client.Reader, self *Identity, spec *field.Path, namespace string, h *infrav1.RemoteHost) (field.ErrorList, error) {
	if h.Address == "" {
		return nil, nil
	}
	var errs field.ErrorList
	if locks != nil {
		held, err := locks.Offered(ctx, pool.Endpoint(h.Address, h.Port))
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		if held {
			errs = append(errs, field.Forbidden(spec.Child("address"), fmt.Sprintf(
				"host %s is offered by a pool (a PooledRemoteMachine); a pooled host is reached only through a claim: set spec.pool (or spec.selector) instead of spec.address, "+
					"or ask the pool's owner to remove the host from the pool", pool.Endpoint(h.Address, h.Port))))
		}
	}
	keys := []*field.Path{}
	names := []string{}
	if h.SSHKeyRef != nil {
		keys, names = append(keys, spec.Child("sshKeyRef", "name")), append(names, h.SSHKeyRef.Name)
	}
	if b := h.Bastion; b != nil {
		keys, names = append(keys, spec.Child("bastion", "sshKeyRef", "name")), append(names, b.SSHKeyRef.Name)
	}
	checked, mayRead := false, false
	for i, name := range names {
		entry, err := pool.EntryWithKeySecret(ctx, reader, namespace, name)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		if entry == "" {
			continue
		}
		if !checked {
			var err error
			if mayRead, err = self.MayMove(ctx, namespace); err != nil {
				return nil, err
			}
			checked = true
		}
		if !mayRead {
			errs = append(errs, field.Forbidden(keys[i], fmt.Sprintf(
				"Secret %s holds the SSH key of pool entries (PooledRemoteMachine %s); a pooled host is reached only through a claim: set spec.pool (or spec.selector), "+
					"or use a key Secret of your own for a host outside the pools (only a user who may read this namespace's Secrets may name a pool's key)", name, entry)))
		}
	}
	return errs, nil
}

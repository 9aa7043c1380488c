package webhooks

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/cluster-api/util/topology"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// +kubebuilder:webhook:verbs=create;update,path=/validate-infrastructure-cluster-x-k8s-io-v1beta1-remotemachinetemplate,mutating=false,failurePolicy=fail,matchPolicy=Equivalent,groups=infrastructure.cluster.x-k8s.io,resources=remotemachinetemplates,versions=v1beta1,name=validation.remotemachinetemplate.infrastructure.cluster.x-k8s.io,sideEffects=None,admissionReviewVersions=v1
// +kubebuilder:webhook:verbs=create;update,path=/validate-infrastructure-cluster-x-k8s-io-v1beta1-remoteclustertemplate,mutating=false,failurePolicy=fail,matchPolicy=Equivalent,groups=infrastructure.cluster.x-k8s.io,resources=remoteclustertemplates,versions=v1beta1,name=validation.remoteclustertemplate.infrastructure.cluster.x-k8s.io,sideEffects=None,admissionReviewVersions=v1

// RemoteMachineTemplate admits RemoteMachineTemplates: the template's host fields parse, and the spec never
// changes (create a new template and point the MachineDeployment or control plane at it instead).
type RemoteMachineTemplate struct {
	// Locks, Reader (a cache with pool.SetupIndexes) and Identity check a host named directly, as for a RemoteMachine:
	// Cluster API creates the template's machines with its own, wider rights.
	Locks    *pool.EndpointLocks
	Reader   client.Reader
	Identity *Identity
}

// SetupWebhookWithManager registers the RemoteMachineTemplate webhook.
func (w *RemoteMachineTemplate) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &infrav1.RemoteMachineTemplate{}).WithValidator(w).Complete()
}

// ValidateCreate checks a new template.
func (w *RemoteMachineTemplate) ValidateCreate(ctx context.Context, t *infrav1.RemoteMachineTemplate) (admission.Warnings, error) {
	path := field.NewPath("spec", "template", "spec")
	spec := &t.Spec.Template.Spec
	errs := validateRemoteHost(path, &spec.RemoteHost)
	if w.Identity != nil {
		// Cluster API copies the template's metadata and spec onto machines it creates with its own rights: what the
		// template's author may not set on a RemoteMachine, they may not set here.
		if changed := changedMoveAnnotations(nil, t.Spec.Template.ObjectMeta.Annotations); len(changed) > 0 {
			may, err := w.Identity.MayMove(ctx, t.Namespace)
			if err != nil {
				return nil, err
			}
			for _, key := range changed {
				if !may {
					errs = append(errs, field.Forbidden(field.NewPath("spec", "template", "metadata", "annotations").Key(key), moveAnnotationMessage(key)))
				}
			}
		}
		if spec.PooledRemoteMachineRef == nil {
			direct, err := checkDirectHost(ctx, w.Locks, w.Reader, w.Identity, path, t.Namespace, &spec.RemoteHost)
			if err != nil {
				return nil, err
			}
			errs = append(errs, direct...)
		}
	}
	errs = append(errs, validateSelectorSize(path.Child("selector"), spec.Selector)...)
	if spec.Address == "" && (spec.Pool != "" || spec.Selector != nil) {
		// Its machines would be refused at their claim.
		for _, f := range pool.OwnHostFields(&spec.RemoteHost) {
			errs = append(errs, field.Forbidden(path.Child(f), entryOwnsMessage("")))
		}
	}
	return nil, invalid("RemoteMachineTemplate", t.Name, errs)
}

// ValidateUpdate refuses spec changes, except in Cluster API topology dry-runs.
func (w *RemoteMachineTemplate) ValidateUpdate(ctx context.Context, old, t *infrav1.RemoteMachineTemplate) (admission.Warnings, error) {
	if !t.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return nil, immutableTemplate(ctx, "RemoteMachineTemplate", t, equality.Semantic.DeepEqual(old.Spec, t.Spec))
}

// ValidateDelete allows every delete.
func (w *RemoteMachineTemplate) ValidateDelete(context.Context, *infrav1.RemoteMachineTemplate) (admission.Warnings, error) {
	return nil, nil
}

// RemoteClusterTemplate admits RemoteClusterTemplates: the spec never changes.
type RemoteClusterTemplate struct{}

// SetupWebhookWithManager registers the RemoteClusterTemplate webhook.
func (w *RemoteClusterTemplate) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &infrav1.RemoteClusterTemplate{}).WithValidator(w).Complete()
}

// ValidateCreate checks a new template.
func (w *RemoteClusterTemplate) ValidateCreate(_ context.Context, t *infrav1.RemoteClusterTemplate) (admission.Warnings, error) {
	return nil, invalid("RemoteClusterTemplate", t.Name, validateRemoteClusterSpec(field.NewPath("spec", "template", "spec"), &t.Spec.Template.Spec))
}

// ValidateUpdate refuses spec changes, except in Cluster API topology dry-runs.
func (w *RemoteClusterTemplate) ValidateUpdate(ctx context.Context, old, t *infrav1.RemoteClusterTemplate) (admission.Warnings, error) {
	if !t.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return nil, immutableTemplate(ctx, "RemoteClusterTemplate", t, equality.Semantic.DeepEqual(old.Spec, t.Spec))
}

// ValidateDelete allows every delete.
func (w *RemoteClusterTemplate) ValidateDelete(context.Context, *infrav1.RemoteClusterTemplate) (admission.Warnings, error) {
	return nil, nil
}

// immutableTemplate refuses a template whose spec changed. Cluster API's topology controller checks its planned
// changes with server-side-apply dry-runs marked by an annotation; those pass (contract: support for SSA dry run).
func immutableTemplate(ctx context.Context, kind string, t metav1.Object, unchanged bool) error {
	if unchanged {
		return nil
	}
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	if topology.IsDryRunRequest(req, t) {
		return nil
	}
	return invalid(kind, t.GetName(), field.ErrorList{field.Forbidden(field.NewPath("spec"),
		kind+" spec is immutable: create a new "+kind+" with the change and point its users at it")})
}

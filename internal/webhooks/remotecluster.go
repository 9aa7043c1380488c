package webhooks

import (
	"context"

	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// +kubebuilder:webhook:verbs=create;update,path=/validate-infrastructure-cluster-x-k8s-io-v1beta1-remotecluster,mutating=false,failurePolicy=fail,matchPolicy=Equivalent,groups=infrastructure.cluster.x-k8s.io,resources=remoteclusters,versions=v1beta1,name=validation.remotecluster.infrastructure.cluster.x-k8s.io,sideEffects=None,admissionReviewVersions=v1

// RemoteCluster admits RemoteClusters.
type RemoteCluster struct{}

// SetupWebhookWithManager registers the RemoteCluster webhooks.
func (w *RemoteCluster) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &infrav1.RemoteCluster{}).WithValidator(w).Complete()
}

// ValidateCreate checks a new RemoteCluster.
func (w *RemoteCluster) ValidateCreate(_ context.Context, c *infrav1.RemoteCluster) (admission.Warnings, error) {
	return nil, invalid("RemoteCluster", c.Name, validateRemoteClusterSpec(field.NewPath("spec"), &c.Spec))
}

// ValidateUpdate checks a changed RemoteCluster; one being deleted is not checked, so a finalizer can always be
// removed.
func (w *RemoteCluster) ValidateUpdate(_ context.Context, _, c *infrav1.RemoteCluster) (admission.Warnings, error) {
	if !c.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	return nil, invalid("RemoteCluster", c.Name, validateRemoteClusterSpec(field.NewPath("spec"), &c.Spec))
}

// ValidateDelete allows every delete.
func (w *RemoteCluster) ValidateDelete(context.Context, *infrav1.RemoteCluster) (admission.Warnings, error) {
	return nil, nil
}

func validateRemoteClusterSpec(path *field.Path, s *infrav1.RemoteClusterSpec) field.ErrorList {
	ep := s.ControlPlaneEndpoint
	if ep.IsZero() {
		return nil
	}
	errs := validateAddress(path.Child("controlPlaneEndpoint", "host"), ep.Host)
	if ep.Host == "" {
		errs = append(errs, field.Required(path.Child("controlPlaneEndpoint", "host"),
			"set the host (IP address or DNS name) clients use to reach the API server, or remove controlPlaneEndpoint"))
	}
	if ep.Port == 0 {
		errs = append(errs, field.Required(path.Child("controlPlaneEndpoint", "port"),
			"set the API server port, usually 6443"))
	}
	return errs
}

package webhooks

import (
	"context"

	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// +kubebuilder:webhook:verbs=create;update,path=/validate-infrastructure-cluster-x-k8s-io-v1beta1-remotemachine,mutating=false,failurePolicy=fail,matchPolicy=Equivalent,groups=infrastructure.cluster.x-k8s.io,resources=remotemachines,versions=v1beta1,name=validation.remotemachine.infrastructure.cluster.x-k8s.io,sideEffects=None,admissionReviewVersions=v1

// RemoteMachine admits RemoteMachines.
type RemoteMachine struct{}

// SetupWebhookWithManager registers the RemoteMachine webhooks.
func (w *RemoteMachine) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &infrav1.RemoteMachine{}).WithValidator(w).Complete()
}

// ValidateCreate checks a new RemoteMachine.
func (w *RemoteMachine) ValidateCreate(_ context.Context, m *infrav1.RemoteMachine) (admission.Warnings, error) {
	return nil, invalid("RemoteMachine", m.Name, validateRemoteMachineSpec(field.NewPath("spec"), &m.Spec))
}

// ValidateUpdate checks a changed RemoteMachine.
func (w *RemoteMachine) ValidateUpdate(_ context.Context, _, m *infrav1.RemoteMachine) (admission.Warnings, error) {
	return nil, invalid("RemoteMachine", m.Name, validateRemoteMachineSpec(field.NewPath("spec"), &m.Spec))
}

// ValidateDelete allows every delete.
func (w *RemoteMachine) ValidateDelete(context.Context, *infrav1.RemoteMachine) (admission.Warnings, error) {
	return nil, nil
}

func validateRemoteMachineSpec(path *field.Path, s *infrav1.RemoteMachineSpec) field.ErrorList {
	return validateRemoteHost(path, &s.RemoteHost)
}

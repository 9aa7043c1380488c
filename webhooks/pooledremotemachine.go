package webhooks

import (
	"context"

	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// +kubebuilder:webhook:verbs=create;update,path=/validate-infrastructure-cluster-x-k8s-io-v1beta1-pooledremotemachine,mutating=false,failurePolicy=fail,matchPolicy=Equivalent,groups=infrastructure.cluster.x-k8s.io,resources=pooledremotemachines,versions=v1beta1,name=validation.pooledremotemachine.infrastructure.cluster.x-k8s.io,sideEffects=None,admissionReviewVersions=v1

// PooledRemoteMachine admits pool entries.
type PooledRemoteMachine struct{}

// SetupWebhookWithManager registers the PooledRemoteMachine webhooks.
func (w *PooledRemoteMachine) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &infrav1.PooledRemoteMachine{}).WithValidator(w).Complete()
}

// ValidateCreate checks a new pool entry.
func (w *PooledRemoteMachine) ValidateCreate(_ context.Context, m *infrav1.PooledRemoteMachine) (admission.Warnings, error) {
	return nil, invalid("PooledRemoteMachine", m.Name, validatePooledRemoteMachineSpec(&m.Spec))
}

// ValidateUpdate checks a changed pool entry.
func (w *PooledRemoteMachine) ValidateUpdate(_ context.Context, _, m *infrav1.PooledRemoteMachine) (admission.Warnings, error) {
	return nil, invalid("PooledRemoteMachine", m.Name, validatePooledRemoteMachineSpec(&m.Spec))
}

// ValidateDelete allows every delete.
func (w *PooledRemoteMachine) ValidateDelete(context.Context, *infrav1.PooledRemoteMachine) (admission.Warnings, error) {
	return nil, nil
}

func validatePooledRemoteMachineSpec(s *infrav1.PooledRemoteMachineSpec) field.ErrorList {
	return validateRemoteHost(field.NewPath("spec", "machine"), &s.Machine.RemoteHost)
}

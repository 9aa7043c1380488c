// Package webhooks holds CAPR's admission webhooks: defaulting and validation of its own kinds.
package webhooks

import (
	ctrl "sigs.k8s.io/controller-runtime"
)

// SetupWithManager registers every CAPR webhook with the manager's webhook server.
func SetupWithManager(mgr ctrl.Manager) error {
	for _, w := range []interface{ SetupWebhookWithManager(ctrl.Manager) error }{
		&RemoteMachine{},
		&PooledRemoteMachine{},
		&RemoteCluster{},
	} {
		if err := w.SetupWebhookWithManager(mgr); err != nil {
			return err
		}
	}
	return nil
}

package controllers

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// Secrets (patch: the move label) are granted by config/rbac/secrets_role.yaml, apart from the generated rules.

// moveLabelPatch adds clusterctl's move label, so that `clusterctl move` takes a key Secret along with the
// objects that reference it. The Secret's data is neither read nor returned: the patch is metadata only.
var moveLabelPatch = client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+clusterctlv1.ClusterctlMoveLabel+`":""}}}`))

// moveLabelRecheck is how long a Secret seen labelled is trusted to stay so: a Secret recreated (a rotated key) or
// unlabelled is labelled again after at most this long.
const moveLabelRecheck = 10 * time.Minute

// moveLabeller labels the key Secrets a host references for clusterctl move.
type moveLabeller struct {
	checked sync.Map // namespace/name → time the label was last seen or set
}

// keySecrets returns the names of the Secrets a host's SSH connection uses.
func keySecrets(h *infrav1.RemoteHost) []string {
	var names []string
	if h.SSHKeyRef != nil {
		names = append(names, h.SSHKeyRef.Name)
	}
	if h.Bastion != nil && h.Bastion.SSHKeyRef.Name != "" {
		names = append(names, h.Bastion.SSHKeyRef.Name)
	}
	return names
}

// ensure labels the host's key Secrets that lack the label, reading only their metadata. It is best effort: a
// Secret that does not exist yet, or an error (say, RBAC without patch on Secrets), is logged and tried again at a
// later reconcile, and never holds up the caller's work.
func (l *moveLabeller) ensure(ctx context.Context, c client.Client, reader client.Reader, namespace string, h *infrav1.RemoteHost) {
	for _, name := range keySecrets(h) {
		key := namespace + "/" + name
		if at, ok := l.checked.Load(key); ok && time.Since(at.(time.Time)) < moveLabelRecheck {
			continue
		}
		secret := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}}
		err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
		if err == nil {
			if _, labelled := secret.Labels[clusterctlv1.ClusterctlMoveLabel]; !labelled {
				err = c.Patch(ctx, secret, moveLabelPatch)
			}
		}
		if err != nil {
			if !apierrors.IsNotFound(err) {
				ctrl.LoggerFrom(ctx).Info("Could not label the key Secret for clusterctl move; it will not move with the machines until it is labelled",
					"Secret", klog.KRef(namespace, name), "label", clusterctlv1.ClusterctlMoveLabel, "error", err.Error())
			}
			continue
		}
		l.checked.Store(key, time.Now())
	}
}

// deletedForMove says whether clusterctl move is deleting obj from the source cluster after copying it to the
// target: the host must be neither cleaned nor released, because the copy holds it.
func deletedForMove(obj client.Object) bool {
	_, ok := obj.GetAnnotations()[clusterctlv1.DeleteForMoveAnnotation]
	return ok
}

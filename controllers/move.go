package controllers

import (
	"context"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	clusterctlv1 "sigs.k8s.io/cluster-api/cmd/clusterctl/api/v1alpha3"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// +kubebuilder:rbac:groups="",resources=secrets,verbs=patch

// moveLabelPatch adds clusterctl's move label, so that `clusterctl move` takes a key Secret along with the
// objects that reference it. The Secret's data is neither read nor returned: the patch is metadata only.
var moveLabelPatch = client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+clusterctlv1.ClusterctlMoveLabel+`":""}}}`))

// moveLabeller labels the key Secrets a host references for clusterctl move, once per Secret per process.
type moveLabeller struct {
	done sync.Map // namespace/name → struct{}
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

// ensure labels the host's key Secrets. A Secret that does not exist yet is skipped (it is labelled at a later
// reconcile); other errors are returned.
func (l *moveLabeller) ensure(ctx context.Context, c client.Client, namespace string, h *infrav1.RemoteHost) error {
	for _, name := range keySecrets(h) {
		key := namespace + "/" + name
		if _, ok := l.done.Load(key); ok {
			continue
		}
		secret := &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		}
		if err := c.Patch(ctx, secret, moveLabelPatch); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return err
		}
		ctrl.LoggerFrom(ctx).V(4).Info("Labelled the key Secret for clusterctl move", "Secret", klog.KRef(namespace, name))
		l.done.Store(key, struct{}{})
	}
	return nil
}

// deletedForMove says whether clusterctl move is deleting obj from the source cluster after copying it to the
// target: the host must be neither cleaned nor released, because the copy holds it.
func deletedForMove(obj client.Object) bool {
	_, ok := obj.GetAnnotations()[clusterctlv1.DeleteForMoveAnnotation]
	return ok
}

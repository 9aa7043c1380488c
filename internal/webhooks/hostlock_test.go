//go:build integration

package webhooks_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

func hostLease(g Gomega, e *infrav1.PooledRemoteMachine) *coordinationv1.Lease {
	lease := &coordinationv1.Lease{}
	g.Expect(env.Client.Get(context.Background(), client.ObjectKey{Namespace: testenv.ManagerNamespace,
		Name: pool.EndpointLockName(pool.Endpoint(e.Spec.Machine.Address, e.Spec.Machine.Port))}, lease)).To(Succeed())
	return lease
}

// TestHostStaysLockedUntilItsEntryIsGone: the attack was a delete that does not commit, here because a finalizer
// keeps the entry: the delete webhook released the host's Lease before the delete was done, so a live entry was
// left unlocked and a second entry could offer its host. The Lease is now held as long as the entry exists, and
// the host is free at once when it is gone.
func TestHostStaysLockedUntilItsEntryIsGone(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	kept := testenv.NewEntry(ns, "default", 0)
	kept.Finalizers = []string{"example.com/keep"}
	g.Expect(env.Client.Create(ctx, kept)).To(Succeed())
	g.Expect(env.Client.Delete(ctx, kept)).To(Succeed())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(kept), kept)).To(Succeed())
	g.Expect(kept.DeletionTimestamp.IsZero()).To(BeFalse(), "the finalizer keeps the entry")

	g.Expect(ptr.Deref(hostLease(g, kept).Spec.HolderIdentity, "")).To(Equal(pool.HolderOf(kept)), "the live entry still holds its host")
	dup := testenv.NewEntry(ns, "default", 0)
	dup.Name, dup.Spec.Pool = "same-host", "other"
	g.Expect(env.Client.Create(ctx, dup.DeepCopy())).To(MatchError(ContainSubstring("is already offered by PooledRemoteMachine default-000 in this namespace")))

	// Once the entry is really gone, its host is free at once.
	g.Expect(env.Client.Patch(ctx, kept, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKeyFromObject(kept), &infrav1.PooledRemoteMachine{}))
	}, 10*time.Second, 50*time.Millisecond).Should(BeTrue())
	g.Expect(env.Client.Create(ctx, dup)).To(Succeed())
	g.Expect(ptr.Deref(hostLease(g, dup).Spec.HolderIdentity, "")).To(Equal(pool.HolderOf(dup)))
}

// TestImpossibleRenewTimeGivesNoGrace: the attack was a host Lease whose renewTime lies in the future (a year
// ahead) naming an entry that does not exist: the grace for entries being created (time since renewal < grace)
// held for a year, and the host could not be offered. A renew time beyond clock skew is now impossible and ignored.
func TestImpossibleRenewTimeGivesNoGrace(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	entry := testenv.NewEntry(ns, "default", 0)
	endpoint := pool.Endpoint(entry.Spec.Machine.Address, entry.Spec.Machine.Port)
	future := metav1.NewMicroTime(time.Now().AddDate(1, 0, 0))
	g.Expect(env.Client.Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: testenv.ManagerNamespace, Name: pool.EndpointLockName(endpoint),
			Labels:      map[string]string{pool.EndpointLockLabel: ""},
			Annotations: map[string]string{"infrastructure.cluster.x-k8s.io/endpoint": endpoint}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(ns + "/ghost/0b1f2c3d-1111-4222-8333-444455556666"), AcquireTime: &future, RenewTime: &future},
	})).To(Succeed())
	g.Expect(env.Client.Create(ctx, entry)).To(Succeed())
	g.Expect(ptr.Deref(hostLease(g, entry).Spec.HolderIdentity, "")).To(Equal(pool.HolderOf(entry)))
}

// TestRefusalAcrossNamespacesNamesNoEntry: the attack was a user of namespace B offering a host to learn which
// namespace and entry hold it: the refusal named them. Across namespaces it now says only that the host is taken.
func TestRefusalAcrossNamespacesNamesNoEntry(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	nsA, nsB := env.NewNamespace(t), env.NewNamespace(t)
	held := testenv.NewEntry(nsA, "secret-rack", 0)
	g.Expect(env.Client.Create(ctx, held)).To(Succeed())
	probe := testenv.NewEntry(nsB, "probe", 0)
	probe.Spec.Machine.Address, probe.Spec.Machine.Port = held.Spec.Machine.Address, held.Spec.Machine.Port
	for _, opts := range [][]client.CreateOption{{client.DryRunAll}, nil} {
		err := env.Client.Create(ctx, probe.DeepCopy(), opts...)
		g.Expect(err).To(MatchError(ContainSubstring("spec.machine.address")))
		g.Expect(err).To(MatchError(ContainSubstring("is already offered by a pool entry in another namespace; a host can be in one pool entry only")))
		g.Expect(err.Error()).NotTo(Or(ContainSubstring(nsA), ContainSubstring(held.Name)))
	}
}

// refuseLabelledDeletes installs a second validating webhook, served beside CAPR's, that refuses the delete of a
// PooledRemoteMachine labelled refuse-delete=true: validating webhooks run side by side, so CAPR's delete webhook
// answers, and the delete is refused anyway.
func refuseLabelledDeletes(t *testing.T) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	const path = "/test-refuse-labelled-deletes"
	env.Manager.GetWebhookServer().Register(path, &webhook.Admission{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Denied("refused by another webhook")
	})})
	capr := &admissionregistrationv1.ValidatingWebhookConfigurationList{}
	g.Expect(env.Client.List(ctx, capr)).To(Succeed())
	var clientConfig *admissionregistrationv1.WebhookClientConfig
	for _, c := range capr.Items {
		for _, w := range c.Webhooks {
			if w.Name == "validation.pooledremotemachine.infrastructure.cluster.x-k8s.io" {
				clientConfig = w.ClientConfig.DeepCopy()
			}
		}
	}
	g.Expect(clientConfig).NotTo(BeNil())
	g.Expect(clientConfig.URL).NotTo(BeNil())
	u := *clientConfig.URL
	clientConfig.URL = ptr.To(u[:strings.Index(u[len("https://"):], "/")+len("https://")] + path)
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "test-refuse-labelled-deletes"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "refuse-delete.example.com", ClientConfig: *clientConfig,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Delete},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{infrav1.GroupVersion.Group}, APIVersions: []string{"*"},
					Resources: []string{"pooledremotemachines"}},
			}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"refuse-delete": "true"}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
	g.Expect(env.Client.Create(ctx, cfg)).To(Succeed())
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), cfg) })
}

// TestHostStaysLockedWhenItsDeleteIsRefused: the attack was a delete refused by another webhook after CAPR's delete
// webhook had released the host's Lease: the entry lived on unlocked, and a second entry could offer its host.
func TestHostStaysLockedWhenItsDeleteIsRefused(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	refuseLabelledDeletes(t)
	ns := env.NewNamespace(t)
	entry := testenv.NewEntry(ns, "default", 0)
	entry.Labels = map[string]string{"refuse-delete": "true"}
	g.Expect(env.Client.Create(ctx, entry)).To(Succeed())
	g.Eventually(func() error { return env.Client.Delete(ctx, entry) }, 10*time.Second, 100*time.Millisecond).Should(
		MatchError(ContainSubstring("refused by another webhook")))
	g.Expect(ptr.Deref(hostLease(g, entry).Spec.HolderIdentity, "")).To(Equal(pool.HolderOf(entry)), "the live entry still holds its host")
	dup := testenv.NewEntry(ns, "default", 0)
	dup.Name, dup.Spec.Pool = "same-host", "other"
	g.Expect(env.Client.Create(ctx, dup)).To(MatchError(ContainSubstring("is already offered by PooledRemoteMachine default-000 in this namespace")))
}

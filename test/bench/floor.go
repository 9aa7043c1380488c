package main

import (
	"context"
	"fmt"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// floorLabel marks the namespace P1's no-webhook floor runs in: every admission webhook of the environment skips it.
const floorLabel = "bench.capr.dev/no-webhook"

// noWebhookFloor prepares the floor of P1 and P4: a namespace ns that no admission webhook is called for, holding a pool of
// burst*rounds entries, one for each op. Its op(r, i) does what a claiming create stores, without the webhook: the RemoteMachine created with
// the host the claim would have filled, then the entry's claim written with the same patch the claim makes. The
// returned function puts the webhooks back.
func noWebhookFloor(ctx context.Context, env *testenv.Environment, ns string, burst, rounds int) (op func(r, i int) error, restore func(), err error) {
	n := burst * rounds
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{floorLabel: "true"}}}); err != nil {
		return nil, nil, err
	}
	skip := metav1.LabelSelectorRequirement{Key: floorLabel, Operator: metav1.LabelSelectorOpDoesNotExist}
	mutating := &admissionv1.MutatingWebhookConfigurationList{}
	validating := &admissionv1.ValidatingWebhookConfigurationList{}
	if err := c.List(ctx, mutating); err != nil {
		return nil, nil, err
	}
	if err := c.List(ctx, validating); err != nil {
		return nil, nil, err
	}
	var originals, changed []client.Object
	exclude := func(sel **metav1.LabelSelector) {
		if *sel == nil {
			*sel = &metav1.LabelSelector{}
		}
		(*sel).MatchExpressions = append((*sel).MatchExpressions, skip)
	}
	for i := range mutating.Items {
		w := &mutating.Items[i]
		originals = append(originals, w.DeepCopy())
		for j := range w.Webhooks {
			exclude(&w.Webhooks[j].NamespaceSelector)
		}
		changed = append(changed, w)
	}
	for i := range validating.Items {
		w := &validating.Items[i]
		originals = append(originals, w.DeepCopy())
		for j := range w.Webhooks {
			exclude(&w.Webhooks[j].NamespaceSelector)
		}
		changed = append(changed, w)
	}
	for _, w := range changed {
		if err := c.Update(ctx, w); err != nil {
			return nil, nil, err
		}
	}
	restore = func() {
		for _, o := range originals {
			cur := o.DeepCopyObject().(client.Object)
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), cur); err != nil {
				continue
			}
			o.SetResourceVersion(cur.GetResourceVersion())
			_ = c.Update(ctx, o)
		}
	}
	entries := make([]*infrav1.PooledRemoteMachine, n)
	if err := parallel(n, 32, func(i int) error {
		entries[i] = testenv.NewEntry(ns, "floor", i)
		return c.Create(ctx, entries[i])
	}); err != nil {
		restore()
		return nil, nil, err
	}
	// The apiserver sees the new selectors a moment later: a pooled RemoteMachine with no host is stored once no
	// webhook is called (CAPR's would claim or refuse it).
	deadline := time.Now().Add(30 * time.Second)
	for {
		probe := testenv.NewPooledMachine(ns, "probe", "no-such-pool")
		err := c.Create(ctx, probe)
		if err == nil {
			_ = c.Delete(ctx, probe)
			break
		}
		if time.Now().After(deadline) {
			restore()
			return nil, nil, fmt.Errorf("the webhooks are still called in %s: %w", ns, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	op = func(r, i int) error {
		entry := entries[r*burst+i]
		m := testenv.NewPooledMachine(ns, fmt.Sprintf("floor-%d-%03d", r, i), "floor")
		pool.Fill(m, entry)
		if err := c.Create(ctx, m); err != nil {
			return err
		}
		orig := entry.DeepCopy()
		entry.Spec.ClaimRef = &infrav1.PooledMachineClaim{Name: m.Name, ClaimedAt: &metav1.Time{Time: time.Now()}}
		if err := c.Patch(ctx, entry, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return err
		}
		return nil
	}
	return op, restore, nil
}

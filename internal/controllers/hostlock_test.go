//go:build integration

package controllers_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

func hostLeaseKey(e *infrav1.PooledRemoteMachine) client.ObjectKey {
	return client.ObjectKey{Namespace: testenv.ManagerNamespace, Name: pool.EndpointLockName(pool.Endpoint(e.Spec.Machine.Address, e.Spec.Machine.Port))}
}

// TestHostLeaseIsReasserted: the attack was deleting a host's Lease by hand (or losing it): nothing re-created it,
// so a second entry could offer a host a live entry offers. The controller re-asserts the Lease of every live
// entry, reports (and never steals from) another live entry holding its host, and deletes the Lease of an entry
// that is gone.
func TestHostLeaseIsReasserted(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	entry := testenv.NewEntry(ns, "default", 0)
	g.Expect(env.Client.Create(ctx, entry)).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := &infrav1.PooledRemoteMachine{}
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), got)).To(Succeed())
		g.Expect(conditions.IsTrue(got, infrav1.HostLockedCondition)).To(BeTrue())
	}, 20*time.Second, 100*time.Millisecond).Should(Succeed())

	lease := &coordinationv1.Lease{}
	g.Expect(env.Client.Get(ctx, hostLeaseKey(entry), lease)).To(Succeed())
	g.Expect(env.Client.Delete(ctx, lease)).To(Succeed())
	g.Eventually(func(g Gomega) {
		again := &coordinationv1.Lease{}
		g.Expect(env.Client.Get(ctx, hostLeaseKey(entry), again)).To(Succeed())
		g.Expect(again.UID).NotTo(Equal(lease.UID))
		g.Expect(ptr.Deref(again.Spec.HolderIdentity, "")).To(Equal(pool.HolderOf(entry)))
	}, 20*time.Second, 50*time.Millisecond).Should(Succeed())
	dup := testenv.NewEntry(ns, "default", 0)
	dup.Name, dup.Spec.Pool = "same-host", "other"
	g.Expect(env.Client.Create(ctx, dup)).To(MatchError(ContainSubstring("is already offered by PooledRemoteMachine default-000 in this namespace")))

	// A second live entry got the host while the Lease was missing: the first reports it and does not steal it.
	other := testenv.NewEntry(ns, "other", 1)
	g.Expect(env.Client.Create(ctx, other)).To(Succeed())
	g.Eventually(func() error {
		_ = env.Client.Delete(ctx, &coordinationv1.Lease{ObjectMeta: lease.ObjectMeta})
		moved := &infrav1.PooledRemoteMachine{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(other), moved); err != nil {
			return err
		}
		moved.Spec.Machine.Address, moved.Spec.Machine.Port = entry.Spec.Machine.Address, entry.Spec.Machine.Port
		return env.Client.Update(ctx, moved)
	}, 20*time.Second, 10*time.Millisecond).Should(Succeed())
	g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(other), other)).To(Succeed())
	g.Eventually(func(g Gomega) {
		got := &infrav1.PooledRemoteMachine{}
		g.Expect(env.Client.Get(ctx, client.ObjectKeyFromObject(entry), got)).To(Succeed())
		g.Expect(conditions.IsFalse(got, infrav1.HostLockedCondition)).To(BeTrue())
		g.Expect(conditions.GetReason(got, infrav1.HostLockedCondition)).To(Equal(infrav1.HostOfferedElsewhereReason))
		g.Expect(conditions.GetMessage(got, infrav1.HostLockedCondition)).To(ContainSubstring("is already offered by PooledRemoteMachine other-001 in this namespace"))
	}, 20*time.Second, 100*time.Millisecond).Should(Succeed())
	held := &coordinationv1.Lease{}
	g.Expect(env.Client.Get(ctx, hostLeaseKey(entry), held)).To(Succeed())
	g.Expect(ptr.Deref(held.Spec.HolderIdentity, "")).To(Equal(pool.HolderOf(other)), "not stolen")

	// The Lease of an entry that is gone is deleted (here: the one still naming other's first host).
	first := testenv.NewEntry(ns, "other", 1)
	g.Eventually(func() bool {
		return apierrors.IsNotFound(env.Client.Get(ctx, hostLeaseKey(first), &coordinationv1.Lease{}))
	}, 20*time.Second, 100*time.Millisecond).Should(BeTrue(), "a Lease naming the entry for a host it no longer offers")
	g.Expect(env.Client.Delete(ctx, other)).To(Succeed())
	g.Eventually(func() bool {
		l := &coordinationv1.Lease{}
		err := env.Client.Get(ctx, hostLeaseKey(entry), l)
		return apierrors.IsNotFound(err) || (err == nil && ptr.Deref(l.Spec.HolderIdentity, "") == pool.HolderOf(entry))
	}, 20*time.Second, 100*time.Millisecond).Should(BeTrue(), "the gone entry's Lease is deleted (and the first entry takes its host back)")
}

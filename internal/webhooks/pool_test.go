//go:build integration

package webhooks_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

func getEntry(t *testing.T, ns, name string) *infrav1.PooledRemoteMachine {
	t.Helper()
	p := &infrav1.PooledRemoteMachine{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPooledFlow is the reference document's pooled flow: a RemoteMachine with pool: default is stored holding a
// free entry's host, and the entry's claimRef names it. A server-side dry run fills the fields without claiming.
func TestPooledFlow(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 2, nil)

	dry := testenv.NewPooledMachine(ns, "remote-test-0", "default")
	g.Expect(env.Client.Create(ctx, dry, client.DryRunAll)).To(Succeed())
	g.Expect(dry.Spec.Address).To(HavePrefix("10.0."))
	g.Expect(dry.Spec.PooledRemoteMachineRef).NotTo(BeNil())
	for _, name := range []string{"default-000", "default-001"} {
		g.Expect(getEntry(t, ns, name).Spec.ClaimRef).To(BeNil(), "a dry run claims nothing")
	}

	m := testenv.NewPooledMachine(ns, "remote-test-0", "default")
	g.Expect(env.Client.Create(ctx, m)).To(Succeed())
	g.Expect(m.Spec.PooledRemoteMachineRef).NotTo(BeNil())
	entry := getEntry(t, ns, m.Spec.PooledRemoteMachineRef.Name)
	g.Expect(entry.Spec.ClaimRef).NotTo(BeNil())
	g.Expect(entry.Spec.ClaimRef.Name).To(Equal("remote-test-0"))
	g.Expect(entry.Spec.ClaimRef.ClaimedAt).NotTo(BeNil())
	g.Expect(m.Spec.Address).To(Equal(entry.Spec.Machine.Address))
	g.Expect(m.Spec.Port).To(Equal(testenv.EntryPort(ns)))
	g.Expect(m.Spec.User).To(Equal("capr"))
	g.Expect(m.Spec.UseSudo).To(BeTrue())
	g.Expect(m.Spec.SSHKeyRef).To(Equal(entry.Spec.Machine.SSHKeyRef))
	g.Expect(m.Spec.HostKeys).To(Equal([]string{testenv.HostKey}))
	g.Expect(m.Spec.CustomCleanUpCommands).To(Equal([]string{"wipe-host"}))
	g.Expect(dry.Spec.PooledRemoteMachineRef.Name).To(Equal(entry.Name), "the dry run showed the entry the claim took")

	// The second machine takes the other entry; the third finds the pool exhausted and nothing is stored.
	m2 := testenv.NewPooledMachine(ns, "remote-test-1", "default")
	g.Expect(env.Client.Create(ctx, m2)).To(Succeed())
	g.Expect(m2.Spec.PooledRemoteMachineRef.Name).NotTo(Equal(entry.Name))
	err := env.Client.Create(ctx, testenv.NewPooledMachine(ns, "remote-test-2", "default"))
	g.Expect(err).To(MatchError(ContainSubstring(`spec.pool: Forbidden: no free PooledRemoteMachine in pool "default" (2 in pool: 2 claimed)`)))
	g.Expect(apierrors.IsNotFound(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "remote-test-2"}, &infrav1.RemoteMachine{}))).To(BeTrue())

	// An unknown pool says there is nothing in it.
	err = env.Client.Create(ctx, testenv.NewPooledMachine(ns, "elsewhere", "gpu"))
	g.Expect(err).To(MatchError(ContainSubstring(`no free PooledRemoteMachine in pool "gpu" (none exist`)))
}

// TestConcurrentClaimsNeverShareAnEntry creates 200 RemoteMachines at once against a pool of 150.
func TestConcurrentClaimsNeverShareAnEntry(t *testing.T) {
	g := NewWithT(t)
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 150, nil)
	// Entries of another pool must never be taken.
	env.CreatePool(t, ns, "other", 20, nil)

	errs := env.CreateConcurrently(ns, "default", 200)
	testenv.ExpectRejections(g, errs, 50, `no free PooledRemoteMachine in pool "default" (150 in pool: 150 claimed)`)
	env.AssertOneToOneClaims(g, ns, 150)
	others := &infrav1.PooledRemoteMachineList{}
	g.Expect(env.Client.List(context.Background(), others, client.InNamespace(ns))).To(Succeed())
	for _, p := range others.Items {
		if p.Spec.Pool == "other" {
			g.Expect(p.Spec.ClaimRef).To(BeNil())
		}
	}
}

// TestSelectorMaintenanceAndQuarantine checks which entries a claim may take.
func TestSelectorMaintenanceAndQuarantine(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 5, func(i int, p *infrav1.PooledRemoteMachine) {
		p.Labels = map[string]string{"gpu": fmt.Sprint(i == 4)}
		switch i {
		case 0:
			p.Spec.Maintenance = true
		case 1:
			p.Spec.Quarantine = &infrav1.PooledMachineQuarantine{Reason: infrav1.CleanupFailedReason}
		}
	})

	m := testenv.NewPooledMachine(ns, "gpu", "default")
	m.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"gpu": "true"}}
	g.Expect(env.Client.Create(ctx, m)).To(Succeed())
	g.Expect(m.Spec.PooledRemoteMachineRef.Name).To(Equal("default-004"))

	m2 := testenv.NewPooledMachine(ns, "gpu-2", "default")
	m2.Spec.Selector = m.Spec.Selector
	err := env.Client.Create(ctx, m2)
	g.Expect(err).To(MatchError(ContainSubstring(`no free PooledRemoteMachine in pool "default" matching selector "gpu=true" (5 in pool: 1 claimed, 1 in maintenance, 2 not matching the selector, 1 quarantined)`)))

	// A selector alone picks from every pool of the namespace.
	sel := &infrav1.RemoteMachine{}
	sel.Namespace, sel.Name = ns, "any-pool"
	sel.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"gpu": "false"}}
	g.Expect(env.Client.Create(ctx, sel)).To(Succeed())
	g.Expect(sel.Spec.PooledRemoteMachineRef.Name).To(BeElementOf("default-002", "default-003"))

	// Leaving maintenance makes the entry claimable again.
	e0 := getEntry(t, ns, "default-000")
	e0.Spec.Maintenance = false
	g.Expect(env.Client.Update(ctx, e0)).To(Succeed())
	taken := map[string]bool{sel.Spec.PooledRemoteMachineRef.Name: true}
	g.Eventually(func() error {
		m := testenv.NewPooledMachine(ns, fmt.Sprintf("after-maintenance-%d", len(taken)), "default")
		if err := env.Client.Create(ctx, m); err != nil {
			return err
		}
		taken[m.Spec.PooledRemoteMachineRef.Name] = true
		if !taken["default-000"] {
			return fmt.Errorf("took %v", taken)
		}
		return nil
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
}

// TestControlPlaneMachinesSpreadAcrossFailureDomains claims three control-plane machines from a pool whose entries
// sit in three failure domains, the first of which has most entries.
func TestControlPlaneMachinesSpreadAcrossFailureDomains(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 9, func(i int, p *infrav1.PooledRemoteMachine) {
		p.Spec.FailureDomain = []string{"rack-a", "rack-a", "rack-a", "rack-a", "rack-a", "rack-a", "rack-a", "rack-b", "rack-c"}[i]
	})
	domains := map[string]int{}
	for i := range 3 {
		m := testenv.NewPooledMachine(ns, fmt.Sprintf("cp-%d", i), "default")
		m.Labels = map[string]string{"cluster.x-k8s.io/cluster-name": "c1", "cluster.x-k8s.io/control-plane": ""}
		g.Expect(env.Client.Create(ctx, m)).To(Succeed())
		domains[getEntry(t, ns, m.Spec.PooledRemoteMachineRef.Name).Spec.FailureDomain]++
		// The next claim reads the previous one from the cache.
		g.Eventually(func() int {
			list := &infrav1.RemoteMachineList{}
			_ = env.Manager.GetClient().List(ctx, list, client.InNamespace(ns))
			return len(list.Items)
		}, 10*time.Second, 20*time.Millisecond).Should(Equal(i + 1))
	}
	g.Expect(domains).To(Equal(map[string]int{"rack-a": 1, "rack-b": 1, "rack-c": 1}))
}

// TestGenerateNameClaims checks that a RemoteMachine created with generateName records its final name in the claim.
func TestGenerateNameClaims(t *testing.T) {
	g := NewWithT(t)
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 1, nil)
	m := testenv.NewPooledMachine(ns, "", "default")
	m.GenerateName = "worker-"
	g.Expect(env.Client.Create(context.Background(), m)).To(Succeed())
	g.Expect(m.Name).To(HavePrefix("worker-"))
	g.Expect(getEntry(t, ns, m.Spec.PooledRemoteMachineRef.Name).Spec.ClaimRef.Name).To(Equal(m.Name))
}

// TestServerSideApplyKeepsClaimedFields re-applies a template-only spec with Cluster API's field manager, as the
// MachineSet controller does, and checks that the host fields the claim filled are kept.
func TestServerSideApplyKeepsClaimedFields(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 1, nil)
	apply := func(labels map[string]any) *infrav1.RemoteMachine {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": infrav1.GroupVersion.String(), "kind": "RemoteMachine",
			"metadata": map[string]any{"name": "ssa", "namespace": ns, "labels": labels},
			"spec":     map[string]any{"pool": "default"},
		}}
		g.Expect(env.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("capi-machineset"), client.ForceOwnership)).To(Succeed())
		m := &infrav1.RemoteMachine{}
		g.Expect(env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "ssa"}, m)).To(Succeed())
		return m
	}
	first := apply(map[string]any{"a": "1"})
	g.Expect(first.Spec.Address).To(Equal("10.0.0.1"))
	again := apply(map[string]any{"a": "2"})
	g.Expect(again.Labels).To(HaveKeyWithValue("a", "2"))
	g.Expect(again.Spec).To(Equal(first.Spec))
}

// TestClaimedFieldsAreImmutable checks that a pooled RemoteMachine's host stays the entry's.
func TestClaimedFieldsAreImmutable(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 2, nil)
	m := testenv.NewPooledMachine(ns, "m", "default")
	g.Expect(env.Client.Create(ctx, m)).To(Succeed())

	changed := m.DeepCopy()
	changed.Spec.PooledRemoteMachineRef.Name = "default-009"
	g.Expect(env.Client.Update(ctx, changed)).To(MatchError(ContainSubstring("spec.pooledRemoteMachineRef")))

	// A plain update that leaves host fields out keeps them.
	bare := m.DeepCopy()
	bare.Spec.RemoteHost = infrav1.RemoteHost{Port: 22, User: "root"}
	bare.Labels = map[string]string{"touched": "yes"}
	g.Expect(env.Client.Update(ctx, bare)).To(Succeed())
	g.Expect(bare.Spec.Address).To(Equal(m.Spec.Address))
	g.Expect(bare.Spec.Port).To(Equal(testenv.EntryPort(ns)))

	// Naming a pool entry by hand is refused: only a claim sets the reference.
	sneaky := testenv.NewPooledMachine(ns, "sneaky", "default")
	sneaky.Spec.PooledRemoteMachineRef = &infrav1.PooledRemoteMachineReference{Name: m.Spec.PooledRemoteMachineRef.Name}
	g.Expect(env.Client.Create(ctx, sneaky)).To(MatchError(ContainSubstring("spec.pooledRemoteMachineRef: Forbidden: is set by CAPR")))

	// Pinned host keys cannot be dropped on a direct machine either.
	direct := &infrav1.RemoteMachine{}
	direct.Namespace, direct.Name = ns, "direct"
	direct.Spec.Address, direct.Spec.SSHKeyRef, direct.Spec.HostKeys = "192.0.2.1", &infrav1.SecretReference{Name: "k"}, []string{testenv.HostKey}
	g.Expect(env.Client.Create(ctx, direct)).To(Succeed())
	direct.Spec.HostKeys = nil
	g.Expect(env.Client.Update(ctx, direct)).To(MatchError(ContainSubstring("spec.hostKeys: Forbidden: pinned host keys cannot be removed")))
}

// TestClaimedEntryIsGuarded checks the delete guard, the frozen machine fields and who may change a claim.
func TestClaimedEntryIsGuarded(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 1, nil)
	m := testenv.NewPooledMachine(ns, "holder", "default")
	g.Expect(env.Client.Create(ctx, m)).To(Succeed())
	entry := getEntry(t, ns, "default-000")

	err := env.Client.Delete(ctx, entry)
	g.Expect(err).To(MatchError(ContainSubstring(`it is claimed by RemoteMachine "holder": delete that RemoteMachine first`)))

	changed := entry.DeepCopy()
	changed.Spec.Machine.Address = "10.9.9.9"
	g.Expect(env.Client.Update(ctx, changed)).To(MatchError(ContainSubstring("machine cannot change while the entry is claimed by RemoteMachine holder")))

	// A person (not CAPR's identity) cannot release or move a claim.
	userCfg := rest.CopyConfig(env.Config)
	userCfg.Impersonate = rest.ImpersonationConfig{UserName: "alice", Groups: []string{"system:masters"}}
	user, err := client.New(userCfg, client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	released := entry.DeepCopy()
	released.Spec.ClaimRef = nil
	g.Expect(user.Update(ctx, released)).To(MatchError(ContainSubstring("spec.claimRef: Forbidden: the claim is managed by CAPR")))
	// Maintenance is the person's lever, and allowed while claimed.
	maint := entry.DeepCopy()
	maint.Spec.Maintenance = true
	g.Expect(user.Update(ctx, maint)).To(Succeed())

	// A second entry for the same host is refused.
	dup := testenv.NewEntry(ns, "default", 0)
	dup.Name, dup.Spec.Pool = "same-host", "other"
	g.Expect(env.Client.Create(ctx, dup)).To(MatchError(ContainSubstring(fmt.Sprintf(`spec.machine.address: Invalid value: "10.0.0.1": host 10.0.0.1:%d is already offered by PooledRemoteMachine default-000 in this namespace; a host can be in one pool entry only (cluster-wide)`, testenv.EntryPort(ns)))))

	// clusterctl move deletes the claimed entry after copying it: it marks it delete-for-move first.
	g.Expect(user.Patch(ctx, getEntry(t, ns, "default-000"), client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"clusterctl.cluster.x-k8s.io/delete-for-move":""}}}`)))).To(Succeed())
	g.Expect(user.Delete(ctx, getEntry(t, ns, "default-000"))).To(Succeed())
}

// TestBootstrapUIDAnnotationIsCAPRs checks that only CAPR records the bootstrap-uid annotation, that it never
// changes, and that a RemoteMachine taking a new host from a pool cannot bring one.
func TestBootstrapUIDAnnotationIsCAPRs(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 1, nil)
	userCfg := rest.CopyConfig(env.Config)
	userCfg.Impersonate = rest.ImpersonationConfig{UserName: "alice", Groups: []string{"system:masters"}}
	user, err := client.New(userCfg, client.Options{Scheme: env.Scheme})
	g.Expect(err).NotTo(HaveOccurred())
	const path = "metadata.annotations[infrastructure.cluster.x-k8s.io/bootstrap-uid]: Forbidden"

	adopting := testenv.NewPooledMachine(ns, "adopting", "default")
	adopting.Annotations = map[string]string{infrav1.BootstrapUIDAnnotation: "0b1f2c3d-other-machine"}
	g.Expect(user.Create(ctx, adopting)).To(MatchError(ContainSubstring(path + ": is set by CAPR when it first runs the bootstrap on the host; remove it")))
	g.Expect(getEntry(t, ns, "default-000").Spec.ClaimRef).To(BeNil(), "refused before claiming")

	m := testenv.NewPooledMachine(ns, "m", "default")
	g.Expect(user.Create(ctx, m)).To(Succeed())
	annotate := func(c client.Client, value string) error {
		v := "null"
		if value != "" {
			v = fmt.Sprintf("%q", value)
		}
		return c.Patch(ctx, &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m"}}, client.RawPatch(types.MergePatchType,
			[]byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, infrav1.BootstrapUIDAnnotation, v))))
	}
	g.Expect(annotate(user, string(m.UID))).To(MatchError(ContainSubstring(path + ": is set by CAPR")))
	g.Expect(annotate(env.Client, string(m.UID))).To(Succeed(), "CAPR's identity records it")
	g.Expect(annotate(env.Client, "another-uid")).To(MatchError(ContainSubstring(path)))
	g.Expect(annotate(user, "")).To(MatchError(ContainSubstring(path)))

	// A RemoteMachine naming its host directly may be recreated with it (by clusterctl move), with a UID: its host
	// was touched by that machine, bootstrapped or not.
	direct := testenv.NewPooledMachine(ns, "direct", "")
	direct.Spec.Address, direct.Spec.SSHKeyRef = "10.0.0.99", &infrav1.SecretReference{Name: "key"}
	direct.Annotations = map[string]string{infrav1.BootstrapUIDAnnotation: "0b1f2c3d-other-machine"}
	g.Expect(user.Create(ctx, direct)).To(MatchError(ContainSubstring(`Invalid value: "0b1f2c3d-other-machine": must be the UID`)))
	direct.Annotations[infrav1.BootstrapUIDAnnotation] = "0b1f2c3d-1111-4222-8333-444455556666"
	g.Expect(user.Create(ctx, direct)).To(Succeed())

	// clusterctl's delete-for-move replaces every annotation, dropping this one; once set it stays.
	forMove := client.RawPatch(types.JSONPatchType, []byte(`[{"op":"add","path":"/metadata/annotations","value":{"clusterctl.cluster.x-k8s.io/delete-for-move":""}}]`))
	g.Expect(user.Patch(ctx, direct, forMove)).To(Succeed())
	g.Expect(user.Patch(ctx, direct, client.RawPatch(types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/annotations"}]`)))).To(
		MatchError(ContainSubstring("metadata.annotations[clusterctl.cluster.x-k8s.io/delete-for-move]: Forbidden")))
}

// TestOneEntryPerHostClusterWide: a host (address:port, IPv6 normalised) is offered by one PooledRemoteMachine in
// the whole cluster, even when many creates race for it from several namespaces; deleting the entry frees it.
func TestOneEntryPerHostClusterWide(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns1, ns2 := env.NewNamespace(t), env.NewNamespace(t)
	spellings := []string{"fd00:10::7", "FD00:10:0::7", "fd00:0010:0000:0000:0000:0000:0000:0007", "fd00:10::0:7"}
	port := testenv.EntryPort(ns1)
	entry := func(ns string, i int, address string) *infrav1.PooledRemoteMachine {
		e := testenv.NewEntry(ns, "race", i)
		e.Spec.Machine.Address, e.Spec.Machine.Port = address, port
		return e
	}
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ns := ns1
			if i%2 == 1 {
				ns = ns2
			}
			errs[i] = env.Client.Create(ctx, entry(ns, i, spellings[i%len(spellings)]))
		}()
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			g.Expect(winner).To(Equal(-1), "two entries were stored for one host: %d and %d", winner, i)
			winner = i
			continue
		}
		g.Expect(err).To(MatchError(ContainSubstring(fmt.Sprintf("host [fd00:10::7]:%d is already offered by ", port))))
	}
	g.Expect(winner).NotTo(Equal(-1), "one create succeeds")
	winnerNS := ns1
	if winner%2 == 1 {
		winnerNS = ns2
	}
	stored := &infrav1.PooledRemoteMachine{}
	g.Expect(env.Client.Get(ctx, client.ObjectKey{Namespace: winnerNS, Name: fmt.Sprintf("race-%03d", winner)}, stored)).To(Succeed())

	// A dry run is refused the same way, and takes nothing.
	dry := entry(ns2, 100, "fd00:10::8")
	g.Expect(env.Client.Create(ctx, entry(ns2, 101, "fd00:10::7"), client.DryRunAll)).To(MatchError(ContainSubstring("is already offered")))
	g.Expect(env.Client.Create(ctx, dry, client.DryRunAll)).To(Succeed())
	g.Expect(env.Client.Create(ctx, entry(ns1, 102, "FD00:10::8"))).To(Succeed(), "the dry run held nothing")
	// Moving an entry onto a taken host is refused too.
	moved := entry(ns2, 103, "fd00:10::9")
	g.Expect(env.Client.Create(ctx, moved)).To(Succeed())
	moved.Spec.Machine.Address = "fd00:10::8"
	err := env.Client.Update(ctx, moved)
	g.Expect(err).To(MatchError(ContainSubstring("is already offered by a pool entry in another namespace; a host can be in one pool entry only")))
	g.Expect(err.Error()).NotTo(Or(ContainSubstring(ns1), ContainSubstring("race-102")), "another namespace's entry is not named")

	// Deleting the entry frees its host at once.
	g.Expect(env.Client.Delete(ctx, stored)).To(Succeed())
	g.Expect(env.Client.Create(ctx, entry(ns2, 104, "fd00:10:0:0::7"))).To(Succeed())
}

// TestRetriedCreateKeepsItsClaim: when the answer to a create is lost after the webhook claimed an entry (its replica
// stopped, the connection dropped), the client's second create of the same RemoteMachine takes that entry again
// instead of a second one.
func TestRetriedCreateKeepsItsClaim(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 3, nil)
	// The first attempt: the claim is written, the RemoteMachine never stored.
	first, err := env.Claimer.Claim(ctx, pool.Request{Namespace: ns, Pool: "default", MachineName: "m"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func(g Gomega) {
		names, err := pool.EntriesClaimedBy(ctx, env.Manager.GetClient(), ns, "m")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(names).To(HaveLen(1))
	}, 10*time.Second, 50*time.Millisecond).Should(Succeed())

	m := testenv.NewPooledMachine(ns, "m", "default")
	g.Expect(env.Client.Create(ctx, m)).To(Succeed())
	g.Expect(m.Spec.PooledRemoteMachineRef.Name).To(Equal(first.Name), "the retried create holds the entry the first attempt claimed")
	list := &infrav1.PooledRemoteMachineList{}
	g.Expect(env.Client.List(ctx, list, client.InNamespace(ns))).To(Succeed())
	claimed := 0
	for _, e := range list.Items {
		if e.Spec.ClaimRef != nil {
			claimed++
		}
	}
	g.Expect(claimed).To(Equal(1), "one entry claimed, not two")
}

// TestAllowedClustersRestrictClaims: the risk is a host one cluster had root on (its bootstrap ran as root) being
// handed to another cluster's machine, carrying whatever the first left behind. Before allowedClusters any claim
// took any free entry; now an entry allowed only for cluster c2 is refused to a RemoteMachine of c1 and to one
// without a cluster label, with the reason in the message, and taken by one of c2 (a dry run shows it too).
func TestAllowedClustersRestrictClaims(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 1, func(_ int, p *infrav1.PooledRemoteMachine) {
		p.Spec.AllowedClusters = []string{"c2"}
	})
	inCluster := func(name, cluster string) *infrav1.RemoteMachine {
		m := testenv.NewPooledMachine(ns, name, "default")
		if cluster != "" {
			m.Labels = map[string]string{pool.ClusterNameLabel: cluster}
		}
		return m
	}

	err := env.Client.Create(ctx, inCluster("of-c1", "c1"))
	g.Expect(err).To(MatchError(ContainSubstring(`no free PooledRemoteMachine in pool "default" (1 in pool: 1 reserved for other clusters)`)))
	err = env.Client.Create(ctx, inCluster("unlabelled", ""))
	g.Expect(err).To(MatchError(ContainSubstring(`(1 in pool: 1 reserved for other clusters)`)))
	err = env.Client.Create(ctx, inCluster("of-c1-dry", "c1"), client.DryRunAll)
	g.Expect(err).To(MatchError(ContainSubstring(`(1 in pool: 1 reserved for other clusters)`)))
	g.Expect(getEntry(t, ns, "default-000").Spec.ClaimRef).To(BeNil())

	dry := inCluster("of-c2", "c2")
	g.Expect(env.Client.Create(ctx, dry, client.DryRunAll)).To(Succeed())
	g.Expect(dry.Spec.PooledRemoteMachineRef).To(Equal(&infrav1.PooledRemoteMachineReference{Name: "default-000"}))
	m := inCluster("of-c2", "c2")
	g.Expect(env.Client.Create(ctx, m)).To(Succeed())
	g.Expect(m.Spec.PooledRemoteMachineRef).To(Equal(&infrav1.PooledRemoteMachineReference{Name: "default-000"}))
	claim := getEntry(t, ns, "default-000").Spec.ClaimRef
	g.Expect(claim).NotTo(BeNil())
	g.Expect(claim.Name).To(Equal("of-c2"))
	g.Expect(claim.ClusterName).To(Equal("c2"))
}

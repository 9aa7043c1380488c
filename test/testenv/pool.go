package testenv

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// HostKey is a well-formed ed25519 public host key for fixtures.
const HostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

// entryPorts gives each namespace its own port for NewEntry's hosts: a host may be offered by one entry
// cluster-wide, and every test has a namespace of its own.
var entryPorts = struct {
	sync.Mutex
	next  int32
	ports map[string]int32
}{next: 10000, ports: map[string]int32{}}

// EntryPort returns the port of NewEntry's hosts in namespace ns.
func EntryPort(ns string) int32 {
	entryPorts.Lock()
	defer entryPorts.Unlock()
	p, ok := entryPorts.ports[ns]
	if !ok {
		p = entryPorts.next
		entryPorts.next++
		entryPorts.ports[ns] = p
	}
	return p
}

// NewEntry returns pool entry i of a pool: host 10.<i/250>.<i%250>.1 in pool "default", h<i>.<pool>.example.com in
// other pools, port EntryPort(ns), user capr with sudo, a pinned host key and a custom cleanup command.
func NewEntry(ns, poolName string, i int) *infrav1.PooledRemoteMachine {
	p := &infrav1.PooledRemoteMachine{}
	p.Namespace, p.Name = ns, fmt.Sprintf("%s-%03d", poolName, i)
	p.Spec.Pool = poolName
	p.Spec.Machine.Address = fmt.Sprintf("h%d.%s.example.com", i, poolName)
	if poolName == "default" {
		p.Spec.Machine.Address = fmt.Sprintf("10.%d.%d.1", i/250, i%250)
	}
	p.Spec.Machine.Port = EntryPort(ns)
	p.Spec.Machine.User = "capr"
	p.Spec.Machine.UseSudo = true
	p.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: fmt.Sprintf("key-%d", i)}
	p.Spec.Machine.HostKeys = []string{HostKey}
	p.Spec.Machine.CustomCleanUpCommands = []string{"wipe-host"}
	return p
}

// NewPooledMachine returns a RemoteMachine that takes its host from a pool.
func NewPooledMachine(ns, name, poolName string) *infrav1.RemoteMachine {
	m := &infrav1.RemoteMachine{}
	m.Namespace, m.Name = ns, name
	m.Spec.Pool = poolName
	return m
}

// CreatePool creates n entries (NewEntry, then mutate) and waits until the manager's cache holds them.
func (e *Environment) CreatePool(t testing.TB, ns, poolName string, n int, mutate func(int, *infrav1.PooledRemoteMachine)) {
	t.Helper()
	g := NewWithT(t)
	for i := range n {
		p := NewEntry(ns, poolName, i)
		if mutate != nil {
			mutate(i, p)
		}
		g.Expect(e.Client.Create(context.Background(), p)).To(Succeed())
	}
	g.Eventually(func() int {
		list := &infrav1.PooledRemoteMachineList{}
		_ = e.Manager.GetClient().List(context.Background(), list, client.InNamespace(ns), client.MatchingFields{"capr.pool": poolName})
		return len(list.Items)
	}, 30*time.Second, 50*time.Millisecond).Should(BeNumerically(">=", n))
}

// CreateConcurrently creates n pooled RemoteMachines named m-000… at once and returns each create's error.
func (e *Environment) CreateConcurrently(ns, poolName string, n int) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = e.Client.Create(context.Background(), NewPooledMachine(ns, fmt.Sprintf("m-%03d", i), poolName))
		})
	}
	wg.Wait()
	return errs
}

// AssertOneToOneClaims checks that want RemoteMachines hold want distinct entries and that every claimed entry's
// claimRef names the RemoteMachine holding it.
func (e *Environment) AssertOneToOneClaims(g Gomega, ns string, want int) {
	machines := &infrav1.RemoteMachineList{}
	g.Expect(e.Client.List(context.Background(), machines, client.InNamespace(ns))).To(Succeed())
	g.Expect(machines.Items).To(HaveLen(want))
	held := map[string]string{}
	for _, m := range machines.Items {
		g.Expect(m.Spec.PooledRemoteMachineRef).NotTo(BeNil())
		g.Expect(m.Spec.Address).NotTo(BeEmpty())
		g.Expect(held).NotTo(HaveKey(m.Spec.PooledRemoteMachineRef.Name), "entry held twice")
		held[m.Spec.PooledRemoteMachineRef.Name] = m.Name
	}
	entries := &infrav1.PooledRemoteMachineList{}
	g.Expect(e.Client.List(context.Background(), entries, client.InNamespace(ns))).To(Succeed())
	claimed := 0
	for _, p := range entries.Items {
		if p.Spec.ClaimRef == nil {
			continue
		}
		claimed++
		g.Expect(held).To(HaveKeyWithValue(p.Name, p.Spec.ClaimRef.Name))
	}
	g.Expect(claimed).To(Equal(want))
}

// CreateEntryAndWait creates a pool entry and waits until the manager's cache holds it.
func (e *Environment) CreateEntryAndWait(g Gomega, entry *infrav1.PooledRemoteMachine) {
	ctx := context.Background()
	g.Expect(e.Client.Create(ctx, entry)).To(Succeed())
	g.Eventually(func() error {
		return e.Manager.GetClient().Get(ctx, client.ObjectKeyFromObject(entry), &infrav1.PooledRemoteMachine{})
	}, 10*time.Second).Should(Succeed())
}

// ExpectRejections checks that exactly want of errs are errors, each containing message, and the rest nil.
func ExpectRejections(g Gomega, errs []error, want int, message string) {
	rejected := 0
	for _, err := range errs {
		if err != nil {
			g.Expect(err).To(MatchError(ContainSubstring(message)))
			rejected++
		}
	}
	g.Expect(rejected).To(Equal(want))
}

// ReleaseHostsOnCleanup deletes the namespace's pool entries when the test ends, clearing their claims first (as
// CAPR's identity), so that the hosts they offer can be offered again by a later test: a host is in one pool entry
// cluster-wide, and the seed document names the same hosts each time it is applied.
func (e *Environment) ReleaseHostsOnCleanup(t testing.TB, ns string) {
	t.Cleanup(func() {
		ctx := context.Background()
		list := &infrav1.PooledRemoteMachineList{}
		if err := e.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
			t.Errorf("listing the pool entries of %s: %v", ns, err)
			return
		}
		for i := range list.Items {
			entry := &list.Items[i]
			if entry.Spec.ClaimRef != nil {
				orig := entry.DeepCopy()
				entry.Spec.ClaimRef = nil
				if err := e.Client.Patch(ctx, entry, client.MergeFrom(orig)); err != nil {
					t.Errorf("releasing %s: %v", entry.Name, err)
				}
			}
			if err := e.Client.Delete(ctx, entry); client.IgnoreNotFound(err) != nil {
				t.Errorf("deleting %s: %v", entry.Name, err)
			}
		}
	})
}

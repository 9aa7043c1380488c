//go:build integration

package controllers_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// tarpit is a host that accepts TCP connections and never says a word; it counts them.
type tarpit struct {
	ln          net.Listener
	mu          sync.Mutex
	open        int
	accepted    int
	connections []net.Conn
}

// tarpits listen on n ports of 127.0.0.1 until the test ends.
func tarpits(t *testing.T, n int) []*tarpit {
	t.Helper()
	var all []*tarpit
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tp := &tarpit{ln: ln}
		go tp.serve()
		t.Cleanup(tp.close)
		all = append(all, tp)
	}
	return all
}

func (tp *tarpit) serve() {
	for {
		c, err := tp.ln.Accept()
		if err != nil {
			return
		}
		tp.mu.Lock()
		tp.open++
		tp.accepted++
		tp.connections = append(tp.connections, c)
		tp.mu.Unlock()
		go func() {
			_, _ = io.Copy(io.Discard, c) // holds the connection until the client gives up
			tp.mu.Lock()
			tp.open--
			tp.mu.Unlock()
		}()
	}
}

func (tp *tarpit) close() {
	_ = tp.ln.Close()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, c := range tp.connections {
		_ = c.Close()
	}
}

func (tp *tarpit) port() int { return tp.ln.Addr().(*net.TCPAddr).Port }

// counts returns the connections open now and accepted so far, summed over the tarpits.
func tarpitCounts(all []*tarpit) (open, accepted int) {
	for _, tp := range all {
		tp.mu.Lock()
		open, accepted = open+tp.open, accepted+tp.accepted
		tp.mu.Unlock()
	}
	return open, accepted
}

// TestTarpitHostsDoNotStarveOtherNamespaces: a user pointed RemoteMachines of one namespace at hosts that accept a
// connection and never answer. Each such scan held one of the manager's 4 task slots until its dial timeout (15s),
// so every slot was held and another namespace's RemoteMachine waited that long before anything ran on its host.
// Now namespace a holds at most its share (2 of 4) and namespace b's machine is provisioned meanwhile.
func TestTarpitHostsDoNotStarveOtherNamespaces(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := sshdtest.Start(t)

	const stuck = 6
	pits := tarpits(t, stuck)
	a := newFixture(t, kubeadmStyle, "cloud-config")
	a.keySecret(t, "key", h)
	var stuckMachines []*infrav1.RemoteMachine
	for i, tp := range pits {
		m := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: fmt.Sprint("stuck-", i), Labels: a.machine.Labels}}
		m.Spec = *a.machine.Spec.DeepCopy()
		m.Spec.InfrastructureRef.Name = m.Name
		g.Expect(env.Client.Create(ctx, m)).To(Succeed())
		rm := &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: m.Name, Labels: a.machine.Labels}}
		rm.OwnerReferences = []metav1.OwnerReference{{APIVersion: clusterv1.GroupVersion.String(), Kind: "Machine", Name: m.Name, UID: m.UID}}
		rm.Spec.Address, rm.Spec.Port, rm.Spec.User = "127.0.0.1", int32(tp.port()), "root"
		rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
		g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
		stuckMachines = append(stuckMachines, rm)
	}
	t.Cleanup(func() {
		for _, rm := range stuckMachines {
			_ = env.Client.Delete(ctx, rm)
		}
		for _, rm := range stuckMachines {
			waitGone(NewWithT(t), rm)
		}
	})
	// Namespace a's tasks now sit in the tarpits, holding slots.
	g.Eventually(func() int { open, _ := tarpitCounts(pits); return open }, 30*time.Second, 50*time.Millisecond).Should(BeNumerically(">=", 2))

	b := newFixture(t, kubeadmStyle, "cloud-config")
	b.keySecret(t, "key", h)
	rm := b.remoteMachine()
	rm.Spec.Address, rm.Spec.Port, rm.Spec.User = h.Address, int32(h.Port), "root"
	rm.Spec.SSHKeyRef = &infrav1.SecretReference{Name: "key"}
	start := time.Now()
	g.Expect(env.Client.Create(ctx, rm)).To(Succeed())
	// Well below the tarpits' 15s dial timeout: b never waited for one of a's slots to free.
	g.Eventually(func(g Gomega) {
		g.Expect(ptr.Deref(get(g, rm).Status.Initialization.Provisioned, false)).To(BeTrue())
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
	t.Logf("namespace b provisioned in %s while namespace a's machines sat in tarpits", time.Since(start).Round(time.Millisecond))

	open, accepted := tarpitCounts(pits)
	t.Logf("tarpits: %d connections open, %d accepted", open, accepted)
	g.Expect(accepted).To(BeNumerically("<=", 2), "namespace a never held more than its 2 slots")
}

package pool

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// The claim order, decided without an apiserver: what filter keeps and how order ranks it. The claim itself (an
// update with a resourceVersion precondition) is tested against a real kube-apiserver in the integration tier.

func entry(name, domain string, mutate ...func(*infrav1.PooledRemoteMachine)) infrav1.PooledRemoteMachine {
	m := infrav1.PooledRemoteMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, ResourceVersion: "1", Labels: map[string]string{"disk": "ssd"}},
		Spec:       infrav1.PooledRemoteMachineSpec{Pool: "default", FailureDomain: domain},
	}
	for _, f := range mutate {
		f(&m)
	}
	return m
}

func names(items []infrav1.PooledRemoteMachine) []string {
	out := make([]string, len(items))
	for i := range items {
		out[i] = items[i].Name
	}
	return out
}

func newTestClaimer(objs ...runtime.Object) *Claimer {
	scheme := runtime.NewScheme()
	_ = infrav1.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithRuntimeObjects(objs...).Build()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &Claimer{Reader: c, APIReader: c, Writer: c, Now: func() time.Time { return now }}
}

func TestFilterKeepsWhatMayBeClaimed(t *testing.T) {
	g := NewWithT(t)
	c := newTestClaimer()
	items := []infrav1.PooledRemoteMachine{
		entry("free", ""),
		entry("claimed", "", func(m *infrav1.PooledRemoteMachine) { m.Spec.ClaimRef = &infrav1.PooledMachineClaim{Name: "x"} }),
		entry("maintenance", "", func(m *infrav1.PooledRemoteMachine) { m.Spec.Maintenance = true }),
		entry("hdd", "", func(m *infrav1.PooledRemoteMachine) { m.Labels["disk"] = "hdd" }),
		entry("other-cluster", "", func(m *infrav1.PooledRemoteMachine) { m.Spec.AllowedClusters = []string{"prod"} }),
		entry("this-cluster", "", func(m *infrav1.PooledRemoteMachine) { m.Spec.AllowedClusters = []string{"dev"} }),
		entry("reserved", ""),
	}
	g.Expect(c.reserve(&items[6])).To(BeTrue())
	req := Request{Namespace: "ns", MachineName: "m", ClusterName: "dev", Selector: labels.SelectorFromSet(labels.Set{"disk": "ssd"})}
	got, err := c.filter(context.Background(), req, items)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(names(got)).To(ConsistOf("free", "this-cluster"))

	// The reservation ends when the entry changes (another replica claimed or released it).
	items = []infrav1.PooledRemoteMachine{entry("reserved", "", func(m *infrav1.PooledRemoteMachine) { m.ResourceVersion = "2" })}
	got, err = c.filter(context.Background(), req, items)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(names(got)).To(ConsistOf("reserved"))
}

func TestOrderPrefersTheWantedFailureDomain(t *testing.T) {
	g := NewWithT(t)
	c := newTestClaimer()
	var items []infrav1.PooledRemoteMachine
	for i := range 6 {
		items = append(items, entry(fmt.Sprintf("e%d", i), fmt.Sprintf("fd-%d", i%3)))
	}
	req := Request{Namespace: "ns", MachineName: "workers-0", FailureDomains: []string{"fd-2"}}
	g.Expect(c.order(context.Background(), req, items)).To(Succeed())
	g.Expect(items[0].Spec.FailureDomain).To(Equal("fd-2"))
	g.Expect(items[1].Spec.FailureDomain).To(Equal("fd-2"))
	g.Expect(items[2].Spec.FailureDomain).NotTo(Equal("fd-2"))
}

func TestOrderSpreadsControlPlanesAndConcurrentClaims(t *testing.T) {
	g := NewWithT(t)
	// The cluster's control plane already holds an entry in fd-0 and one in fd-1.
	held := func(rm, e string) *infrav1.RemoteMachine {
		return &infrav1.RemoteMachine{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: rm, Labels: map[string]string{ClusterNameLabel: "dev", ControlPlaneLabel: ""}},
			Spec:       infrav1.RemoteMachineSpec{PooledRemoteMachineRef: &infrav1.PooledRemoteMachineReference{Name: e}},
		}
	}
	used0, used0b, used1 := entry("used-0", "fd-0"), entry("used-0b", "fd-0"), entry("used-1", "fd-1")
	c := newTestClaimer(&used0, &used0b, &used1, held("cp-0", "used-0"), held("cp-1", "used-0b"), held("cp-2", "used-1"))
	var items []infrav1.PooledRemoteMachine
	for _, d := range []string{"fd-0", "fd-0", "fd-0", "fd-1", "fd-1", "fd-1", "fd-2"} {
		items = append(items, entry(fmt.Sprintf("e%d", len(items)), d))
	}
	req := Request{Namespace: "ns", MachineName: "cp-3", ClusterName: "dev", ControlPlane: true}
	g.Expect(c.order(context.Background(), req, items)).To(Succeed())
	var domains []string
	for _, m := range items {
		domains = append(domains, m.Spec.FailureDomain)
	}
	g.Expect(domains).To(Equal([]string{"fd-2", "fd-1", "fd-1", "fd-1", "fd-0", "fd-0", "fd-0"}),
		"the failure domains the cluster's control plane uses least come first")

	// Ties are broken by a hash of machine and entry names: one machine always gets the same order, and different
	// machines claiming at once start at different entries.
	pool := func() []infrav1.PooledRemoteMachine {
		var out []infrav1.PooledRemoteMachine
		for i := range 16 {
			out = append(out, entry(fmt.Sprintf("e%02d", i), ""))
		}
		return out
	}
	first := map[string]bool{}
	for i := range 8 {
		a, b := pool(), pool()
		r := Request{Namespace: "ns", MachineName: fmt.Sprintf("w-%d", i)}
		g.Expect(c.order(context.Background(), r, a)).To(Succeed())
		g.Expect(c.order(context.Background(), r, b)).To(Succeed())
		g.Expect(names(a)).To(Equal(names(b)))
		first[a[0].Name] = true
	}
	g.Expect(len(first)).To(BeNumerically(">", 2), "eight machines should not all start at the same entry")
}

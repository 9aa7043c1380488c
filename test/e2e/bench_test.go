//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
)

// deployment is the workers MachineDeployment of the end-to-end suite under another name, on a pool of that name,
// with no replicas.
func deployment(name string) string {
	return strings.ReplaceAll(strings.Replace(workers, "replicas: 3", "replicas: 0", 1), "workers", name)
}

// BenchmarkP6 is make bench's P6: a MachineDeployment scaled from 0 to 50 Machines (3 with -short) on a pool of as
// many real sshd hosts, with Cluster API's managers and CAPR installed by clusterctl, until every Machine is Running;
// against 50 times the time of one Machine (another MachineDeployment of the same cluster scaled from 0 to 1). Lower
// is better; goal <= 0.5. It appends its row to $BENCH_ROWS for test/bench's table.
func BenchmarkP6(b *testing.B) {
	n := 50
	if testing.Short() {
		n = 3
	}
	g := NewWithT(b)
	ctx := context.Background()
	setup := time.Now()
	e := Start(b, func(s string) { b.Log(s) })
	c := e.Management.Client
	cp := e.AddHost("p6-cp")
	single := e.AddHost("p6-one")
	endpoint := e.PrepareNamespace(ns, clusterName)
	out, err := mgmt.Kubectl(b, e.Management, fmt.Sprintf(directExample, endpoint.Host, endpoint.Port, cp.Address, cp.Port), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		machine := &clusterv1.Machine{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "remote-test-0"}, machine)).To(Succeed())
		g.Expect(machine.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)))
	}, timeout, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	e.ShareClusterCA(ns, clusterName)
	g.Expect(c.Create(ctx, poolEntry(ns, "one", "one-0", single))).To(Succeed())
	for i := range n {
		h := e.AddHost(fmt.Sprintf("p6-w-%02d", i))
		g.Expect(c.Create(ctx, poolEntry(ns, "fanout", fmt.Sprintf("fanout-%02d", i), h))).To(Succeed())
	}
	for _, name := range []string{"one", "fanout"} {
		out, err := mgmt.Kubectl(b, e.Management, deployment(name), "apply", "-f", "-")
		g.Expect(err).NotTo(HaveOccurred(), out)
		// Scaling starts from a MachineSet of 0 that Cluster API already made.
		g.Eventually(func(g Gomega) {
			sets := &clusterv1.MachineSetList{}
			g.Expect(c.List(ctx, sets, client.InNamespace(ns), client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: name})).To(Succeed())
			g.Expect(sets.Items).To(HaveLen(1))
		}, timeout, time.Second).Should(Succeed())
	}
	b.Logf("P6 setup: %s", time.Since(setup).Round(time.Second))

	scale := func(name string, replicas int) time.Duration {
		start := time.Now()
		out, err := mgmt.Kubectl(b, e.Management, "", "scale", "-n", ns, "machinedeployment/"+name, fmt.Sprintf("--replicas=%d", replicas))
		g.Expect(err).NotTo(HaveOccurred(), out)
		g.Eventually(func(g Gomega) {
			g.Expect(runningMachines(g, c, ns, name)).To(HaveLen(replicas))
		}, 15*time.Minute, 200*time.Millisecond).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
		return time.Since(start)
	}
	one := scale("one", 1)
	all := scale("fanout", n)
	ratio := float64(all) / (float64(n) * float64(one))
	fmt.Printf("\nP6  MachineDeployment scaled 0 -> %d on %d sshd hosts: %s; one Machine: %s; ratio %.3f (goal <= 0.5)\n",
		n, n, all.Round(time.Millisecond), one.Round(time.Millisecond), ratio)
	g.Expect(rows.Append(rows.Row{Figure: "P6", What: fmt.Sprintf("MachineDeployment scaled 0 -> %d on %d sshd hosts until all Running", n, n),
		Baseline: fmt.Sprintf("%d x one Machine (%s)", n, one.Round(time.Millisecond)), CAPR: all.Round(time.Millisecond).String(),
		Ratio: ratio, Goal: 0.5,
		Note: "P6: Cluster API v1.14.2's managers and CAPR installed by clusterctl, a kubeadm stand-in on the hosts registering Nodes in a second kube-apiserver; one Machine is another MachineDeployment of the same cluster scaled 0 -> 1."})).To(Succeed())
}

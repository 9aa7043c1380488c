//go:build integration

package e2e

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
	"github.com/capr-project/cluster-api-provider-remote/test/measure"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/nodehost"
)

// BenchmarkP6RealNodes is make bench's P6 on real nodes: the quickstart's cluster (examples/quickstart/cluster.yaml)
// on node hosts, its workers MachineDeployment scaled by ten Machines at once (three with -short) on as many new
// hosts, until every Node is Ready; against the same MachineDeployment scaled by one Machine on one new host. Real
// kubeadm join, kubelet and containerd run on every host. Goal: <= 2. It appends its row to $BENCH_ROWS.
func BenchmarkP6RealNodes(b *testing.B) {
	if why := nodehost.Missing("", ""); why != "" {
		NewWithT(b).Expect(rows.Append(rows.Row{Figure: "P6r", Err: "real nodes cannot run here: " + why})).To(Succeed())
		b.Skip(why)
	}
	n := 10
	if testing.Short() {
		n = 3
	}
	g := NewWithT(b)
	const ns = "p6r"
	r := startRealCluster(b, ns)
	g.Eventually(func(g Gomega) { g.Expect(r.readyNodes(g)).To(HaveLen(3)) }, 6*time.Minute, 2*time.Second).
		Should(Succeed(), func() string { return tail(r.e.CAPR.Logs.String()) })
	// The hosts of both scalings are started first: starting a host (its containerd, the images) is not timed.
	one := r.addHost(b, fmt.Sprintf("%s-one", ns))
	var fleet []string
	for i := range n {
		fleet = append(fleet, r.addHost(b, fmt.Sprintf("%s-f%02d", ns, i)).Name)
	}
	replicas := 2
	var usage []string
	scale := func(add int, hosts ...string) time.Duration {
		for _, h := range hosts {
			for _, host := range r.hosts {
				if host.Name == h {
					r.addWorkerEntry(b, "entry-"+h, host)
				}
			}
		}
		replicas += add
		cpuBefore, busyBefore := cpuByProcess(), measure.MachineBusy()
		start := time.Now()
		out, err := mgmt.Kubectl(b, r.e.Management, "", "scale", "-n", ns, "machinedeployment/workers", fmt.Sprintf("--replicas=%d", replicas))
		g.Expect(err).NotTo(HaveOccurred(), out)
		g.Eventually(func(g Gomega) {
			ready := r.readyNodes(g)
			for _, h := range hosts {
				g.Expect(ready).To(HaveKey(h))
			}
		}, 15*time.Minute, time.Second).Should(Succeed(), func() string { return tail(r.e.CAPR.Logs.String()) })
		took := time.Since(start)
		var top []string
		for i, p := range cpuSince(cpuBefore, cpuByProcess(), r.e.CAPR.Pid(), apiserverPorts(r.e)) {
			if i == 6 {
				break
			}
			top = append(top, fmt.Sprintf("%s %s", p.name, p.cpu.Round(100*time.Millisecond)))
		}
		busy := measure.MachineBusy() - busyBefore
		usage = append(usage, fmt.Sprintf("by %d: machine CPU %.0f%% busy (%s of %d × %s); by program: %s", add,
			100*busy.Seconds()/(float64(runtime.NumCPU())*took.Seconds()), busy.Round(100*time.Millisecond), runtime.NumCPU(), took.Round(100*time.Millisecond), strings.Join(top, ", ")))
		return took
	}
	single := scale(1, one.Name)
	all := scale(n, fleet...)
	ratio := float64(all) / float64(single)
	fmt.Printf("\nP6r real nodes: workers scaled by %d on %d new node hosts: %s until every Node Ready; by one: %s; ratio %.2f (goal <= 2)\n",
		n, n, all.Round(time.Second), single.Round(time.Second), ratio)
	g.Expect(rows.Append(rows.Row{Figure: "P6r", What: fmt.Sprintf("real nodes: a MachineDeployment scaled by %d Machines on %d node hosts until all Nodes Ready", n, n),
		Baseline: "scaled by one " + single.Round(100*time.Millisecond).String(), CAPR: all.Round(100 * time.Millisecond).String(), Ratio: ratio, Goal: 2,
		Note: fmt.Sprintf("P6r: examples/quickstart/cluster.yaml on node hosts (real kubeadm join, kubelet, containerd, kube-proxy), %d node hosts sharing this machine's %d CPUs with the management and workload control planes. Scaled %s.",
			len(r.hosts), runtime.NumCPU(), strings.Join(usage, "; scaled "))})).To(Succeed())
}

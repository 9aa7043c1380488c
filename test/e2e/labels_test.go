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

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
)

const (
	rackLabel = "node.cluster.x-k8s.io/rack"
	gpuLabel  = "node.cluster.x-k8s.io/gpu"
	tierLabel = "node.cluster.x-k8s.io/tier"
	// labelsTimeout bounds each wait: the rig shares two cores with other work.
	labelsTimeout = 5 * time.Minute
)

// TestHardwareLabels: a pool entry labelled in node.cluster.x-k8s.io (the domain Cluster API syncs from Machines to
// Nodes) gives those labels to the Node of the Machine that claims it, through CAPR (entry → RemoteMachine →
// Machine) and Cluster API's own label sync (Machine → Node), with Cluster API v1.14.2's managers and CAPR installed
// by clusterctl. Changing a label on the entry (kubectl label) changes it on the Node; removing one removes it; a
// label in another domain stays on the entry; the MachineDeployment's own template labels, changed in place, live
// beside them.
func TestHardwareLabels(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	e := Start(t, func(s string) { t.Log(s) })
	c := e.Management.Client
	cp := e.AddHost("labels-cp-0")
	w := e.AddHost("labels-w-0")
	endpoint := e.PrepareNamespace(ns, clusterName)

	doc := fmt.Sprintf(directExample, endpoint.Host, endpoint.Port, cp.Address, cp.Port)
	out, err := mgmt.Kubectl(t, e.Management, doc, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		machine := &clusterv1.Machine{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "remote-test-0"}, machine)).To(Succeed())
		g.Expect(machine.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)))
	}, labelsTimeout, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	e.ShareClusterCA(ns, clusterName)

	// One labelled entry, and a MachineDeployment of one worker whose template carries a label of the same domain.
	en := entry("worker-0", w)
	en.Labels = map[string]string{rackLabel: "r1", gpuLabel: "true", "team": "x"}
	g.Expect(c.Create(ctx, en)).To(Succeed())
	md := strings.Replace(workers, "  replicas: 3\n", "  replicas: 1\n", 1)
	md = strings.Replace(md, "  template:\n    spec:\n      clusterName:", "  template:\n    metadata:\n      labels:\n        "+tierLabel+": web\n    spec:\n      clusterName:", 1)
	out, err = mgmt.Kubectl(t, e.Management, md, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)

	var node, machineName string
	g.Eventually(func(g Gomega) {
		running := runningMachines(g, c, ns, "workers")
		g.Expect(running).To(HaveKey("labels-w-0"))
		node, machineName = "labels-w-0", running["labels-w-0"]
	}, labelsTimeout, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	machine := &clusterv1.Machine{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: machineName}, machine)).To(Succeed())
	rm := &infrav1.RemoteMachine{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: machine.Spec.InfrastructureRef.Name}, rm)).To(Succeed())
	g.Expect(rm.Spec.PooledRemoteMachineRef.Name).To(Equal("worker-0"))
	g.Expect(rm.Labels).To(HaveKeyWithValue(rackLabel, "r1"))
	g.Expect(rm.Labels).NotTo(HaveKey("team"))

	// hardware returns the labels of the domain (and "team") on the Machine and on its Node.
	hardware := func(g Gomega) (onMachine, onNode map[string]string) {
		m := &clusterv1.Machine{}
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(machine), m)).To(Succeed())
		n := e.Node(node)
		g.Expect(n).NotTo(BeNil())
		pick := func(l map[string]string) map[string]string {
			out := map[string]string{}
			for k, v := range l {
				if strings.HasPrefix(k, infrav1.HardwareLabelDomain+"/") || k == "team" {
					out[k] = v
				}
			}
			return out
		}
		return pick(m.Labels), pick(n.Labels)
	}
	expectLabels := func(want map[string]string) {
		t.Helper()
		g.Eventually(func(g Gomega) {
			onMachine, onNode := hardware(g)
			g.Expect(onMachine).To(Equal(want), "Machine %s", machineName)
			g.Expect(onNode).To(Equal(want), "Node %s", node)
		}, labelsTimeout, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	}
	showNode := func(when string) {
		out, err := mgmt.Kubectl(t, e.Workload, "", "get", "node", node, "--show-labels")
		g.Expect(err).NotTo(HaveOccurred(), out)
		t.Logf("%s: kubectl get node %s --show-labels\n%s", when, node, out)
	}

	// The claim's labels reach the Node, beside the template's; team=x does not travel.
	expectLabels(map[string]string{rackLabel: "r1", gpuLabel: "true", tierLabel: "web"})
	showNode("claimed")
	out, err = mgmt.Kubectl(t, e.Management, "", "get", "prm", "-n", ns, "worker-0", "--show-labels")
	g.Expect(err).NotTo(HaveOccurred(), out)
	t.Logf("kubectl get prm worker-0 --show-labels\n%s", out)

	// The entry's rack changes: the Node follows.
	out, err = mgmt.Kubectl(t, e.Management, "", "label", "prm", "-n", ns, "worker-0", rackLabel+"=r2", "--overwrite")
	g.Expect(err).NotTo(HaveOccurred(), out)
	expectLabels(map[string]string{rackLabel: "r2", gpuLabel: "true", tierLabel: "web"})

	// gpu is removed from the entry: it goes from the Node.
	out, err = mgmt.Kubectl(t, e.Management, "", "label", "prm", "-n", ns, "worker-0", gpuLabel+"-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	expectLabels(map[string]string{rackLabel: "r2", tierLabel: "web"})
	showNode("rack changed, gpu removed")

	// The MachineDeployment's template label changes in place (Cluster API's MachineSet applies it to the Machine
	// with its own field manager): the template's label follows, the entry's stay.
	out, err = mgmt.Kubectl(t, e.Management, "", "patch", "machinedeployment", "-n", ns, "workers", "--type=merge",
		"-p", `{"spec":{"template":{"metadata":{"labels":{"`+tierLabel+`":"api"}}}}}`)
	g.Expect(err).NotTo(HaveOccurred(), out)
	expectLabels(map[string]string{rackLabel: "r2", tierLabel: "api"})
	g.Expect(c.Get(ctx, client.ObjectKeyFromObject(machine), machine)).To(Succeed())
	g.Expect(machine.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)), "labels change in place: no new Machine")
	g.Expect(Runs(w, "join")).To(Equal(1))
	rms := &infrav1.RemoteMachineList{}
	g.Expect(c.List(ctx, rms, client.InNamespace(ns))).To(Succeed())
	g.Expect(rms.Items).To(HaveLen(2))
	g.Expect(c.Get(ctx, client.ObjectKeyFromObject(rm), rm)).To(Succeed())
	g.Expect(rm.Labels).To(HaveKeyWithValue(rackLabel, "r2"))
	g.Expect(rm.Labels).NotTo(HaveKey(gpuLabel))
	showNode("template label changed in place")
	mgmt.NoForbidden(g, e.CAPR.Logs.String())
}

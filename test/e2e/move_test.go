//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// TestClusterctlMoveEndToEnd moves a running cluster's namespace with `clusterctl move` to a second management
// cluster, with Cluster API's managers and CAPR running on both: the machines stay Running on their hosts, which run
// nothing again; the claims are kept and bound to the moved RemoteMachines; a machine added afterwards takes the free
// host, never one already held; deleting the Cluster on the target cleans every host once.
func TestClusterctlMoveEndToEnd(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const moved = "moved"
	e := Start(t, func(s string) { t.Log(s) })
	source := e.Management.Client
	cp, w0, w1 := e.AddHost("move-cp-0"), e.AddHost("move-w-0"), e.AddHost("move-w-1")
	endpoint := e.PrepareNamespace(moved, clusterName)
	inMoved := func(doc string) string { return strings.ReplaceAll(doc, "namespace: e2e", "namespace: "+moved) }

	out, err := mgmt.Kubectl(t, e.Management, inMoved(fmt.Sprintf(directExample, endpoint.Host, endpoint.Port, cp.Address, cp.Port)), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		machine := &clusterv1.Machine{}
		g.Expect(source.Get(ctx, client.ObjectKey{Namespace: moved, Name: "remote-test-0"}, machine)).To(Succeed())
		g.Expect(machine.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)))
	}, timeout, time.Second).Should(Succeed())
	e.ShareClusterCA(moved, clusterName)
	for i, h := range []*sshdtest.Host{w0, w1} {
		g.Expect(source.Create(ctx, poolEntry(moved, "workers", fmt.Sprintf("worker-%d", i), h))).To(Succeed())
	}
	out, err = mgmt.Kubectl(t, e.Management, strings.Replace(inMoved(workers), "replicas: 3", "replicas: 2", 1), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		g.Expect(runningMachines(g, source, moved, "workers")).To(HaveLen(2))
	}, timeout, time.Second).Should(Succeed())

	// The target management cluster, and the move.
	target, targetCAPR := e.StartManagement(func(s string) { t.Log("target: " + s) })
	out, err = mgmt.RunCmd(t, "", mgmt.ClusterctlEnv(t), mgmt.Tool(t, "clusterctl"), "move", "--kubeconfig", e.Management.Kubeconfig,
		"--to-kubeconfig", target.Kubeconfig, "-n", moved)
	g.Expect(err).NotTo(HaveOccurred(), out)
	c := target.Client

	// On the target: the machines run on their hosts, the claims are bound to the moved RemoteMachines, and no host
	// ran anything again.
	g.Eventually(func(g Gomega) {
		g.Expect(runningMachines(g, c, moved, "workers")).To(HaveLen(2))
		machine := &clusterv1.Machine{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: moved, Name: "remote-test-0"}, machine)).To(Succeed())
		g.Expect(machine.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)))
		rms := &infrav1.RemoteMachineList{}
		g.Expect(c.List(ctx, rms, client.InNamespace(moved))).To(Succeed())
		g.Expect(rms.Items).To(HaveLen(3))
		uids := map[string]bool{}
		for _, rm := range rms.Items {
			g.Expect(ptr.Deref(rm.Status.Initialization.Provisioned, false)).To(BeTrue(), rm.Name)
			uids[string(rm.UID)] = true
		}
		entries := &infrav1.PooledRemoteMachineList{}
		g.Expect(c.List(ctx, entries, client.InNamespace(moved))).To(Succeed())
		g.Expect(entries.Items).To(HaveLen(2))
		for _, en := range entries.Items {
			g.Expect(en.Spec.ClaimRef).NotTo(BeNil(), en.Name)
			g.Expect(uids).To(HaveKey(string(en.Spec.ClaimRef.UID)), "%s is bound to a moved RemoteMachine", en.Name)
		}
	}, timeout, time.Second).Should(Succeed(), func() string { return tail(targetCAPR.Logs.String()) })
	g.Expect(Runs(cp, "init")).To(Equal(1))
	g.Expect(Runs(w0, "join")).To(Equal(1))
	g.Expect(Runs(w1, "join")).To(Equal(1))
	for _, h := range []*sshdtest.Host{cp, w0, w1} {
		g.Expect(Runs(h, "reset")).To(BeZero(), "%s was not cleaned by the move", h.Address)
	}
	rms := &infrav1.RemoteMachineList{}
	g.Expect(source.List(ctx, rms, client.InNamespace(moved))).To(Succeed())
	g.Expect(rms.Items).To(BeEmpty(), "nothing is left on the source")

	// A machine added on the target takes the free host, never a held one.
	w2 := e.AddHost("move-w-2")
	g.Expect(c.Create(ctx, poolEntry(moved, "workers", "worker-2", w2))).To(Succeed())
	out, err = mgmt.Kubectl(t, target, "", "scale", "-n", moved, "machinedeployment/workers", "--replicas=3")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		g.Expect(runningMachines(g, c, moved, "workers")).To(HaveLen(3))
	}, timeout, time.Second).Should(Succeed())
	g.Expect(Runs(w2, "join")).To(Equal(1))
	g.Expect(Runs(w0, "join")+Runs(w1, "join")).To(Equal(2), "no held host was claimed again")

	// Deleting the Cluster on the target cleans every host once.
	g.Expect(c.Delete(ctx, &clusterv1.Cluster{ObjectMeta: metav1.ObjectMeta{Namespace: moved, Name: clusterName}})).To(Succeed())
	g.Eventually(func(g Gomega) {
		machines := &clusterv1.MachineList{}
		g.Expect(c.List(ctx, machines, client.InNamespace(moved))).To(Succeed())
		g.Expect(machines.Items).To(BeEmpty())
	}, timeout, time.Second).Should(Succeed())
	for _, h := range []*sshdtest.Host{cp, w0, w1, w2} {
		g.Expect(Runs(h, "reset")).To(Equal(1), "%s cleaned once", h.Address)
	}
	mgmt.NoForbidden(g, targetCAPR.Logs.String())
}

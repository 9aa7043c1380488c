//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

const (
	ns          = "e2e"
	clusterName = "remote-test"
	timeout     = 3 * time.Minute
)

// directExample is the reference document's first example (a Cluster on a RemoteCluster, a Machine on a direct
// RemoteMachine) with a real KubeadmConfig instead of k0s's: the cluster's first control-plane machine. The Cluster
// has no control-plane object, so this Machine initialises the cluster.
const directExample = `apiVersion: cluster.x-k8s.io/v1beta1
kind: Cluster
metadata:
  name: remote-test
  namespace: e2e
spec:
  controlPlaneEndpoint:
    host: %s
    port: %d
  clusterNetwork:
    pods:
      cidrBlocks:
      - 192.168.0.0/16
    serviceDomain: cluster.local
    services:
      cidrBlocks:
      - 10.128.0.0/12
  infrastructureRef:
    apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
    kind: RemoteCluster
    name: remote-test
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteCluster
metadata:
  name: remote-test
  namespace: e2e
spec:
---
apiVersion: cluster.x-k8s.io/v1beta1
kind: Machine
metadata:
  name:  remote-test-0
  namespace: e2e
  labels:
    cluster.x-k8s.io/control-plane: ""
spec:
  clusterName: remote-test
  version: v1.36.3
  bootstrap:
    configRef:
      apiVersion: bootstrap.cluster.x-k8s.io/v1beta1
      kind: KubeadmConfig
      name: remote-test-0
  infrastructureRef:
    apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
    kind: RemoteMachine
    name: remote-test-0
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta1
kind: KubeadmConfig
metadata:
  name: remote-test-0
  namespace: e2e
spec:
  initConfiguration:
    nodeRegistration:
      name: '{{ ds.meta_data.local_hostname }}'
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachine
metadata:
  name: remote-test-0
  namespace: e2e
spec:
  address: %s
  port: %d
  user: root
  sshKeyRef:
    name: ssh-key
`

// workers is a MachineDeployment of kubeadm workers on a RemoteMachineTemplate naming the pool "workers".
const workers = `apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachineTemplate
metadata:
  name: workers
  namespace: e2e
spec:
  template:
    spec:
      pool: workers
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata:
  name: workers
  namespace: e2e
spec:
  template:
    spec:
      joinConfiguration:
        nodeRegistration:
          name: '{{ ds.meta_data.local_hostname }}'
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata:
  name: workers
  namespace: e2e
spec:
  clusterName: remote-test
  replicas: 3
  selector:
    matchLabels: {}
  template:
    spec:
      clusterName: remote-test
      version: v1.36.3
      bootstrap:
        configRef:
          apiGroup: bootstrap.cluster.x-k8s.io
          kind: KubeadmConfigTemplate
          name: workers
      infrastructureRef:
        apiGroup: infrastructure.cluster.x-k8s.io
        kind: RemoteMachineTemplate
        name: workers
`

// entry returns a pool entry of pool "workers" for a host.
func entry(name string, h *sshdtest.Host) *infrav1.PooledRemoteMachine {
	return poolEntry(ns, "workers", name, h)
}

// poolEntry returns a pool entry in a namespace and pool for a host, logging in with the Secret "ssh-key".
func poolEntry(namespace, pool, name string, h *sshdtest.Host) *infrav1.PooledRemoteMachine {
	e := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	e.Spec.Pool = pool
	e.Spec.Machine.Address, e.Spec.Machine.Port = h.Address, int32(h.Port)
	e.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "ssh-key"}
	return e
}

// runningMachines returns the Machines of the cluster that Cluster API reports Running, by the Node they run.
func runningMachines(g Gomega, c client.Client, namespace, deployment string) map[string]string {
	machines := &clusterv1.MachineList{}
	g.Expect(c.List(context.Background(), machines, client.InNamespace(namespace),
		client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: deployment})).To(Succeed())
	running := map[string]string{}
	for _, m := range machines.Items {
		if m.Status.Phase == string(clusterv1.MachinePhaseRunning) && m.Status.NodeRef.IsDefined() {
			running[m.Status.NodeRef.Name] = m.Name
		}
	}
	return running
}

// TestEndToEnd runs CAPR, installed by clusterctl, with Cluster API's own managers and real sshd hosts, through what
// a user does: the reference document's direct machine initialises a cluster, a MachineDeployment larger than its
// pool waits (and says why where a user looks) until an entry is added, scaling down cleans and returns hosts that
// scaling up claims again, bad documents are refused at kubectl apply, and deleting the Cluster cleans and releases
// every host.
func TestEndToEnd(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	e := Start(t, func(s string) { t.Log(s) })
	c := e.Management.Client
	cp := e.AddHost("e2e-cp-0")
	w0, w1 := e.AddHost("e2e-w-0"), e.AddHost("e2e-w-1")
	endpoint := e.PrepareNamespace(ns, clusterName)

	// The direct machine: Cluster API's Machine reaches Running with a Node of the workload cluster.
	doc := fmt.Sprintf(directExample, endpoint.Host, endpoint.Port, cp.Address, cp.Port)
	out, err := mgmt.Kubectl(t, e.Management, doc, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	machine := &clusterv1.Machine{}
	g.Eventually(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "remote-test-0"}, machine)).To(Succeed())
		g.Expect(machine.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)), "conditions: %v", machine.Status.Conditions)
		g.Expect(machine.Status.NodeRef.Name).To(Equal("e2e-cp-0"))
	}, timeout, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	g.Expect(Runs(cp, "init")).To(Equal(1))
	cluster := &clusterv1.Cluster{}
	g.Eventually(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: clusterName}, cluster)).To(Succeed())
		// A Cluster without a control-plane object reports it as a condition (its first control-plane Machine has a Node).
		g.Expect(conditions.IsTrue(cluster, clusterv1.ClusterControlPlaneInitializedCondition)).To(BeTrue())
	}, timeout, time.Second).Should(Succeed())
	e.ShareClusterCA(ns, clusterName)

	// A MachineDeployment of 3 from a pool of 2: two Running on distinct hosts, the third waits and its MachineSet
	// is told why.
	for i, h := range []*sshdtest.Host{w0, w1} {
		g.Expect(c.Create(ctx, entry(fmt.Sprintf("worker-%d", i), h))).To(Succeed())
	}
	out, err = mgmt.Kubectl(t, e.Management, workers, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		g.Expect(runningMachines(g, c, ns, "workers")).To(HaveLen(2))
	}, timeout, time.Second).Should(Succeed())
	g.Expect(runningMachines(g, c, ns, "workers")).To(HaveKey("e2e-w-0"))
	g.Expect(runningMachines(g, c, ns, "workers")).To(HaveKey("e2e-w-1"))
	g.Expect(Runs(w0, "join")).To(Equal(1))
	g.Expect(Runs(w1, "join")).To(Equal(1))
	g.Eventually(func(g Gomega) {
		events := &eventsv1.EventList{}
		g.Expect(c.List(ctx, events, client.InNamespace(ns))).To(Succeed())
		var found []string
		for _, ev := range events.Items {
			if ev.Reason == "PoolExhausted" && ev.Regarding.Kind == "MachineSet" && ev.Type == "Warning" {
				found = append(found, ev.Note)
			}
		}
		g.Expect(found).NotTo(BeEmpty())
		g.Expect(found[0]).To(ContainSubstring(`no free PooledRemoteMachine in pool "workers" (2 in pool: 2 claimed)`))
	}, time.Minute, time.Second).Should(Succeed())

	// A third entry: the third machine is created and runs.
	w2 := e.AddHost("e2e-w-2")
	g.Expect(c.Create(ctx, entry("worker-2", w2))).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(runningMachines(g, c, ns, "workers")).To(HaveLen(3))
	}, timeout, time.Second).Should(Succeed())
	g.Expect(Runs(w2, "join")).To(Equal(1))

	// Scale down to 1: the released hosts are cleaned (kubeadm reset) and Available again.
	out, err = mgmt.Kubectl(t, e.Management, "", "scale", "-n", ns, "machinedeployment/workers", "--replicas=1")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		g.Expect(runningMachines(g, c, ns, "workers")).To(HaveLen(1))
		entries := &infrav1.PooledRemoteMachineList{}
		g.Expect(c.List(ctx, entries, client.InNamespace(ns))).To(Succeed())
		available := 0
		for _, en := range entries.Items {
			if en.Status.Phase == infrav1.PooledRemoteMachinePhaseAvailable {
				available++
			}
		}
		g.Expect(available).To(Equal(2))
	}, timeout, time.Second).Should(Succeed())
	resets := Runs(w0, "reset") + Runs(w1, "reset") + Runs(w2, "reset")
	g.Expect(resets).To(Equal(2))

	// Scale up to 3 again: the cleaned hosts are claimed again and join a second time.
	out, err = mgmt.Kubectl(t, e.Management, "", "scale", "-n", ns, "machinedeployment/workers", "--replicas=3")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		g.Expect(runningMachines(g, c, ns, "workers")).To(HaveLen(3))
	}, timeout, time.Second).Should(Succeed())
	g.Expect(Runs(w0, "join") + Runs(w1, "join") + Runs(w2, "join")).To(Equal(5))

	// Bad documents are refused at kubectl apply, naming the field.
	t.Run("rejections", func(t *testing.T) { rejections(t, e) })

	// Deleting the Cluster cleans every host and releases every entry; no finalizer is left.
	g.Expect(c.Delete(ctx, cluster)).To(Succeed())
	g.Eventually(func(g Gomega) {
		rms := &infrav1.RemoteMachineList{}
		g.Expect(c.List(ctx, rms, client.InNamespace(ns))).To(Succeed())
		g.Expect(rms.Items).To(BeEmpty())
		machines := &clusterv1.MachineList{}
		g.Expect(c.List(ctx, machines, client.InNamespace(ns))).To(Succeed())
		g.Expect(machines.Items).To(BeEmpty())
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(cluster), &clusterv1.Cluster{})).NotTo(Succeed())
	}, timeout, time.Second).Should(Succeed())
	entries := &infrav1.PooledRemoteMachineList{}
	g.Expect(c.List(ctx, entries, client.InNamespace(ns))).To(Succeed())
	for _, en := range entries.Items {
		g.Expect(en.Spec.ClaimRef).To(BeNil(), en.Name)
		g.Expect(en.Spec.Quarantine).To(BeNil(), en.Name)
	}
	g.Expect(Runs(cp, "reset")).To(Equal(1))
	for _, h := range []*sshdtest.Host{w0, w1, w2} {
		g.Expect(Runs(h, "reset")).To(Equal(Runs(h, "join")), "every join on %s was reset", h.Address)
	}
	mgmt.NoForbidden(g, e.CAPR.Logs.String())
}

// rejections applies documents CAPR refuses, each with a message naming the field.
func rejections(t *testing.T, e *Env) {
	g := NewWithT(t)
	out, err := mgmt.Kubectl(t, e.Management, "", "apply", "-f", testenv.RootDir()+"/test/testenv/testdata/k0s-crds.yaml")
	g.Expect(err).NotTo(HaveOccurred(), out)
	blocks := testenv.SeedBlocks(t)
	withoutEndpoint := strings.Replace(blocks[4], "  controlPlaneEndpoint: # required for K0sControlPlane\n    host: 1.2.3.4\n    port: 6443\n", "", 1)
	// The pooled example's documents name namespace "default" (the Cluster) or none (the control plane).
	for name, c := range map[string]struct{ namespace, doc, want string }{
		"endpoint missing, control plane first": {"default", strings.ReplaceAll(withoutEndpoint, "name: remote-test\n", "name: rejected-a\n"), "spec.controlPlaneEndpoint"},
		"endpoint missing, Cluster first": {"default",
			strings.ReplaceAll(reorder(withoutEndpoint), "name: remote-test\n", "name: rejected-b\n"), "spec.controlPlaneEndpoint"},
		"invalid port": {ns, "apiVersion: infrastructure.cluster.x-k8s.io/v1beta1\nkind: RemoteMachine\nmetadata:\n  name: bad-port\n  namespace: e2e\n" +
			"spec:\n  address: 127.0.0.1\n  port: 70000\n  sshKeyRef:\n    name: ssh-key\n", "spec.port"},
		"bad host key": {ns, "apiVersion: infrastructure.cluster.x-k8s.io/v1beta1\nkind: PooledRemoteMachine\nmetadata:\n  name: bad-key\n  namespace: e2e\n" +
			"spec:\n  pool: workers\n  machine:\n    address: 127.0.0.1\n    port: 2222\n    sshKeyRef:\n      name: ssh-key\n    hostKeys:\n    - ssh-ed25519 not-a-key\n", "spec.machine.hostKeys"},
	} {
		out, err := mgmt.Kubectl(t, e.Management, c.doc, "apply", "-n", c.namespace, "-f", "-")
		g.Expect(err).To(HaveOccurred(), "%s was accepted:\n%s", name, out)
		g.Expect(out).To(ContainSubstring(c.want), name)
	}
}

// reorder puts the second document of a two-document stream first.
func reorder(stream string) string {
	docs := strings.SplitN(stream, "\n---\n", 2)
	if len(docs) != 2 {
		return stream
	}
	return docs[1] + "\n---\n" + docs[0]
}

func tail(s string) string {
	if len(s) > 8000 {
		return "…" + s[len(s)-8000:]
	}
	return s
}

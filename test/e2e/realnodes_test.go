//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/nodehost"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// workersHealthCheck remediates a worker whose Node is not Ready for 10 seconds.
const workersHealthCheck = `apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineHealthCheck
metadata:
  name: workers
  namespace: %s
spec:
  clusterName: quickstart
  selector:
    matchLabels:
      cluster.x-k8s.io/deployment-name: workers
  checks:
    unhealthyNodeConditions:
    - type: Ready
      status: Unknown
      timeoutSeconds: 10
    - type: Ready
      status: "False"
      timeoutSeconds: 10
`

// realCluster is examples/quickstart/cluster.yaml applied on three node hosts (real kubeadm, kubelet, containerd).
type realCluster struct {
	e        *Env
	ns       string
	hosts    []*nodehost.Host
	workload client.Client
	// applied is when the cluster was applied.
	applied time.Time
}

// startRealCluster starts the environment and three node hosts, and applies examples/quickstart/cluster.yaml in
// namespace ns on them; it returns once the workload cluster's API answers.
func startRealCluster(t testing.TB, ns string) *realCluster {
	g := NewWithT(t)
	ctx := context.Background()
	e := Start(t, func(s string) { t.Log(s) })
	c := e.Management.Client
	version, err := nodehost.KubernetesVersion("")
	g.Expect(err).NotTo(HaveOccurred())
	vars := map[string]string{"NAMESPACE": ns, "KUBERNETES_VERSION": version}
	r := &realCluster{e: e, ns: ns}
	for i := range 3 {
		h := r.addHost(t, fmt.Sprintf("%s-%d", ns, i))
		vars[fmt.Sprintf("HOST_%d_ADDRESS", i)], vars[fmt.Sprintf("HOST_%d_PORT", i)] = h.Address, strconv.Itoa(h.Port)
	}
	hosts := r.hosts
	vars["CONTROL_PLANE_ENDPOINT_HOST"], vars["CONTROL_PLANE_ENDPOINT_PORT"] = hosts[0].Address, "6443"
	g.Expect(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	g.Expect(c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ssh-key"},
		Data: map[string][]byte{"value": hosts[0].ClientKeyPEM}})).To(Succeed())
	doc, err := os.ReadFile(filepath.Join(testenv.RootDir(), "examples", "quickstart", "cluster.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	rendered := os.Expand(string(doc), func(k string) string {
		if v, ok := vars[k]; ok {
			return v
		}
		return "${" + k + "}"
	})
	r.applied = time.Now()
	out, err := mgmt.Kubectl(t, e.Management, rendered, "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		secret := &corev1.Secret{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "quickstart-kubeconfig"}, secret)).To(Succeed())
		config, err := clientcmd.RESTConfigFromKubeConfig(secret.Data["value"])
		g.Expect(err).NotTo(HaveOccurred())
		config.Timeout = 5 * time.Second
		r.workload, err = client.New(config, client.Options{})
		g.Expect(err).NotTo(HaveOccurred())
	}, 3*time.Minute, time.Second).Should(Succeed())
	return r
}

// addHost starts one more node host, whose SSH key is the first host's.
func (r *realCluster) addHost(t testing.TB, name string) *nodehost.Host {
	opts := nodehost.Options{Name: name}
	if len(r.hosts) > 0 {
		opts.ClientKeyPEM = r.hosts[0].ClientKeyPEM
	}
	h := nodehost.Start(t, opts)
	r.hosts = append(r.hosts, h)
	return h
}

// addWorkerEntry adds a pool entry for host h to the workers' pool, cleaned like host-1 of the example.
func (r *realCluster) addWorkerEntry(t testing.TB, name string, h *nodehost.Host) {
	g := NewWithT(t)
	c := r.e.Management.Client
	model := &infrav1.PooledRemoteMachine{}
	g.Expect(c.Get(context.Background(), client.ObjectKey{Namespace: r.ns, Name: "host-1"}, model)).To(Succeed())
	en := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: name, Labels: model.Labels}}
	en.Spec.Pool = model.Spec.Pool
	en.Spec.Machine.RemoteHost = *model.Spec.Machine.RemoteHost.DeepCopy()
	en.Spec.Machine.Address, en.Spec.Machine.Port, en.Spec.Machine.HostKeys = h.Address, int32(h.Port), nil
	g.Expect(c.Create(context.Background(), en)).To(Succeed())
}

// readyNodes are the workload cluster's Ready Nodes, name → UID.
func (r *realCluster) readyNodes(g Gomega) map[string]string {
	nodes := &corev1.NodeList{}
	g.Expect(r.workload.List(context.Background(), nodes)).To(Succeed())
	ready := map[string]string{}
	for _, n := range nodes.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready[n.Name] = string(n.UID)
			}
		}
	}
	return ready
}

// TestRealNodes runs examples/quickstart/cluster.yaml on three node hosts of a pool (real kubeadm, kubelet,
// containerd): a KubeadmControlPlane of one and a MachineDeployment of two reach three Ready Nodes. A worker Machine
// deleted runs the real kubeadm reset on its host (CAPR's cleanup succeeds), which returns to the pool and joins
// again as a new Node. A hardware label put on a worker's pool entry reaches its real Node. A MachineHealthCheck replaces a worker whose kubelet was stopped (its Node stops being Ready):
// its host is reset and joins again.
func TestRealNodes(t *testing.T) {
	if why := nodehost.Missing("", ""); why != "" {
		t.Skip(why)
	}
	g := NewWithT(t)
	ctx := context.Background()
	const ns = "real"
	r := startRealCluster(t, ns)
	e, c, hosts, workload, start := r.e, r.e.Management.Client, r.hosts, r.workload, r.applied
	readyNodes := r.readyNodes
	var out string
	var err error
	var nodes map[string]string
	g.Eventually(func(g Gomega) {
		nodes = readyNodes(g)
		g.Expect(nodes).To(HaveLen(3))
	}, 6*time.Minute, 2*time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	t.Logf("KubeadmControlPlane 1 + MachineDeployment 2: three Nodes Ready %s after the apply", time.Since(start).Round(time.Second))

	// worker is a worker Machine whose Node is Ready. Cluster API sets a Machine's nodeRef a little after the Node
	// exists, so it waits for one (bounded).
	worker := func() *clusterv1.Machine {
		t.Helper()
		var found *clusterv1.Machine
		g.Eventually(func(g Gomega) {
			machines := &clusterv1.MachineList{}
			g.Expect(c.List(ctx, machines, client.InNamespace(ns), client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: "workers"})).To(Succeed())
			ready := readyNodes(g)
			for i := range machines.Items {
				m := &machines.Items[i]
				if _, ok := ready[m.Status.NodeRef.Name]; ok && m.Status.NodeRef.IsDefined() && m.DeletionTimestamp.IsZero() {
					found = m
					return
				}
			}
			g.Expect(found).NotTo(BeNil(), "a worker Machine with a Ready Node")
		}, 2*time.Minute, time.Second).Should(Succeed())
		return found
	}
	hostOf := func(node string) *nodehost.Host {
		for _, h := range hosts {
			if h.Name == node {
				return h
			}
		}
		t.Fatalf("no host for Node %s", node)
		return nil
	}
	// rejoined waits until the host's Node is Ready again as a new Node (another UID), after CAPR's cleanup of the
	// host (the real kubeadm reset) succeeded once more than before.
	rejoined := func(h *nodehost.Host, oldUID string, cleanupsBefore int, within time.Duration) {
		t.Helper()
		g.Eventually(func(g Gomega) {
			g.Expect(cleanups(g, c, ns, h)).To(BeNumerically(">", cleanupsBefore), "CAPR's cleanup (kubeadm reset) of %s", h.Name)
			uid, ok := readyNodes(g)[h.Name]
			g.Expect(ok).To(BeTrue(), "Node %s Ready", h.Name)
			g.Expect(uid).NotTo(Equal(oldUID), "Node %s is a new Node", h.Name)
		}, within, 2*time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	}

	// Hardware labels on a real Node: a label of node.cluster.x-k8s.io put on a worker's pool entry reaches the Node
	// the real kubelet registered (entry → RemoteMachine → Machine by CAPR, Machine → Node by Cluster API), and
	// goes when it is removed from the entry.
	m := worker()
	rm := &infrav1.RemoteMachine{}
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: m.Spec.InfrastructureRef.Name}, rm)).To(Succeed())
	g.Expect(rm.Spec.PooledRemoteMachineRef).NotTo(BeNil())
	entry := rm.Spec.PooledRemoteMachineRef.Name
	const rack = "node.cluster.x-k8s.io/rack"
	nodeLabel := func(g Gomega) (string, bool) {
		n := &corev1.Node{}
		g.Expect(workload.Get(ctx, client.ObjectKey{Name: m.Status.NodeRef.Name}, n)).To(Succeed())
		v, ok := n.Labels[rack]
		return v, ok
	}
	out, err = mgmt.Kubectl(t, e.Management, "", "label", "prm", "-n", ns, entry, rack+"=r7")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		v, ok := nodeLabel(g)
		g.Expect(ok).To(BeTrue(), "Node %s has %s", m.Status.NodeRef.Name, rack)
		g.Expect(v).To(Equal("r7"))
	}, 2*time.Minute, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	out, err = mgmt.Kubectl(t, e.Management, "", "label", "prm", "-n", ns, entry, rack+"-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		_, ok := nodeLabel(g)
		g.Expect(ok).To(BeFalse(), "Node %s still has %s", m.Status.NodeRef.Name, rack)
	}, 2*time.Minute, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	t.Logf("hardware label %s=r7 on pool entry %s reached the real Node %s, and went with it", rack, entry, m.Status.NodeRef.Name)

	// A worker Machine deleted: its host is reset and joins again (the MachineDeployment makes a new Machine, which
	// takes the only free host).
	m = worker()
	h := hostOf(m.Status.NodeRef.Name)
	before := cleanups(g, c, ns, h)
	start = time.Now()
	g.Expect(c.Delete(ctx, m)).To(Succeed())
	rejoined(h, nodes[h.Name], before, 5*time.Minute)
	t.Logf("Machine %s deleted: %s reset and Ready again as a new Node %s later", m.Name, h.Name, time.Since(start).Round(time.Second))

	// A MachineHealthCheck replaces the worker whose kubelet stopped.
	out, err = mgmt.Kubectl(t, e.Management, fmt.Sprintf(workersHealthCheck, ns), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) { nodes = readyNodes(g); g.Expect(nodes).To(HaveLen(3)) }, 2*time.Minute, time.Second).Should(Succeed())
	m = worker()
	h = hostOf(m.Status.NodeRef.Name)
	before = cleanups(g, c, ns, h)
	start = time.Now()
	out, err = h.Run("systemctl stop kubelet")
	g.Expect(err).NotTo(HaveOccurred(), out)
	rejoined(h, nodes[h.Name], before, 6*time.Minute)
	g.Expect(c.Get(ctx, client.ObjectKeyFromObject(m), &clusterv1.Machine{})).NotTo(Succeed(), "the unhealthy Machine %s is replaced", m.Name)
	t.Logf("kubelet of %s stopped: the MachineHealthCheck replaced %s; the host was reset and is Ready again %s later",
		h.Name, m.Name, time.Since(start).Round(time.Second))
}

// cleanups counts CAPR's CleanupSucceeded events for the host h in namespace ns.
func cleanups(g Gomega, c client.Client, ns string, h *nodehost.Host) int {
	events := &eventsv1.EventList{}
	g.Expect(c.List(context.Background(), events, client.InNamespace(ns))).To(Succeed())
	n := 0
	for _, ev := range events.Items {
		if ev.Reason == "CleanupSucceeded" && strings.Contains(ev.Note, h.Endpoint()) {
			n++
			if ev.Series != nil {
				n += int(ev.Series.Count) - 1
			}
		}
	}
	return n
}

// realIgnitionCluster is a Cluster with one control-plane Machine on a node host whose KubeadmConfig asks for
// Ignition, with this machine's kubeadm and kubelet settings (as examples/quickstart/cluster.yaml explains them).
const realIgnitionCluster = `apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata:
  name: ign-real
  namespace: ign-real
spec:
  controlPlaneEndpoint:
    host: %[1]s
    port: 6443
  infrastructureRef:
    apiGroup: infrastructure.cluster.x-k8s.io
    kind: RemoteCluster
    name: ign-real
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteCluster
metadata:
  name: ign-real
  namespace: ign-real
spec: {}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: Machine
metadata:
  name: ign-real-0
  namespace: ign-real
  labels:
    cluster.x-k8s.io/control-plane: ""
spec:
  clusterName: ign-real
  version: %[2]s
  bootstrap:
    configRef:
      apiGroup: bootstrap.cluster.x-k8s.io
      kind: KubeadmConfig
      name: ign-real-0
  infrastructureRef:
    apiGroup: infrastructure.cluster.x-k8s.io
    kind: RemoteMachine
    name: ign-real-0
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfig
metadata:
  name: ign-real-0
  namespace: ign-real
spec:
  format: ignition
  files:
  # Ignition needs every file's mode.
  - path: /etc/kubernetes/patches/kubeletconfiguration+merge.yaml
    permissions: "0644"
    content: |
      failCgroupV1: false
      cgroupDriver: cgroupfs
  initConfiguration:
    nodeRegistration:
      ignorePreflightErrors:
      - SystemVerification
    patches:
      directory: /etc/kubernetes/patches
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachine
metadata:
  name: ign-real-0
  namespace: ign-real
spec:
  address: %[1]s
  port: %[3]d
  user: root
  sshKeyRef:
    name: ssh-key
`

// TestRealNodesIgnition runs Cluster API's kubeadm bootstrap provider with its Ignition feature gate on a node host:
// CAPR applies the Ignition config over SSH and starts kubeadm.service (the host's systemctl hands units other than
// the kubelet and containerd to the stand-in that runs them), the real kubeadm init makes a control plane, and the
// Node is Ready.
func TestRealNodesIgnition(t *testing.T) {
	if why := nodehost.Missing("", ""); why != "" {
		t.Skip(why)
	}
	g := NewWithT(t)
	ctx := context.Background()
	e := StartWith(t, func(s string) { t.Log(s) }, Options{CAPIManagerArgs: map[string][]string{
		"capi-kubeadm-bootstrap-controller-manager": {"--feature-gates=KubeadmBootstrapFormatIgnition=true"},
	}})
	c := e.Management.Client
	h := nodehost.Start(t, nodehost.Options{Name: "ign-real-0"})
	version, err := nodehost.KubernetesVersion("")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ign-real"}})).To(Succeed())
	g.Expect(c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ign-real", Name: "ssh-key"},
		Data: map[string][]byte{"value": h.ClientKeyPEM}})).To(Succeed())
	start := time.Now()
	out, err := mgmt.Kubectl(t, e.Management, fmt.Sprintf(realIgnitionCluster, h.Address, version, h.Port), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)

	g.Eventually(func(g Gomega) {
		machine := &clusterv1.Machine{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: "ign-real", Name: "ign-real-0"}, machine)).To(Succeed())
		g.Expect(machine.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)), "conditions: %v", machine.Status.Conditions)
		g.Expect(machine.Status.NodeRef.Name).To(Equal("ign-real-0"))
		out, err := h.Run("kubectl --kubeconfig /etc/kubernetes/admin.conf get node ign-real-0 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'")
		g.Expect(err).NotTo(HaveOccurred(), out)
		g.Expect(out).To(Equal("True"))
	}, 5*time.Minute, 2*time.Second).Should(Succeed(), func() string {
		log, _ := h.Run("cat /run/capr-systemctl.log; tail -n 20 /var/log/capr-node/kubelet.log")
		return log + "\n" + tail(e.CAPR.Logs.String())
	})
	log, err := h.Run("cat /run/capr-systemctl.log")
	g.Expect(err).NotTo(HaveOccurred(), log)
	// kubeadm's own systemctl calls (firewalld, systemd-resolved, daemon-reload) come between.
	g.Expect(log).To(HavePrefix("daemon-reload\nenable kubeadm.service\nstart kubeadm.service\n"))
	g.Expect(log).To(HaveSuffix("ran kubeadm.service: exit 0\n"))
	t.Logf("Ignition: the real kubeadm init made a Ready Node %s after the apply", time.Since(start).Round(time.Second))
}

//go:build integration

package nodehost_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/crypto/ssh"

	"github.com/capr-project/cluster-api-provider-remote/test/nodehost"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
)

// sshRun runs a command on the host as root over SSH (its pinned host key) and returns its output.
func sshRun(t *testing.T, h *sshdtest.Host, command string) (string, error) {
	t.Helper()
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(h.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	client, err := ssh.Dial("tcp", h.Endpoint(), &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(h.ClientSigner)},
		HostKeyCallback: ssh.FixedHostKey(key),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		return "", err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return "", err
	}
	defer session.Close()
	out, err := session.CombinedOutput(command) // one writer for both streams, under a lock
	return string(out), err
}

// nsOf is the namespace link (e.g. net:[4026532]) of a process.
func nsOf(pid int, kind string) string {
	link, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	return link
}

// processesIn counts the processes of the machine in the namespace ns (kind: net, mnt).
func processesIn(kind, ns string) int {
	procs, _ := os.ReadDir("/proc")
	n := 0
	for _, p := range procs {
		if link, _ := os.Readlink(filepath.Join("/proc", p.Name(), "ns", kind)); link == ns {
			n++
		}
	}
	return n
}

// TestNodeHostRunsContainerdAndStopsClean: a node host answers SSH on its own address on the bridge, from the
// machine's namespace; inside, containerd runs with the node images imported (crictl lists them, nothing pulled);
// stopping it leaves no process, namespace, cgroup or link behind.
func TestNodeHostRunsContainerdAndStopsClean(t *testing.T) {
	g := NewWithT(t)
	h := nodehost.Start(t, nodehost.Options{Name: "capr-node-a"})

	out, err := sshRun(t, h.Host, "hostname; ip -4 -o addr show eth0; crictl --runtime-endpoint "+nodehost.CRISocket+" images")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Expect(out).To(HavePrefix("capr-node-a\n"))
	g.Expect(out).To(ContainSubstring("inet " + h.Address + "/24"))
	g.Expect(h.Address).To(HavePrefix("172.30.0."))
	for _, image := range []string{"kube-apiserver", "etcd", "pause"} {
		g.Expect(out).To(ContainSubstring("registry.k8s.io/"+image+" "), "crictl images:\n%s", out)
	}

	holder := h.HolderPID()
	netns, mntns := nsOf(holder, "net"), nsOf(holder, "mnt")
	veth := fmt.Sprintf("capr-n%d", h.Index)
	g.Expect(processesIn("net", netns)).To(BeNumerically(">=", 3)) // holder, sshd, containerd at least
	h.Stop()

	g.Eventually(func() int { return processesIn("net", netns) + processesIn("mnt", mntns) }, 10*time.Second, 100*time.Millisecond).
		To(BeZero(), "processes left in the host's namespaces")
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/" + h.CgroupRoot)
	g.Expect(cgroups).To(BeEmpty(), "cgroups left")
	g.Expect(exec.Command("ip", "link", "show", veth).Run()).To(HaveOccurred(), "veth %s left", veth)
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(mounts)).NotTo(ContainSubstring(h.Dir), "mounts left in the machine's namespace")
}

// kubectl runs kubectl of CAPR_BIN_DIR against the host's cluster (the admin kubeconfig kubeadm wrote).
func kubectl(h *nodehost.Host, args ...string) (string, error) {
	kubeconfig := filepath.Join(h.Dir, "etc", "kubernetes", "admin.conf")
	out, err := exec.Command(filepath.Join(os.Getenv("CAPR_BIN_DIR"), "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}

// initControlPlane runs the real kubeadm init over SSH on h and waits until its Node is Ready.
func initControlPlane(t *testing.T, h *nodehost.Host) {
	t.Helper()
	version, err := nodehost.KubernetesVersion("")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.Dir, "etc", "capr-kubeadm.yaml"), []byte(h.KubeadmInitConfig(version)), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := sshRun(t, h.Host, "kubeadm init --config /etc/capr-kubeadm.yaml 2>&1")
	if err != nil {
		logs, _ := h.Run("tail -n 60 /var/log/capr-node/kubelet.log; crictl ps -a")
		t.Fatalf("kubeadm init on %s: %v\n%s\nkubelet and containers:\n%s", h.Name, err, out, logs)
	}
	t.Logf("kubeadm init on %s took %s", h.Name, time.Since(start).Round(time.Second))
	waitReady(t, h, h)
	t.Logf("Node %s Ready %s after kubeadm init started", h.Name, time.Since(start).Round(time.Second))
}

// waitReady waits until node's Node is Ready in the cluster of the control plane cp.
func waitReady(t *testing.T, cp, node *nodehost.Host) {
	t.Helper()
	NewWithT(t).Eventually(func() (string, error) {
		return kubectl(cp, "get", "node", node.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	}, 4*time.Minute, time.Second).Should(Equal("True"), "Node %s Ready", node.Name)
}

// TestKubeadmInitMakesReadyNode: the real kubeadm init, over SSH, on a node host makes a control plane whose Node
// becomes Ready (the kubelet started by the host's init once kubeadm configured it, Pods in containerd, the CNI
// bridge ready).
//
// The kubelet sets kernel tunables (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops) that are not per
// namespace: the machine's must be as they were before (the host shows the kubelet files with its values instead).
func TestKubeadmInitMakesReadyNode(t *testing.T) {
	tunables := func() string {
		var values []string
		for _, name := range []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"} {
			v, _ := os.ReadFile("/proc/sys/" + name)
			values = append(values, name+"="+strings.TrimSpace(string(v)))
		}
		return strings.Join(values, " ")
	}
	before := tunables()
	h := nodehost.Start(t, nodehost.Options{Name: "capr-cp-a"})
	initControlPlane(t, h)
	NewWithT(t).Expect(tunables()).To(Equal(before), "the machine's kernel tunables")
	nodes, _ := kubectl(h, "get", "nodes", "-o", "wide")
	pods, _ := kubectl(h, "get", "pods", "-A", "-o", "wide")
	t.Logf("kubectl get nodes -o wide:\n%s\nkubectl get pods -A -o wide:\n%s", nodes, pods)
	NewWithT(t).Expect(nodes).To(ContainSubstring(h.Address))
}

// smokePod is a Pod of the smoke image (an HTTP server on :8080 answering its host name, the Pod's name) bound to
// node.
func smokePod(name, node string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  nodeName: %s
  tolerations:
  - operator: Exists
  containers:
  - name: smoke
    image: capr.local/smoke:v1
    imagePullPolicy: Never
`, name, node)
}

// fromPod runs a command on h inside the network namespace of the Pod name (its sandbox), with the machine's tools.
func fromPod(h *nodehost.Host, name, command string) (string, error) {
	return h.Run(fmt.Sprintf(`pid=$(crictl inspectp -o go-template --template '{{.info.pid}}' "$(crictl pods -q --name '^%s$')") && nsenter --net=/proc/$pid/ns/net %s`, name, command))
}

// TestJoinedNodesReachEachOthersPods: a second node host joins with the real kubeadm join; both Nodes are Ready,
// and a Pod on each node reaches the Pod on the other through its Pod IP (10.244.x.0/24 routed via 172.30.0.x).
// Then kubeadm reset on the worker stops its kubelet and Pods, and it joins again.
func TestJoinedNodesReachEachOthersPods(t *testing.T) {
	g := NewWithT(t)
	cp := nodehost.Start(t, nodehost.Options{Name: "capr-cp-b"})
	worker := nodehost.Start(t, nodehost.Options{Name: "capr-worker-b"})
	initControlPlane(t, cp)

	join, err := sshRun(t, cp.Host, "kubeadm token create --print-join-command")
	g.Expect(err).NotTo(HaveOccurred(), join)
	fields := strings.Fields(join) // kubeadm join ADDRESS --token TOKEN --discovery-token-ca-cert-hash HASH
	g.Expect(fields).To(HaveLen(7), join)
	config := worker.KubeadmJoinConfig(fields[2], fields[4], fields[6])
	g.Expect(os.WriteFile(filepath.Join(worker.Dir, "etc", "capr-kubeadm.yaml"), []byte(config), 0o600)).To(Succeed())
	start := time.Now()
	out, err := sshRun(t, worker.Host, "kubeadm join --config /etc/capr-kubeadm.yaml 2>&1")
	if err != nil {
		logs, _ := worker.Run("tail -n 60 /var/log/capr-node/kubelet.log")
		t.Fatalf("kubeadm join: %v\n%s\nkubelet:\n%s", err, out, logs)
	}
	t.Logf("kubeadm join took %s", time.Since(start).Round(time.Second))
	waitReady(t, cp, worker)
	t.Logf("Node %s Ready %s after kubeadm join started", worker.Name, time.Since(start).Round(time.Second))

	for name, node := range map[string]string{"smoke-cp": cp.Name, "smoke-worker": worker.Name} {
		cmd := exec.Command(filepath.Join(os.Getenv("CAPR_BIN_DIR"), "kubectl"), "--kubeconfig", filepath.Join(cp.Dir, "etc", "kubernetes", "admin.conf"), "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(smokePod(name, node))
		out, err := cmd.CombinedOutput()
		g.Expect(err).NotTo(HaveOccurred(), string(out))
	}
	podIP := func(name string) func() (string, error) {
		return func() (string, error) {
			return kubectl(cp, "get", "pod", name, "-o", `jsonpath={.status.phase} {.status.podIP}`)
		}
	}
	g.Eventually(podIP("smoke-cp"), 2*time.Minute, time.Second).Should(HavePrefix("Running 10.244."))
	g.Eventually(podIP("smoke-worker"), 2*time.Minute, time.Second).Should(HavePrefix("Running 10.244."))
	cpPod, _ := podIP("smoke-cp")()
	workerPod, _ := podIP("smoke-worker")()
	cpIP, workerIP := strings.Fields(cpPod)[1], strings.Fields(workerPod)[1]

	out2, err := fromPod(cp, "smoke-cp", "curl -sS --max-time 5 http://"+workerIP+":8080/")
	g.Expect(err).NotTo(HaveOccurred(), out2)
	g.Expect(out2).To(Equal("smoke-worker\n"))
	out2, err = fromPod(worker, "smoke-worker", "curl -sS --max-time 5 http://"+cpIP+":8080/")
	g.Expect(err).NotTo(HaveOccurred(), out2)
	g.Expect(out2).To(Equal("smoke-cp\n"))

	// kube-proxy runs on both nodes (its image carries iptables, hack/image), so the kubernetes Service's IP answers
	// from a Pod, and CoreDNS, which reaches the API server through it, becomes Ready.
	ready := func(selector string) func() (string, error) {
		return func() (string, error) {
			return kubectl(cp, "-n", "kube-system", "get", "pods", "-l", selector, "-o", `jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {end}`)
		}
	}
	g.Eventually(ready("k8s-app=kube-proxy"), 3*time.Minute, 2*time.Second).Should(Equal("True True "), "kube-proxy Ready on both nodes")
	g.Eventually(func() (string, error) {
		return fromPod(worker, "smoke-worker", "curl -sSk --max-time 5 https://10.96.0.1/healthz")
	}, time.Minute, 2*time.Second).Should(Equal("ok"), "the kubernetes Service's IP from a Pod")
	g.Eventually(ready("k8s-app=kube-dns"), 3*time.Minute, 2*time.Second).Should(Equal("True True "), "CoreDNS Ready")

	nodes, _ := kubectl(cp, "get", "nodes", "-o", "wide")
	pods, _ := kubectl(cp, "get", "pods", "-A", "-o", "wide")
	t.Logf("kubectl get nodes -o wide:\n%s\nkubectl get pods -A -o wide:\n%s", nodes, pods)

	// The real kubeadm reset stops the kubelet through the host's systemctl and removes every Pod; the host keeps
	// its own /var/lib/kubelet (reset unmounts only below it) and joins again.
	out, err = sshRun(t, worker.Host, "kubeadm reset -f 2>&1")
	g.Expect(err).NotTo(HaveOccurred(), out)
	out, err = sshRun(t, worker.Host, "systemctl is-active kubelet; crictl pods -q | wc -l; findmnt -n -o FSTYPE /var/lib/kubelet | sort -u")
	g.Expect(out).To(Equal("inactive\n0\ntmpfs\n"), "after kubeadm reset (%v)", err)
	_, err = kubectl(cp, "delete", "node", worker.Name)
	g.Expect(err).NotTo(HaveOccurred())
	out, err = sshRun(t, worker.Host, "kubeadm join --config /etc/capr-kubeadm.yaml 2>&1")
	g.Expect(err).NotTo(HaveOccurred(), out)
	waitReady(t, cp, worker)
}

//go:build integration

package nodehost_test

import (
	"bytes"
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
)

// sshRun runs a command on the host as root over SSH (its pinned host key) and returns its output.
func sshRun(t *testing.T, h *nodehost.Host, command string) (string, error) {
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
	var out bytes.Buffer
	session.Stdout, session.Stderr = &out, &out
	err = session.Run(command)
	return out.String(), err
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

	out, err := sshRun(t, h, "hostname; ip -4 -o addr show eth0; crictl --runtime-endpoint "+nodehost.CRISocket+" images")
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

// TestKubeadmInitMakesReadyNode: the real kubeadm init, over SSH, on a node host makes a control plane whose Node
// becomes Ready (the kubelet started by the host's init once kubeadm configured it, Pods in containerd, the CNI
// bridge ready).
func TestKubeadmInitMakesReadyNode(t *testing.T) {
	g := NewWithT(t)
	h := nodehost.Start(t, nodehost.Options{Name: "capr-cp-a"})
	version, err := nodehost.KubernetesVersion("")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(os.WriteFile(filepath.Join(h.Dir, "etc", "capr-kubeadm.yaml"), []byte(h.KubeadmInitConfig(version)), 0o600)).To(Succeed())

	start := time.Now()
	out, err := sshRun(t, h, "kubeadm init --config /etc/capr-kubeadm.yaml 2>&1")
	if err != nil {
		logs, _ := h.Run("tail -n 60 /var/log/capr-node/kubelet.log; crictl ps -a")
		t.Fatalf("kubeadm init: %v\n%s\nkubelet and containers:\n%s", err, out, logs)
	}
	t.Logf("kubeadm init took %s", time.Since(start).Round(time.Second))

	g.Eventually(func() (string, error) {
		return kubectl(h, "get", "node", "capr-cp-a", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	}, 3*time.Minute, time.Second).Should(Equal("True"))
	t.Logf("Node Ready %s after kubeadm init started", time.Since(start).Round(time.Second))
	nodes, _ := kubectl(h, "get", "nodes", "-o", "wide")
	pods, _ := kubectl(h, "get", "pods", "-A", "-o", "wide")
	t.Logf("kubectl get nodes -o wide:\n%s\nkubectl get pods -A -o wide:\n%s", nodes, pods)
	g.Expect(strings.Contains(nodes, h.Address)).To(BeTrue())
}

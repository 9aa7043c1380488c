// Package e2e is CAPR's end-to-end environment, all on this machine: a management cluster with Cluster API v1.14.2
// (core, kubeadm bootstrap and kubeadm control plane) and CAPR installed by `clusterctl init` from what CAPR ships
// and run as installed (package mgmt), a second kube-apiserver as the workload cluster, and SSH hosts that are real
// OpenSSH sshd processes, each in its own mount and UTS namespace (private /etc, /run, /var/lib/kubelet and
// /var/lib/capr, its own host name), with a kubeadm stand-in on their PATH that registers the host as a Node of the
// workload cluster. The end-to-end suite and `make quickstart` run it.
package e2e

import (
	"context"
	_ "embed"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/standins"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

//go:embed testdata/kubeadm
var kubeadmStandIn []byte

// T is what the environment needs of a test; `make quickstart` provides its own.
type T interface {
	mgmt.T
	Fatal(args ...any)
}

// Env is a running end-to-end environment.
type Env struct {
	// Management is the management cluster, with Cluster API and CAPR installed and running.
	Management *testenv.APIServer
	// Workload is the workload clusters' kube-apiserver: the hosts register their Nodes there.
	Workload *testenv.APIServer
	// CAPR is CAPR's manager, run as installed.
	CAPR *mgmt.InstalledManager
	// Hosts are the SSH hosts started so far.
	Hosts []*sshdtest.Host
	// ClusterctlConfig is the clusterctl configuration naming the local repository the providers come from.
	ClusterctlConfig string

	t       T
	sbin    string
	manager string
	// clusterCA is the cluster CA given to every host, also to those added later.
	clusterCA []byte
	opts      Options
}

// Options shape an environment.
type Options struct {
	// CAPIManagerArgs are extra arguments for Cluster API's managers, by Deployment name (mgmt.RunCAPIManagersWith).
	CAPIManagerArgs map[string][]string
}

// Start builds and starts the environment with no hosts; AddHost adds them. progress, when not nil, is told each step.
func Start(t T, progress func(string)) *Env {
	t.Helper()
	return StartWith(t, progress, Options{})
}

// StartWith starts the environment like Start, shaped by opts.
func StartWith(t T, progress func(string), opts Options) *Env {
	t.Helper()
	say := func(s string) {
		if progress != nil {
			progress(s)
		}
	}
	e := &Env{t: t, opts: opts}
	say("Building CAPR's manager")
	e.manager = mgmt.BuildManager(t)
	e.Management, e.CAPR = e.StartManagement(say)
	say("Starting the workload cluster's kube-apiserver")
	e.Workload = mgmt.StartAPIServer(t)

	e.sbin = filepath.Join(t.TempDir(), "sbin")
	must(t, os.MkdirAll(e.sbin, 0o755))
	must(t, os.WriteFile(filepath.Join(e.sbin, "kubeadm"), kubeadmStandIn, 0o755))
	// The hosts run no systemd: a stand-in runs the units an Ignition bootstrap starts (kubeadm.service).
	must(t, os.WriteFile(filepath.Join(e.sbin, "systemctl"), standins.Systemctl, 0o755))
	return e
}

// StartManagement starts a management cluster with cert-manager, and Cluster API (with its topology feature) and
// CAPR installed by `clusterctl init` and running as installed. The environment has one; a test of `clusterctl
// move` starts a second.
func (e *Env) StartManagement(say func(string)) (*testenv.APIServer, *mgmt.InstalledManager) {
	t := e.t
	t.Helper()
	say("Starting the management cluster (kube-apiserver, etcd, kube-controller-manager)")
	a := mgmt.StartAPIServer(t)
	say("Starting cert-manager")
	mgmt.StartCertManager(t, a)
	say("clusterctl init --infrastructure remote (Cluster API v1.14.2 core, kubeadm bootstrap and control plane, CAPR)")
	if e.ClusterctlConfig == "" {
		e.ClusterctlConfig = mgmt.LocalRepository(t, mgmt.ReleaseFiles(t))
	}
	out, err := mgmt.RunCmd(t, "", append(mgmt.ClusterctlEnv(t), "CLUSTER_TOPOLOGY=true"), mgmt.Tool(t, "clusterctl"), "init",
		"--config", e.ClusterctlConfig, "--kubeconfig", a.Kubeconfig, "--infrastructure", "remote")
	if err != nil {
		t.Fatalf("clusterctl init: %v\n%s", err, out)
	}
	say("Starting Cluster API's managers and CAPR's manager as installed")
	mgmt.RunCAPIManagersWith(t, a, e.opts.CAPIManagerArgs)
	return a, mgmt.RunCAPR(t, a, "capr-system", e.manager)
}

// ManagerBinary is the path of CAPR's manager binary the environment built, to start more replicas of it.
func (e *Env) ManagerBinary() string { return e.manager }

// AddHost starts an SSH host named name, with the kubeadm stand-in on its PATH and the workload cluster's
// credentials for the stand-in.
func (e *Env) AddHost(name string) *sshdtest.Host {
	e.t.Helper()
	return e.AddHostWith(name)
}

// AddHostWith starts an SSH host like AddHost, with accounts besides root.
func (e *Env) AddHostWith(name string, users ...sshdtest.User) *sshdtest.Host {
	t := e.t
	t.Helper()
	opts := sshdtest.Options{Hostname: name, Sbin: e.sbin, Private: []string{"/var/lib/kubelet"}, Users: users}
	if len(e.Hosts) > 0 {
		// Every host accepts the first host's key: one key Secret serves them all.
		opts.ClientKeyPEM = e.Hosts[0].ClientKeyPEM
	}
	h := sshdtest.StartWith(t, opts)
	state := filepath.Join(h.Dir, "etc", "capr-e2e")
	must(t, os.MkdirAll(state, 0o755))
	kubeconfig, err := os.ReadFile(e.Workload.Kubeconfig)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(state, "workload.kubeconfig"), kubeconfig, 0o600))
	// The same credentials as files, so the stand-in registers its Node with curl: kubectl's start and API
	// discovery cost the shared CPUs more than a host's join costs the manager.
	w := e.Workload.Config
	if len(w.CertData) > 0 && len(w.KeyData) > 0 && len(w.CAData) > 0 {
		server := strings.TrimRight(w.Host, "/")
		if !strings.Contains(server, "://") {
			server = "https://" + server
		}
		must(t, os.WriteFile(filepath.Join(state, "api-server"), []byte(server), 0o600))
		must(t, os.WriteFile(filepath.Join(state, "api-ca.crt"), w.CAData, 0o600))
		must(t, os.WriteFile(filepath.Join(state, "api-client.crt"), w.CertData, 0o600))
		must(t, os.WriteFile(filepath.Join(state, "api-client.key"), w.KeyData, 0o600))
	}
	must(t, os.Symlink(mgmt.Tool(t, "kubectl"), filepath.Join(state, "kubectl")))
	if e.clusterCA != nil {
		must(t, os.WriteFile(filepath.Join(state, "ca.crt"), e.clusterCA, 0o644))
	}
	e.Hosts = append(e.Hosts, h)
	return h
}

// Runs returns how often the kubeadm stand-in ran verb (init, join, reset) on a host.
func Runs(h *sshdtest.Host, verb string) int {
	data, err := os.ReadFile(filepath.Join(h.Dir, "etc", "capr-e2e", verb+".count"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return n
}

// PrepareNamespace creates a namespace for a workload cluster: the cluster's kubeconfig Secret naming the workload
// kube-apiserver (so Cluster API and CAPR reach the workload cluster, where the hosts register), and the Secret
// "ssh-key" holding the hosts' SSH client key. It returns the control-plane endpoint the Cluster must name.
func (e *Env) PrepareNamespace(ns, cluster string) clusterv1.APIEndpoint {
	t := e.t
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	c := e.Management.Client
	g.Expect(client.IgnoreAlreadyExists(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))).To(Succeed())
	kubeconfig, err := os.ReadFile(e.Workload.Kubeconfig)
	g.Expect(err).NotTo(HaveOccurred())
	// A kubeconfig Secret the user provides (not of Cluster API's Secret type): Cluster API uses it as it is, and
	// KubeadmControlPlane neither adopts nor rotates it (the test apiserver's client certificate lasts a week, and a
	// rotated one would be signed by a cluster CA the workload kube-apiserver does not trust).
	g.Expect(c.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cluster + "-kubeconfig", Labels: map[string]string{clusterv1.ClusterNameLabel: cluster}},
		Data:       map[string][]byte{"value": kubeconfig},
	})).To(Succeed())
	if len(e.Hosts) == 0 {
		t.Fatalf("add a host before preparing a namespace: its key is the namespace's ssh-key Secret")
	}
	g.Expect(client.IgnoreAlreadyExists(c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ssh-key"},
		Data: map[string][]byte{"value": e.Hosts[0].ClientKeyPEM}}))).To(Succeed())
	u, err := url.Parse(e.Workload.Config.Host)
	g.Expect(err).NotTo(HaveOccurred())
	port, err := strconv.Atoi(u.Port())
	g.Expect(err).NotTo(HaveOccurred())
	return clusterv1.APIEndpoint{Host: u.Hostname(), Port: int32(port)}
}

// ShareClusterCA waits for the cluster CA Cluster API's kubeadm bootstrap provider made for a cluster and gives it
// to every host, also those added later, where the kubeadm stand-in checks the CA hash of a join against it.
func (e *Env) ShareClusterCA(ns, cluster string) {
	t := e.t
	t.Helper()
	secret := &corev1.Secret{}
	NewWithT(t).Eventually(func() error {
		return e.Management.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: cluster + "-ca"}, secret)
	}, 2*time.Minute, time.Second).Should(Succeed())
	e.clusterCA = secret.Data["tls.crt"]
	for _, h := range e.Hosts {
		must(t, os.WriteFile(filepath.Join(h.Dir, "etc", "capr-e2e", "ca.crt"), e.clusterCA, 0o644))
	}
}

// Node returns the workload cluster's Node of a host, or nil.
func (e *Env) Node(name string) *corev1.Node {
	node := &corev1.Node{}
	err := e.Workload.Client.Get(context.Background(), client.ObjectKey{Name: name}, node)
	if apierrors.IsNotFound(err) || err != nil {
		return nil
	}
	return node
}

func must(t T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Describe is a one-line summary of a host, for messages.
func Describe(h *sshdtest.Host) string {
	return fmt.Sprintf("%s (%s)", h.Endpoint(), h.Dir)
}

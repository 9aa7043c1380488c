// Command quickstart is `make quickstart`: CAPR doing its job on this machine. It starts a management cluster (a
// real kube-apiserver, etcd and kube-controller-manager), cert-manager, Cluster API v1.14.2 (core, kubeadm bootstrap
// and control plane) and CAPR installed by `clusterctl init` from what CAPR ships, and three local hosts, applies a
// cluster on them, shows progress, prints a status table and commands to try, and stays up until Ctrl-C, when it
// tears everything down.
//
// In its real mode (the default when this machine can run it), the hosts are node hosts (test/nodehost: real sshd,
// containerd, runc, kubelet and kubeadm, each in its own namespaces and cgroup root) and examples/quickstart/cluster.yaml
// builds a real cluster: a KubeadmControlPlane of one runs kubeadm init on the first host, a MachineDeployment of two
// runs kubeadm join on the others. The quickstart waits for three Ready Nodes, runs a smoke Deployment and checks
// its Pods reach each other across nodes. In the stand-in mode (QUICKSTART_MODE=standin, or when real nodes cannot
// run here, which it says), the hosts are sshd hosts with a kubeadm stand-in that registers them as Nodes of a
// second kube-apiserver (examples/quickstart/cluster-standin.yaml); no kubelet runs.
//
// QUICKSTART_HOSTS=addr[:port],addr[:port],addr[:port] and QUICKSTART_SSH_KEY=path use three real hosts instead (root
// logins with that key, real kubeadm and a kubelet on them; the first one becomes the control plane and its address
// the control-plane endpoint, port 6443), with examples/quickstart/cluster-standin.yaml (no settings for this machine).
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/e2e"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/nodehost"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

const (
	namespace         = "quickstart"
	kubernetesVersion = "v1.36.3"
	readyTimeout      = 5 * time.Minute
	// realTimeout bounds the real mode from Applying to three Ready Nodes and Machines.
	realTimeout = 10 * time.Minute
)

// session is the quickstart's stand-in for a test: it keeps the teardown steps and runs them on exit.
type session struct {
	root     string
	cleanups []func()
	dirs     int
}

func (s *session) Helper()                           {}
func (s *session) Failed() bool                      { return false }
func (s *session) Logf(format string, args ...any)   { fmt.Printf("  "+format+"\n", args...) }
func (s *session) Cleanup(f func())                  { s.cleanups = append(s.cleanups, f) }
func (s *session) Fatal(args ...any)                 { s.Fatalf("%s", fmt.Sprint(args...)) }
func (s *session) Fatalf(format string, args ...any) { s.exit(1, fmt.Sprintf(format, args...)) }

func (s *session) TempDir() string {
	s.dirs++
	dir := filepath.Join(s.root, strconv.Itoa(s.dirs))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.Fatalf("%v", err)
	}
	return dir
}

// teardown runs the cleanups, newest first, and removes the quickstart's files.
func (s *session) teardown() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
	s.cleanups = nil
	_ = os.RemoveAll(s.root)
}

func (s *session) exit(code int, message string) {
	if message != "" {
		fmt.Fprintf(os.Stderr, "\nquickstart: %s\n", message)
	}
	fmt.Println("Tearing down: stopping every process and removing", s.root)
	s.teardown()
	os.Exit(code)
}

func main() {
	ctrl.SetLogger(logr.Discard())
	root, err := os.MkdirTemp("", "capr-quickstart-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := &session{root: root}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		fmt.Println()
		s.exit(0, "")
	}()
	run(s)
	fmt.Println("\nCAPR keeps running. Press Ctrl-C to stop everything.")
	select {}
}

func run(s *session) {
	step := func(msg string) { fmt.Printf("==> %s\n", msg) }
	fmt.Println("CAPR quickstart: everything runs on this machine, in", s.root)
	mode := chooseMode(s)
	e := e2e.Start(s, step)
	c := e.Management.Client
	ctx := context.Background()

	vars := map[string]string{"NAMESPACE": namespace, "KUBERNETES_VERSION": kubernetesVersion}
	var hostNames map[string]string // address:port → host name, for the table
	var nodeHosts []*nodehost.Host
	example := "cluster-standin.yaml"
	switch mode {
	case modeHosts:
		hostNames = realHosts(s, c, vars)
	case modeReal:
		step("Starting 3 node hosts (sshd, containerd, kubelet on 172.30.0.x, each in its own namespaces and cgroup root, the node images imported)")
		nodeHosts, hostNames = startNodeHosts(s, c, vars)
		example = "cluster.yaml"
	default:
		step("Starting 3 SSH hosts (OpenSSH sshd on 127.0.0.x, each with its own host name, /etc and /run)")
		hostNames = map[string]string{}
		for i := range 3 {
			h := e.AddHost(fmt.Sprintf("quickstart-%d", i))
			vars[fmt.Sprintf("HOST_%d_ADDRESS", i)], vars[fmt.Sprintf("HOST_%d_PORT", i)] = h.Address, strconv.Itoa(h.Port)
			hostNames[h.Endpoint()] = fmt.Sprintf("quickstart-%d", i)
		}
		endpoint := e.PrepareNamespace(namespace, "quickstart")
		vars["CONTROL_PLANE_ENDPOINT_HOST"], vars["CONTROL_PLANE_ENDPOINT_PORT"] = endpoint.Host, strconv.Itoa(int(endpoint.Port))
	}

	if mode == modeReal {
		step("Applying examples/quickstart/cluster.yaml (a Cluster, a pool of 3 hosts, a KubeadmControlPlane of 1, a MachineDeployment of 2)")
	} else {
		step("Applying examples/quickstart/" + example + " (a Cluster, a pool of 3 hosts, a control-plane Machine, a MachineDeployment of 2)")
	}
	doc, err := os.ReadFile(filepath.Join(testenv.RootDir(), "examples", "quickstart", example))
	if err != nil {
		s.Fatalf("%v", err)
	}
	// Only the quickstart's values: every other $name (in the hosts' shell commands) stays as it is.
	rendered := os.Expand(string(doc), func(k string) string {
		if v, ok := vars[k]; ok {
			return v
		}
		return "${" + k + "}"
	})
	if out, err := mgmt.Kubectl(s, e.Management, rendered, "apply", "-f", "-"); err != nil {
		s.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	k := &clock{start: time.Now(), seen: map[string]time.Duration{}}
	var cluster *realCluster
	if mode == modeReal {
		cluster = &realCluster{s: s, management: c, controlPlane: nodeHosts[0].Name, clock: k}
	}

	step("Waiting for the machines (Cluster API's view: Machine phase and Node)")
	if mode == modeStandIn {
		e.ShareClusterCA(namespace, "quickstart")
	}
	timeout := readyTimeout
	if mode == modeReal {
		timeout = realTimeout
	}
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		machines := &clusterv1.MachineList{}
		if err := c.List(ctx, machines, client.InNamespace(namespace)); err != nil {
			s.Fatalf("listing Machines: %v", err)
		}
		running, phases := 0, []string{}
		for _, m := range machines.Items {
			phases = append(phases, fmt.Sprintf("%s=%s", m.Name, m.Status.Phase))
			if m.Status.Phase == string(clusterv1.MachinePhaseRunning) {
				running++
			}
		}
		slices.Sort(phases)
		if line := fmt.Sprintf("%d/3 Running: %s", running, strings.Join(phases, " ")); line != last {
			fmt.Printf("    [%s] %s\n", time.Since(k.start).Round(time.Second), line)
			last = line
		}
		if cluster != nil {
			cluster.observe()
		}
		if running == 3 {
			break
		}
		if time.Now().After(deadline) {
			table(s, c, hostNames)
			s.Fatalf("the machines did not all reach Running within %s; CAPR's log:\n%s", timeout, tail(e.CAPR.Logs.String()))
		}
		time.Sleep(2 * time.Second)
	}
	if mode == modeReal {
		step("Waiting for the workload cluster's Nodes to be Ready (kubeadm init, then the joins)")
		cluster.wait()
		step("Running the smoke Deployment (capr.local/smoke:v1, one Pod on each worker)")
		runSmoke(s, cluster.workload, cluster.kubeconfig, nodeHosts, k)
		fmt.Println("\nPhases (time since Applying):")
		for _, phase := range k.order {
			fmt.Printf("  %-90s %s\n", phase, k.seen[phase])
		}
		printRealCluster(s, e.Management.Kubeconfig, cluster.kubeconfig)
		fmt.Printf("\nThe workload cluster's kubeconfig: %s\n", cluster.kubeconfig)
	}
	fmt.Println()
	table(s, c, hostNames)
	kubeconfig := e.Management.Kubeconfig
	kubectl := mgmt.Tool(s, "kubectl")
	fmt.Printf(`
The management cluster's kubeconfig: %[1]s
Try:
  %[2]s --kubeconfig %[1]s -n quickstart get machines,remotemachines,prm
  %[2]s --kubeconfig %[1]s -n quickstart scale machinedeployment/workers --replicas=3
      (the pool is exhausted: the new Machine waits and its MachineSet gets a PoolExhausted event:
       %[2]s --kubeconfig %[1]s -n quickstart get events --field-selector reason=PoolExhausted)
  %[2]s --kubeconfig %[1]s -n quickstart scale machinedeployment/workers --replicas=1
      (a worker's host is cleaned with kubeadm reset and its pool entry is Available again)
  %[2]s --kubeconfig %[1]s -n quickstart delete machine <name>
`, kubeconfig, kubectl)
	if mode == modeReal {
		fmt.Printf(`  %[2]s --kubeconfig %[1]s get nodes,pods -A -o wide
      (the workload cluster: a real control plane and kubelets; scaling the workers to 1 runs the real kubeadm reset
       and the example's cleanup on a host, which returns to the pool clean; scaling to 2 joins it again)
`, cluster.kubeconfig, kubectl)
	}
	if mode == modeStandIn {
		fmt.Println(`
The local hosts run a kubeadm stand-in, not Kubernetes: it checks the configuration Cluster API's kubeadm bootstrap
provider wrote and registers the host as a Node of a second kube-apiserver (the workload cluster). No kubelet runs.
Without QUICKSTART_MODE=standin, on a machine with the node tools and images, the quickstart builds a real cluster.
With QUICKSTART_HOSTS=a,b,c and QUICKSTART_SSH_KEY=path the quickstart uses three real hosts running kubeadm instead.`)
	}
}

// realHosts reads QUICKSTART_HOSTS and QUICKSTART_SSH_KEY: three real hosts, the first one the control plane.
func realHosts(s *session, c client.Client, vars map[string]string) map[string]string {
	hosts := strings.Split(os.Getenv("QUICKSTART_HOSTS"), ",")
	if len(hosts) != 3 {
		s.Fatalf("QUICKSTART_HOSTS names %d hosts; it needs exactly 3, as addr[:port],addr[:port],addr[:port]", len(hosts))
	}
	keyPath := os.Getenv("QUICKSTART_SSH_KEY")
	key, err := os.ReadFile(keyPath)
	if err != nil {
		s.Fatalf("QUICKSTART_SSH_KEY: reading the SSH private key for the hosts: %v", err)
	}
	createKeySecret(s, c, key)
	names := map[string]string{}
	for i, h := range hosts {
		addr, port := strings.TrimSpace(h), "22"
		if host, p, err := net.SplitHostPort(addr); err == nil {
			addr, port = host, p
		}
		vars[fmt.Sprintf("HOST_%d_ADDRESS", i)], vars[fmt.Sprintf("HOST_%d_PORT", i)] = addr, port
		names[net.JoinHostPort(addr, port)] = addr
	}
	vars["CONTROL_PLANE_ENDPOINT_HOST"], vars["CONTROL_PLANE_ENDPOINT_PORT"] = vars["HOST_0_ADDRESS"], "6443"
	return names
}

// table prints Cluster API's and CAPR's view of each machine.
func table(s *session, c client.Client, hostNames map[string]string) {
	ctx := context.Background()
	machines := &clusterv1.MachineList{}
	if err := c.List(ctx, machines, client.InNamespace(namespace)); err != nil {
		s.Fatalf("listing Machines: %v", err)
	}
	slices.SortFunc(machines.Items, func(a, b clusterv1.Machine) int { return strings.Compare(a.Name, b.Name) })
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MACHINE\tPHASE\tNODE\tHOST\tPOOL ENTRY\tPROVISIONED")
	for _, m := range machines.Items {
		rm := &infrav1.RemoteMachine{}
		host, entry, provisioned := "-", "-", "false"
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: m.Spec.InfrastructureRef.Name}, rm); err == nil {
			endpoint := net.JoinHostPort(rm.Spec.Address, strconv.Itoa(int(rm.Spec.Port)))
			host = endpoint
			if name, ok := hostNames[endpoint]; ok && name != rm.Spec.Address {
				host = fmt.Sprintf("%s (%s)", name, endpoint)
			}
			if rm.Spec.PooledRemoteMachineRef != nil {
				entry = rm.Spec.PooledRemoteMachineRef.Name
			}
			if rm.Status.Initialization.Provisioned != nil && *rm.Status.Initialization.Provisioned {
				provisioned = "true"
			}
		}
		node := "-"
		if m.Status.NodeRef.IsDefined() {
			node = m.Status.NodeRef.Name
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Status.Phase, node, host, entry, provisioned)
	}
	_ = w.Flush()
}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}

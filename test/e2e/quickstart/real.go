package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/util/conditions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/nodehost"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// The quickstart's modes.
const (
	modeReal    = "real"    // node hosts: real kubeadm, kubelet, containerd; Ready Nodes and Pods
	modeStandIn = "standin" // sshd hosts with a kubeadm stand-in; no kubelet
	modeHosts   = "hosts"   // three real hosts named by QUICKSTART_HOSTS
)

// nodeDirs are the node binaries' and images' directories: $CAPR_BIN_DIR (or bin/) and $CAPR_NODE_IMAGES (or
// out/node-images, where `make node-images` writes them).
func nodeDirs() (string, string) {
	images := os.Getenv("CAPR_NODE_IMAGES")
	if images == "" {
		images = filepath.Join(testenv.RootDir(), "out", "node-images")
	}
	return testenv.BinDir(), images
}

// chooseMode picks the mode from QUICKSTART_HOSTS and QUICKSTART_MODE (standin, real, or empty: real when this
// machine can run node hosts). It never falls back silently: it says what real nodes miss.
func chooseMode(s *session) string {
	if os.Getenv("QUICKSTART_HOSTS") != "" {
		return modeHosts
	}
	binDir, imagesDir := nodeDirs()
	switch mode := os.Getenv("QUICKSTART_MODE"); mode {
	case modeStandIn:
		fmt.Println("Mode: stand-in (QUICKSTART_MODE=standin): the hosts run a kubeadm stand-in, no kubelet and no Pods.")
		return modeStandIn
	case modeReal:
		if why := nodehost.Missing(binDir, imagesDir); why != "" {
			s.Fatalf("QUICKSTART_MODE=real, but real nodes cannot run here: %s (make node-tools node-images builds them)", why)
		}
	case "":
		if why := nodehost.Missing(binDir, imagesDir); why != "" {
			fmt.Printf("Real nodes cannot run here: %s.\n", why)
			fmt.Println("Falling back to the stand-in mode: the hosts run a kubeadm stand-in, no kubelet and no Pods " +
				"(`make node-tools node-images` builds what real nodes need; QUICKSTART_MODE=standin chooses the stand-in).")
			return modeStandIn
		}
	default:
		s.Fatalf("QUICKSTART_MODE=%q: use real (real Kubernetes nodes) or standin (a kubeadm stand-in, no kubelet)", mode)
	}
	fmt.Println("Mode: real (real kubeadm, kubelet, containerd and runc on each host; QUICKSTART_MODE=standin is the fast stand-in).")
	return modeReal
}

// startNodeHosts starts three node hosts (quickstart-0 is the control plane, its address the control-plane
// endpoint), and the namespace's SSH key Secret.
func startNodeHosts(s *session, c client.Client, vars map[string]string) ([]*nodehost.Host, map[string]string) {
	binDir, imagesDir := nodeDirs()
	names := map[string]string{}
	var hosts []*nodehost.Host
	for i := range 3 {
		opts := nodehost.Options{Name: fmt.Sprintf("quickstart-%d", i), BinDir: binDir, ImagesDir: imagesDir}
		if i > 0 {
			opts.ClientKeyPEM = hosts[0].ClientKeyPEM // one key Secret serves them all
		}
		h := nodehost.Start(s, opts)
		hosts = append(hosts, h)
		vars[fmt.Sprintf("HOST_%d_ADDRESS", i)], vars[fmt.Sprintf("HOST_%d_PORT", i)] = h.Address, strconv.Itoa(h.Port)
		names[h.Endpoint()] = h.Name
	}
	vars["CONTROL_PLANE_ENDPOINT_HOST"], vars["CONTROL_PLANE_ENDPOINT_PORT"] = hosts[0].Address, "6443"
	createKeySecret(s, c, hosts[0].ClientKeyPEM)
	return hosts, names
}

// createKeySecret creates the namespace and its Secret "ssh-key", the hosts' SSH client key.
func createKeySecret(s *session, c client.Client, key []byte) {
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		s.Fatalf("%v", err)
	}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "ssh-key"},
		Data: map[string][]byte{"value": key}}); err != nil {
		s.Fatalf("%v", err)
	}
}

// clock prints each phase once, with the time since the cluster was applied.
type clock struct {
	start time.Time
	seen  map[string]time.Duration
	order []string
}

func (k *clock) mark(phase string) {
	if _, ok := k.seen[phase]; ok {
		return
	}
	d := time.Since(k.start).Round(time.Second)
	k.seen[phase] = d
	k.order = append(k.order, phase)
	fmt.Printf("    [%s] %s\n", d, phase)
}

// realCluster follows the workload cluster of the real mode: its Nodes and the Machines' readiness.
type realCluster struct {
	s            *session
	management   client.Client
	controlPlane string // the control-plane host's Node name
	clock        *clock
	workload     client.Client
	kubeconfig   string
}

// observe marks what happened since the last call: each Machine's bootstrap over SSH (kubeadm init or join), each
// Node registered and Ready, all three Ready, and the three Machines READY True, which it returns.
func (r *realCluster) observe() bool {
	ctx := context.Background()
	machines := &clusterv1.MachineList{}
	if err := r.management.List(ctx, machines, client.InNamespace(namespace)); err != nil {
		r.s.Fatalf("listing Machines: %v", err)
	}
	readyMachines := 0
	for i, m := range machines.Items {
		verb := "join"
		if _, ok := m.Labels[clusterv1.MachineControlPlaneLabel]; ok {
			verb = "init"
		}
		switch m.Status.Phase {
		case string(clusterv1.MachinePhaseProvisioned), string(clusterv1.MachinePhaseRunning):
			r.clock.mark(fmt.Sprintf("Machine %s Provisioned: CAPR ran the bootstrap over SSH (kubeadm %s)", m.Name, verb))
		}
		if conditions.IsTrue(&machines.Items[i], clusterv1.ReadyCondition) {
			readyMachines++
		}
	}
	if r.workload == nil {
		secret := &corev1.Secret{}
		if err := r.management.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "quickstart-kubeconfig"}, secret); err != nil {
			return false
		}
		r.kubeconfig = filepath.Join(r.s.root, "workload.kubeconfig")
		if err := os.WriteFile(r.kubeconfig, secret.Data["value"], 0o600); err != nil {
			r.s.Fatalf("%v", err)
		}
		config, err := clientcmd.RESTConfigFromKubeConfig(secret.Data["value"])
		if err != nil {
			r.s.Fatalf("the Secret quickstart-kubeconfig: %v", err)
		}
		config.Timeout = 5 * time.Second
		if r.workload, err = client.New(config, client.Options{}); err != nil {
			r.s.Fatalf("%v", err)
		}
	}
	nodes := &corev1.NodeList{}
	if err := r.workload.List(ctx, nodes); err != nil {
		return false // the API server is not up yet
	}
	readyNodes := 0
	for _, n := range nodes.Items {
		role := "worker"
		if n.Name == r.controlPlane {
			role = "control-plane"
		}
		r.clock.mark(fmt.Sprintf("%s Node %s registered", role, n.Name))
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				readyNodes++
				r.clock.mark(fmt.Sprintf("%s Node %s Ready", role, n.Name))
			}
		}
	}
	if readyNodes < 3 {
		return false
	}
	r.clock.mark("three Nodes Ready")
	if readyMachines < 3 {
		return false
	}
	r.clock.mark("three Machines READY True")
	return true
}

// wait waits until observe sees three Ready Nodes and three Ready Machines, within realTimeout of the start.
func (r *realCluster) wait() {
	for !r.observe() {
		if time.Since(r.clock.start) > realTimeout {
			r.s.Fatalf("the workload cluster did not get three Ready Nodes and three Ready Machines within %s", realTimeout)
		}
		time.Sleep(time.Second)
	}
}

// smokeDeployment runs two replicas of the smoke image (an HTTP server on :8080 answering its Pod's name), one per
// worker (the control plane is tainted), from the image imported on every host (nothing is pulled).
const smokeDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels:
      app: smoke
  template:
    metadata:
      labels:
        app: smoke
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                app: smoke
      containers:
      - name: smoke
        image: capr.local/smoke:v1
        imagePullPolicy: Never
        ports:
        - containerPort: 8080
`

// runSmoke applies the smoke Deployment, waits for its two Pods Running on the two workers, and has each Pod reach
// the other, on the other node, through its Pod IP (a request from the Pod's network namespace, on its host).
func runSmoke(s *session, workload client.Client, kubeconfig string, hosts []*nodehost.Host, k *clock) {
	ctx := context.Background()
	if out, err := mgmt.RunCmd(s, smokeDeployment, nil, mgmt.Tool(s, "kubectl"), "--kubeconfig", kubeconfig, "apply", "-f", "-"); err != nil {
		s.Fatalf("applying the smoke Deployment: %v\n%s", err, out)
	}
	byName := map[string]*nodehost.Host{}
	for _, h := range hosts {
		byName[h.Name] = h
	}
	deadline := time.Now().Add(3 * time.Minute)
	var running []corev1.Pod
	for {
		pods := &corev1.PodList{}
		if err := workload.List(ctx, pods, client.InNamespace("default"), client.MatchingLabels{"app": "smoke"}); err == nil {
			running = running[:0]
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && byName[p.Spec.NodeName] != nil {
					running = append(running, p)
					k.mark(fmt.Sprintf("smoke Pod %s Running on %s (%s)", p.Name, p.Spec.NodeName, p.Status.PodIP))
				}
			}
			if len(running) == 2 && running[0].Spec.NodeName != running[1].Spec.NodeName {
				break
			}
		}
		if time.Now().After(deadline) {
			s.Fatalf("the smoke Deployment's two Pods were not Running on two workers within 3m")
		}
		time.Sleep(2 * time.Second)
	}
	slices.SortFunc(running, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for i, from := range running {
		to := running[1-i]
		h := byName[from.Spec.NodeName]
		command := fmt.Sprintf(`pid=$(crictl inspectp -o go-template --template '{{.info.pid}}' "$(crictl pods -q --name '^%s$')") && `+
			`nsenter --net=/proc/$pid/ns/net curl -sS --max-time 5 http://%s:8080/`, from.Name, to.Status.PodIP)
		out, err := h.Run(command)
		if err != nil || strings.TrimSpace(out) != to.Name {
			s.Fatalf("Pod %s on %s did not reach Pod %s on %s at %s:8080 (answer %q, %v)", from.Name, from.Spec.NodeName,
				to.Name, to.Spec.NodeName, to.Status.PodIP, strings.TrimSpace(out), err)
		}
		fmt.Printf("    Pod %s on %s reached Pod %s on %s through its Pod IP %s: it answered %q\n", from.Name,
			from.Spec.NodeName, to.Name, to.Spec.NodeName, to.Status.PodIP, strings.TrimSpace(out))
	}
	k.mark("smoke Pods reach each other across nodes")
}

// printRealCluster prints the workload cluster's Nodes and smoke Pods, and the Machines (READY column).
func printRealCluster(s *session, managementKubeconfig, kubeconfig string) {
	kubectl := mgmt.Tool(s, "kubectl")
	for _, args := range [][]string{
		{"--kubeconfig", kubeconfig, "get", "nodes", "-o", "wide"},
		{"--kubeconfig", kubeconfig, "get", "pods", "-l", "app=smoke", "-o", "wide"},
		{"--kubeconfig", managementKubeconfig, "-n", namespace, "get", "machines"},
	} {
		fmt.Printf("\n$ kubectl %s\n", strings.Join(args[2:], " "))
		out, err := mgmt.RunCmd(s, "", nil, kubectl, args...)
		if err != nil {
			s.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		fmt.Print(out)
	}
}

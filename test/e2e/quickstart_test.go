//go:build integration

package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/capr-project/cluster-api-provider-remote/test/measure"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/nodehost"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// quickstartRun is a running quickstart program, read up to the line saying it is ready.
type quickstartRun struct {
	cmd    *exec.Cmd
	lines  chan string
	output []string
	root   string

	waitOnce sync.Once
	exited   chan struct{} // closed once the program exited; err is its error
	err      error
}

// wait reads the rest of the output and waits for the program to exit, once; the channel closes then.
func (q *quickstartRun) wait() <-chan struct{} {
	q.waitOnce.Do(func() {
		go func() {
			for range q.lines {
			}
			q.err = q.cmd.Wait()
			close(q.exited)
		}()
	})
	return q.exited
}

// startQuickstart builds and starts the quickstart program (what `make quickstart` runs) with env added to this
// process's, and reads its output until it says it is ready (within timeout).
func startQuickstart(t testing.TB, timeout time.Duration, env ...string) *quickstartRun {
	g := NewWithT(t)
	// Every process the quickstart leaves behind would become this test's child.
	g.Expect(unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)).To(Succeed())
	bin := filepath.Join(t.TempDir(), "quickstart")
	out, err := mgmt.RunCmd(t, "", nil, "go", "build", "-o", bin, "./test/e2e/quickstart")
	g.Expect(err).NotTo(HaveOccurred(), out)

	q := &quickstartRun{cmd: exec.Command(bin), lines: make(chan string, 1000), exited: make(chan struct{})}
	q.cmd.Dir = testenv.RootDir()
	q.cmd.Env = append(os.Environ(), env...)
	stdout, err := q.cmd.StdoutPipe()
	g.Expect(err).NotTo(HaveOccurred())
	q.cmd.Stderr = q.cmd.Stdout
	g.Expect(q.cmd.Start()).To(Succeed())
	// A failed test still lets the quickstart tear down what it started (node hosts outlive a killed quickstart).
	t.Cleanup(func() {
		select {
		case <-q.exited:
			return
		default:
		}
		_ = q.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-q.wait():
		case <-time.After(2 * time.Minute):
			_ = q.cmd.Process.Kill()
		}
	})
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			q.lines <- scanner.Text()
		}
		close(q.lines)
	}()
	expired := time.After(timeout)
	for ready := false; !ready; {
		select {
		case line, ok := <-q.lines:
			g.Expect(ok).To(BeTrue(), "the quickstart exited early:\n%s", strings.Join(q.output, "\n"))
			q.output = append(q.output, line)
			if m := regexp.MustCompile(`in (/\S+capr-quickstart-\S+)$`).FindStringSubmatch(line); m != nil {
				q.root = m[1]
			}
			ready = strings.Contains(line, "Press Ctrl-C to stop everything")
		case <-expired:
			t.Fatalf("the quickstart did not get ready:\n%s", strings.Join(q.output, "\n"))
		}
	}
	t.Log(strings.Join(q.output, "\n"))
	g.Expect(q.root).NotTo(BeEmpty())
	return q
}

// running is the table's machines Running, machine → host (quickstart-x).
func (q *quickstartRun) running() map[string]string {
	row := regexp.MustCompile(`^(\S+)\s+Running\s+(\S+)\s+(quickstart-\d) \(`)
	running := map[string]string{}
	for _, line := range q.output {
		if m := row.FindStringSubmatch(line); m != nil {
			running[m[1]] = m[3]
		}
	}
	return running
}

// interrupt sends Ctrl-C (SIGINT) and checks the quickstart tears everything down, leaving no process and no file.
func (q *quickstartRun) interrupt(t testing.TB) {
	g := NewWithT(t)
	g.Expect(q.cmd.Process.Signal(syscall.SIGINT)).To(Succeed())
	g.Eventually(q.wait(), 2*time.Minute).Should(BeClosed())
	g.Expect(q.err).NotTo(HaveOccurred())
	_, err := os.Stat(q.root)
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "%s is left behind", q.root)
	g.Expect(children()).To(BeEmpty(), "processes left behind")
}

// checkMachines checks the table shows the control-plane machine and two workers Running on three distinct hosts.
func checkMachines(t *testing.T, q *quickstartRun) {
	g := NewWithT(t)
	running := q.running()
	g.Expect(running).To(HaveLen(3), "the table shows three machines Running")
	hosts := map[string]bool{}
	workers := 0
	for machine, host := range running {
		hosts[host] = true
		if strings.HasPrefix(machine, "workers-") {
			workers++
		}
	}
	g.Expect(hosts).To(HaveLen(3), "on three distinct hosts")
	g.Expect(workers).To(Equal(2))
}

// TestQuickstart runs the quickstart program (what `make quickstart` runs) as a user would, in its stand-in mode
// (what CI can run: it builds no node tools): its table shows the control-plane machine and the two workers Running
// on three distinct hosts, and Ctrl-C (SIGINT) tears everything down, leaving no process and no file behind. Where
// real nodes cannot run, the quickstart is run without QUICKSTART_MODE and must say what is missing and that it
// falls back to the stand-in mode (a quickstart faking silently fails here).
func TestQuickstart(t *testing.T) {
	binDir, imagesDir := testenv.BinDir(), os.Getenv("CAPR_NODE_IMAGES")
	if imagesDir == "" {
		imagesDir = filepath.Join(testenv.RootDir(), "out", "node-images")
	}
	missing := nodehost.Missing(binDir, imagesDir)
	var env []string
	if missing == "" {
		t.Log("stand-in mode (QUICKSTART_MODE=standin); TestQuickstartRealNodes runs the real mode")
		env = append(env, "QUICKSTART_MODE=standin")
	} else {
		t.Logf("stand-in mode, by the quickstart's own fallback: %s", missing)
		env = append(env, "QUICKSTART_MODE=", "CAPR_NODE_IMAGES="+imagesDir)
	}
	q := startQuickstart(t, 8*time.Minute, env...)
	g := NewWithT(t)
	if missing == "" {
		g.Expect(q.output).To(ContainElement(HavePrefix("Mode: stand-in (QUICKSTART_MODE=standin)")))
	} else {
		g.Expect(q.output).To(ContainElement("Real nodes cannot run here: "+missing+"."), "the quickstart names what real nodes miss")
		g.Expect(q.output).To(ContainElement(HavePrefix("Falling back to the stand-in mode")))
	}
	checkMachines(t, q)
	q.interrupt(t)
}

// TestQuickstartRealNodes runs the quickstart in its real mode (QUICKSTART_MODE=real): the real kubeadm init and
// join over SSH on three node hosts, three Ready Nodes in `kubectl get nodes -o wide`, the Machines' READY True, the
// smoke Pods Running on the two workers and reaching each other through their Pod IPs. Scaling the workers down to
// one runs the real kubeadm reset (and the example's cleanup) on a host, which returns to the pool with nothing of
// its node left; scaled up again, it joins again. Ctrl-C leaves no process, file, cgroup or network device behind.
func TestQuickstartRealNodes(t *testing.T) {
	binDir, imagesDir := os.Getenv("CAPR_BIN_DIR"), os.Getenv("CAPR_NODE_IMAGES")
	if why := nodehost.Missing(binDir, imagesDir); why != "" {
		t.Skip(why)
	}
	q := startQuickstart(t, 15*time.Minute, "QUICKSTART_MODE=real")
	g := NewWithT(t)
	out := strings.Join(q.output, "\n")
	g.Expect(q.output).To(ContainElement(HavePrefix("Mode: real")))
	checkMachines(t, q)
	node := regexp.MustCompile(`(?m)^(quickstart-\d)\s+Ready\s+(\S+)\s+\S+\s+v1\.\d+\.\d+\s+(172\.30\.0\.\d+)\s`)
	g.Expect(node.FindAllStringSubmatch(out, -1)).To(HaveLen(3), "kubectl get nodes -o wide shows three Ready Nodes")
	machine := regexp.MustCompile(`(?m)^(control-plane|quickstart|workers)-\S+\s+quickstart\s+quickstart-\d\s+True\s`)
	g.Expect(machine.FindAllString(out, -1)).To(HaveLen(3), "kubectl get machines shows three Machines READY True")
	g.Expect(regexp.MustCompile(`(?m)^smoke-\S+\s+1/1\s+Running\s`).FindAllString(out, -1)).To(HaveLen(2), "the smoke Pods Running")
	g.Expect(regexp.MustCompile(`(?m)^    Pod smoke-\S+ on quickstart-\d reached Pod smoke-\S+ on quickstart-\d through its Pod IP 10\.244\.`).
		FindAllString(out, -1)).To(HaveLen(2), "each smoke Pod reached the other across nodes")
	for _, line := range q.output {
		if strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") && regexp.MustCompile(`\d+s$`).MatchString(line) {
			t.Log("phase:", strings.TrimSpace(line))
		}
	}
	scaleDownAndUp(t, q)
	// The hosts' veths (capr-nX) and cgroup roots (/capr-nX), X from their addresses 172.30.0.X in the table.
	hosts := regexp.MustCompile(`quickstart-\d \(172\.30\.0\.(\d+):22\)`).FindAllStringSubmatch(out, -1)
	g.Expect(hosts).To(HaveLen(3))
	q.interrupt(t)
	for _, h := range hosts {
		g.Expect(exec.Command("ip", "link", "show", "capr-n"+h[1]).Run()).To(HaveOccurred(), "network device capr-n%s left behind", h[1])
		cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/capr-n" + h[1])
		g.Expect(cgroups).To(BeEmpty(), "cgroups left behind")
		init, _ := exec.Command("pgrep", "-f", "^sh .*/nodeinit /capr-n"+h[1]+"$").Output()
		g.Expect(string(init)).To(BeEmpty(), "the host's init left running")
	}
}

// children lists this process's living children (with the subreaper set, also the quickstart's orphans). Orphans
// that already exited are reaped first, as a subreaper must: sshd's per-connection processes can outlive their
// parent by a moment when a client drops the connection during the key exchange, as CAPR's host-key scan does.
func children() []string {
	for {
		var status syscall.WaitStatus
		if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); err != nil || pid <= 0 {
			break
		}
	}
	var found []string
	for pid, p := range measure.Processes() {
		if p.PPID == os.Getpid() {
			found = append(found, strconv.Itoa(pid)+" "+p.Name)
		}
	}
	return found
}

// printed is the value the quickstart printed after prefix.
func (q *quickstartRun) printed(t *testing.T, prefix string) string {
	for _, line := range q.output {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(line, prefix))
		}
	}
	t.Fatalf("the quickstart printed no %q", prefix)
	return ""
}

// scaleDownAndUp scales the quickstart's workers to one: the freed host's pool entry is Available again, and inside
// the host no kubelet, Pod, container task, kubelet mount, Pod network device, iptables chain of the kubelet, Pod
// address allocation or Pod cgroup is left. Scaled to two again, three Nodes are Ready.
func scaleDownAndUp(t *testing.T, q *quickstartRun) {
	g := NewWithT(t)
	management, workload := q.printed(t, "The management cluster's kubeconfig: "), q.printed(t, "The workload cluster's kubeconfig: ")
	kubectl := func(kubeconfig string, args ...string) (string, error) {
		out, err := exec.Command(mgmt.Tool(t, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		return string(out), err
	}
	start := time.Now()
	out, err := kubectl(management, "-n", "quickstart", "scale", "machinedeployment/workers", "--replicas=1")
	g.Expect(err).NotTo(HaveOccurred(), out)
	var address string
	g.Eventually(func(g Gomega) {
		out, err := kubectl(management, "-n", "quickstart", "get", "prm", "-o", `jsonpath={range .items[*]}{.spec.machine.address} {.status.phase}{"\n"}{end}`)
		g.Expect(err).NotTo(HaveOccurred(), out)
		available := regexp.MustCompile(`(?m)^(\S+) Available$`).FindAllStringSubmatch(out, -1)
		g.Expect(available).To(HaveLen(1), out)
		address = available[0][1]
	}, 3*time.Minute, time.Second).Should(Succeed())
	t.Logf("scaled down: the host %s is Available again after %s", address, time.Since(start).Round(time.Second))

	index := address[strings.LastIndex(address, ".")+1:]
	init, err := exec.Command("pgrep", "-f", "^sh .*/nodeinit /capr-n"+index+"$").Output()
	g.Expect(err).NotTo(HaveOccurred(), "the host's init")
	pid := strings.Fields(string(init))[0]
	// Standard output only: containerd's tools warn on standard error that cgroup v1 is deprecated.
	out2, err := exec.Command("nsenter", "--target", pid, "--mount", "--net", "--uts", "--", "sh", "-c",
		"PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin; "+
			"echo kubelet $(systemctl is-active kubelet); echo pods $(crictl pods -q | wc -l); "+
			"echo tasks $(ctr -n k8s.io tasks ls -q | wc -l); echo mounts $(findmnt -rn -o TARGET | grep -c '^/var/lib/kubelet/'); "+
			"echo links $(ip -o link show | grep -cv ' lo: \\| eth0@'); echo chains $(iptables-save | grep -c KUBE); "+
			"echo cni $(ls -A /var/lib/cni | wc -l)").Output()
	g.Expect(err).NotTo(HaveOccurred(), string(out2))
	g.Expect(string(out2)).To(Equal("kubelet inactive\npods 0\ntasks 0\nmounts 0\nlinks 0\nchains 0\ncni 0\n"), "what is left in the host")
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/capr-n" + index + "/kubepods")
	g.Expect(cgroups).To(BeEmpty(), "Pod cgroups left")

	nodes := func() (string, error) {
		return kubectl(workload, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
	}
	// Cluster API deletes the Node once the host is cleaned; only then can a Ready Node of that host be a new one.
	g.Eventually(nodes, 2*time.Minute, time.Second).Should(MatchRegexp(`^(quickstart-\d=True ){2}$`))
	start = time.Now()
	out, err = kubectl(management, "-n", "quickstart", "scale", "machinedeployment/workers", "--replicas=2")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(nodes, 4*time.Minute, time.Second).Should(MatchRegexp(`^(quickstart-\d=True ){3}$`))
	t.Logf("scaled up: three Nodes Ready again after %s", time.Since(start).Round(time.Second))
}

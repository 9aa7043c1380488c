//go:build integration

package e2e

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/client-go/kubernetes"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
	"github.com/capr-project/cluster-api-provider-remote/test/measure"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// deployment is the workers MachineDeployment of the end-to-end suite under another name, on a pool of that name,
// with no replicas.
func deployment(name string) string {
	return strings.ReplaceAll(strings.Replace(workers, "replicas: 3", "replicas: 0", 1), "workers", name)
}

// BenchmarkP6 is make bench's P6: a MachineDeployment scaled from 0 to 50 Machines on a pool of as many real sshd
// hosts, with Cluster API's managers and CAPR installed by clusterctl (CAPR with its default settings), until every
// Machine is Running; against one Machine alone (another MachineDeployment of the same cluster scaled from 0 to 1).
// Goal: <= 2. With P6_FLEET=200 (make bench at full scale sets it) a third MachineDeployment is scaled 0 -> 200 on
// 200 hosts, to show how the time grows. -short scales to 3. Each scale prints where the time went (the breakdown
// table). It appends its rows to $BENCH_ROWS for test/bench's table.
func BenchmarkP6(b *testing.B) {
	sizes := []int{50}
	if testing.Short() {
		sizes = []int{3}
	}
	if n, err := strconv.Atoi(os.Getenv("P6_FLEET")); err == nil && n > 0 && !testing.Short() {
		sizes = append(sizes, n)
	}
	g := NewWithT(b)
	ctx := context.Background()
	setup := time.Now()
	e := Start(b, func(s string) { b.Log(s) })
	c := e.Management.Client
	// CAPR's diagnostics endpoint, read as a scraper would: its queue wait and SSH time, and a CPU profile.
	diag := mgmt.NewDiagnostics(b, e.Management, "capr-system", e.CAPR.DiagnosticsAddr)
	cp := e.AddHost("p6-cp")
	single := e.AddHost("p6-one")
	endpoint := e.PrepareNamespace(ns, clusterName)
	out, err := mgmt.Kubectl(b, e.Management, fmt.Sprintf(directExample, endpoint.Host, endpoint.Port, cp.Address, cp.Port), "apply", "-f", "-")
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		machine := &clusterv1.Machine{}
		g.Expect(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "remote-test-0"}, machine)).To(Succeed())
		g.Expect(machine.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)))
	}, timeout, time.Second).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	e.ShareClusterCA(ns, clusterName)
	g.Expect(c.Create(ctx, poolEntry(ns, "one", "one-0", single))).To(Succeed())
	names := []string{"one"}
	for _, n := range sizes {
		name := fmt.Sprintf("fleet%d", n)
		names = append(names, name)
		for i := range n {
			h := e.AddHost(fmt.Sprintf("p6-%d-%03d", n, i))
			g.Expect(c.Create(ctx, poolEntry(ns, name, fmt.Sprintf("%s-%03d", name, i), h))).To(Succeed())
		}
	}
	for _, name := range names {
		out, err := mgmt.Kubectl(b, e.Management, deployment(name), "apply", "-f", "-")
		g.Expect(err).NotTo(HaveOccurred(), out)
		// Scaling starts from a MachineSet of 0 that Cluster API already made.
		g.Eventually(func(g Gomega) {
			sets := &clusterv1.MachineSetList{}
			g.Expect(c.List(ctx, sets, client.InNamespace(ns), client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: name})).To(Succeed())
			g.Expect(sets.Items).To(HaveLen(1))
		}, timeout, time.Second).Should(Succeed())
	}
	b.Logf("P6 setup: %s", time.Since(setup).Round(time.Second))

	one := scaleAndTrace(b, e, diag, "one", 1, "")
	traces := []*fleetTrace{one}
	for i, n := range sizes {
		profile := ""
		if dir := os.Getenv("P6_CPUPROFILE_DIR"); dir != "" {
			profile = filepath.Join(dir, fmt.Sprintf("p6-%d.cpu.pprof", n))
		}
		t := scaleAndTrace(b, e, diag, names[i+1], n, profile)
		traces = append(traces, t)
		ratio := float64(t.total) / float64(one.total)
		fmt.Printf("\nP6  MachineDeployment scaled 0 -> %d on %d sshd hosts: %s; one Machine: %s; ratio %.2f (goal <= 2)\n",
			n, n, t.total.Round(time.Millisecond), one.total.Round(time.Millisecond), ratio)
		r := rows.Row{Figure: "P6", What: fmt.Sprintf("MachineDeployment scaled 0 -> %d on %d sshd hosts until all Running", n, n),
			Baseline: fmt.Sprintf("one Machine (0 -> 1) %s", one.total.Round(time.Millisecond)), CAPR: t.total.Round(time.Millisecond).String(),
			Ratio: ratio, Goal: 2}
		if i > 0 {
			r.Figure = fmt.Sprintf("P6-%d", n)
		} else {
			r.Note = "P6: Cluster API v1.14.2's managers and CAPR installed by clusterctl with its default settings, a kubeadm stand-in on the hosts registering Nodes in a second kube-apiserver; one Machine is another MachineDeployment of the same cluster scaled 0 -> 1. The breakdown below says where the time went."
		}
		// Each size's row is kept as soon as it is measured (a larger size may not fit the machine), with the
		// breakdown of every size so far.
		r.Detail = breakdown(traces)
		fmt.Println(r.Detail)
		g.Expect(rows.Append(r)).To(Succeed())
	}
}

// Stages of a Machine, in order, as the benchmark sees them.
var stages = []struct{ name, owner string }{
	{"Machine created", "Cluster API (MachineSet controller)"},
	{"bootstrap data written", "CABPK"},
	{"RemoteMachine created, host claimed", "Cluster API creates it; CAPR's webhook claims at admission"},
	{"host bootstrapped (provisioned)", "CAPR: queue wait + SSH + the run on the host (see below)"},
	{"Node referenced", "Cluster API (Machine controller, workload cluster cache)"},
	{"Machine Running", "Cluster API"},
}

// fleetTrace is when each Machine of one scaling reached each stage, from the scale command on.
type fleetTrace struct {
	n     int
	total time.Duration
	// last is the time the last Machine reached each stage.
	last []time.Duration
	// queueWait and sshRun are CAPR's mean bootstrap queue wait and bootstrap run (SSH and the host's work) from its
	// metrics; peakRSS is the manager's largest RSS seen while the Machines came up, idleRSS before.
	queueWait, sshRun time.Duration
	queueWaitMax      string
	peakRSS, idleRSS  int64
	// cpu is the CPU time each program used while the Machines came up (children included), busiest first.
	cpu []progCPU
	// busy is the machine's CPU time over the same span, and cores its CPUs.
	busy  time.Duration
	cores int
	// requests are the management apiserver's busiest kinds of request, per Machine.
	requests string
}

// scaleAndTrace scales the MachineDeployment name from 0 to n and traces every Machine until all are Running.
// With profile set, a CPU profile of CAPR's manager over the first 30 seconds is written there.
func scaleAndTrace(b *testing.B, e *Env, diag *mgmt.Diagnostics, name string, n int, profile string) *fleetTrace {
	g := NewWithT(b)
	ctx := context.Background()
	c := e.Management.Client
	before := scrape(g, diag)
	if profile != "" {
		var wg sync.WaitGroup
		defer wg.Wait()
		write := func(path string, get func() ([]byte, error)) {
			wg.Go(func() {
				data, err := get()
				if err == nil {
					err = os.WriteFile(path, data, 0o644)
				}
				if err != nil {
					b.Logf("CPU profile %s: %v", path, err)
				}
			})
		}
		write(profile, func() ([]byte, error) { return diag.Get("/debug/pprof/profile?seconds=30") })
		// The management kube-apiserver's, over the same 30 seconds.
		write(strings.TrimSuffix(profile, ".cpu.pprof")+"-apiserver.cpu.pprof", func() ([]byte, error) {
			cs, err := kubernetes.NewForConfig(e.Management.Config)
			if err != nil {
				return nil, err
			}
			return cs.RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "30").DoRaw(ctx)
		})
	}
	tr := &fleetTrace{n: n, last: make([]time.Duration, len(stages)), idleRSS: rss(e.CAPR.Pid())}
	requestsBefore := apiserverRequests(g, e.Management)
	cpuBefore, busyBefore := cpuByProcess(), measure.MachineBusy()
	seen := map[string][]time.Duration{}
	start := time.Now()
	out, err := mgmt.Kubectl(b, e.Management, "", "scale", "-n", ns, "machinedeployment/"+name, fmt.Sprintf("--replicas=%d", n))
	g.Expect(err).NotTo(HaveOccurred(), out)
	g.Eventually(func(g Gomega) {
		now := time.Since(start)
		tr.peakRSS = max(tr.peakRSS, rss(e.CAPR.Pid()))
		machines := &clusterv1.MachineList{}
		g.Expect(c.List(ctx, machines, client.InNamespace(ns), client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: name})).To(Succeed())
		rms := &infrav1.RemoteMachineList{}
		g.Expect(c.List(ctx, rms, client.InNamespace(ns))).To(Succeed())
		infra := map[string]*infrav1.RemoteMachine{}
		for i := range rms.Items {
			infra[rms.Items[i].Name] = &rms.Items[i]
		}
		running := 0
		for _, m := range machines.Items {
			rm := infra[m.Spec.InfrastructureRef.Name]
			reached := []bool{
				true,
				m.Spec.Bootstrap.DataSecretName != nil,
				rm != nil && rm.Spec.Address != "",
				rm != nil && rm.Status.Initialization.Provisioned != nil && *rm.Status.Initialization.Provisioned,
				m.Status.NodeRef.IsDefined(),
				m.Status.Phase == string(clusterv1.MachinePhaseRunning),
			}
			at := seen[m.Name]
			if at == nil {
				at = make([]time.Duration, len(stages))
				seen[m.Name] = at
			}
			for i, ok := range reached {
				if ok && at[i] == 0 {
					at[i] = now
				}
			}
			if reached[len(reached)-1] {
				running++
			}
		}
		g.Expect(running).To(Equal(n))
	}, 15*time.Minute, pollEvery(n)).Should(Succeed(), func() string { return tail(e.CAPR.Logs.String()) })
	tr.total = time.Since(start)
	tr.cpu = cpuSince(cpuBefore, cpuByProcess(), e.CAPR.Pid(), apiserverPorts(e))
	tr.busy, tr.cores = measure.MachineBusy()-busyBefore, runtime.NumCPU()
	for _, at := range seen {
		for i, d := range at {
			tr.last[i] = max(tr.last[i], d)
		}
	}
	tr.requests = requestsPerMachine(requestsBefore, apiserverRequests(g, e.Management), n)
	after := scrape(g, diag)
	if waits := after.count("capr_task_queue_wait_seconds", `kind="bootstrap"`) - before.count("capr_task_queue_wait_seconds", `kind="bootstrap"`); waits > 0 {
		tr.queueWait = seconds((after.sum("capr_task_queue_wait_seconds", `kind="bootstrap"`) - before.sum("capr_task_queue_wait_seconds", `kind="bootstrap"`)) / waits)
		tr.queueWaitMax = after.quantileBound("capr_task_queue_wait_seconds", `kind="bootstrap"`, before)
	}
	if runs := after.count("capr_bootstrap_duration_seconds", "") - before.count("capr_bootstrap_duration_seconds", ""); runs > 0 {
		tr.sshRun = seconds((after.sum("capr_bootstrap_duration_seconds", "") - before.sum("capr_bootstrap_duration_seconds", "")) / runs)
	}
	return tr
}

// pollEvery is how often the trace lists n Machines and the RemoteMachines: often enough to time one Machine well,
// seldom enough that its own reads do not load the apiserver it measures (200 Machines listed every 100ms cost the
// apiserver a second of CPU every few seconds).
func pollEvery(n int) time.Duration {
	return min(max(time.Duration(n)*5*time.Millisecond, 100*time.Millisecond), time.Second)
}

// breakdown is the Markdown table of where the time of each scaling went.
func breakdown(ts []*fleetTrace) string {
	var sb strings.Builder
	sb.WriteString("### Where P6's time goes\n\nTime from `kubectl scale` until the last Machine reached each stage (seen by listing the Machines every 100ms for one Machine, 250ms for 50, 1s for 200), then CAPR's own share from its metrics (means per Machine) and the machine's CPU.\n\n")
	sb.WriteString("| stage | whose |")
	for _, t := range ts {
		fmt.Fprintf(&sb, " %d Machine(s) |", t.n)
	}
	sb.WriteString("\n|---|---|")
	for range ts {
		sb.WriteString("---|")
	}
	sb.WriteString("\n")
	for i, s := range stages {
		fmt.Fprintf(&sb, "| %s | %s |", s.name, s.owner)
		for _, t := range ts {
			fmt.Fprintf(&sb, " %s |", t.last[i].Round(100*time.Millisecond))
		}
		sb.WriteString("\n")
	}
	rowf := func(name, owner string, f func(*fleetTrace) string) {
		fmt.Fprintf(&sb, "| %s | %s |", name, owner)
		for _, t := range ts {
			fmt.Fprintf(&sb, " %s |", f(t))
		}
		sb.WriteString("\n")
	}
	rowf("bootstrap queue wait (mean; largest bucket)", "CAPR (--bootstrap-concurrency)", func(t *fleetTrace) string {
		return fmt.Sprintf("%s; ≤ %s", t.queueWait.Round(time.Millisecond), t.queueWaitMax)
	})
	rowf("bootstrap run: SSH + the host's work (mean)", "CAPR's SSH and the host", func(t *fleetTrace) string { return t.sshRun.Round(10 * time.Millisecond).String() })
	rowf("manager RSS before → peak", "CAPR", func(t *fleetTrace) string {
		return fmt.Sprintf("%.0f → %.0f MiB", float64(t.idleRSS)/(1<<20), float64(t.peakRSS)/(1<<20))
	})
	rowf("machine CPU busy (of the CPU time there was)", "all", func(t *fleetTrace) string {
		return fmt.Sprintf("%.0f%% (%s of %d × %s)", 100*t.busy.Seconds()/(float64(t.cores)*t.total.Seconds()), t.busy.Round(100*time.Millisecond), t.cores, t.total.Round(100*time.Millisecond))
	})
	rowf("management apiserver requests per Machine (the most frequent)", "all its clients", func(t *fleetTrace) string { return t.requests })
	rowf("CPU time by program (children included)", "see the names", func(t *fleetTrace) string {
		var parts []string
		for i, p := range t.cpu {
			if i == 6 {
				break
			}
			parts = append(parts, fmt.Sprintf("%s %s", p.name, p.cpu.Round(100*time.Millisecond)))
		}
		return strings.Join(parts, ", ")
	})
	return sb.String()
}

// apiserverPorts names the environment's kube-apiservers by the port they serve.
func apiserverPorts(e *Env) map[string]string {
	out := map[string]string{}
	for name, a := range map[string]*testenv.APIServer{"kube-apiserver (management)": e.Management, "kube-apiserver (workload)": e.Workload} {
		if u, err := url.Parse(a.Config.Host); err == nil && u.Port() != "" {
			out[u.Port()] = name
		} else if _, port, err := net.SplitHostPort(a.Config.Host); err == nil {
			out[port] = name
		}
	}
	return out
}

// progCPU is the CPU time of one program.
type progCPU struct {
	name string
	cpu  time.Duration
}

// cpuByProcess is every process's name and the CPU time it and the children it reaped used.
func cpuByProcess() map[int]progCPU {
	out := map[int]progCPU{}
	for pid, p := range measure.Processes() {
		out[pid] = progCPU{p.Name, p.CPU + p.ChildrenCPU}
	}
	return out
}

// cpuSince sums by program name the CPU time processes used between two readings; capr names CAPR's manager, and
// apiservers names kube-apiservers by the port they serve.
func cpuSince(before, after map[int]progCPU, capr int, apiservers map[string]string) []progCPU {
	sums := map[string]time.Duration{}
	for pid, a := range after {
		name := a.name
		if pid == capr {
			name = "CAPR's manager"
		}
		if name == "kube-apiserver" {
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
				for _, arg := range strings.Split(string(cmdline), "\x00") {
					if port, ok := strings.CutPrefix(arg, "--secure-port="); ok && apiservers[port] != "" {
						name = apiservers[port]
					}
				}
			}
		}
		sums[name] += a.cpu - before[pid].cpu
	}
	var out []progCPU
	for n, d := range sums {
		if d > 0 {
			out = append(out, progCPU{n, d})
		}
	}
	slices.SortFunc(out, func(a, b progCPU) int { return int(b.cpu - a.cpu) })
	return out
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// rss is the resident set of process pid, in bytes (0 when it cannot be read).
func rss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// samples are the lines of a Prometheus text exposition, name{labels} → value.
type samples map[string]float64

func scrape(g Gomega, diag *mgmt.Diagnostics) samples {
	body, err := diag.Get("/metrics")
	g.Expect(err).NotTo(HaveOccurred())
	out, err := measure.Metrics(bytes.NewReader(body))
	g.Expect(err).NotTo(HaveOccurred())
	return out
}

// find returns the value of the sample whose name is name and whose labels contain label.
func (s samples) find(name, label string) float64 {
	for k, v := range s {
		n, labels, _ := strings.Cut(k, "{")
		if n == name && strings.Contains(labels, label) {
			return v
		}
	}
	return 0
}

func (s samples) count(name, label string) float64 { return s.find(name+"_count", label) }
func (s samples) sum(name, label string) float64   { return s.find(name+"_sum", label) }

// quantileBound is the smallest bucket bound holding every observation made since before.
func (s samples) quantileBound(name, label string, before samples) string {
	total := s.count(name, label) - before.count(name, label)
	best, bestLe := "+Inf", 0.0
	for k, v := range s {
		n, labels, _ := strings.Cut(k, "{")
		if n != name+"_bucket" || !strings.Contains(labels, label) {
			continue
		}
		_, le, _ := strings.Cut(labels, `le="`)
		le, _, _ = strings.Cut(le, `"`)
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil || v-before[k] < total {
			continue
		}
		if best == "+Inf" || bound < bestLe {
			best, bestLe = le+"s", bound
		}
	}
	return best
}

// apiserverRequests reads the apiserver's count of requests (apiserver_request_total) by verb and resource.
func apiserverRequests(g Gomega, a *testenv.APIServer) map[string]float64 {
	cs, err := kubernetes.NewForConfig(a.Config)
	g.Expect(err).NotTo(HaveOccurred())
	body, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	g.Expect(err).NotTo(HaveOccurred())
	all, err := measure.Metrics(bytes.NewReader(body))
	g.Expect(err).NotTo(HaveOccurred())
	out := map[string]float64{}
	for k, v := range all {
		name, labels, _ := strings.Cut(k, "{")
		if name != "apiserver_request_total" {
			continue
		}
		resource := labelValue(labels, "resource")
		if resource == "" {
			continue
		}
		if sub := labelValue(labels, "subresource"); sub != "" {
			resource += "/" + sub
		}
		out[labelValue(labels, "verb")+" "+resource] += v
	}
	return out
}

// requestsPerMachine names the eight most frequent kinds of request between two reads, per Machine.
func requestsPerMachine(before, after map[string]float64, n int) string {
	type kind struct {
		name string
		per  float64
	}
	var kinds []kind
	total := 0.0
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			kinds = append(kinds, kind{k, d / float64(n)})
			total += d / float64(n)
		}
	}
	slices.SortFunc(kinds, func(a, b kind) int { return cmp.Compare(b.per, a.per) })
	parts := []string{fmt.Sprintf("%.0f in all", total)}
	for _, k := range kinds[:min(8, len(kinds))] {
		parts = append(parts, fmt.Sprintf("%s %.1f", k.name, k.per))
	}
	return strings.Join(parts, ", ")
}

// labelValue is the value of one label in a Prometheus sample's label text.
func labelValue(labels, name string) string {
	_, rest, ok := strings.Cut(","+labels, ","+name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

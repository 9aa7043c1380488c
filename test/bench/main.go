// Command bench measures CAPR's speed and size goals (the project's issue 12), each against a baseline measured in
// the same run, and prints one table of ratios. It is run by `make bench`; BENCH_SHORT=1 (-short) runs every figure
// on a small scale, as CI does.
//
//	P1: 200 concurrent pooled RemoteMachine creates against a pool of 1,000 among 10,000 entries, until all 200 are
//	    stored with an address; baseline: the same 200 RemoteMachine creates and 200 PooledRemoteMachine claim patches
//	    with no webhook called (and, printed beside it, 200 ConfigMap creates + 200 updates). Goal: ratio <= 1.3.
//	P2: one bootstrap on 100 real sshd hosts at once, against OpenSSH's ssh running it on the same 100 hosts at once
//	    (goal <= 1.1); one host against ssh on one host (goal <= 1.0). BenchmarkP2 in package controllers.
//	P3: the manager's peak RSS with 10,000 pool entries and 2,000 RemoteMachines, against the objects' size as
//	    stored in etcd plus an idle manager's peak RSS. Goal: RSS / (size + idle) <= 2.
//	P4: p99 latency of a claiming create, one at a time, against a GET. Goal <= 3.
//	P5: an exhausted pool refusing 50 creates/s for a minute: no apiserver List per refusal, and the refusal's p99
//	    against a GET's p99 <= 2.
//	P6: a MachineDeployment scaled from 0 to 50 on 50 sshd hosts with Cluster API's managers, until all 50 Machines
//	    are Running, against one Machine alone (goal <= 2), with a breakdown of where the time went; at full scale
//	    also 0 to 200 on 200 hosts. BenchmarkP6 in package e2e.
//	P6r: P6 on real nodes: the quickstart's workers scaled by 10 Machines on 10 node hosts (real kubeadm join, kubelet,
//	    containerd) until every Node is Ready, against scaling by one. BenchmarkP6RealNodes in package e2e.
//	P7: make quickstart on real nodes, from Applying to three Ready Nodes, against its 4-minute goal. BenchmarkP7 in
//	    package e2e.
//
// The full run writes bench/results.md (the machine, and the table); every run compares its ratios with the
// committed bench/results.md and flags a ratio more than 20% worse.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// scale is how large each figure is measured.
type scale struct {
	short                     bool
	pools, perPool            int
	burst, rounds, sequential int
	exhaustedRate             int
	exhaustedFor              time.Duration
	machines                  int           // RemoteMachines stored for P3
	settle, idleSettle        time.Duration // longest wait for P3's manager to catch up
}

var (
	full  = scale{pools: 10, perPool: 1000, burst: 200, rounds: 4, sequential: 200, exhaustedRate: 50, exhaustedFor: time.Minute, machines: 2000, settle: 4 * time.Minute, idleSettle: 30 * time.Second}
	small = scale{short: true, pools: 10, perPool: 100, burst: 20, rounds: 1, sequential: 20, exhaustedRate: 50, exhaustedFor: 5 * time.Second, machines: 200, settle: 20 * time.Second, idleSettle: 5 * time.Second}
)

func main() {
	short := flag.Bool("short", false, "small scale (what CI runs): quick, and bench/results.md is not written")
	out := flag.String("out", "", "write the results here (default: bench/results.md for a full run, nowhere for -short)")
	committed := flag.String("committed", "", "results to compare with (default: bench/results.md)")
	only := flag.String("only", "", "comma-separated figures to measure (P1,P2,P3,P4,P5,P6,P6r,P7); default all")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of this process (the webhook server included) during P1's claims to this file")
	flag.BoolVar(&tryClaimLever, "try-claim-lever", false, "experiment: install a matchCondition that skips the PooledRemoteMachine webhook for claims of an identity granted the verb claim, and claim as such an identity (see leverCondition)")
	flag.StringVar(&managerBin, "manager", "", "the manager binary P3 runs (default: built from this checkout)")
	flag.StringVar(&apiserverProfilePath, "apiserver-cpuprofile", "", "instead of measuring: write a CPU profile of kube-apiserver (and with -cpuprofile of this process) over 8s of P1's claim bursts")
	flag.Parse()
	s := full
	if *short {
		s = small
	}
	root := testenv.RootDir()
	if *committed == "" {
		*committed = filepath.Join(root, "bench", "results.md")
	}
	if *out == "" && !*short {
		*out = filepath.Join(root, "bench", "results.md")
	}
	want := func(f string) bool { return *only == "" || slices.Contains(strings.Split(*only, ","), f) }
	// Read what is committed before anything is overwritten.
	previous, err := readResults(*committed)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	started, load := time.Now(), loadAverage()
	var all []rows.Row
	if want("P1") || want("P3") || want("P4") || want("P5") {
		rs, err := apiserverFigures(s, want, *cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		all = append(all, rs...)
	}
	for _, b := range []struct{ figure, pkg, bench, timeout string }{
		{"P2", "./internal/host/sshhost", "^BenchmarkP2$", "20m"},
		{"P6", "./test/e2e", "^BenchmarkP6$", "40m"},
		{"P6r", "./test/e2e", "^BenchmarkP6RealNodes$", "40m"},
		{"P7", "./test/e2e", "^BenchmarkP7$", "20m"},
	} {
		if !want(b.figure) {
			continue
		}
		rs, err := goBench(root, b.pkg, b.bench, b.timeout, s.short)
		if err != nil {
			all = append(all, rows.Row{Figure: b.figure, Err: err.Error()})
			continue
		}
		all = append(all, rs...)
	}
	slices.SortStableFunc(all, func(a, b rows.Row) int { return strings.Compare(a.Figure, b.Figure) })
	// P3's heap is shown beside the committed run's, to compare before and after.
	for i := range all {
		if all[i].Figure == "P3" && all[i].Detail != "" {
			all[i].Detail += committedHeap(*committed)
		}
	}
	m := describeMachine(load)
	table := render(all, previous, s.short)
	fmt.Printf("\n%s\n%s\n(%s in %s)\n", m, table, scaleName(s), time.Since(started).Round(time.Second))
	var missed []string
	for _, r := range all {
		if !r.Meets() {
			missed = append(missed, r.Figure)
		}
	}
	if len(missed) > 0 {
		fmt.Printf("MISSES: %s\n", strings.Join(missed, ", "))
	}
	// A missed goal is reported; a benchmark that could not run at all (moved, broken) fails the run, so it cannot
	// rot unnoticed.
	var broken []string
	for _, r := range all {
		if r.Err != "" {
			broken = append(broken, r.Figure+": "+r.Err)
		}
	}
	if *out != "" {
		if err := writeResults(*out, m, table, s); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Printf("wrote %s\n", *out)
	}
	if len(broken) > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d benchmark(s) could not run:\n  %s\n", len(broken), strings.Join(broken, "\n  "))
		os.Exit(1)
	}
}

var apiserverProfilePath, managerBin string

func scaleName(s scale) string {
	if s.short {
		return "short scale (BENCH_SHORT=1)"
	}
	return "full scale"
}

// goBench runs a benchmark of another package's test rig and returns the rows it reported.
func goBench(root, pkg, bench, timeout string, short bool) ([]rows.Row, error) {
	f, err := os.CreateTemp("", "capr-bench-rows-*")
	if err != nil {
		return nil, err
	}
	_ = f.Close()
	defer os.Remove(f.Name())
	args := []string{"test", "-tags", "integration", pkg, "-run", "^$", "-bench", bench, "-benchtime", "1x", "-count", "1", "-timeout", timeout}
	if short {
		args = append(args, "-short")
	}
	fmt.Printf("\n== go %s\n", strings.Join(args, " "))
	cmd := exec.Command("go", args...)
	cmd.Dir, cmd.Env = root, append(os.Environ(), rows.Env+"="+f.Name())
	if _, set := os.LookupEnv("P6_FLEET"); !set && !short {
		cmd.Env = append(cmd.Env, "P6_FLEET=200") // P6's row at 200 Machines on 200 hosts
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	runErr := cmd.Run()
	rs, err := rows.Read(f.Name())
	if err != nil {
		return nil, err
	}
	if runErr != nil && len(rs) == 0 {
		return nil, fmt.Errorf("go test %s -bench %s: %v", pkg, bench, runErr)
	}
	return rs, nil
}

// apiserverFigures measures P1, P3, P4 and P5 on one kube-apiserver and etcd, with CAPR's webhooks served by this
// process (and, for P3, CAPR's manager as a process of its own).
func apiserverFigures(s scale, want func(string) bool, cpuProfile string) ([]rows.Row, error) {
	env, err := testenv.Start(testenv.Options{Quiet: true})
	if err != nil {
		return nil, err
	}
	defer func() { _ = env.Stop() }()
	ctx := context.Background()
	if err := actAsInstalled(ctx, env); err != nil {
		return nil, err
	}
	var out []rows.Row
	fail := func(figure string, err error) { out = append(out, rows.Row{Figure: figure, Err: err.Error()}) }

	// P3's idle manager, before anything is stored. The manager process acts as the environment's own manager,
	// whose writes (binding a claim to its RemoteMachine) the environment's webhooks accept as CAPR's.
	var bin string
	var idle int64
	if want("P3") {
		dir, err := os.MkdirTemp("", "capr-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		bin = managerBin
		if bin == "" {
			bin, err = buildManager(env.RootDir, dir)
		}
		if err == nil {
			var m *managerProcess
			if m, err = startManager(bin, env.ManagerKubeconfig); err == nil {
				m.settle(s.idleSettle)
				idle, err = m.status("VmHWM")
				m.stop()
			}
		}
		if err != nil {
			fail("P3", err)
			bin = ""
		}
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}
	if err := env.Client.Create(ctx, ns); err != nil {
		return nil, err
	}
	start := time.Now()
	total := s.pools * s.perPool
	if err := parallel(total, 32, func(i int) error {
		return env.Client.Create(ctx, testenv.NewEntry(ns.Name, fmt.Sprintf("pool-%d", i%s.pools), i))
	}); err != nil {
		return nil, fmt.Errorf("creating the pools: %w", err)
	}
	if err := waitForCache(ctx, env, ns.Name, total); err != nil {
		return nil, err
	}
	fmt.Printf("setup: %d PooledRemoteMachines in %d pools created in %s\n", total, s.pools, time.Since(start).Round(time.Millisecond))

	if apiserverProfilePath != "" {
		done := make(chan error, 1)
		go func() { done <- apiserverProfile(ctx, env, 8, apiserverProfilePath) }()
		stopProfile := profile(cpuProfile)
		for r := 0; r < 4; r++ {
			_, err := timed(s.burst, func(i int) error {
				return env.Client.Create(ctx, testenv.NewPooledMachine(ns.Name, fmt.Sprintf("xp-%d-%03d", r, i), fmt.Sprintf("pool-%d", 6+r)))
			})
			if err != nil {
				return nil, err
			}
		}
		stopProfile()
		if err := <-done; err != nil {
			return nil, err
		}
		fmt.Printf("wrote %s\n", apiserverProfilePath)
		return nil, nil
	}
	if want("P1") {
		stopProfile := profile(cpuProfile)
		r, err := apiserverP1(ctx, env, ns.Name, s, total)
		stopProfile()
		if err != nil {
			fail("P1", err)
		} else {
			out = append(out, r)
		}
	}
	if want("P4") {
		if r, err := apiserverP4(ctx, env, ns.Name, s); err != nil {
			fail("P4", err)
		} else {
			out = append(out, r)
		}
	}
	if want("P5") {
		if rs, err := apiserverP5(ctx, env, s); err != nil {
			fail("P5", err)
		} else {
			out = append(out, rs...)
		}
	}
	if bin != "" {
		// Up to s.machines RemoteMachines in all, claimed from pools P1 and P4 leave alone.
		have := &infrav1.RemoteMachineList{}
		if err := env.Client.List(ctx, have); err != nil {
			return nil, err
		}
		more := max(s.machines-len(have.Items), 0)
		if err := parallel(more, 16, func(i int) error {
			return env.Client.Create(ctx, testenv.NewPooledMachine(ns.Name, fmt.Sprintf("p3-%04d", i), fmt.Sprintf("pool-%d", 6+i%4)))
		}); err != nil {
			fail("P3", fmt.Errorf("creating RemoteMachines: %w", err))
		} else if r, err := p3(ctx, env, bin, env.ManagerKubeconfig, idle, s.settle); err != nil {
			fail("P3", err)
		} else {
			out = append(out, r)
		}
	}
	return out, nil
}

func profile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil || pprof.StartCPUProfile(f) != nil {
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }
}

// timed runs n calls of f at once and returns the time until all returned.
func timed(n int, f func(int) error) (time.Duration, error) {
	start := time.Now()
	err := parallel(n, n, f)
	return time.Since(start), err
}

// parallel runs f(0..n-1) on at most workers goroutines and returns the first error.
func parallel(n, workers int, f func(int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func waitForCache(ctx context.Context, env *testenv.Environment, ns string, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		list := &infrav1.PooledRemoteMachineList{}
		if err := env.Manager.GetClient().List(ctx, list, client.InNamespace(ns)); err != nil {
			return err
		}
		if len(list.Items) >= n {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the manager's cache did not reach %d entries", n)
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return s[i].Round(10 * time.Microsecond)
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func round(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = ms(d)
	}
	return out
}

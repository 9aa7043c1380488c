// Command bench measures CAPR's speed targets on a real kube-apiserver and etcd, each against a baseline measured in
// the same run, and prints the ratios. It is run by `make bench`.
//
//	P1: 200 concurrent pooled RemoteMachine creates against a pool of 1,000 among 10,000 entries, until all 200 are
//	    stored with an address; baseline: 200 concurrent creates + 200 updates of ConfigMaps (the apiserver's floor
//	    for one stored object and one claimed entry each). Target: ratio <= 1.5.
//	P4: latency of a claiming create, one at a time; baseline: a plain GET. Target: p99 ratio <= 3.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

func main() {
	pools := flag.Int("pools", 10, "number of pools")
	perPool := flag.Int("entries-per-pool", 1000, "entries in each pool")
	burst := flag.Int("burst", 200, "concurrent creates in P1")
	rounds := flag.Int("rounds", 3, "P1 rounds; the median is reported")
	sequential := flag.Int("sequential", 200, "claiming creates timed one at a time in P4")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the bench process (webhook server included) to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*pools, *perPool, *burst, *rounds, *sequential); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(pools, perPool, burst, rounds, sequential int) error {
	if burst*rounds+sequential > perPool {
		return fmt.Errorf("a pool of %d cannot serve %d rounds of %d plus %d sequential claims", perPool, rounds, burst, sequential)
	}
	env, err := testenv.Start(testenv.Options{Quiet: true})
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}
	if err := env.Client.Create(ctx, ns); err != nil {
		return err
	}

	start := time.Now()
	total := pools * perPool
	if err := parallel(total, 32, func(i int) error {
		return env.Client.Create(ctx, testenv.NewEntry(ns.Name, fmt.Sprintf("pool-%d", i%pools), i))
	}); err != nil {
		return fmt.Errorf("creating the pools: %w", err)
	}
	if err := waitForCache(ctx, env, ns.Name, total); err != nil {
		return err
	}
	fmt.Printf("setup: %d PooledRemoteMachines in %d pools created in %s\n\n", total, pools, time.Since(start).Round(time.Millisecond))

	// P1.
	var floors, claims []time.Duration
	for r := range rounds {
		floor, err := timed(burst, func(i int) error {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: fmt.Sprintf("floor-%d-%03d", r, i)},
				Data: map[string]string{"address": "10.0.0.1", "user": "capr"}}
			if err := env.Client.Create(ctx, cm); err != nil {
				return err
			}
			cm.Data["claimedBy"] = cm.Name
			return env.Client.Update(ctx, cm)
		})
		if err != nil {
			return fmt.Errorf("P1 floor: %w", err)
		}
		claim, err := timed(burst, func(i int) error {
			m := testenv.NewPooledMachine(ns.Name, fmt.Sprintf("p1-%d-%03d", r, i), "pool-3")
			if err := env.Client.Create(ctx, m); err != nil {
				return err
			}
			if m.Spec.Address == "" {
				return fmt.Errorf("RemoteMachine %s stored without an address", m.Name)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("P1 claims: %w", err)
		}
		floors, claims = append(floors, floor), append(claims, claim)
	}
	floor, claim := median(floors), median(claims)
	fmt.Printf("P1  %d concurrent pooled RemoteMachine creates, pool of %d among %d entries (median of %d rounds)\n", burst, perPool, total, rounds)
	fmt.Printf("    baseline: %d ConfigMap creates + %d updates      %8s\n", burst, burst, floor.Round(time.Millisecond))
	fmt.Printf("    CAPR:     all %d stored holding a host           %8s\n", burst, claim.Round(time.Millisecond))
	report("P1 ratio", float64(claim)/float64(floor), 1.5)

	// P4.
	var gets, creates []time.Duration
	entry := testenv.NewEntry(ns.Name, "pool-0", 0)
	for i := range sequential {
		t0 := time.Now()
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(entry), &infrav1.PooledRemoteMachine{}); err != nil {
			return fmt.Errorf("P4 GET: %w", err)
		}
		gets = append(gets, time.Since(t0))
		t0 = time.Now()
		if err := env.Client.Create(ctx, testenv.NewPooledMachine(ns.Name, fmt.Sprintf("p4-%03d", i), "pool-5")); err != nil {
			return fmt.Errorf("P4 claiming create: %w", err)
		}
		creates = append(creates, time.Since(t0))
	}
	fmt.Printf("\nP4  latency, %d requests one at a time\n", sequential)
	fmt.Printf("    baseline: GET PooledRemoteMachine       p50 %8s  p99 %8s\n", pct(gets, 50), pct(gets, 99))
	fmt.Printf("    CAPR:     claiming RemoteMachine create p50 %8s  p99 %8s\n", pct(creates, 50), pct(creates, 99))
	report("P4 p99 ratio", float64(pct(creates, 99))/float64(pct(gets, 99)), 3)
	return nil
}

func report(name string, ratio, target float64) {
	verdict := "meets"
	if ratio > target {
		verdict = "MISSES"
	}
	fmt.Printf("    %s %.2f (target <= %.1f: %s)\n", name, ratio, target, verdict)
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

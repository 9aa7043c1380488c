//go:build integration && stress

// Package stress is `make stress`: CAPR under faults and load on the end-to-end rig (Cluster API's managers, CAPR
// installed by clusterctl and run as installed, real sshd hosts). It runs CAPR's manager as three replicas behind a
// round-robin webhook Service, kills them with SIGKILL, breaks hosts, and prints one table of figures against their
// goals; a figure that misses its goal fails the run. STRESS_FULL=1 runs the full sizes and writes the table to
// bench/stress.md; without it (CI) the same checks run at a small size.
package stress

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/e2e"
	"github.com/capr-project/cluster-api-provider-remote/test/mgmt"
	"github.com/capr-project/cluster-api-provider-remote/test/sshdtest"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

const (
	system  = "capr-system"
	cluster = "stress"
	ns      = "stress"
)

// size holds the figures that differ between the full run and CI's short one.
type size struct {
	claimBurst, claimRounds int // HA claims: concurrent creates per round (the pool's size), rounds
	hosts                   int // hosts of the MachineDeployment the failover and crash runs scale
	crashes                 int
}

var (
	full  = os.Getenv("STRESS_FULL") != ""
	sizes = map[bool]size{
		true:  {claimBurst: 200, claimRounds: 5, hosts: 8, crashes: 20},
		false: {claimBurst: 30, claimRounds: 2, hosts: 3, crashes: 3},
	}
)

// replicaArgs are the extra flags of every replica: short leader-election and retry timings so that a run takes
// minutes, not hours, and verbose logs so that the secrets scan reads everything CAPR can log.
var replicaArgs = []string{
	"--leader-elect-namespace=" + system,
	"--leader-elect-lease-duration=10s", "--leader-elect-renew-deadline=8s", "--leader-elect-retry-period=2s",
	"--retry-interval=2s", "--retry-max-interval=30s", "--cleanup-timeout=30s", "--orphan-claim-grace=15s",
	"--v=5",
}

// row is one line of the table.
type row struct {
	figure, measured, goal string
	ok                     bool
}

type stress struct {
	t   *testing.T
	e   *e2e.Env
	c   client.Client
	sz  size
	rng *rand.Rand

	mu       sync.Mutex
	replicas []*mgmt.InstalledManager // running
	started  []*mgmt.InstalledManager // every replica ever started, for the secrets scan
	rows     []row

	hosts    []*sshdtest.Host // the MachineDeployment "md"'s pool
	observed map[types.UID]bool
	// restarts counts replicas that exited by themselves (a leader that could not renew its Lease in time exits,
	// as Cluster API's managers do) and were started again, as a Deployment's Pod would be.
	restarts []string
}

// supervise starts again every replica that exited by itself, as the kubelet restarts a Pod's container.
func (s *stress) supervise() {
	s.t.Helper()
	s.mu.Lock()
	var exited []*mgmt.InstalledManager
	for _, m := range s.replicas {
		if m.Exited() {
			exited = append(exited, m)
		}
	}
	s.replicas = slices.DeleteFunc(s.replicas, func(m *mgmt.InstalledManager) bool { return slices.Contains(exited, m) })
	s.mu.Unlock()
	for _, m := range exited {
		why := "exited"
		for _, line := range strings.Split(m.Logs.String(), "\n") {
			if strings.Contains(line, "Manager stopped with an error") {
				why = line[strings.Index(line, "Manager stopped"):]
			}
		}
		s.restarts = append(s.restarts, why)
		s.t.Logf("replica exited, started again: %s", why)
		s.startReplica()
	}
	if len(exited) > 0 {
		s.setTargets()
	}
}

func TestMain(m *testing.M) {
	sshdtest.SuiteNeedsRoot("test/stress")
	// The clients' own logs say nothing worth reading; the managers' logs are kept per process.
	ctrl.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

func TestStress(t *testing.T) {
	start := time.Now()
	s := &stress{t: t, sz: sizes[full], observed: map[types.UID]bool{}}
	seed := uint64(time.Now().UnixNano())
	s.rng = rand.New(rand.NewPCG(seed, seed))
	t.Logf("random seed %d", seed)
	s.e = e2e.Start(t, func(m string) { t.Log(m) })
	s.c = s.e.Management.Client

	// Three replicas instead of the one installed, behind the webhook Service.
	s.e.CAPR.Stop()
	for range 3 {
		s.startReplica()
	}
	s.setTargets()

	s.prepareCluster()
	ok := t.Run("claims under HA", s.claimsUnderHA)
	s.supervise()
	ok = ok && t.Run("leader failover", s.leaderFailover)
	s.supervise()
	ok = ok && t.Run("crashes", s.crashes)
	s.supervise()
	ok = ok && t.Run("host faults", s.hostFaults)
	t.Run("secrets", s.secrets)
	s.report(time.Since(start), ok)
}

// startReplica starts one more replica of CAPR's manager as installed.
func (s *stress) startReplica() *mgmt.InstalledManager {
	s.t.Helper()
	m := mgmt.RunAsInstalled(s.t, s.e.Management, system, "capr-controller-manager", s.e.ManagerBinary(), replicaArgs...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicas = append(s.replicas, m)
	s.started = append(s.started, m)
	return m
}

// setTargets points the webhook Service at the running replicas, as a Service's endpoints follow ready Pods.
func (s *stress) setTargets() {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]string, 0, len(s.replicas))
	for _, m := range s.replicas {
		addrs = append(addrs, m.WebhookAddr)
	}
	s.e.CAPR.Redirect.SetTargets(addrs...)
}

// leader returns the replica holding the leader Lease: the one whose log says it acquired it.
func (s *stress) leader() *mgmt.InstalledManager {
	s.t.Helper()
	var leader *mgmt.InstalledManager
	NewWithT(s.t).Eventually(func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, m := range s.replicas {
			if !m.Exited() && strings.Contains(strings.ToLower(m.Logs.String()), "successfully acquired lease") {
				leader = m
				return true
			}
		}
		return false
	}, time.Minute, 200*time.Millisecond).Should(BeTrue(), "no replica leads")
	return leader
}

// kill kills a replica with SIGKILL, takes it out of the Service and starts a replacement.
func (s *stress) kill(m *mgmt.InstalledManager, replace bool) {
	m.Kill()
	s.mu.Lock()
	s.replicas = slices.DeleteFunc(s.replicas, func(r *mgmt.InstalledManager) bool { return r == m })
	s.mu.Unlock()
	s.setTargets()
	if replace {
		s.startReplica()
		s.setTargets()
	}
}

func (s *stress) add(figure, measured, goal string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, row{figure, measured, goal, ok})
	if !ok {
		s.t.Errorf("%s: %s misses its goal (%s)", figure, measured, goal)
	}
}

func (s *stress) report(took time.Duration, completed bool) {
	var b strings.Builder
	mode := "short (CI)"
	if full {
		mode = "full"
	}
	fmt.Fprintf(&b, "## make stress (%s mode), %s\n\n", mode, time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "%d CAPR replicas behind a round-robin webhook Service, Cluster API v1.14.2's managers, real sshd hosts; took %s.\n\n",
		3, took.Round(time.Second))
	fmt.Fprintf(&b, "| figure | measured | goal | verdict |\n|---|---|---|---|\n")
	for _, r := range s.rows {
		verdict := "meets"
		if !r.ok {
			verdict = "**MISSES**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.figure, r.measured, r.goal, verdict)
	}
	if len(s.restarts) > 0 {
		fmt.Fprintf(&b, "\nReplicas that exited by themselves and were started again (as a Pod's container is): %d\n", len(s.restarts))
		for _, why := range s.restarts {
			fmt.Fprintf(&b, "- %s\n", why)
		}
	}
	if !completed {
		b.WriteString("\nA scenario failed before it finished; see the test output.\n")
	}
	fmt.Println()
	fmt.Print(b.String())
	if full && completed && !s.t.Failed() {
		if err := os.WriteFile(filepath.Join(testenv.RootDir(), "bench", "stress.md"), []byte("# Stress results\n\n"+b.String()), 0o644); err != nil {
			s.t.Errorf("writing bench/stress.md: %v", err)
		}
	}
}

// apply applies a YAML document with kubectl, as a user does.
func (s *stress) apply(doc string) {
	s.t.Helper()
	out, err := mgmt.Kubectl(s.t, s.e.Management, doc, "apply", "-f", "-")
	NewWithT(s.t).Expect(err).NotTo(HaveOccurred(), out)
}

// claimsUnderHA creates, in rounds, as many pooled RemoteMachines at once as the pool has entries plus a tenth more,
// through three replicas serving the webhooks in turn, then deletes them all.
func (s *stress) claimsUnderHA(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const ns, poolName = "stress-ha", "ha"
	g.Expect(s.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	n := s.sz.claimBurst
	for i := range n {
		g.Expect(s.c.Create(ctx, testenv.NewEntry(ns, poolName, i))).To(Succeed())
	}
	extra := max(n/10, 3)
	var twice, leaked, refusedOK, refusedBad, stored int
	var transit atomic.Int64
	var slowest time.Duration
	for r := range s.sz.claimRounds {
		s.supervise()
		errs := make([]error, n+extra)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				// A call that never reached a webhook (a replica exiting mid-call) is retried, as a MachineSet does.
				for try := 0; ; try++ {
					errs[i] = s.c.Create(ctx, testenv.NewPooledMachine(ns, fmt.Sprintf("r%d-%03d", r, i), poolName))
					if try == 3 || errs[i] == nil || !strings.Contains(errs[i].Error(), "failed calling webhook") {
						return
					}
					transit.Add(1)
				}
			})
		}
		wg.Wait()
		roundStored := 0
		for _, err := range errs {
			switch {
			case err == nil:
				roundStored++
			case strings.Contains(err.Error(), `no free PooledRemoteMachine in pool "`+poolName+`"`):
				refusedOK++
			default:
				refusedBad++
				t.Logf("a refusal that does not name the pool: %v", err)
			}
		}
		stored += roundStored

		// Each stored RemoteMachine holds one entry, which names it back; no entry is named twice.
		machines := &infrav1.RemoteMachineList{}
		g.Expect(s.c.List(ctx, machines, client.InNamespace(ns))).To(Succeed())
		entries := &infrav1.PooledRemoteMachineList{}
		g.Expect(s.c.List(ctx, entries, client.InNamespace(ns))).To(Succeed())
		claimedBy := map[string]int{}
		for _, e := range entries.Items {
			if e.Spec.ClaimRef != nil {
				claimedBy[e.Spec.ClaimRef.Name]++
			}
		}
		addresses := map[string]int{}
		for _, m := range machines.Items {
			addresses[m.Spec.Address]++
			if claimedBy[m.Name] != 1 {
				twice++
				t.Logf("RemoteMachine %s is named by %d entries", m.Name, claimedBy[m.Name])
			}
		}
		for a, k := range addresses {
			if k > 1 {
				twice += k - 1
				t.Logf("%d RemoteMachines hold host %s", k, a)
			}
		}

		// Deleting them all returns every entry; a claim whose RemoteMachine was never stored is released after the
		// grace period (15 s here).
		deleted := time.Now()
		g.Expect(s.c.DeleteAllOf(ctx, &infrav1.RemoteMachine{}, client.InNamespace(ns))).To(Succeed())
		claimed := func() int {
			g.Expect(s.c.List(ctx, entries, client.InNamespace(ns))).To(Succeed())
			k := 0
			for _, e := range entries.Items {
				if e.Spec.ClaimRef != nil {
					k++
				}
			}
			return k
		}
		// A leak is what remains once the wait is over: counted, not failed on here.
		quiet := NewGomega(func(string, ...int) {})
		quiet.Eventually(claimed, 45*time.Second, 250*time.Millisecond).Should(BeZero())
		leaked += claimed()
		slowest = max(slowest, time.Since(deleted))
		g.Eventually(func() int {
			_ = s.c.List(ctx, machines, client.InNamespace(ns))
			return len(machines.Items)
		}, time.Minute, 250*time.Millisecond).Should(BeZero(), "RemoteMachines stuck on their finalizer")
	}
	rounds := fmt.Sprintf("%d rounds of %d creates at once against a pool of %d", s.sz.claimRounds, n+extra, n)
	s.add("HA claims: entries claimed twice", fmt.Sprintf("%d (%s; %d stored)", twice, rounds, stored), "0", twice == 0)
	s.add("HA claims: every pool entry used each round", fmt.Sprintf("%d of %d", stored, n*s.sz.claimRounds), fmt.Sprint(n*s.sz.claimRounds), stored == n*s.sz.claimRounds)
	s.add("HA claims: claims leaked after deletion + 15 s grace", fmt.Sprintf("%d (slowest round freed in %s)", leaked, slowest.Round(100*time.Millisecond)), "0", leaked == 0)
	s.add("HA claims: refusals that name the pool", fmt.Sprintf("%d of %d (%d calls failed in transit and were retried)", refusedOK, refusedOK+refusedBad, transit.Load()),
		"all", refusedBad == 0 && refusedOK == extra*s.sz.claimRounds)
}

// prepareCluster creates the workload cluster the failover, crash and fault runs join: a Cluster whose first
// control-plane machine (a direct RemoteMachine) initialises it.
func (s *stress) prepareCluster() {
	t := s.t
	cp := s.e.AddHost("stress-cp")
	endpoint := s.e.PrepareNamespace(ns, cluster)
	s.apply(fmt.Sprintf(clusterDoc, endpoint.Host, endpoint.Port, cp.Address, cp.Port))
	s.e.ShareClusterCA(ns, cluster)
	NewWithT(t).Eventually(func(g Gomega) {
		m := &clusterv1.Machine{}
		g.Expect(s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: cluster + "-cp"}, m)).To(Succeed())
		g.Expect(m.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)))
	}, 3*time.Minute, time.Second).Should(Succeed(), "the control-plane machine")
}

// deployment applies a pool of hosts and a MachineDeployment of 0 replicas on it, whose bootstrap records the
// RemoteMachine's UID on the host (from CAPR's marker) before joining, after sleeping a while.
func (s *stress) deployment(name string, sleep int, hosts []*sshdtest.Host, mutate func(int, *infrav1.PooledRemoteMachine)) {
	s.t.Helper()
	g := NewWithT(s.t)
	for i, h := range hosts {
		e := &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%d", name, i)}}
		e.Spec.Pool = name
		e.Spec.Machine.Address, e.Spec.Machine.Port = h.Address, int32(h.Port)
		e.Spec.Machine.SSHKeyRef = &infrav1.SecretReference{Name: "ssh-key"}
		if mutate != nil {
			mutate(i, e)
		}
		g.Expect(s.c.Create(context.Background(), e)).To(Succeed())
	}
	s.apply(fmt.Sprintf(deploymentDoc, name, sleep))
}

func (s *stress) scale(name string, replicas int32) {
	s.t.Helper()
	md := &clusterv1.MachineDeployment{}
	g := NewWithT(s.t)
	g.Eventually(func() error {
		if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, md); err != nil {
			return err
		}
		md.Spec.Replicas = &replicas
		return s.c.Update(context.Background(), md)
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}

// machines returns a MachineDeployment's RemoteMachines.
func (s *stress) remoteMachines(g Gomega, pool string) []infrav1.RemoteMachine {
	list := &infrav1.RemoteMachineList{}
	g.Expect(s.c.List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	return slices.DeleteFunc(list.Items, func(m infrav1.RemoteMachine) bool { return m.Spec.Pool != pool })
}

// waitRunning waits until a MachineDeployment has n Machines, all Running with a Node, and records their
// RemoteMachines' UIDs as bootstrapped.
func (s *stress) waitRunning(name string, n int, within time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	NewWithT(s.t).Eventually(func(g Gomega) {
		s.supervise()
		machines := &clusterv1.MachineList{}
		g.Expect(s.c.List(context.Background(), machines, client.InNamespace(ns),
			client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: name})).To(Succeed())
		g.Expect(machines.Items).To(HaveLen(n))
		for _, m := range machines.Items {
			g.Expect(m.Status.Phase).To(Equal(string(clusterv1.MachinePhaseRunning)), "Machine %s", m.Name)
			g.Expect(m.Status.NodeRef.IsDefined()).To(BeTrue())
		}
		for _, rm := range s.remoteMachines(g, name) {
			g.Expect(rm.Status.Initialization.Provisioned).To(HaveValue(BeTrue()))
		}
	}, within, time.Second).Should(Succeed(), "MachineDeployment %s: %d Machines Running", name, n)
	for _, rm := range s.remoteMachines(NewWithT(s.t), name) {
		s.observed[rm.UID] = true
	}
	return time.Since(start)
}

// waitGone waits until a MachineDeployment has no Machines and no RemoteMachines, and its pool's entries are free.
func (s *stress) waitGone(name string, within time.Duration) {
	s.t.Helper()
	NewWithT(s.t).Eventually(func(g Gomega) {
		s.supervise()
		machines := &clusterv1.MachineList{}
		g.Expect(s.c.List(context.Background(), machines, client.InNamespace(ns),
			client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: name})).To(Succeed())
		g.Expect(machines.Items).To(BeEmpty())
		g.Expect(s.remoteMachines(g, name)).To(BeEmpty())
		entries := &infrav1.PooledRemoteMachineList{}
		g.Expect(s.c.List(context.Background(), entries, client.InNamespace(ns))).To(Succeed())
		for _, e := range entries.Items {
			if e.Spec.Pool == name {
				g.Expect(e.Spec.ClaimRef).To(BeNil(), "entry %s", e.Name)
			}
		}
	}, within, time.Second).Should(Succeed(), "MachineDeployment %s scaled to 0: every deletion completes and frees its host", name)
}

// bootstraps returns the RemoteMachine UIDs whose bootstrap ran on a host, in order, as the bootstrap recorded them
// (the host's marker holds namespace/name/UID).
func bootstraps(h *sshdtest.Host) []string {
	data, _ := os.ReadFile(filepath.Join(h.Dir, "etc", "capr-e2e", "bootstraps"))
	uids := strings.Fields(string(data))
	for i, id := range uids {
		uids[i] = id[strings.LastIndex(id, "/")+1:]
	}
	return uids
}

// exactlyOnce checks, over hosts, that no RemoteMachine's bootstrap ran twice, that every bootstrap that ran
// belongs to a machine seen Running, and that kubeadm join ran once per bootstrap.
func (s *stress) exactlyOnce(hosts []*sshdtest.Host) (runs, twice, unseen, joinsOff int) {
	seen := map[string]int{}
	for _, h := range hosts {
		b := bootstraps(h)
		for _, uid := range b {
			seen[uid]++
			if !s.observed[types.UID(uid)] {
				unseen++
			}
		}
		runs += len(b)
		if e2e.Runs(h, "join") != len(b) {
			joinsOff++
			s.t.Logf("host %s: %d bootstraps, %d kubeadm joins", h.Address, len(b), e2e.Runs(h, "join"))
		}
	}
	for uid, k := range seen {
		if k > 1 {
			twice++
			s.t.Logf("RemoteMachine %s bootstrapped %d times", uid, k)
		}
	}
	return runs, twice, unseen, joinsOff
}

// leaderFailover kills the leader with SIGKILL while bootstraps run, and again while cleanups run.
func (s *stress) leaderFailover(t *testing.T) {
	g := NewWithT(t)
	for i := range s.sz.hosts {
		s.hosts = append(s.hosts, s.e.AddHost(fmt.Sprintf("stress-md-%d", i)))
	}
	s.deployment("md", 3, s.hosts, nil)

	// During bootstraps: once a run has started on a host.
	s.scale("md", int32(len(s.hosts)))
	g.Eventually(func() bool {
		for _, h := range s.hosts {
			if len(bootstraps(h)) > 0 {
				return true
			}
		}
		return false
	}, 3*time.Minute, 100*time.Millisecond).Should(BeTrue(), "a bootstrap starts")
	old := s.leader()
	killed := time.Now()
	s.kill(old, true)
	s.waitRunning("md", len(s.hosts), 4*time.Minute)
	took := time.Since(killed)
	newLeader := s.leader()
	g.Expect(newLeader).NotTo(BeIdenticalTo(old))

	// During cleanups: once a RemoteMachine is being deleted.
	s.scale("md", 0)
	g.Eventually(func(g Gomega) bool {
		for _, rm := range s.remoteMachines(g, "md") {
			if !rm.DeletionTimestamp.IsZero() {
				return true
			}
		}
		return false
	}, 2*time.Minute, 100*time.Millisecond).Should(BeTrue(), "a deletion starts")
	s.kill(s.leader(), true)
	s.waitGone("md", 3*time.Minute)

	runs, twice, unseen, joinsOff := s.exactlyOnce(s.hosts)
	resets := 0
	for _, h := range s.hosts {
		resets += e2e.Runs(h, "reset")
	}
	s.add("leader failover: bootstraps run twice", fmt.Sprintf("%d (%d machines, leader killed during their bootstraps; all Running %s after the kill)",
		twice+unseen+joinsOff, runs, took.Round(time.Second)), "0", twice+unseen+joinsOff == 0 && runs == len(s.hosts))
	s.add("leader failover: deletions completed, hosts cleaned", fmt.Sprintf("%d of %d (leader killed during cleanups)", resets, len(s.hosts)), fmt.Sprint(len(s.hosts)), resets == len(s.hosts))
}

// crashes runs a single replica, scales the MachineDeployment up and down, and kills the manager with SIGKILL at a
// random point of each bootstrap or cleanup wave, starting it again at once.
func (s *stress) crashes(t *testing.T) {
	s.mu.Lock()
	extra := slices.Clone(s.replicas[1:])
	s.mu.Unlock()
	for _, m := range extra {
		m.Stop()
		s.mu.Lock()
		s.replicas = slices.DeleteFunc(s.replicas, func(r *mgmt.InstalledManager) bool { return r == m })
		s.mu.Unlock()
	}
	s.setTargets()
	defer func() {
		for len(s.replicas) < 3 {
			s.startReplica()
		}
		s.setTargets()
	}()

	resetsBefore := 0
	for _, h := range s.hosts {
		resetsBefore += e2e.Runs(h, "reset")
	}
	var points []string
	for i := range s.sz.crashes {
		up := i%2 == 0
		if up {
			s.scale("md", int32(len(s.hosts)))
		} else {
			s.scale("md", 0)
		}
		delay := time.Duration(s.rng.IntN(8000)) * time.Millisecond
		time.Sleep(delay) // the random crash point, not a synchronisation: the manager is killed whatever it is doing
		s.mu.Lock()
		m := s.replicas[0]
		s.mu.Unlock()
		s.kill(m, true)
		if up {
			points = append(points, fmt.Sprintf("up+%.1fs", delay.Seconds()))
			s.waitRunning("md", len(s.hosts), 4*time.Minute)
		} else {
			points = append(points, fmt.Sprintf("down+%.1fs", delay.Seconds()))
			s.waitGone("md", 4*time.Minute)
		}
	}
	s.scale("md", 0)
	s.waitGone("md", 4*time.Minute)
	t.Logf("crash points: %s", strings.Join(points, " "))

	runs, twice, unseen, joinsOff := s.exactlyOnce(s.hosts)
	resets := -resetsBefore
	for _, h := range s.hosts {
		resets += e2e.Runs(h, "reset")
	}
	// Every wave up is followed by one down; the leader-failover run bootstrapped the hosts once before.
	ups := (s.sz.crashes + 1) / 2
	s.add("crashes: bootstraps run twice", fmt.Sprintf("%d (manager SIGKILLed %d times at random points: %s; %d bootstraps in all)",
		twice+unseen+joinsOff, s.sz.crashes, strings.Join(points, " "), runs),
		"0", twice+unseen+joinsOff == 0 && runs == len(s.hosts)*(1+ups))
	s.add("crashes: deletions completed, hosts cleaned", fmt.Sprintf("%d of %d", resets, len(s.hosts)*ups), fmt.Sprint(len(s.hosts)*ups), resets == len(s.hosts)*ups)
}

// fault is a host broken in one way.
type fault struct {
	name   string
	reason string
	// terminal faults are not retried.
	terminal bool
	host     *sshdtest.Host
	// breakHost breaks the host before its machine is created (nil: during the bootstrap); fix mends it.
	breakHost, fix func()
	mutate         func(int, *infrav1.PooledRemoteMachine)
}

// hostFaults breaks one host per fault, each under a MachineDeployment of one machine, next to a healthy one.
func (s *stress) hostFaults(t *testing.T) {
	g := NewWithT(t)
	must := func(out string, err error) {
		t.Helper()
		g.Expect(err).NotTo(HaveOccurred(), out)
	}
	keys := func(h *sshdtest.Host) string { return filepath.Join(h.Dir, "keys", "root") }
	var rotated *sshdtest.Host
	faults := []*fault{
		{name: "sshd-stopped", reason: infrav1.HostUnreachableReason},
		{name: "key-rotated", reason: infrav1.HostKeyMismatchReason, terminal: true},
		{name: "key-removed", reason: infrav1.AuthFailedReason},
		{name: "sudo-revoked", reason: infrav1.SudoUnavailableReason},
		{name: "disk-full", reason: infrav1.HostDiskFullReason},
	}
	for _, f := range faults {
		if f.name == "sudo-revoked" {
			f.host = s.e.AddHostWith("stress-"+f.name, sshdtest.User{Name: "capr", Sudo: true})
		} else {
			f.host = s.e.AddHost("stress-" + f.name)
		}
		h := f.host
		switch f.name {
		case "sshd-stopped":
			f.fix = h.StartSSHD
		case "key-rotated":
			// The entry pins the key the host had; the host is reinstalled with a new one.
			pinned := h.HostKey
			f.mutate = func(_ int, e *infrav1.PooledRemoteMachine) { e.Spec.Machine.HostKeys = []string{pinned} }
			f.breakHost = func() { h.RotateHostKey(); h.Restart() }
			rotated = h
		case "key-removed":
			var saved []byte
			f.breakHost = func() {
				var err error
				saved, err = os.ReadFile(keys(h))
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(os.WriteFile(keys(h), nil, 0o644)).To(Succeed())
			}
			f.fix = func() { g.Expect(os.WriteFile(keys(h), saved, 0o644)).To(Succeed()) }
		case "sudo-revoked":
			sudoers := filepath.Join(h.Dir, "etc", "sudoers.d", "capr-capr")
			f.mutate = func(_ int, e *infrav1.PooledRemoteMachine) {
				e.Spec.Machine.User, e.Spec.Machine.UseSudo = "capr", true
			}
			f.breakHost = func() { g.Expect(os.Rename(sudoers, sudoers+".off")).To(Succeed()) }
			f.fix = func() { g.Expect(os.Rename(sudoers+".off", sudoers)).To(Succeed()) }
		case "disk-full":
			f.breakHost = func() {
				must(h.Exec("mount -t tmpfs -o size=16k tmpfs /var/lib/capr && (dd if=/dev/zero of=/var/lib/capr/fill bs=4k count=64 2>/dev/null; true)"))
			}
			f.fix = func() { must(h.Exec("rm -f /var/lib/capr/fill")) }
		}
		sleep := 0
		if f.name == "sshd-stopped" {
			sleep = 8 // long enough to stop sshd in the middle
		}
		s.deployment(f.name, sleep, []*sshdtest.Host{h}, f.mutate)
		if f.breakHost != nil {
			f.breakHost()
		}
	}
	healthy := s.e.AddHost("stress-healthy")
	s.deployment("healthy", 0, []*sshdtest.Host{healthy}, nil)

	for _, f := range faults {
		s.scale(f.name, 1)
	}
	s.scale("healthy", 1)

	// sshd stops in the middle of the run.
	stopped := faults[0]
	g.Eventually(func() []string { return bootstraps(stopped.host) }, 2*time.Minute, 100*time.Millisecond).ShouldNot(BeEmpty(), "the bootstrap starts")
	stopped.host.StopSSHD()

	healthyTook := s.waitRunning("healthy", 1, 2*time.Minute)
	s.add("host faults: a healthy machine next to the broken hosts", fmt.Sprintf("Running in %s", healthyTook.Round(time.Second)), "Running", true)

	for _, f := range faults {
		var rm infrav1.RemoteMachine
		g.Eventually(func(g Gomega) string {
			rms := s.remoteMachines(g, f.name)
			g.Expect(rms).To(HaveLen(1))
			rm = rms[0]
			c := conditionOf(rm.Status.Conditions, infrav1.BootstrapSucceededCondition)
			g.Expect(c).NotTo(BeNil())
			return c.Reason
		}, 2*time.Minute, 250*time.Millisecond).Should(Equal(f.reason), "fault %s", f.name)
		if f.terminal {
			continue
		}
		// Backoff: the waits logged for this machine grow.
		var waits []time.Duration
		g.Eventually(func() int {
			waits = s.retryWaits(rm.Name)
			return len(waits)
		}, 2*time.Minute, 500*time.Millisecond).Should(BeNumerically(">=", 3), "fault %s: three failed attempts", f.name)
		growing := slices.IsSorted(waits) && waits[len(waits)-1] > waits[0]
		f.fix()
		took := s.waitRunning(f.name, 1, 2*time.Minute)
		runs := len(bootstraps(f.host))
		s.add("host fault "+f.name, fmt.Sprintf("%s; waits %s; Running %s after the fix; bootstrap ran %d time(s)",
			f.reason, durations(waits), took.Round(time.Second), runs),
			f.reason+", growing waits, Running once fixed, run once", growing && runs == 1)
	}

	// The rotated key: refused, never retried, nothing run; the machine's deletion quarantines the entry it could
	// not clean.
	rms := s.remoteMachines(g, "key-rotated")
	g.Expect(rms).To(HaveLen(1))
	retried := len(s.retryWaits(rms[0].Name))
	ran := len(bootstraps(rotated))
	s.scale("key-rotated", 0)
	var entryReason string
	g.Eventually(func(g Gomega) {
		g.Expect(s.remoteMachines(g, "key-rotated")).To(BeEmpty())
		e := &infrav1.PooledRemoteMachine{}
		g.Expect(s.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "key-rotated-0"}, e)).To(Succeed())
		g.Expect(e.Spec.ClaimRef).To(BeNil())
		g.Expect(e.Spec.Quarantine).NotTo(BeNil())
		entryReason = "quarantined (" + e.Spec.Quarantine.Reason + ")"
	}, 3*time.Minute, time.Second).Should(Succeed(), "the machine on the rotated host is deleted and its entry quarantined")
	s.add("host fault key-rotated", fmt.Sprintf("%s; retried %d times; ran %d times; on deletion the entry is %s", infrav1.HostKeyMismatchReason, retried, ran, entryReason),
		"HostKeyMismatch, not retried, nothing run, entry quarantined", retried == 0 && ran == 0)
}

var retryLine = regexp.MustCompile(`failed; retrying.*after="([^"]+)"`)

// retryWaits returns the backoff waits the replicas logged for a RemoteMachine, in the order they were logged.
func (s *stress) retryWaits(name string) []time.Duration {
	s.mu.Lock()
	started := slices.Clone(s.started)
	s.mu.Unlock()
	var waits []time.Duration
	for _, m := range started {
		for _, line := range strings.Split(m.Logs.String(), "\n") {
			if !strings.Contains(line, `RemoteMachine="`+ns+"/"+name+`"`) && !strings.Contains(line, `"`+name+`"`) {
				continue
			}
			if sub := retryLine.FindStringSubmatch(line); sub != nil {
				if d, err := time.ParseDuration(sub[1]); err == nil {
					waits = append(waits, d)
				}
			}
		}
	}
	return waits
}

func durations(d []time.Duration) string {
	parts := make([]string, len(d))
	for i, x := range d {
		parts[i] = x.String()
	}
	return strings.Join(parts, ", ")
}

func conditionOf(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// secrets scans every log line of every CAPR replica of the run, every event and every object status for key
// material and bootstrap data.
func (s *stress) secrets(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	var corpus strings.Builder
	s.mu.Lock()
	for _, m := range s.started {
		corpus.WriteString(m.Logs.String())
	}
	logBytes := corpus.Len()
	s.mu.Unlock()

	dump := func(list client.ObjectList) {
		g.Expect(s.c.List(ctx, list)).To(Succeed())
		data, err := yaml.Marshal(list)
		g.Expect(err).NotTo(HaveOccurred())
		corpus.Write(data)
	}
	dump(&eventsv1.EventList{})
	dump(&corev1.EventList{})
	dump(&infrav1.RemoteMachineList{})
	dump(&infrav1.PooledRemoteMachineList{})
	dump(&infrav1.RemoteClusterList{})
	dump(&clusterv1.MachineList{})
	dump(&clusterv1.MachineSetList{})
	dump(&clusterv1.MachineDeploymentList{})
	dump(&clusterv1.ClusterList{})
	text := corpus.String()

	// What must not be there: the SSH key's and every bootstrap Secret's private keys and tokens.
	var needles []string
	for _, line := range strings.Split(string(s.e.Hosts[0].ClientKeyPEM), "\n") {
		if len(line) >= 24 && !strings.HasPrefix(line, "-----") {
			needles = append(needles, line[:24])
		}
	}
	token := regexp.MustCompile(`\b[a-z0-9]{6}\.[a-z0-9]{16}\b`)
	base64Line := regexp.MustCompile(`[A-Za-z0-9+/=]{60,}`)
	secrets := &corev1.SecretList{}
	g.Expect(s.c.List(ctx, secrets, client.InNamespace(ns))).To(Succeed())
	bootstrapSecrets := 0
	for _, sec := range secrets.Items {
		if sec.Type != "cluster.x-k8s.io/secret" || sec.Data["value"] == nil {
			continue
		}
		bootstrapSecrets++
		value := string(sec.Data["value"])
		needles = append(needles, token.FindAllString(value, -1)...)
		for _, b := range base64Line.FindAllString(value, -1) {
			needles = append(needles, b[:40])
		}
	}
	needles = slices.Compact(slices.Sorted(slices.Values(needles)))
	found := 0
	for _, n := range needles {
		if strings.Contains(text, n) {
			found++
			t.Logf("found secret material %q… in the logs, events or statuses", n[:8])
		}
	}
	for _, m := range []string{"PRIVATE KEY", "BEGIN OPENSSH"} {
		if strings.Contains(text, m) {
			found++
			t.Logf("found %q in the logs, events or statuses", m)
		}
	}
	// Any other string shaped like a bootstrap token (an older, rotated token), except event names
	// (<object>.<16 hex digits>): a random token's secret is all hex once in half a million.
	hex := regexp.MustCompile(`^[0-9a-f]{16}$`)
	for _, tok := range token.FindAllString(text, -1) {
		if hex.MatchString(tok[7:]) {
			continue
		}
		found++
		t.Logf("found a bootstrap-token-shaped string %s…", tok[:6])
	}
	s.add("secrets in logs, events, conditions", fmt.Sprintf("%d (%d needles from the SSH key and %d bootstrap Secrets, in %d KB of logs at -v=5 and %d KB of events and statuses)",
		found, len(needles), bootstrapSecrets, logBytes/1024, (len(text)-logBytes)/1024), "0", found == 0 && bootstrapSecrets > 0)
}

// clusterDoc is the workload cluster: a Cluster on a RemoteCluster whose first machine initialises it.
const clusterDoc = `apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata:
  name: stress
  namespace: stress
spec:
  controlPlaneEndpoint:
    host: %s
    port: %d
  infrastructureRef:
    apiGroup: infrastructure.cluster.x-k8s.io
    kind: RemoteCluster
    name: stress
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteCluster
metadata:
  name: stress
  namespace: stress
spec: {}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: Machine
metadata:
  name: stress-cp
  namespace: stress
  labels:
    cluster.x-k8s.io/control-plane: ""
spec:
  clusterName: stress
  version: v1.36.3
  bootstrap:
    configRef:
      apiGroup: bootstrap.cluster.x-k8s.io
      kind: KubeadmConfig
      name: stress-cp
  infrastructureRef:
    apiGroup: infrastructure.cluster.x-k8s.io
    kind: RemoteMachine
    name: stress-cp
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfig
metadata:
  name: stress-cp
  namespace: stress
spec:
  initConfiguration:
    nodeRegistration:
      name: '{{ ds.meta_data.local_hostname }}'
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachine
metadata:
  name: stress-cp
  namespace: stress
spec:
  address: %s
  port: %d
  user: root
  sshKeyRef:
    name: ssh-key
`

// deploymentDoc is a MachineDeployment of kubeadm workers on the pool of its name. Its bootstrap appends the
// RemoteMachine's UID (CAPR's marker) to /etc/capr-e2e/bootstraps on the host and sleeps before joining.
const deploymentDoc = `apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: RemoteMachineTemplate
metadata:
  name: %[1]s
  namespace: stress
spec:
  template:
    spec:
      pool: %[1]s
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata:
  name: %[1]s
  namespace: stress
spec:
  template:
    spec:
      preKubeadmCommands:
      - cat /var/lib/capr/bootstrap.uid >> /etc/capr-e2e/bootstraps
      - sleep %[2]d
      joinConfiguration:
        nodeRegistration:
          name: '{{ ds.meta_data.local_hostname }}'
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata:
  name: %[1]s
  namespace: stress
spec:
  clusterName: stress
  replicas: 0
  selector:
    matchLabels: {}
  template:
    spec:
      clusterName: stress
      version: v1.36.3
      bootstrap:
        configRef:
          apiGroup: bootstrap.cluster.x-k8s.io
          kind: KubeadmConfigTemplate
          name: %[1]s
      infrastructureRef:
        apiGroup: infrastructure.cluster.x-k8s.io
        kind: RemoteMachineTemplate
        name: %[1]s
`

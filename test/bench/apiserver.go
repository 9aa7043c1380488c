package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/bench/rows"
	"github.com/capr-project/cluster-api-provider-remote/test/measure"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

var tryClaimLever bool

// leverCondition is the experiment -try-claim-lever installs on the PooledRemoteMachine webhook: the webhook is not
// called for an update that changes nothing in spec but the claim, by an identity granted the verb "claim" on
// pooledremotemachines cluster-wide (a tenant's RoleBinding cannot grant it) and not every verb (an administrator,
// system:masters, a role with verbs "*" still go through the webhook, which refuses them a claim change). For such an
// update the webhook checks only who writes. Measured on 2 shared cores it saved about a tenth of a claim's CPU.
const leverCondition = `!(request.operation == 'UPDATE' && has(object.spec) && has(oldObject.spec) &&
  object.spec.all(k, k == 'claimRef' || (k in oldObject.spec && oldObject.spec[k] == object.spec[k])) &&
  oldObject.spec.all(k, k == 'claimRef' || k in object.spec) &&
  authorizer.group('infrastructure.cluster.x-k8s.io').resource('pooledremotemachines').check('claim').allowed() &&
  !authorizer.group('infrastructure.cluster.x-k8s.io').resource('pooledremotemachines').check('capr-not-granted').allowed())`

// managerSA is the ServiceAccount CAPR's manager runs as once installed (config/rbac, namePrefix capr-).
const managerSA = "capr-manager"

// actAsInstalled makes the environment's claims write as CAPR's manager does once installed: as the
// ServiceAccount capr-system/capr-manager bound to CAPR's ClusterRole (config/rbac/role.yaml), rather than as the
// environment's administrator. The installed PooledRemoteMachine webhook is not called for the claims of an
// identity granted the verb "claim" (and not every verb) on pooledremotemachines cluster-wide, which an
// administrator's are not.
func actAsInstalled(ctx context.Context, env *testenv.Environment) error {
	c := env.Client
	if tryClaimLever {
		if err := installLever(ctx, c); err != nil {
			return err
		}
	}
	vwc := &admissionv1.ValidatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: "validating-webhook-configuration"}, vwc); err != nil {
		return err
	}
	lever := false
	for _, w := range vwc.Webhooks {
		lever = lever || (strings.HasPrefix(w.Name, "validation.pooledremotemachine.") && len(w.MatchConditions) > 0)
	}
	if !lever {
		// The environment's webhooks only accept claims written as the environment's manager.
		return nil
	}
	data, err := os.ReadFile(filepath.Join(env.RootDir, "config", "rbac", "role.yaml"))
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(data, role); err != nil {
		return err
	}
	role.Name = "capr-manager-role"
	if tryClaimLever {
		role.Rules = append(role.Rules, rbacv1.PolicyRule{APIGroups: []string{infrav1.GroupVersion.Group}, Resources: []string{"pooledremotemachines"}, Verbs: []string{"claim"}})
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: testenv.ManagerNamespace, Name: managerSA}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "capr-manager-rolebinding"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: sa.Namespace, Name: sa.Name}}}
	for _, o := range []client.Object{role, sa, binding} {
		if err := c.Create(ctx, o); err != nil {
			return err
		}
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return err
	}
	token, err := cs.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](7200)}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = token.Status.Token
	cfg.QPS, cfg.Burst = env.Config.QPS, env.Config.Burst
	writer, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		return err
	}
	// Wait until RBAC lets it read.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := writer.List(ctx, &infrav1.PooledRemoteMachineList{}, client.Limit(1))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the manager's ServiceAccount cannot list pool entries: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	env.Claimer.Writer = writer
	return nil
}

func installLever(ctx context.Context, c client.Client) error {
	vwc := &admissionv1.ValidatingWebhookConfiguration{}
	if err := c.Get(ctx, client.ObjectKey{Name: "validating-webhook-configuration"}, vwc); err != nil {
		return err
	}
	for i := range vwc.Webhooks {
		if strings.Contains(vwc.Webhooks[i].Name, "pooledremotemachine") {
			vwc.Webhooks[i].MatchConditions = []admissionv1.MatchCondition{{Name: "not-capr-claim", Expression: leverCondition}}
		}
	}
	if err := c.Update(ctx, vwc); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	return nil
}

// apiserverP1 measures P1: burst concurrent pooled RemoteMachine creates against burst ConfigMap creates + updates.
func apiserverP1(ctx context.Context, env *testenv.Environment, ns string, s scale, total int) (rows.Row, error) {
	var floors, bares, claims []time.Duration
	var floorCPU, bareCPU, claimCPU []cpuUse
	bare, restore, err := noWebhookFloor(ctx, env, "bench-floor", s.burst, s.rounds)
	if err != nil {
		return rows.Row{}, fmt.Errorf("P1 no-webhook floor: %w", err)
	}
	for r := range s.rounds {
		cpu := startCPU()
		d, err := timed(s.burst, func(i int) error { return bare(r, i) })
		if err != nil {
			restore()
			return rows.Row{}, fmt.Errorf("P1 no-webhook floor: %w", err)
		}
		bareCPU, bares = append(bareCPU, cpu.stop()), append(bares, d)
	}
	restore()
	for r := range s.rounds {
		cpu := startCPU()
		floor, err := timed(s.burst, func(i int) error {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("floor-%d-%03d", r, i)},
				Data: map[string]string{"address": "10.0.0.1", "user": "capr"}}
			if err := env.Client.Create(ctx, cm); err != nil {
				return err
			}
			cm.Data["claimedBy"] = cm.Name
			return env.Client.Update(ctx, cm)
		})
		if err != nil {
			return rows.Row{}, fmt.Errorf("P1 floor: %w", err)
		}
		floorCPU = append(floorCPU, cpu.stop())
		cpu = startCPU()
		claim, err := timed(s.burst, func(i int) error {
			m := testenv.NewPooledMachine(ns, fmt.Sprintf("p1-%d-%03d", r, i), "pool-3")
			if err := env.Client.Create(ctx, m); err != nil {
				return err
			}
			if m.Spec.Address == "" {
				return fmt.Errorf("RemoteMachine %s stored without an address", m.Name)
			}
			return nil
		})
		if err != nil {
			return rows.Row{}, fmt.Errorf("P1 claims: %w", err)
		}
		claimCPU = append(claimCPU, cpu.stop())
		floors, claims = append(floors, floor), append(claims, claim)
	}
	floor, bareFloor, claim := median(floors), median(bares), median(claims)
	fmt.Printf("P1  %d concurrent creates, pool of %d among %d entries, %d rounds: ConfigMap floor %v, no-webhook floor %v, claims %v\n", s.burst, s.perPool, total, s.rounds, round(floors), round(bares), round(claims))
	fmt.Printf("    CPU per round, ConfigMap floor: %s\n    CPU per round, no-webhook floor: %s\n    CPU per round, claims: %s\n", sumCPU(floorCPU), sumCPU(bareCPU), sumCPU(claimCPU))
	return rows.Row{Figure: "P1", What: fmt.Sprintf("%d concurrent pooled RemoteMachine creates, pool of %d among %d entries (median of %d)", s.burst, s.perPool, total, s.rounds),
		Baseline: fmt.Sprintf("the same %d RemoteMachine creates + %d PooledRemoteMachine claim patches with no webhook %s", s.burst, s.burst, ms(bareFloor)), CAPR: ms(claim),
		Ratio: float64(claim) / float64(bareFloor), Goal: 1.3,
		Note: fmt.Sprintf("P1: against %d ConfigMap creates+updates (%s) the claims' ratio is %.2f. CPU of kube-apiserver, etcd and the webhook server per claim %s, per no-webhook create+patch %s, per ConfigMap create+update %s (CPU ratios %.2f and %.2f, steadier than time on a shared machine).",
			s.burst, ms(floor), float64(claim)/float64(floor),
			perOp(claimCPU, s.rounds*s.burst), perOp(bareCPU, s.rounds*s.burst), perOp(floorCPU, s.rounds*s.burst),
			float64(totalCPU(claimCPU))/float64(max(totalCPU(bareCPU), 1)), float64(totalCPU(claimCPU))/float64(max(totalCPU(floorCPU), 1)))}, nil
}

// apiserverP4 measures P4: the p99 latency of a claiming create against that of a GET, one request at a time.
func apiserverP4(ctx context.Context, env *testenv.Environment, ns string, s scale) (rows.Row, error) {
	var gets, creates []time.Duration
	entry := testenv.NewEntry(ns, "pool-0", 0)
	metricsBefore, err := apiserverSamples(ctx, env)
	if err != nil {
		return rows.Row{}, err
	}
	cpu := startCPU()
	for i := range s.sequential {
		t0 := time.Now()
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(entry), &infrav1.PooledRemoteMachine{}); err != nil {
			return rows.Row{}, fmt.Errorf("P4 GET: %w", err)
		}
		gets = append(gets, time.Since(t0))
		t0 = time.Now()
		if err := env.Client.Create(ctx, testenv.NewPooledMachine(ns, fmt.Sprintf("p4-%03d", i), "pool-5")); err != nil {
			return rows.Row{}, fmt.Errorf("P4 claiming create: %w", err)
		}
		creates = append(creates, time.Since(t0))
	}
	fmt.Printf("P4  %d one at a time: GET p50 %s p99 %s; claiming create p50 %s p99 %s\n", s.sequential, pct(gets, 50), pct(gets, 99), pct(creates, 50), pct(creates, 99))
	fmt.Printf("    CPU, GETs and creates: %s\n", sumCPU([]cpuUse{cpu.stop()}))
	metricsAfter, err := apiserverSamples(ctx, env)
	if err != nil {
		return rows.Row{}, err
	}
	cost := admissionCost(metricsBefore, metricsAfter, s.sequential)
	fmt.Printf("    %s\n", cost)
	// The floor: the same create and claim patch, one at a time, with no webhook called.
	bare, restore, err := noWebhookFloor(ctx, env, "bench-floor-p4", s.sequential, 1)
	if err != nil {
		return rows.Row{}, fmt.Errorf("P4 no-webhook floor: %w", err)
	}
	var bares []time.Duration
	for i := range s.sequential {
		t0 := time.Now()
		if err := bare(0, i); err != nil {
			restore()
			return rows.Row{}, fmt.Errorf("P4 no-webhook floor: %w", err)
		}
		bares = append(bares, time.Since(t0))
	}
	restore()
	fmt.Printf("    the same create + claim patch with no webhook, one at a time: p50 %s p99 %s\n", pct(bares, 50), pct(bares, 99))
	return rows.Row{Figure: "P4", What: fmt.Sprintf("p99 latency of a claiming create, %d one at a time", s.sequential),
		Baseline: "GET p99 " + pct(gets, 99).String(), CAPR: pct(creates, 99).String(),
		Ratio: float64(pct(creates, 99)) / float64(pct(gets, 99)), Goal: 3,
		Note: fmt.Sprintf("P4: p50 GET %s, claiming create %s. The same RemoteMachine create and pool-entry claim patch with no webhook called, one at a time: p50 %s, p99 %s (%.2f x the GET's p99): two writes to etcd against a read from the apiserver's cache. From the apiserver's metrics (GETs included): %s.",
			pct(gets, 50), pct(creates, 50), pct(bares, 50), pct(bares, 99), float64(pct(bares, 99))/float64(pct(gets, 99)), cost)}, nil
}

// apiserverP5 measures P5: a MachineSet's creates refused by an exhausted pool, rate a second for d. The pool's
// entries are all claimed. Each refusal should cost no List of the apiserver, and be about as fast as a GET.
func apiserverP5(ctx context.Context, env *testenv.Environment, s scale) ([]rows.Row, error) {
	ns := "bench-exhausted"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return nil, err
	}
	const entries = 20
	for i := range entries {
		if err := env.Client.Create(ctx, testenv.NewEntry(ns, "empty", i)); err != nil {
			return nil, err
		}
	}
	if err := waitForCache(ctx, env, ns, entries); err != nil {
		return nil, err
	}
	for i := range entries {
		if err := env.Client.Create(ctx, testenv.NewPooledMachine(ns, fmt.Sprintf("holder-%02d", i), "empty")); err != nil {
			return nil, fmt.Errorf("claiming the pool: %w", err)
		}
	}
	// The cache must show every claim before the refusals start, as it does for a pool exhausted for a while.
	deadline := time.Now().Add(time.Minute)
	for {
		list := &infrav1.PooledRemoteMachineList{}
		if err := env.Manager.GetClient().List(ctx, list, client.InNamespace(ns)); err != nil {
			return nil, err
		}
		claimed := 0
		for _, e := range list.Items {
			if e.Spec.ClaimRef != nil {
				claimed++
			}
		}
		if claimed == entries {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the cache shows %d of %d claims", claimed, entries)
		}
		time.Sleep(50 * time.Millisecond)
	}
	owner := metav1.OwnerReference{APIVersion: "cluster.x-k8s.io/v1beta2", Kind: "MachineSet", Name: "workers-abcde",
		UID: "5a1f3a52-6e0f-4a9e-8c55-3f4f3c6c9a10", Controller: ptr.To(true)}
	before, err := listCount(ctx, env)
	if err != nil {
		return nil, err
	}
	n := int(s.exhaustedFor.Seconds()) * s.exhaustedRate
	var mu sync.Mutex
	var refusals, gets []time.Duration
	var unexpected error
	tick := time.NewTicker(time.Second / time.Duration(s.exhaustedRate))
	var wg sync.WaitGroup
	for i := range n {
		<-tick.C
		wg.Go(func() {
			m := testenv.NewPooledMachine(ns, fmt.Sprintf("workers-abcde-%05d", i), "empty")
			m.OwnerReferences = []metav1.OwnerReference{owner}
			t0 := time.Now()
			err := env.Client.Create(ctx, m)
			d := time.Since(t0)
			t0 = time.Now()
			gerr := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "empty-000"}, &infrav1.PooledRemoteMachine{})
			g := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err == nil || !strings.Contains(err.Error(), "no free PooledRemoteMachine") {
				unexpected = fmt.Errorf("create %d in an exhausted pool: %v", i, err)
			}
			if gerr != nil {
				unexpected = gerr
			}
			refusals, gets = append(refusals, d), append(gets, g)
		})
	}
	wg.Wait()
	tick.Stop()
	if unexpected != nil {
		return nil, unexpected
	}
	after, err := listCount(ctx, env)
	if err != nil {
		return nil, err
	}
	lists := after - before
	fmt.Printf("P5  %d creates refused at %d/s: %.0f LISTs of pooledremotemachines; refusal p50 %s p99 %s; GET p50 %s p99 %s\n",
		n, s.exhaustedRate, lists, pct(refusals, 50), pct(refusals, 99), pct(gets, 50), pct(gets, 99))
	what := fmt.Sprintf("exhausted pool: %d creates/s refused for %s", s.exhaustedRate, s.exhaustedFor)
	return []rows.Row{
		{Figure: "P5a", What: what + ": apiserver LISTs per refusal", Baseline: "a LIST per refusal would be 1", CAPR: fmt.Sprintf("%.0f LISTs for %d refusals", lists, n),
			Ratio: lists / float64(n), Goal: 0.05, Note: "P5a: LIST requests for pooledremotemachines counted by the apiserver (apiserver_request_total) during the refusals; its ratio is LISTs per refusal. A pool the apiserver showed exhausted is answered from the cache for a second, so a refusing pool costs at most one LIST a second whatever the rate of creates; the goal (0.05) says no refusal pays for its own LIST."},
		{Figure: "P5b", What: what + ": refusal p99", Baseline: "GET p99 " + pct(gets, 99).String(), CAPR: pct(refusals, 99).String(),
			Ratio: float64(pct(refusals, 99)) / float64(pct(gets, 99)), Goal: 2},
	}, nil
}

var listMetric = regexp.MustCompile(`^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$`)

// listCount sums the apiserver's count of LIST requests for pooledremotemachines.
func listCount(ctx context.Context, env *testenv.Environment) (float64, error) {
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(env.Config.Host, "/")+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("apiserver /metrics: %s", resp.Status)
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		m := listMetric.FindStringSubmatch(line)
		if m == nil || !strings.Contains(m[1], `resource="pooledremotemachines"`) || !strings.Contains(m[1], `verb="LIST"`) {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// apiserverSamples reads every sample of the apiserver's /metrics, "name{labels}" → value.
func apiserverSamples(ctx context.Context, env *testenv.Environment) (map[string]float64, error) {
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(env.Config.Host, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("apiserver /metrics: %s", resp.Status)
	}
	return measure.Metrics(resp.Body)
}

// label returns the value of label name in a sample's "name{labels}" key.
func label(key, name string) string {
	_, rest, ok := strings.Cut(key, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// admissionCost says, from two readings of the apiserver's metrics around n claiming creates, which requests each
// create made (per create, by verb and resource) and how long the apiserver waited on each admission webhook.
func admissionCost(before, after map[string]float64, n int) string {
	requests := map[string]float64{}
	webhooks := map[string][2]float64{} // name → sum, count
	for k, v := range after {
		d := v - before[k]
		if d <= 0 {
			continue
		}
		switch {
		case strings.HasPrefix(k, "apiserver_request_total{"):
			if r := label(k, "resource"); r != "" {
				requests[label(k, "verb")+" "+r] += d
			}
		case strings.HasPrefix(k, "apiserver_admission_webhook_admission_duration_seconds_sum{"):
			w := webhooks[label(k, "name")+" ("+label(k, "operation")+" "+label(k, "type")+")"]
			w[0] += d
			webhooks[label(k, "name")+" ("+label(k, "operation")+" "+label(k, "type")+")"] = w
		case strings.HasPrefix(k, "apiserver_admission_webhook_admission_duration_seconds_count{"):
			w := webhooks[label(k, "name")+" ("+label(k, "operation")+" "+label(k, "type")+")"]
			w[1] += d
			webhooks[label(k, "name")+" ("+label(k, "operation")+" "+label(k, "type")+")"] = w
		}
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(requests)) {
		if per := requests[k] / float64(n); per >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, per))
		}
	}
	var hooks []string
	for _, k := range slices.Sorted(maps.Keys(webhooks)) {
		w := webhooks[k]
		if w[1] > 0 {
			hooks = append(hooks, fmt.Sprintf("%s %.2f calls, mean %.2fms", k, w[1]/float64(n), 1000*w[0]/w[1]))
		}
	}
	return fmt.Sprintf("requests per create: %s; admission webhooks per create: %s", strings.Join(parts, ", "), strings.Join(hooks, "; "))
}

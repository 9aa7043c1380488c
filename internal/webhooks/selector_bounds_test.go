//go:build integration

package webhooks_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// poolLists returns how many LISTs of PooledRemoteMachines the apiserver has served, from its own metrics.
func poolLists(g Gomega) float64 {
	cs, err := kubernetes.NewForConfig(env.Config)
	g.Expect(err).NotTo(HaveOccurred())
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	g.Expect(err).NotTo(HaveOccurred())
	total := 0.0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") || !strings.Contains(line, `resource="pooledremotemachines"`) || !strings.Contains(line, `verb="LIST"`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		g.Expect(err).NotTo(HaveOccurred())
		total += v
	}
	return total
}

// TestDistinctSelectorDryRunsAreBounded: the attack was 300 dry-run creates, each with its own selector, against
// an exhausted pool: each cost a full List of the namespace's entries from the apiserver, and left a key holding
// its whole selector in the webhook's memory for good. Now a namespace's fresh reads are rate-limited (2/s, burst
// 5; beyond, the refusal is answered from the cache) and the exhausted pools remembered are bounded hashes.
func TestDistinctSelectorDryRunsAreBounded(t *testing.T) {
	g := NewWithT(t)
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 2, func(_ int, p *infrav1.PooledRemoteMachine) { p.Spec.Maintenance = true })
	before := poolLists(g)
	start := time.Now()
	refused := dryRunDistinctSelectors(t, ns, 300, 32)
	took := time.Since(start)
	lists := poolLists(g) - before
	t.Logf("300 distinct-selector dry runs in %s: %d refused for the exhausted pool, %.0f apiserver Lists, %d exhausted pools remembered",
		took.Round(time.Millisecond), refused, lists, env.Claimer.ExhaustedPools())
	g.Expect(refused).To(Equal(300))
	// The burst, then 2 a second (and one for a second begun).
	g.Expect(lists).To(BeNumerically("<=", 5+2*(took.Seconds()+1)))
	g.Expect(lists).To(BeNumerically("<", 30), "not one List per refusal")
	g.Expect(env.Claimer.ExhaustedPools()).To(BeNumerically("<=", 4096))

	// The message still counts the pool, from the cache.
	m := testenv.NewPooledMachine(ns, "one-more", "default")
	m.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"x": "y"}}
	g.Expect(env.Client.Create(context.Background(), m)).To(MatchError(ContainSubstring(
		`no free PooledRemoteMachine in pool "default" matching selector "x=y" (2 in pool: 2 in maintenance)`)))
}

// TestSelectorOverTheCapIsRefused: a selector is matched against every entry of a pool and remembered by the
// claim; one larger than a pool needs is refused at admission, naming spec.selector and the limit.
func TestSelectorOverTheCapIsRefused(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 1, nil)
	manyLabels := map[string]string{}
	for i := range 17 {
		manyLabels[fmt.Sprint("l", i)] = "v"
	}
	manyValues := make([]string, 33)
	for i := range manyValues {
		manyValues[i] = fmt.Sprint("v", i)
	}
	longValues := make([]string, 32)
	for i := range longValues {
		longValues[i] = fmt.Sprintf("%02d%s", i, strings.Repeat("x", 60))
	}
	expr := func(values []string) []metav1.LabelSelectorRequirement {
		var reqs []metav1.LabelSelectorRequirement
		for i := range 3 {
			reqs = append(reqs, metav1.LabelSelectorRequirement{Key: fmt.Sprint("k", i), Operator: metav1.LabelSelectorOpIn, Values: values})
		}
		return reqs
	}
	for _, tc := range []struct {
		name     string
		selector *metav1.LabelSelector
		message  string
	}{
		{"17 requirements", &metav1.LabelSelector{MatchLabels: manyLabels}, "spec.selector: Too many: 17: must have at most 16 items"},
		{"33 values", &metav1.LabelSelector{MatchExpressions: expr(manyValues)[:1]}, "spec.selector.matchExpressions[0].values: Too many: 33: must have at most 32 items"},
		{"over 4 KiB", &metav1.LabelSelector{MatchExpressions: expr(longValues)}, "must be at most 4096 bytes written as JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			m := testenv.NewPooledMachine(ns, "big", "default")
			m.Spec.Selector = tc.selector
			err := env.Client.Create(ctx, m)
			g.Expect(err).To(MatchError(ContainSubstring(tc.message)))
			g.Expect(err).To(MatchError(ContainSubstring("spec.selector")))
			g.Expect(getEntry(t, ns, "default-000").Spec.ClaimRef).To(BeNil(), "refused before claiming")

			tmpl := &infrav1.RemoteMachineTemplate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "big"}}
			tmpl.Spec.Template.Spec.Pool, tmpl.Spec.Template.Spec.Selector = "default", tc.selector
			g.Expect(env.Client.Create(ctx, tmpl)).To(MatchError(ContainSubstring("spec.template.spec.selector")))
		})
	}
	ok := testenv.NewPooledMachine(ns, "fits", "default")
	ok.Spec.Selector = &metav1.LabelSelector{MatchExpressions: expr(longValues[:16])}
	g.Expect(env.Client.Create(ctx, ok, client.DryRunAll)).To(MatchError(ContainSubstring("no free PooledRemoteMachine")), "a selector within the limits is matched, not refused")
}

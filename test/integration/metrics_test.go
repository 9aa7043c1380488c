//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// TestPoolGaugeFollowsClaims scrapes the manager's metrics endpoint while RemoteMachines claim and release entries.
func TestPoolGaugeFollowsClaims(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := env.NewNamespace(t)
	bin := buildManager(t)
	manager := runManager(t, bin, env.ManagerKubeconfig, "--namespace", ns, "--insecure-diagnostics")
	scrape := func() string {
		resp, err := http.Get("http://" + manager.metricsAddr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	gauge := func(phase string) string {
		return fmt.Sprintf(`capr_pool_machines{namespace=%q,phase=%q,pool="default"}`, ns, phase)
	}

	env.CreatePool(t, ns, "default", 3, nil)
	g.Eventually(scrape, 60*time.Second, 200*time.Millisecond).Should(ContainSubstring(gauge("Available")+" 3"), func() string { return manager.logs.String() })

	first := testenv.NewPooledMachine(ns, "first", "default")
	g.Expect(env.Client.Create(ctx, first)).To(Succeed())
	g.Expect(env.Client.Create(ctx, testenv.NewPooledMachine(ns, "second", "default"))).To(Succeed())
	g.Eventually(scrape, 30*time.Second, 200*time.Millisecond).Should(And(
		ContainSubstring(gauge("Claimed")+" 2"), ContainSubstring(gauge("Available")+" 1")))

	// Deleting a RemoteMachine that never bootstrapped releases its entry at once.
	g.Expect(env.Client.Delete(ctx, first)).To(Succeed())
	g.Eventually(scrape, 30*time.Second, 200*time.Millisecond).Should(And(
		ContainSubstring(gauge("Claimed")+" 1"), ContainSubstring(gauge("Available")+" 2")))
	g.Expect(scrape()).To(ContainSubstring("capr_bootstrap_duration_seconds"))
}

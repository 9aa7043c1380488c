//go:build integration

package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/test/testenv"
)

// managerProcess is a running manager binary.
type managerProcess struct {
	webhookAddr, metricsAddr string
	logs                     *testenv.SyncBuffer
}

// runManager runs the manager binary with kubeconfig and extra flags on free ports, and waits until it is ready.
func runManager(t *testing.T, bin, kubeconfig string, extra ...string) *managerProcess {
	t.Helper()
	g := NewWithT(t)
	health, metrics, webhook := freePort(t), freePort(t), freePort(t)
	p := &managerProcess{
		webhookAddr: fmt.Sprintf("127.0.0.1:%d", webhook),
		metricsAddr: fmt.Sprintf("127.0.0.1:%d", metrics),
		logs:        &testenv.SyncBuffer{},
	}
	cmd := exec.Command(bin, append([]string{
		"--health-addr", fmt.Sprintf("127.0.0.1:%d", health),
		"--diagnostics-address", p.metricsAddr,
		"--webhook-port", strconv.Itoa(webhook),
		"--webhook-cert-dir", env.WebhookCertDir}, extra...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	g.Expect(cmd.Start()).To(Succeed())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	g.Eventually(func() int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health))
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		return resp.StatusCode
	}, 60*time.Second, 100*time.Millisecond).Should(Equal(http.StatusOK), func() string { return p.logs.String() })
	return p
}

// roundRobinProxy sends each webhook call (HTTP request) to the next backend in turn and counts calls per backend.
// It terminates TLS with the webhook certificate, so the apiserver's single HTTP/2 connection is spread too.
type roundRobinProxy struct {
	addr   string
	next   atomic.Uint64
	served []atomic.Int64
}

func startProxy(t *testing.T, backends ...string) *roundRobinProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &roundRobinProxy{addr: l.Addr().String(), served: make([]atomic.Int64, len(backends))}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			i := int(p.next.Add(1)-1) % len(backends)
			p.served[i].Add(1)
			r.SetURL(&url.URL{Scheme: "https", Host: backends[i]})
		},
		// The backends serve the same test certificate; the proxy only forwards test traffic on loopback.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	server := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		_ = server.ServeTLS(l, filepath.Join(env.WebhookCertDir, "tls.crt"), filepath.Join(env.WebhookCertDir, "tls.key"))
	}()
	t.Cleanup(func() { _ = server.Close() })
	return p
}

// pointWebhooksAt sends the apiserver's calls for CAPR's generated webhooks to addr until the test ends.
func pointWebhooksAt(t *testing.T, addr string) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	local := net.JoinHostPort(env.WebhookHost, strconv.Itoa(env.WebhookPort))
	mutating := &admissionv1.MutatingWebhookConfiguration{}
	g.Expect(env.Client.Get(ctx, client.ObjectKey{Name: "mutating-webhook-configuration"}, mutating)).To(Succeed())
	validating := &admissionv1.ValidatingWebhookConfiguration{}
	g.Expect(env.Client.Get(ctx, client.ObjectKey{Name: "validating-webhook-configuration"}, validating)).To(Succeed())
	origMutating, origValidating := mutating.DeepCopy(), validating.DeepCopy()
	swap := func(url *string) { *url = strings.Replace(*url, local, addr, 1) }
	for i := range mutating.Webhooks {
		swap(mutating.Webhooks[i].ClientConfig.URL)
	}
	for i := range validating.Webhooks {
		swap(validating.Webhooks[i].ClientConfig.URL)
	}
	g.Expect(env.Client.Update(ctx, mutating)).To(Succeed())
	g.Expect(env.Client.Update(ctx, validating)).To(Succeed())
	t.Cleanup(func() {
		for _, restore := range []client.Object{origMutating, origValidating} {
			restore.SetResourceVersion("")
			current := restore.DeepCopyObject().(client.Object)
			_ = env.Client.Get(ctx, client.ObjectKeyFromObject(restore), current)
			restore.SetResourceVersion(current.GetResourceVersion())
			_ = env.Client.Update(ctx, restore)
		}
	})
}

// TestTwoManagersNeverClaimAnEntryTwice serves CAPR's webhooks from two manager processes, each with its own cache,
// behind a round-robin TCP proxy, and creates 200 RemoteMachines at once against a pool of 150.
func TestTwoManagersNeverClaimAnEntryTwice(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	bin := buildManager(t)
	proxy := startProxy(t, runManager(t, bin, env.Kubeconfig).webhookAddr, runManager(t, bin, env.Kubeconfig).webhookAddr)
	pointWebhooksAt(t, proxy.addr)

	ns := env.NewNamespace(t)
	env.CreatePool(t, ns, "default", 150, nil)
	// Wait until the apiserver calls the proxy: a dry run goes through the claim webhook and claims nothing.
	g.Eventually(func() int64 {
		_ = env.Client.Create(ctx, testenv.NewPooledMachine(ns, "probe", "default"), client.DryRunAll)
		return proxy.served[0].Load() + proxy.served[1].Load()
	}, 30*time.Second, 200*time.Millisecond).Should(BeNumerically(">", 0))

	errs := env.CreateConcurrently(ns, "default", 200)
	testenv.ExpectRejections(g, errs, 50, `no free PooledRemoteMachine in pool "default" (150 in pool: 150 claimed)`)
	env.AssertOneToOneClaims(g, ns, 150)
	g.Expect(proxy.served[0].Load()).To(BeNumerically(">", 50), "the first manager served webhook calls")
	g.Expect(proxy.served[1].Load()).To(BeNumerically(">", 50), "the second manager served webhook calls")

	list := &infrav1.PooledRemoteMachineList{}
	g.Expect(env.Client.List(ctx, list, client.InNamespace(ns))).To(Succeed())
	g.Expect(list.Items).To(HaveLen(150))
}

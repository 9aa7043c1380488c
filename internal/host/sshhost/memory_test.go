package sshhost

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"

	"github.com/capr-project/cluster-api-provider-remote/internal/host"
	"github.com/capr-project/cluster-api-provider-remote/internal/sshrunner"
	"github.com/capr-project/cluster-api-provider-remote/test/bombs"
)

// gateHost reads the bootstrap script it is sent, counts the runs in flight, and holds each until the gate opens.
type gateHost struct {
	inFlight, most *atomic.Int64
	gate           chan struct{}
}

func (h gateHost) Run(ctx context.Context, script string, stdin io.Reader) error {
	_, err := h.Output(ctx, script, stdin)
	return err
}

func (h gateHost) Output(_ context.Context, _ string, stdin io.Reader) (string, error) {
	n := h.inFlight.Add(1)
	for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
	}
	defer h.inFlight.Add(-1)
	if stdin != nil {
		if _, err := io.Copy(io.Discard, stdin); err != nil {
			return "", err
		}
	}
	<-h.gate
	return "", nil
}

func (gateHost) Close() error { return nil }

// runAtOnce starts n bootstraps of data at once on a service with the smallest memory budget and hands the host
// to check while they are held; then it lets them finish and checks they all succeeded.
func runAtOnce(t *testing.T, n int, data []byte, check func(h gateHost)) {
	g := NewWithT(t)
	h := gateHost{inFlight: &atomic.Int64{}, most: &atomic.Int64{}, gate: make(chan struct{})}
	s := &Service{Memory: NewMemoryBudget(MinMemory), Dial: func(context.Context, sshrunner.Config) (Conn, error) { return h, nil }}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := s.Bootstrap(context.Background(), host.BootstrapRequest{Identity: "m", Data: data, Config: sshrunner.Config{Log: logr.Discard()}})
			errs <- err
		})
	}
	check(h)
	close(h.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		g.Expect(err).NotTo(HaveOccurred())
	}
}

// TestMemoryBudgetBoundsLargeBootstraps checks that the bootstraps in flight hold no more bootstrap data together
// than the memory budget, whatever --bootstrap-concurrency allows: plans of 20 MiB take about 40 MiB each (the plan
// and what the redactor keeps), so at most three fit in the smallest budget (128 MiB) and the others wait. Small
// plans (kubeadm's are tens of KiB) all run at once.
func TestMemoryBudgetBoundsLargeBootstraps(t *testing.T) {
	g := NewWithT(t)
	runAtOnce(t, 8, bombs.CloudConfig(1, 20<<20), func(h gateHost) {
		g.Eventually(h.most.Load, 10*time.Second, 10*time.Millisecond).Should(BeNumerically(">=", 1))
		g.Consistently(h.most.Load, 2*time.Second, 20*time.Millisecond).Should(BeNumerically("<=", 3),
			"bootstraps of 20 MiB plans in flight at once in a 128 MiB budget")
	})
	runAtOnce(t, 50, []byte("#cloud-config\nruncmd:\n- kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml\n"), func(h gateHost) {
		g.Eventually(h.inFlight.Load, 10*time.Second, 10*time.Millisecond).Should(Equal(int64(50)), "small bootstraps all run at once")
	})
}

// Package metrics holds CAPR's Prometheus metrics, served on the manager's secure diagnostics endpoint.
package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

var (
	// ClaimsTotal counts pool claims by result: claimed, exhausted, error, dry-run.
	ClaimsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "capr_claims_total",
		Help: "Pool claims made at admission, by result (claimed, exhausted, error, dry-run).",
	}, []string{"result"})

	// BootstrapDuration observes how long bootstrap runs take, successful or not.
	BootstrapDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "capr_bootstrap_duration_seconds",
		Help:    "Duration of bootstrap runs on hosts.",
		Buckets: prometheus.ExponentialBuckets(0.25, 2, 14),
	})

	// TaskQueueWait observes how long SSH tasks waited for a slot of the manager's concurrency bounds before they
	// ran (--bootstrap-concurrency, --bootstrap-concurrency-per-namespace, --cleanup-concurrency), by kind.
	TaskQueueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "capr_task_queue_wait_seconds",
		Help:    "Time SSH tasks (scan, bootstrap, accept, cleanup, probe) waited for a concurrency slot before they ran, by kind.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
	}, []string{"kind"})

	// Tasks is the number of SSH tasks waiting for a slot and running, by kind and state.
	Tasks = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "capr_tasks",
		Help: "SSH tasks (scan, bootstrap, accept, cleanup, probe) waiting for a concurrency slot or running, by kind and state (waiting, running).",
	}, []string{"kind", "state"})

	// SSHErrorsTotal counts failed SSH operations by reason (the API reasons HostKeyMismatch, AuthFailed, HostUnreachable, ...).
	SSHErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "capr_ssh_errors_total",
		Help: "Failed SSH operations (bootstrap, cleanup, probe), by reason.",
	}, []string{"reason"})
)

// poolCollector reports capr_pool_machines from the manager's cache at each scrape, so it is always exact.
type poolCollector struct {
	reader client.Reader
	desc   *prometheus.Desc
}

// Phase returns an entry's phase as reported in metrics and status: its status phase, or Available.
var Phase = func(m *infrav1.PooledRemoteMachine) string {
	if m.Status.Phase == "" {
		return string(infrav1.PooledRemoteMachinePhaseAvailable)
	}
	return string(m.Status.Phase)
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	list := &infrav1.PooledRemoteMachineList{}
	if err := c.reader.List(context.Background(), list, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	type key struct{ ns, pool, phase string }
	counts := map[key]int{}
	for i := range list.Items {
		m := &list.Items[i]
		counts[key{m.Namespace, m.Spec.Pool, Phase(m)}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k.ns, k.pool, k.phase)
	}
}

// Register registers CAPR's metrics with controller-runtime's registry; reader is the manager's cached reader.
func Register(reader client.Reader) {
	ctrlmetrics.Registry.MustRegister(ClaimsTotal, BootstrapDuration, TaskQueueWait, Tasks, SSHErrorsTotal, &poolCollector{
		reader: reader,
		desc: prometheus.NewDesc("capr_pool_machines", "PooledRemoteMachines by namespace, pool and phase.",
			[]string{"namespace", "pool", "phase"}, nil),
	})
}

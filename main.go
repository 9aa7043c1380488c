// Command manager runs CAPR, the Cluster API infrastructure provider for existing hosts reached over SSH.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/logs"
	logsv1 "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/cluster-api/util/flags"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/capr-project/cluster-api-provider-remote/internal/manager"
)

var setupLog = ctrl.Log.WithName("setup")

// flagValues are the manager's command-line flags: manager.Options plus what only the command reads.
type flagValues struct {
	manager.Options
	managerFlags    flags.ManagerOptions
	logs            *logsv1.LoggingConfiguration
	bootstrapMemory resource.QuantityValue
}

func (o *flagValues) addFlags(fs *pflag.FlagSet) {
	d := manager.DefaultOptions()
	o.bootstrapMemory.Quantity = *resource.NewQuantity(d.BootstrapMemory, resource.BinarySI)
	fs.BoolVar(&o.LeaderElection, "leader-elect", false,
		"Enable leader election, so that only one of several manager replicas reconciles at a time. Webhooks are served by every replica.")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-elect-namespace", "",
		"Namespace of the leader election lease. Empty means the manager's own namespace when it runs in a cluster; outside a cluster it must be set.")
	fs.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", d.LeaseDuration,
		"How long replicas that are not the leader wait before taking over a leader that stopped renewing its lease.")
	fs.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", d.RenewDeadline,
		"How long the leader keeps trying to renew its lease before it gives up leading (and exits).")
	fs.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", d.RetryPeriod,
		"How often replicas try to take or renew the lease.")
	fs.StringVar(&o.HealthAddr, "health-addr", d.HealthAddr,
		"Address the health (/healthz) and readiness (/readyz) probes are served on.")
	fs.IntVar(&o.WebhookPort, "webhook-port", d.WebhookPort,
		"Port the admission webhook server listens on (TLS). 0 disables the webhook server.")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", d.WebhookCertDir,
		"Directory holding tls.crt and tls.key for the webhook server (cert-manager mounts them here).")
	fs.StringVar(&o.Namespace, "namespace", "",
		"Only watch and manage objects in this namespace. Empty watches every namespace.")
	fs.StringVar(&o.WatchFilter, "watch-filter", "",
		"Only reconcile objects whose cluster.x-k8s.io/watch-filter label has this value. Empty reconciles every object.")
	fs.DurationVar(&o.SyncPeriod, "sync-period", d.SyncPeriod,
		"Minimum interval at which every watched object is reconciled again.")
	fs.IntVar(&o.RemoteMachineConcurrency, "remotemachine-concurrency", d.RemoteMachineConcurrency,
		"Number of RemoteMachines reconciled at the same time.")
	fs.IntVar(&o.Tasks.Total, "bootstrap-concurrency", d.Tasks.Total,
		"Number of SSH host-key scans, bootstraps and host-key acceptances run at the same time, off the reconcile workers (cleanups have --cleanup-concurrency). A running bootstrap is an SSH session waiting on its host (a kubeadm join takes a minute or more); it costs the manager one connection, a few goroutines and their buffers (tens of KiB) and its bootstrap data, which --bootstrap-memory bounds. So this is set by how many Machines a fleet adds at once, not by the manager's CPUs.")
	fs.IntVar(&o.Tasks.PerNamespace, "bootstrap-concurrency-per-namespace", d.Tasks.PerNamespace,
		"Most of the --bootstrap-concurrency slots one namespace may hold at a time, so RemoteMachines of one namespace whose hosts never answer cannot delay every other namespace until --bootstrap-timeout; waiting namespaces take turns. Cleanups get the same share of --cleanup-concurrency. 0 means half of --bootstrap-concurrency, at least 1.")
	fs.IntVar(&o.Tasks.Cleanup, "cleanup-concurrency", d.Tasks.Cleanup,
		"Number of SSH cleanups of deleted RemoteMachines run at the same time, on slots of their own so deletions progress while every bootstrap slot is held.")
	fs.Var(&o.bootstrapMemory, "bootstrap-memory",
		"Bootstrap data the bootstraps in flight may hold together (a quantity: 256Mi). A bootstrap waits for its share before it connects; kubeadm's data is tens of KiB, one bootstrap may decode to 64Mi. Together with the manager's idle memory and cache it must fit the container's memory limit.")
	fs.DurationVar(&o.BootstrapTimeout, "bootstrap-timeout", d.BootstrapTimeout,
		"Longest one bootstrap (or one cleanup) may run on a host. A bootstrap that runs longer is stopped and reported BootstrapFailed, and not run again.")
	fs.DurationVar(&o.RetryInterval, "retry-interval", d.RetryInterval,
		"First wait before a bootstrap that failed before anything ran on the host (unreachable, refused key, no sudo, disk full) is tried again; it doubles with each failure in a row. Also the wait between cleanup attempts.")
	fs.DurationVar(&o.RetryMaxInterval, "retry-max-interval", d.RetryMaxInterval,
		"Longest wait between attempts of a bootstrap that failed before anything ran on the host (see --retry-interval).")
	fs.DurationVar(&o.CleanupTimeout, "cleanup-timeout", d.CleanupTimeout,
		"How long after a RemoteMachine's deletion a failing cleanup is retried before its pool entry is quarantined.")
	fs.DurationVar(&o.OrphanClaimGrace, "orphan-claim-grace", d.OrphanClaimGrace,
		"How long a pool entry's claim may wait for its RemoteMachine to be stored (it may be refused later in admission) before the entry is released.")
	fs.DurationVar(&o.PoolProbeInterval, "pool-probe-interval", d.PoolProbeInterval,
		"How often each free PooledRemoteMachine's host is checked over SSH (reachability, login, host key) before it is offered. 0 turns the probe off.")
	flags.AddManagerOptions(fs, &o.managerFlags)
	o.logs = logs.NewOptions()
	logsv1.AddFlags(o.logs, fs)
}

// managerNamespace is the manager's own namespace: --leader-elect-namespace, else the Pod's namespace; outside a
// Pod without the flag (a development run), "default". It holds the Leases that keep each host in one pool entry,
// so every replica must use the same one.
func (o *flagValues) managerNamespace() string {
	if o.LeaderElectionNamespace != "" {
		return o.LeaderElectionNamespace
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b))
	}
	setupLog.Info("Not in a Pod and no --leader-elect-namespace: the hosts' Leases go to namespace default")
	return "default"
}

// gcPercent is the manager's garbage-collection target unless GOGC is set: most of its memory is its cache (pool
// entries, machines, the hosts' Leases), held for good, and the Go default (100) lets the heap grow to twice that
// before collecting. At 50 the peak is about one and a half times the cache, for a little more collection work: with
// 11,020 pool entries and 2,020 RemoteMachines (make bench's P3) the peak RSS fell from 160 to 127 MiB.
const gcPercent = 50

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	var o flagValues
	fs := pflag.CommandLine
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	o.addFlags(fs)
	fs.AddGoFlagSet(flag.CommandLine) // --kubeconfig, registered by controller-runtime
	pflag.Usage = func() {
		fmt.Fprintf(os.Stderr, "manager runs CAPR, the Cluster API provider for existing hosts reached over SSH.\n\n"+
			"It reads its kubeconfig from --kubeconfig, $KUBECONFIG, the in-cluster service account, or ~/.kube/config.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	pflag.Parse()

	if err := logsv1.ValidateAndApply(o.logs, nil); err != nil {
		fmt.Fprintf(os.Stderr, "Invalid logging flags: %v\n", err)
		os.Exit(2)
	}
	ctrl.SetLogger(klog.Background())
	o.BootstrapMemory = o.bootstrapMemory.Value()
	if err := o.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := run(&o); err != nil {
		setupLog.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}

func run(o *flagValues) error {
	tlsOptions, metricsOptions, err := flags.GetManagerOptions(o.managerFlags)
	if err != nil {
		return fmt.Errorf("invalid flags: %w", err)
	}
	o.TLSOpts, o.Metrics = tlsOptions, *metricsOptions
	o.ManagerNamespace = o.managerNamespace()
	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("no kubeconfig: %w", err)
	}
	mgr, err := manager.New(restConfig, o.Options)
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	if err := manager.Setup(ctx, mgr, o.Options); err != nil {
		return err
	}
	setupLog.Info("Starting manager", "namespace", o.Namespace, "watchFilter", o.WatchFilter)
	return mgr.Start(ctx)
}

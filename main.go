// Command manager runs CAPR, the Cluster API infrastructure provider for existing hosts reached over SSH.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/logs"
	logsv1 "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/controllers/clustercache"
	"sigs.k8s.io/cluster-api/util/flags"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/controllers"
	"github.com/capr-project/cluster-api-provider-remote/internal/metrics"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
	"github.com/capr-project/cluster-api-provider-remote/internal/webhooks"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	_ = clientgoscheme.AddToScheme(scheme)
	_ = clusterv1.AddToScheme(scheme)
	_ = infrav1.AddToScheme(scheme)
}

// The diagnostics endpoint authenticates and authorizes each scrape against the apiserver.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// options are the manager's command-line flags.
type options struct {
	leaderElect              bool
	leaderElectNamespace     string
	leaseDuration            time.Duration
	renewDeadline            time.Duration
	retryPeriod              time.Duration
	healthAddr               string
	webhookPort              int
	webhookCertDir           string
	namespace                string
	watchFilter              string
	syncPeriod               time.Duration
	remoteMachineConcurrency int
	bootstrapConcurrency     int
	namespaceConcurrency     int
	cleanupConcurrency       int
	bootstrapTimeout         time.Duration
	retryInterval            time.Duration
	retryMaxInterval         time.Duration
	cleanupTimeout           time.Duration
	orphanClaimGrace         time.Duration
	poolProbeInterval        time.Duration
	manager                  flags.ManagerOptions
	logs                     *logsv1.LoggingConfiguration
}

func (o *options) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"Enable leader election, so that only one of several manager replicas reconciles at a time. Webhooks are served by every replica.")
	fs.StringVar(&o.leaderElectNamespace, "leader-elect-namespace", "",
		"Namespace of the leader election lease. Empty means the manager's own namespace when it runs in a cluster; outside a cluster it must be set.")
	fs.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second,
		"How long replicas that are not the leader wait before taking over a leader that stopped renewing its lease.")
	fs.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second,
		"How long the leader keeps trying to renew its lease before it gives up leading (and exits).")
	fs.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second,
		"How often replicas try to take or renew the lease.")
	fs.StringVar(&o.healthAddr, "health-addr", ":9440",
		"Address the health (/healthz) and readiness (/readyz) probes are served on.")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443,
		"Port the admission webhook server listens on (TLS). 0 disables the webhook server.")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs/",
		"Directory holding tls.crt and tls.key for the webhook server (cert-manager mounts them here).")
	fs.StringVar(&o.namespace, "namespace", "",
		"Only watch and manage objects in this namespace. Empty watches every namespace.")
	fs.StringVar(&o.watchFilter, "watch-filter", "",
		"Only reconcile objects whose cluster.x-k8s.io/watch-filter label has this value. Empty reconciles every object.")
	fs.DurationVar(&o.syncPeriod, "sync-period", 10*time.Minute,
		"Minimum interval at which every watched object is reconciled again.")
	fs.IntVar(&o.remoteMachineConcurrency, "remotemachine-concurrency", 10,
		"Number of RemoteMachines reconciled at the same time.")
	fs.IntVar(&o.bootstrapConcurrency, "bootstrap-concurrency", 10,
		"Number of SSH host-key scans, bootstraps and host-key acceptances run at the same time, off the reconcile workers (cleanups have --cleanup-concurrency).")
	fs.IntVar(&o.namespaceConcurrency, "bootstrap-concurrency-per-namespace", 0,
		"Most of the --bootstrap-concurrency slots one namespace may hold at a time, so RemoteMachines of one namespace whose hosts never answer cannot delay every other namespace until --bootstrap-timeout; waiting namespaces take turns. Cleanups get the same share of --cleanup-concurrency. 0 means half of --bootstrap-concurrency, at least 1.")
	fs.IntVar(&o.cleanupConcurrency, "cleanup-concurrency", tasks.DefaultCleanupConcurrency,
		"Number of SSH cleanups of deleted RemoteMachines run at the same time, on slots of their own so deletions progress while every bootstrap slot is held.")
	fs.DurationVar(&o.bootstrapTimeout, "bootstrap-timeout", 30*time.Minute,
		"Longest one bootstrap (or one cleanup) may run on a host. A bootstrap that runs longer is stopped and reported BootstrapFailed, and not run again.")
	fs.DurationVar(&o.retryInterval, "retry-interval", 20*time.Second,
		"First wait before a bootstrap that failed before anything ran on the host (unreachable, refused key, no sudo, disk full) is tried again; it doubles with each failure in a row. Also the wait between cleanup attempts.")
	fs.DurationVar(&o.retryMaxInterval, "retry-max-interval", 10*time.Minute,
		"Longest wait between attempts of a bootstrap that failed before anything ran on the host (see --retry-interval).")
	fs.DurationVar(&o.cleanupTimeout, "cleanup-timeout", 10*time.Minute,
		"How long after a RemoteMachine's deletion a failing cleanup is retried before its pool entry is quarantined.")
	fs.DurationVar(&o.orphanClaimGrace, "orphan-claim-grace", 2*time.Minute,
		"How long a pool entry's claim may wait for its RemoteMachine to be stored (it may be refused later in admission) before the entry is released.")
	fs.DurationVar(&o.poolProbeInterval, "pool-probe-interval", 0,
		"How often each free PooledRemoteMachine's host is checked over SSH (reachability, login, host key) before it is offered. 0 turns the probe off.")
	flags.AddManagerOptions(fs, &o.manager)
	o.logs = logs.NewOptions()
	logsv1.AddFlags(o.logs, fs)
}

// managerNamespace is the manager's own namespace: --leader-elect-namespace, else the Pod's namespace; outside a
// Pod without the flag (a development run), "default". It holds the Leases that keep each host in one pool entry,
// so every replica must use the same one.
func (o *options) managerNamespace() string {
	if o.leaderElectNamespace != "" {
		return o.leaderElectNamespace
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b))
	}
	setupLog.Info("Not in a Pod and no --leader-elect-namespace: the hosts' Leases go to namespace default")
	return "default"
}

func (o *options) validate() error {
	if o.remoteMachineConcurrency < 1 {
		return fmt.Errorf("--remotemachine-concurrency must be at least 1, got %d", o.remoteMachineConcurrency)
	}
	if o.bootstrapConcurrency < 1 {
		return fmt.Errorf("--bootstrap-concurrency must be at least 1, got %d", o.bootstrapConcurrency)
	}
	if o.namespaceConcurrency < 0 || o.namespaceConcurrency > o.bootstrapConcurrency {
		return fmt.Errorf("--bootstrap-concurrency-per-namespace must be between 0 (half of --bootstrap-concurrency) and --bootstrap-concurrency (%d), got %d",
			o.bootstrapConcurrency, o.namespaceConcurrency)
	}
	if o.cleanupConcurrency < 1 {
		return fmt.Errorf("--cleanup-concurrency must be at least 1, got %d", o.cleanupConcurrency)
	}
	if o.retryInterval <= 0 || o.retryMaxInterval < o.retryInterval {
		return fmt.Errorf("--retry-interval (%s) must be positive and at most --retry-max-interval (%s)", o.retryInterval, o.retryMaxInterval)
	}
	if o.syncPeriod <= 0 {
		return fmt.Errorf("--sync-period must be positive, got %s", o.syncPeriod)
	}
	if o.leaseDuration <= o.renewDeadline || o.renewDeadline <= o.retryPeriod || o.retryPeriod <= 0 {
		return fmt.Errorf("the leader election durations must satisfy --leader-elect-lease-duration (%s) > --leader-elect-renew-deadline (%s) > --leader-elect-retry-period (%s) > 0",
			o.leaseDuration, o.renewDeadline, o.retryPeriod)
	}
	if o.webhookPort < 0 || o.webhookPort > 65535 {
		return fmt.Errorf("--webhook-port must be between 0 and 65535, got %d", o.webhookPort)
	}
	return nil
}

func main() {
	var o options
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
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := run(&o); err != nil {
		setupLog.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}

func run(o *options) error {
	tlsOptions, metricsOptions, err := flags.GetManagerOptions(o.manager)
	if err != nil {
		return fmt.Errorf("invalid flags: %w", err)
	}
	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("no kubeconfig: %w", err)
	}
	restConfig.UserAgent = "capr-manager"

	// CAPR never reads managed fields: the cache drops them (a sizeable part of every cached object).
	cacheOptions := cache.Options{SyncPeriod: &o.syncPeriod, DefaultTransform: cache.TransformStripManagedFields()}
	if o.namespace != "" {
		cacheOptions.DefaultNamespaces = map[string]cache.Config{o.namespace: {}}
	}
	// The hosts' Leases are watched in the manager's namespace only (the leader-election Role allows it).
	locksNamespace := o.managerNamespace()
	hostLocks, err := labels.Parse(pool.EndpointLockLabel)
	if err != nil {
		return err
	}
	cacheOptions.ByObject = map[client.Object]cache.ByObject{&coordinationv1.Lease{}: {
		Namespaces: map[string]cache.Config{locksNamespace: {}}, Label: hostLocks}}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                        scheme,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "controller-leader-election-capr",
		LeaderElectionNamespace:       o.leaderElectNamespace,
		LeaderElectionResourceLock:    resourcelock.LeasesResourceLock,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &o.leaseDuration,
		RenewDeadline:                 &o.renewDeadline,
		RetryPeriod:                   &o.retryPeriod,
		HealthProbeBindAddress:        o.healthAddr,
		Metrics:                       *metricsOptions,
		Cache:                         cacheOptions,
		// Secrets (SSH keys, bootstrap data) are read directly, never cached: no cluster-wide Secret list/watch.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		WebhookServer: webhook.NewServer(webhook.Options{
			Port:    o.webhookPort,
			CertDir: o.webhookCertDir,
			TLSOpts: tlsOptions,
		}),
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}

	ctx := ctrl.SetupSignalHandler()
	if err := pool.SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	claimer := pool.NewClaimer(mgr)
	clusterCache, err := clustercache.SetupWithManager(ctx, mgr, clustercache.Options{
		// Kubeconfig Secrets are read directly: no Secret informer.
		SecretClient:     mgr.GetAPIReader(),
		WatchFilterValue: o.watchFilter,
		Client:           clustercache.ClientOptions{UserAgent: "capr-manager", Cache: clustercache.ClientCacheOptions{}},
	}, controller.Options{MaxConcurrentReconciles: 10})
	if err != nil {
		return fmt.Errorf("setting up the workload cluster cache: %w", err)
	}
	runner := tasks.NewWithLimits(tasks.Limits{
		Total: o.bootstrapConcurrency, PerNamespace: o.namespaceConcurrency, Cleanup: o.cleanupConcurrency,
	})
	if err := (&controllers.RemoteMachineReconciler{
		Client:           mgr.GetClient(),
		APIReader:        mgr.GetAPIReader(),
		Recorder:         mgr.GetEventRecorder("remotemachine-controller"),
		Tasks:            runner,
		Dial:             controllers.DialSSH,
		Claimer:          claimer,
		WatchFilterValue: o.watchFilter,
		BootstrapTimeout: o.bootstrapTimeout,
		RetryInterval:    o.retryInterval,
		MaxRetryInterval: o.retryMaxInterval,
		CleanupTimeout:   o.cleanupTimeout,
		ClusterCache:     clusterCache,
	}).SetupWithManager(ctx, mgr, controller.Options{MaxConcurrentReconciles: o.remoteMachineConcurrency}); err != nil {
		return fmt.Errorf("setting up the RemoteMachine controller: %w", err)
	}
	if err := (&controllers.PooledRemoteMachineReconciler{
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		Recorder:          mgr.GetEventRecorder("pooledremotemachine-controller"),
		Claimer:           claimer,
		Locks:             pool.NewEndpointLocks(mgr, locksNamespace),
		OrphanGracePeriod: o.orphanClaimGrace,
		ProbeInterval:     o.poolProbeInterval,
		Dial:              controllers.DialSSH,
	}).SetupWithManager(ctx, mgr, controller.Options{MaxConcurrentReconciles: 4}); err != nil {
		return fmt.Errorf("setting up the PooledRemoteMachine controller: %w", err)
	}
	if err := (&controllers.RemoteMachineTemplateReconciler{
		Client: mgr.GetClient(),
	}).SetupWithManager(ctx, mgr, controller.Options{MaxConcurrentReconciles: 2}); err != nil {
		return fmt.Errorf("setting up the RemoteMachineTemplate controller: %w", err)
	}
	if err := (&controllers.RemoteClusterReconciler{
		Client:           mgr.GetClient(),
		WatchFilterValue: o.watchFilter,
	}).SetupWithManager(ctx, mgr, controller.Options{MaxConcurrentReconciles: 4}); err != nil {
		return fmt.Errorf("setting up the RemoteCluster controller: %w", err)
	}
	metrics.Register(mgr.GetClient())
	if o.webhookPort != 0 {
		if err := webhooks.SetupWithManager(mgr, claimer, locksNamespace); err != nil {
			return fmt.Errorf("setting up webhooks: %w", err)
		}
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return err
	}

	setupLog.Info("Starting manager", "namespace", o.namespace, "watchFilter", o.watchFilter)
	return mgr.Start(ctx)
}

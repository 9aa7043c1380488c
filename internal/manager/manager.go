// Package manager wires CAPR's manager: the cache, the field indexes, the four reconcilers and their task runner,
// the webhooks, the workload cluster cache and the health checks. main.go turns flags into Options and calls it;
// the test harnesses call it too, so a test runs the manager the way it is installed.
package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/cluster-api/controllers/clustercache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/controllers"
	"github.com/capr-project/cluster-api-provider-remote/internal/host/sshhost"
	"github.com/capr-project/cluster-api-provider-remote/internal/metrics"
	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
	"github.com/capr-project/cluster-api-provider-remote/internal/webhooks"
)

// The diagnostics endpoint authenticates and authorizes each scrape against the apiserver.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// UserAgent is the user agent of the manager's requests to the management and workload clusters.
const UserAgent = "capr-manager"

// LeaderElectionID is the name of the leader-election Lease every replica competes for.
const LeaderElectionID = "controller-leader-election-capr"

// Workers of the controllers whose concurrency has no flag.
const (
	pooledRemoteMachineConcurrency   = 4
	remoteMachineTemplateConcurrency = 2
	remoteClusterConcurrency         = 4
	clusterCacheConcurrency          = 10
)

// DefaultBootstrapConcurrency is the number of SSH tasks run at once. A bootstrap is an SSH session that waits on
// the host (a kubeadm join takes a minute or more): it costs the manager a connection, a few goroutines and their
// buffers (see make bench's P6 breakdown), and its bootstrap data, which DefaultBootstrapMemory bounds. So it is set
// by what a fleet scales by at once, not by the manager's two cores.
const DefaultBootstrapConcurrency = 100

// DefaultBootstrapMemory is the bytes of bootstrap data the bootstraps in flight may hold together (kubeadm's data
// is tens of KiB; one bootstrap may decode to 64 MiB), within the manager's 512Mi memory limit.
const DefaultBootstrapMemory = 256 << 20

// Options are the manager's settings: everything its flags set, and the few knobs a test injects.
type Options struct {
	// Scheme knows the kinds the manager reads; NewScheme() when nil.
	Scheme *runtime.Scheme
	// Namespace limits the watched objects to one namespace; empty watches every namespace.
	Namespace string
	// WatchFilter limits reconciliation to objects whose cluster.x-k8s.io/watch-filter label has this value.
	WatchFilter string
	// SyncPeriod is the interval at which every watched object is reconciled again.
	SyncPeriod time.Duration
	// ManagerNamespace is the manager's own namespace, which holds the hosts' Leases.
	ManagerNamespace string

	// LeaderElection turns leader election on; LeaderElectionNamespace is its Lease's namespace (empty: the Pod's).
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaseDuration           time.Duration
	RenewDeadline           time.Duration
	RetryPeriod             time.Duration

	// HealthAddr serves /healthz and /readyz; empty or "0" serves none.
	HealthAddr string
	// Metrics configures the diagnostics endpoint.
	Metrics metricsserver.Options
	// WebhookHost, WebhookPort and WebhookCertDir are where the webhook server listens (TLS); port 0 disables it.
	WebhookHost    string
	WebhookPort    int
	WebhookCertDir string
	// TLSOpts tune the webhook server's TLS.
	TLSOpts []func(*tls.Config)

	// RemoteMachineConcurrency is the number of RemoteMachines reconciled at the same time.
	RemoteMachineConcurrency int
	// Tasks bounds the SSH scans, bootstraps and cleanups run at the same time.
	Tasks tasks.Limits
	// BootstrapMemory bounds the bytes of bootstrap data the bootstraps in flight hold together.
	BootstrapMemory int64
	// BootstrapTimeout is the longest one bootstrap or cleanup may run on a host.
	BootstrapTimeout time.Duration
	// RetryInterval and RetryMaxInterval bound the backoff of bootstraps that failed before anything ran.
	RetryInterval    time.Duration
	RetryMaxInterval time.Duration
	// CleanupTimeout is how long a failing cleanup is retried before the pool entry is quarantined.
	CleanupTimeout time.Duration
	// OrphanClaimGrace is how long a pool entry's claim may wait for its RemoteMachine to be stored.
	OrphanClaimGrace time.Duration
	// PoolProbeInterval is how often free pool entries' hosts are checked over SSH; 0 turns the probe off.
	PoolProbeInterval time.Duration
	// PoolProbeSelector limits the probe to pool entries with these labels; nil probes every entry.
	PoolProbeSelector labels.Selector

	// Hosts is how the controllers reach hosts (tests record or fake it).
	Hosts controllers.HostService
	// Claimer is the pool claimer shared by the webhooks and controllers; one is made when nil (tests share theirs).
	Claimer *pool.Claimer
	// WebhooksOnly registers the indexes and webhooks but no controller: a test's admission server beside a manager
	// process that runs the controllers.
	WebhooksOnly bool
	// SkipNameValidation lets a second manager in one process register controllers of the same names (tests).
	SkipNameValidation bool
	// Logger is the manager's logger; controller-runtime's global one when unset.
	Logger logr.Logger
}

// DefaultOptions returns the settings of the installed manager when no flag is given.
func DefaultOptions() Options {
	return Options{
		SyncPeriod:               10 * time.Minute,
		LeaseDuration:            15 * time.Second,
		RenewDeadline:            10 * time.Second,
		RetryPeriod:              2 * time.Second,
		HealthAddr:               ":9440",
		WebhookPort:              9443,
		WebhookCertDir:           "/tmp/k8s-webhook-server/serving-certs/",
		RemoteMachineConcurrency: 10,
		Tasks:                    tasks.Limits{Total: DefaultBootstrapConcurrency, Cleanup: tasks.DefaultCleanupConcurrency},
		BootstrapMemory:          DefaultBootstrapMemory,
		BootstrapTimeout:         30 * time.Minute,
		RetryInterval:            20 * time.Second,
		RetryMaxInterval:         10 * time.Minute,
		CleanupTimeout:           10 * time.Minute,
		OrphanClaimGrace:         2 * time.Minute,
	}
}

// Validate checks the settings; its errors name the flag to fix.
func (o *Options) Validate() error {
	if o.RemoteMachineConcurrency < 1 {
		return fmt.Errorf("--remotemachine-concurrency must be at least 1, got %d", o.RemoteMachineConcurrency)
	}
	if o.Tasks.Total < 1 {
		return fmt.Errorf("--bootstrap-concurrency must be at least 1, got %d", o.Tasks.Total)
	}
	if o.Tasks.PerNamespace < 0 || o.Tasks.PerNamespace > o.Tasks.Total {
		return fmt.Errorf("--bootstrap-concurrency-per-namespace must be between 0 (half of --bootstrap-concurrency) and --bootstrap-concurrency (%d), got %d",
			o.Tasks.Total, o.Tasks.PerNamespace)
	}
	if o.BootstrapMemory < sshhost.MinMemory {
		return fmt.Errorf("--bootstrap-memory must be at least %dMi (two of the largest bootstrap data CAPR accepts), got %d bytes", sshhost.MinMemory>>20, o.BootstrapMemory)
	}
	if o.Tasks.Cleanup < 1 {
		return fmt.Errorf("--cleanup-concurrency must be at least 1, got %d", o.Tasks.Cleanup)
	}
	if o.RetryInterval <= 0 || o.RetryMaxInterval < o.RetryInterval {
		return fmt.Errorf("--retry-interval (%s) must be positive and at most --retry-max-interval (%s)", o.RetryInterval, o.RetryMaxInterval)
	}
	if o.SyncPeriod <= 0 {
		return fmt.Errorf("--sync-period must be positive, got %s", o.SyncPeriod)
	}
	if o.LeaseDuration <= o.RenewDeadline || o.RenewDeadline <= o.RetryPeriod || o.RetryPeriod <= 0 {
		return fmt.Errorf("the leader election durations must satisfy --leader-elect-lease-duration (%s) > --leader-elect-renew-deadline (%s) > --leader-elect-retry-period (%s) > 0",
			o.LeaseDuration, o.RenewDeadline, o.RetryPeriod)
	}
	if o.WebhookPort < 0 || o.WebhookPort > 65535 {
		return fmt.Errorf("--webhook-port must be between 0 and 65535, got %d", o.WebhookPort)
	}
	return nil
}

// NewScheme returns a scheme with the kinds the manager reads: Kubernetes', Cluster API's and CAPR's.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, clusterv1.AddToScheme, infrav1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// ManagerOptions returns the controller-runtime options of the manager: its cache (managed fields dropped, the
// hosts' Leases watched in the manager's namespace only), its uncached Secrets, leader election and servers.
func ManagerOptions(o Options) (ctrl.Options, error) {
	scheme := o.Scheme
	if scheme == nil {
		scheme = NewScheme()
	}
	syncPeriod := o.SyncPeriod
	// CAPR never reads managed fields: the cache drops them (a sizeable part of every cached object).
	cacheOptions := cache.Options{SyncPeriod: &syncPeriod, DefaultTransform: cache.TransformStripManagedFields()}
	if o.Namespace != "" {
		cacheOptions.DefaultNamespaces = map[string]cache.Config{o.Namespace: {}}
	}
	hostLocks, err := labels.Parse(pool.EndpointLockLabel)
	if err != nil {
		return ctrl.Options{}, err
	}
	// The hosts' Leases are watched in the manager's namespace only (the leader-election Role allows it).
	cacheOptions.ByObject = map[client.Object]cache.ByObject{&coordinationv1.Lease{}: {
		Namespaces: map[string]cache.Config{o.ManagerNamespace: {}}, Label: hostLocks}}
	leaseDuration, renewDeadline, retryPeriod := o.LeaseDuration, o.RenewDeadline, o.RetryPeriod
	return ctrl.Options{
		Scheme:                        scheme,
		Logger:                        o.Logger,
		LeaderElection:                o.LeaderElection,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionResourceLock:    resourcelock.LeasesResourceLock,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
		HealthProbeBindAddress:        o.HealthAddr,
		Metrics:                       o.Metrics,
		Cache:                         cacheOptions,
		// Secrets (SSH keys, bootstrap data) are read directly, never cached: no cluster-wide Secret list/watch.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host: o.WebhookHost, Port: o.WebhookPort, CertDir: o.WebhookCertDir, TLSOpts: o.TLSOpts,
		}),
	}, nil
}

// New creates the manager for a rest config with ManagerOptions(o); Setup registers what it runs.
func New(cfg *rest.Config, o Options) (ctrl.Manager, error) {
	mo, err := ManagerOptions(o)
	if err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = UserAgent
	mgr, err := ctrl.NewManager(cfg, mo)
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	return mgr, nil
}

// registerMetrics registers CAPR's metrics once per process (a test may run two managers).
var registerMetrics sync.Once

// Setup registers with mgr the field indexes, the controllers, the webhooks and the health checks.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	if o.ManagerNamespace == "" {
		return errors.New("the manager's namespace is empty: it holds the Leases that keep a host in one pool entry")
	}
	if err := pool.SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	// One record of the manager's writes, shared by the claims and every reconciler: a reconcile waits for the
	// cache to catch up with what any of them wrote.
	written := controllers.NewWrittenVersions(mgr.GetScheme(), &infrav1.RemoteMachine{}, &infrav1.PooledRemoteMachine{})
	claimer := o.Claimer
	if claimer == nil {
		claimer = pool.NewClaimer(mgr)
		claimer.Writer = written.Client(mgr.GetClient())
	}
	if !o.WebhooksOnly {
		if err := setupReconcilers(ctx, mgr, o, claimer, written); err != nil {
			return err
		}
	}
	registerMetrics.Do(func() { metrics.Register(mgr.GetClient()) })
	if o.WebhookPort != 0 {
		if err := webhooks.SetupWithManager(mgr, claimer, o.ManagerNamespace); err != nil {
			return fmt.Errorf("setting up webhooks: %w", err)
		}
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("ping", healthz.Ping)
}

// setupReconcilers registers the workload cluster cache, the task runner and the four reconcilers.
func setupReconcilers(ctx context.Context, mgr ctrl.Manager, o Options, claimer *pool.Claimer, written *controllers.WrittenVersions) error {
	workers := func(n int) controller.Options {
		opts := controller.Options{MaxConcurrentReconciles: n}
		if o.SkipNameValidation {
			opts.SkipNameValidation = &o.SkipNameValidation
		}
		return opts
	}
	// One host service and one task runner per manager: every SSH connection runs through them, off the workers.
	hosts := o.Hosts
	if hosts == nil {
		hosts = &sshhost.Service{Memory: sshhost.NewMemoryBudget(o.BootstrapMemory)}
	}
	runner := tasks.NewWithLimits(o.Tasks)
	clusterCache, err := clustercache.SetupWithManager(ctx, mgr, clustercache.Options{
		// Kubeconfig Secrets are read directly: no Secret informer.
		SecretClient:     mgr.GetAPIReader(),
		WatchFilterValue: o.WatchFilter,
		Client:           clustercache.ClientOptions{UserAgent: UserAgent, Cache: clustercache.ClientCacheOptions{}},
	}, workers(clusterCacheConcurrency))
	if err != nil {
		return fmt.Errorf("setting up the workload cluster cache: %w", err)
	}
	if err := (&controllers.RemoteMachineReconciler{
		Client:           written.Client(mgr.GetClient()),
		Written:          written,
		APIReader:        mgr.GetAPIReader(),
		Recorder:         mgr.GetEventRecorder("remotemachine-controller"),
		Tasks:            runner,
		Hosts:            hosts,
		Claimer:          claimer,
		WatchFilterValue: o.WatchFilter,
		BootstrapTimeout: o.BootstrapTimeout,
		RetryInterval:    o.RetryInterval,
		MaxRetryInterval: o.RetryMaxInterval,
		CleanupTimeout:   o.CleanupTimeout,
		ClusterCache:     clusterCache,
	}).SetupWithManager(ctx, mgr, workers(o.RemoteMachineConcurrency)); err != nil {
		return fmt.Errorf("setting up the RemoteMachine controller: %w", err)
	}
	if err := (&controllers.PooledRemoteMachineReconciler{
		Client:            written.Client(mgr.GetClient()),
		Written:           written,
		APIReader:         mgr.GetAPIReader(),
		Recorder:          mgr.GetEventRecorder("pooledremotemachine-controller"),
		Claimer:           claimer,
		Locks:             pool.NewEndpointLocks(mgr, o.ManagerNamespace),
		OrphanGracePeriod: o.OrphanClaimGrace,
		ProbeInterval:     o.PoolProbeInterval,
		ProbeSelector:     o.PoolProbeSelector,
		Hosts:             hosts,
		Tasks:             runner,
	}).SetupWithManager(ctx, mgr, workers(pooledRemoteMachineConcurrency)); err != nil {
		return fmt.Errorf("setting up the PooledRemoteMachine controller: %w", err)
	}
	if err := (&controllers.RemoteMachineTemplateReconciler{
		Client: mgr.GetClient(),
	}).SetupWithManager(ctx, mgr, workers(remoteMachineTemplateConcurrency)); err != nil {
		return fmt.Errorf("setting up the RemoteMachineTemplate controller: %w", err)
	}
	if err := (&controllers.RemoteClusterReconciler{
		Client:           mgr.GetClient(),
		WatchFilterValue: o.WatchFilter,
	}).SetupWithManager(ctx, mgr, workers(remoteClusterConcurrency)); err != nil {
		return fmt.Errorf("setting up the RemoteCluster controller: %w", err)
	}
	return nil
}

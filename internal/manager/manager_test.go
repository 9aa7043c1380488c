package manager

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/capr-project/cluster-api-provider-remote/internal/pool"
)

// TestManagerOptionsKeepCacheSettings: the controller-runtime options every caller (main.go and the test
// harnesses) gets from Options keep the cache as installed. Before this package the harnesses built their own
// options and had lost the managed-fields transform and the Lease selector, so tests ran a manager whose cache held
// what the installed one drops.
func TestManagerOptionsKeepCacheSettings(t *testing.T) {
	g := NewWithT(t)
	o := DefaultOptions()
	o.ManagerNamespace, o.Namespace, o.SyncPeriod = "capr-system", "tenant", 3*time.Minute
	mo, err := ManagerOptions(o)
	g.Expect(err).NotTo(HaveOccurred())

	// Managed fields are dropped from every cached object.
	g.Expect(mo.Cache.DefaultTransform).NotTo(BeNil())
	obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	out, err := mo.Cache.DefaultTransform(obj)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out.(*corev1.ConfigMap).ManagedFields).To(BeEmpty())

	// --namespace limits the cache; --sync-period is kept.
	g.Expect(mo.Cache.DefaultNamespaces).To(HaveLen(1))
	g.Expect(mo.Cache.DefaultNamespaces).To(HaveKey("tenant"))
	g.Expect(mo.Cache.SyncPeriod).NotTo(BeNil())
	g.Expect(*mo.Cache.SyncPeriod).To(Equal(3 * time.Minute))

	// Leases: the hosts' locks in the manager's namespace only, selected by their label.
	var lease *cacheByObject
	for k, v := range mo.Cache.ByObject {
		if _, ok := k.(*coordinationv1.Lease); ok {
			lease = &cacheByObject{namespaces: keys(v.Namespaces), selector: v.Label}
		}
	}
	g.Expect(lease).NotTo(BeNil(), "no cache settings for Leases")
	g.Expect(lease.namespaces).To(ConsistOf("capr-system"))
	g.Expect(lease.selector).NotTo(BeNil())
	g.Expect(lease.selector.Matches(labels.Set{pool.EndpointLockLabel: "x"})).To(BeTrue())
	g.Expect(lease.selector.Matches(labels.Set{"other": "x"})).To(BeFalse(), "a Lease that is no host lock is not cached")

	// Secrets are never cached: no cluster-wide Secret list/watch.
	g.Expect(mo.Client.Cache).NotTo(BeNil())
	g.Expect(mo.Client.Cache.DisableFor).To(ContainElement(BeAssignableToTypeOf(&corev1.Secret{})))

	// Leader election as installed.
	g.Expect(mo.LeaderElectionID).To(Equal(LeaderElectionID))
	g.Expect(mo.LeaderElectionReleaseOnCancel).To(BeTrue())
	g.Expect(*mo.LeaseDuration).To(Equal(15 * time.Second))
}

// TestManagerOptionsWatchEveryNamespace: without --namespace the cache is not limited.
func TestManagerOptionsWatchEveryNamespace(t *testing.T) {
	g := NewWithT(t)
	o := DefaultOptions()
	o.ManagerNamespace = "capr-system"
	mo, err := ManagerOptions(o)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(mo.Cache.DefaultNamespaces).To(BeEmpty())
	g.Expect(mo.Scheme).NotTo(BeNil())
}

// TestValidateNamesTheFlag: invalid settings are refused with the flag to fix; the defaults are valid.
func TestValidateNamesTheFlag(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(*Options)
		want   string
	}{
		"defaults":          {change: func(*Options) {}},
		"no workers":        {change: func(o *Options) { o.RemoteMachineConcurrency = 0 }, want: "--remotemachine-concurrency"},
		"no bootstrap slot": {change: func(o *Options) { o.Tasks.Total = 0 }, want: "--bootstrap-concurrency"},
		"share too large":   {change: func(o *Options) { o.Tasks.PerNamespace = o.Tasks.Total + 1 }, want: "--bootstrap-concurrency-per-namespace"},
		"no cleanup slot":   {change: func(o *Options) { o.Tasks.Cleanup = 0 }, want: "--cleanup-concurrency"},
		"retry inverted":    {change: func(o *Options) { o.RetryMaxInterval = o.RetryInterval / 2 }, want: "--retry-interval"},
		"no sync":           {change: func(o *Options) { o.SyncPeriod = 0 }, want: "--sync-period"},
		"lease too short":   {change: func(o *Options) { o.LeaseDuration = o.RenewDeadline }, want: "--leader-elect-lease-duration"},
		"port":              {change: func(o *Options) { o.WebhookPort = 70000 }, want: "--webhook-port"},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			o := DefaultOptions()
			tc.change(&o)
			err := o.Validate()
			if tc.want == "" {
				g.Expect(err).NotTo(HaveOccurred())
				return
			}
			g.Expect(err).To(MatchError(ContainSubstring(tc.want)))
		})
	}
}

type cacheByObject struct {
	namespaces []string
	selector   labels.Selector
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

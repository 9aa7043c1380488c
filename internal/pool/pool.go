// Package pool holds the claim and release of PooledRemoteMachines, shared by the admission webhooks and the
// controllers: which entries are free, in which order they are offered, the atomic claim, the release, and the
// field indexes behind them.
package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/metrics"
)

// Field indexes on PooledRemoteMachine.
const (
	// IndexPool maps an entry to its spec.pool.
	IndexPool = "capr.pool"
	// IndexFree maps a claimable entry to "pool/<pool>", to its bucket "pool/<pool>#<n>" and to AnyPool; entries
	// that cannot be claimed have no key.
	IndexFree = "capr.free"
	// IndexKeySecret maps an entry to HashedKey of the name of the Secret holding its host's SSH key.
	IndexKeySecret = "capr.keysecret"
	// IndexClaim maps a claimed entry to HashedKey of the name of the RemoteMachine holding it.
	IndexClaim = "capr.claim"

	// AnyPool is the IndexFree key under which every claimable entry of a namespace is found.
	AnyPool = "*"
)

// SetupIndexes registers the field indexes the claim relies on.
func SetupIndexes(ctx context.Context, indexer client.FieldIndexer) error {
	obj := &infrav1.PooledRemoteMachine{}
	for name, fn := range map[string]func(*infrav1.PooledRemoteMachine) []string{
		IndexPool: func(m *infrav1.PooledRemoteMachine) []string { return []string{m.Spec.Pool} },
		IndexFree: func(m *infrav1.PooledRemoteMachine) []string {
			if SkipReason(m) != "" {
				return nil
			}
			return []string{freeKey(m.Spec.Pool), bucketKey(m.Spec.Pool, bucketOf(m.Name)), AnyPool}
		},
		IndexKeySecret: func(m *infrav1.PooledRemoteMachine) []string {
			if ref := m.Spec.Machine.SSHKeyRef; ref != nil {
				return []string{HashedKey(ref.Name)}
			}
			return nil
		},
		IndexClaim: func(m *infrav1.PooledRemoteMachine) []string {
			if m.Spec.ClaimRef == nil {
				return nil
			}
			return []string{HashedKey(m.Spec.ClaimRef.Name)}
		},
	} {
		if err := indexer.IndexField(ctx, obj, name, func(o client.Object) []string {
			return fn(o.(*infrav1.PooledRemoteMachine))
		}); err != nil {
			return fmt.Errorf("indexing PooledRemoteMachine by %s: %w", name, err)
		}
	}
	return nil
}

// hashedBuckets is how many keys a hashed index has at most in a namespace.
const hashedBuckets = 256

// HashedKey is the key under which an index whose values are nearly all distinct (a Secret's name, a
// RemoteMachine's name, a Lease's holder) files an object: a bucket of the value's hash. The informer's index then
// keeps at most hashedBuckets sets of keys per namespace rather than a set of one key per object (some 400 bytes
// each, kept twice: per namespace and across namespaces), and a lookup reads the bucket, which it filters by the
// value itself.
func HashedKey(value string) string {
	return "h" + strconv.FormatUint(hash64(value)%hashedBuckets, 10)
}

// hash64 is the FNV-1a hash of s, which the buckets of both the free entries and the hashed indexes use.
func hash64(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// EntriesClaimedBy returns the names of the entries of namespace whose claim names the RemoteMachine name, from the
// cache (indexed by IndexClaim).
func EntriesClaimedBy(ctx context.Context, r client.Reader, namespace, name string) ([]string, error) {
	list := &infrav1.PooledRemoteMachineList{}
	// Read-only: the cached objects are not copied.
	if err := r.List(ctx, list, client.InNamespace(namespace), client.MatchingFields{IndexClaim: HashedKey(name)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var names []string
	for i := range list.Items {
		if c := list.Items[i].Spec.ClaimRef; c != nil && c.Name == name {
			names = append(names, list.Items[i].Name)
		}
	}
	return names, nil
}

// EntryWithKeySecret returns the name of an entry of namespace whose host's SSH key is the Secret name, or "",
// from the cache (indexed by IndexKeySecret).
func EntryWithKeySecret(ctx context.Context, r client.Reader, namespace, name string) (string, error) {
	list := &infrav1.PooledRemoteMachineList{}
	// Read-only: the cached objects are not copied.
	if err := r.List(ctx, list, client.InNamespace(namespace), client.MatchingFields{IndexKeySecret: HashedKey(name)}, client.UnsafeDisableDeepCopy); err != nil {
		return "", err
	}
	for i := range list.Items {
		if ref := list.Items[i].Spec.Machine.SSHKeyRef; ref != nil && ref.Name == name {
			return list.Items[i].Name, nil
		}
	}
	return "", nil
}

func freeKey(pool string) string { return "pool/" + pool }

// buckets splits each pool's free entries by a hash of their names, so that a claim reads a sixteenth of a large
// pool rather than all of it.
const buckets = 16

func bucketKey(pool string, b uint64) string { return freeKey(pool) + "#" + strconv.FormatUint(b, 10) }

func bucketOf(name string) uint64 { return hash64(name) % buckets }

// Endpoint returns the normalised "address:port" key of a host: an IP address in its canonical form (IPv6
// compressed and lower-case, an IPv4-mapped IPv6 address as IPv4), a DNS name lower-case without final dots; port
// 0 is 22.
func Endpoint(address string, port int32) string {
	if port == 0 {
		port = 22
	}
	address = strings.TrimRight(strings.ToLower(address), ".")
	if ip, err := netip.ParseAddr(address); err == nil {
		address = ip.Unmap().String()
	}
	return net.JoinHostPort(address, strconv.Itoa(int(port)))
}

// Reasons an entry is not offered, as counted in the exhausted-pool message.
const (
	SkipClaimed     = "claimed"
	SkipMaintenance = "in maintenance"
	SkipQuarantined = "quarantined"
	SkipUnreachable = "unreachable"
	SkipDeleting    = "being deleted"
	SkipNoMatch     = "not matching the selector"
	// SkipNewHostKeys: the cleanup gave the host new SSH host keys and no probe has logged in with them yet.
	SkipNewHostKeys = "waiting for a probe with new host keys"
	// SkipOtherClusters: the entry's spec.allowedClusters does not name the RemoteMachine's cluster.
	SkipOtherClusters = "reserved for other clusters"
)

// SkipReason says why an entry cannot be claimed, or "" when it can.
func SkipReason(m *infrav1.PooledRemoteMachine) string {
	switch {
	case m.DeletionTimestamp != nil:
		return SkipDeleting
	case m.Spec.ClaimRef != nil:
		return SkipClaimed
	case m.Spec.Quarantine != nil:
		return SkipQuarantined
	case m.Spec.Maintenance:
		return SkipMaintenance
	case m.Status.Phase == infrav1.PooledRemoteMachinePhaseUnreachable:
		return SkipUnreachable
	case hasAnnotation(m, infrav1.HostKeysRegeneratedAnnotation):
		return SkipNewHostKeys
	}
	return ""
}

func hasAnnotation(m *infrav1.PooledRemoteMachine, key string) bool {
	_, ok := m.Annotations[key]
	return ok
}

// ClusterAllowed says whether a RemoteMachine of the named Cluster API cluster ("" when it has no cluster-name
// label) may claim the entry: its spec.allowedClusters is empty or names the cluster.
func ClusterAllowed(m *infrav1.PooledRemoteMachine, cluster string) bool {
	return len(m.Spec.AllowedClusters) == 0 || (cluster != "" && slices.Contains(m.Spec.AllowedClusters, cluster))
}

// offered says whether a request may claim an entry that can be claimed: the selector matches and the entry allows
// the request's cluster.
func offered(req Request, m *infrav1.PooledRemoteMachine) bool {
	return (req.Selector == nil || req.Selector.Matches(labels.Set(m.Labels))) && ClusterAllowed(m, req.ClusterName)
}

// Request describes the RemoteMachine a pool entry is wanted for.
type Request struct {
	// Namespace of the RemoteMachine; entries are only taken from the same namespace.
	Namespace string
	// Pool is the RemoteMachine's spec.pool; empty means any pool.
	Pool string
	// Selector is the RemoteMachine's spec.selector; nil or empty matches every entry.
	Selector labels.Selector
	// MachineName is the RemoteMachine's name, recorded in the entry's claimRef.
	MachineName string
	// ClusterName and ControlPlane come from the RemoteMachine's Cluster API labels; control-plane machines of a
	// cluster are spread across failure domains.
	ClusterName  string
	ControlPlane bool
	// FailureDomains are the failure domains Cluster API will ask of the Machine (the one its MachineSet names, or
	// those KubeadmControlPlane would pick from): entries in them are offered first.
	FailureDomains []string
}

// ExhaustedError is returned when no entry can be claimed; its message counts why each entry was skipped.
type ExhaustedError struct {
	Pool     string
	Selector string
	Total    int
	Skipped  map[string]int
}

func (e *ExhaustedError) Error() string {
	where := "in pool " + strconv.Quote(e.Pool)
	if e.Pool == "" {
		where = "in the namespace"
	}
	if e.Selector != "" {
		where += " matching selector " + strconv.Quote(e.Selector)
	}
	if e.Total == 0 {
		return fmt.Sprintf("no free PooledRemoteMachine %s (none exist: create PooledRemoteMachines with spec.pool %q in this namespace)", where, e.Pool)
	}
	reasons := make([]string, 0, len(e.Skipped))
	for r := range e.Skipped {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	parts := make([]string, 0, len(reasons))
	for _, r := range reasons {
		parts = append(parts, fmt.Sprintf("%d %s", e.Skipped[r], r))
	}
	scope := "in pool"
	if e.Pool == "" {
		scope = "in namespace"
	}
	return fmt.Sprintf("no free PooledRemoteMachine %s (%d %s: %s)", where, e.Total, scope, strings.Join(parts, ", "))
}

// ErrExhausted matches an *ExhaustedError with errors.Is.
var ErrExhausted = errors.New("no free PooledRemoteMachine")

// Is makes errors.Is(err, ErrExhausted) true.
func (e *ExhaustedError) Is(target error) bool { return target == ErrExhausted }

// Claimer claims and releases pool entries. Reads come from Reader (the manager's cache, with the indexes above);
// the claim itself is an update with a resourceVersion precondition, so the apiserver decides between concurrent
// claimers, whichever process they run in.
type Claimer struct {
	// Reader is a cached reader with the indexes registered by SetupIndexes.
	Reader client.Reader
	// APIReader reads straight from the apiserver, to re-check an entry after a conflict.
	APIReader client.Reader
	// Writer writes to the apiserver.
	Writer client.Writer
	// Now returns the current time; time.Now when nil.
	Now func() time.Time

	// reserved maps an entry key to the reservation of a claim in this process: the entry's resourceVersion it
	// started on and when. Concurrent claims in one process never race for the same entry, and an entry just
	// claimed is skipped until the cache shows a newer version of it. It is only an optimisation: the apiserver's
	// resourceVersion check decides between processes.
	reserved sync.Map
	// exhausted holds the requests' pools (namespace, pool, selector) an apiserver read found nothing to claim in
	// within the last freshReadInterval; freshReads limits each namespace's apiserver reads. Both are bounded,
	// whatever clients send.
	bounds     sync.Once
	exhausted  *expiringSet
	freshReads *namespaceLimiter
}

// Bounds of what a Claimer remembers and of the apiserver reads clients may cause.
const (
	// maxExhaustedPools is how many exhausted pools (namespace, pool, selector) are remembered at most.
	maxExhaustedPools = 4096
	// freshReadsPerSecond and freshReadBurst limit the apiserver reads of one namespace's entries; beyond them a
	// refusal is answered from the cache.
	freshReadsPerSecond = 2
	freshReadBurst      = 5
	// maxLimitedNamespaces is how many namespaces' read limits are remembered at most.
	maxLimitedNamespaces = 4096
)

func (c *Claimer) initBounds() {
	c.bounds.Do(func() {
		c.exhausted = newExpiringSet(maxExhaustedPools, freshReadInterval)
		c.freshReads = newNamespaceLimiter(freshReadsPerSecond, freshReadBurst, maxLimitedNamespaces)
	})
}

// ExhaustedPools returns how many pools the Claimer remembers as found exhausted (at most 4096).
func (c *Claimer) ExhaustedPools() int {
	c.initBounds()
	return c.exhausted.len()
}

// NewClaimer returns a Claimer reading from a manager's cache (with the indexes of SetupIndexes) and apiserver.
func NewClaimer(mgr interface {
	GetClient() client.Client
	GetAPIReader() client.Reader
}) *Claimer {
	return &Claimer{Reader: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Writer: mgr.GetClient()}
}

// reservationTTL is how long an entry reserved by this process is skipped without asking the apiserver.
const reservationTTL = 30 * time.Second

// reservation is a claim this process started on an entry at one resourceVersion.
type reservation struct {
	resourceVersion string
	at              time.Time
}

// reserve marks an entry as being claimed by this process; false if another claim here holds it.
func (c *Claimer) reserve(m *infrav1.PooledRemoteMachine) bool {
	now := c.now()
	mine := reservation{resourceVersion: m.ResourceVersion, at: now}
	for {
		prev, loaded := c.reserved.LoadOrStore(recentKey(m), mine)
		if !loaded {
			return true
		}
		if holds(prev.(reservation), m, now) {
			return false
		}
		if c.reserved.CompareAndSwap(recentKey(m), prev, mine) {
			return true
		}
	}
}

// isReserved says whether a claim of this process holds the entry as read: one started on this very version of
// it, not long ago. Once the entry changed (claimed, released, edited, by any replica) the reservation is void, so
// an entry another replica released is offered here at once.
func (c *Claimer) isReserved(m *infrav1.PooledRemoteMachine, now time.Time) bool {
	r, ok := c.reserved.Load(recentKey(m))
	return ok && holds(r.(reservation), m, now)
}

func holds(r reservation, m *infrav1.PooledRemoteMachine, now time.Time) bool {
	return r.resourceVersion == m.ResourceVersion && now.Sub(r.at) < reservationTTL
}

// errTaken means the entry was claimed or changed by someone else since it was listed.
var errTaken = errors.New("entry no longer free")

// cached returns the claimable entries under one IndexFree key, in claim order, read from the cache.
func (c *Claimer) cached(ctx context.Context, req Request, key string) ([]infrav1.PooledRemoteMachine, error) {
	list := &infrav1.PooledRemoteMachineList{}
	// The cache's objects are only read here; the entry that is claimed is copied first (claimEntry).
	if err := c.Reader.List(ctx, list, client.InNamespace(req.Namespace), client.MatchingFields{IndexFree: key}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	return c.filter(ctx, req, list.Items)
}

// freshCandidates reads the namespace's entries from the apiserver: used only when the cache offers nothing, so
// that entries created a moment ago (and not in the cache yet) are found, and the exhausted message is exact.
func (c *Claimer) freshCandidates(ctx context.Context, req Request) ([]infrav1.PooledRemoteMachine, []infrav1.PooledRemoteMachine, error) {
	list := &infrav1.PooledRemoteMachineList{}
	if err := c.APIReader.List(ctx, list, client.InNamespace(req.Namespace)); err != nil {
		return nil, nil, err
	}
	inPool := list.Items[:0]
	for _, m := range list.Items {
		if req.Pool == "" || m.Spec.Pool == req.Pool {
			inPool = append(inPool, m)
		}
	}
	candidates, err := c.filter(ctx, req, slices.Clone(inPool))
	return candidates, inPool, err
}

// filter keeps the entries a request may claim and orders them.
func (c *Claimer) filter(ctx context.Context, req Request, items []infrav1.PooledRemoteMachine) ([]infrav1.PooledRemoteMachine, error) {
	now := c.now()
	candidates := items[:0]
	for i := range items {
		m := &items[i]
		if SkipReason(m) != "" || !offered(req, m) || c.isReserved(m, now) {
			continue
		}
		candidates = append(candidates, *m)
	}
	if err := c.order(ctx, req, candidates); err != nil {
		return nil, err
	}
	return candidates, nil
}

// order sorts candidates: entries in the failure domains Cluster API will ask for come first; then, for a
// control-plane machine, entries in the failure domains least used by the cluster's other control-plane machines;
// ties are broken by a hash of machine and entry names, which is
// deterministic for one machine and spreads concurrent claims over different entries.
func (c *Claimer) order(ctx context.Context, req Request, candidates []infrav1.PooledRemoteMachine) error {
	used := map[string]int{}
	if req.ControlPlane && req.ClusterName != "" {
		var err error
		if used, err = c.controlPlaneFailureDomains(ctx, req); err != nil {
			return err
		}
	}
	// Rank by index: the entries themselves are large, so they are moved once, after sorting.
	inDomain := make([]int, len(candidates))
	wanted := make([]bool, len(candidates))
	score := make([]uint64, len(candidates))
	idx := make([]int, len(candidates))
	h := fnv.New64a()
	for i := range candidates {
		h.Reset()
		_, _ = h.Write([]byte(req.MachineName))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(candidates[i].Name))
		inDomain[i], score[i], idx[i] = used[candidates[i].Spec.FailureDomain], h.Sum64(), i
		wanted[i] = slices.Contains(req.FailureDomains, candidates[i].Spec.FailureDomain)
	}
	slices.SortFunc(idx, func(a, b int) int {
		if wanted[a] != wanted[b] {
			if wanted[a] {
				return -1
			}
			return 1
		}
		if inDomain[a] != inDomain[b] {
			return inDomain[a] - inDomain[b]
		}
		return cmp.Compare(score[a], score[b])
	})
	sorted := make([]infrav1.PooledRemoteMachine, len(candidates))
	for i, j := range idx {
		sorted[i] = candidates[j]
	}
	copy(candidates, sorted)
	return nil
}

// controlPlaneFailureDomains counts the failure domains of the entries held by a cluster's control-plane machines.
func (c *Claimer) controlPlaneFailureDomains(ctx context.Context, req Request) (map[string]int, error) {
	machines := &infrav1.RemoteMachineList{}
	if err := c.Reader.List(ctx, machines, client.InNamespace(req.Namespace), client.MatchingLabels{
		ClusterNameLabel: req.ClusterName,
	}, client.HasLabels{ControlPlaneLabel}); err != nil {
		return nil, err
	}
	used := map[string]int{}
	for _, rm := range machines.Items {
		if rm.Spec.PooledRemoteMachineRef == nil {
			continue
		}
		entry := &infrav1.PooledRemoteMachine{}
		err := c.Reader.Get(ctx, types.NamespacedName{Namespace: req.Namespace, Name: rm.Spec.PooledRemoteMachineRef.Name}, entry)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		used[entry.Spec.FailureDomain]++
	}
	return used, nil
}

// Cluster API labels read from a RemoteMachine.
const (
	ClusterNameLabel  = "cluster.x-k8s.io/cluster-name"
	ControlPlaneLabel = "cluster.x-k8s.io/control-plane"
)

// Pick returns the entry a claim would take, without claiming it (for dry-run requests).
func (c *Claimer) Pick(ctx context.Context, req Request) (*infrav1.PooledRemoteMachine, error) {
	var picked *infrav1.PooledRemoteMachine
	inPool, err := c.eachCandidateSet(ctx, req, func(candidates []infrav1.PooledRemoteMachine) (bool, error) {
		for i := range candidates {
			if !c.isReserved(&candidates[i], c.now()) {
				picked = candidates[i].DeepCopy()
				return true, nil
			}
		}
		return false, nil
	})
	metrics.ClaimsTotal.WithLabelValues("dry-run").Inc()
	if err != nil || picked != nil {
		return picked, err
	}
	return nil, exhausted(req, inPool)
}

// Claim takes the first free entry for the request and records the RemoteMachine in its spec.claimRef. A conflict
// means another claimer was first: the entry is re-read and, if taken, the next candidate is tried. Candidates come
// from the cache; when it offers none that can be claimed, once more from the apiserver before the pool is declared
// exhausted. Every entry is tried at most once per source, so a claim is bounded by the size of the pool.
func (c *Claimer) Claim(ctx context.Context, req Request) (*infrav1.PooledRemoteMachine, error) {
	if held, err := c.heldForRetry(ctx, req); err != nil || held != nil {
		if held != nil {
			metrics.ClaimsTotal.WithLabelValues("claimed").Inc()
		}
		return held, err
	}
	var claimed *infrav1.PooledRemoteMachine
	inPool, err := c.eachCandidateSet(ctx, req, func(candidates []infrav1.PooledRemoteMachine) (bool, error) {
		var err error
		claimed, err = c.claimFirst(ctx, req, candidates)
		return claimed != nil, err
	})
	switch {
	case err != nil:
		metrics.ClaimsTotal.WithLabelValues("error").Inc()
		return nil, err
	case claimed != nil:
		metrics.ClaimsTotal.WithLabelValues("claimed").Inc()
		return claimed, nil
	}
	metrics.ClaimsTotal.WithLabelValues("exhausted").Inc()
	return nil, exhausted(req, inPool)
}

// heldForRetry returns the entry an earlier attempt to create this very RemoteMachine claimed, when that attempt's
// answer was lost (the webhook's replica stopped, the connection dropped) and the client creates it again: the claim
// names the machine, is bound to no RemoteMachine yet, and no RemoteMachine of that name exists. The create is then
// idempotent instead of holding a second host until the orphan sweep frees the first.
func (c *Claimer) heldForRetry(ctx context.Context, req Request) (*infrav1.PooledRemoteMachine, error) {
	list := &infrav1.PooledRemoteMachineList{}
	// Read-only: the cached entries are not copied (the one returned is read from the apiserver).
	if err := c.Reader.List(ctx, list, client.InNamespace(req.Namespace), client.MatchingFields{IndexClaim: HashedKey(req.MachineName)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	for i := range list.Items {
		e := &list.Items[i]
		if e.Spec.ClaimRef == nil || e.Spec.ClaimRef.UID != "" || e.Spec.ClaimRef.Name != req.MachineName ||
			(req.Pool != "" && e.Spec.Pool != req.Pool) || e.Spec.Quarantine != nil || !e.DeletionTimestamp.IsZero() || !offered(req, e) {
			continue
		}
		err := c.APIReader.Get(ctx, types.NamespacedName{Namespace: req.Namespace, Name: req.MachineName}, &infrav1.RemoteMachine{})
		if !apierrors.IsNotFound(err) {
			return nil, client.IgnoreNotFound(err) // it exists: this create fails as a duplicate anyway
		}
		fresh := &infrav1.PooledRemoteMachine{}
		if err := c.APIReader.Get(ctx, client.ObjectKeyFromObject(e), fresh); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
		if claim := fresh.Spec.ClaimRef; claim != nil && claim.Name == req.MachineName && claim.UID == "" {
			return fresh, nil
		}
	}
	return nil, nil
}

// eachCandidateSet offers candidates to try, in claim order, until try says it is done. A worker of a named pool
// reads one bucket of the pool's free entries at a time, starting at a bucket picked by its name; a control-plane
// machine, or one whose failure domain is known, reads the whole pool, to weigh failure domains. When the cache
// offers nothing that works, the entries are read once more from the apiserver; inPool is that read, for the
// exhausted message.
func (c *Claimer) eachCandidateSet(ctx context.Context, req Request, try func([]infrav1.PooledRemoteMachine) (bool, error)) (inPool []infrav1.PooledRemoteMachine, err error) {
	keys := []string{AnyPool}
	switch {
	case req.Pool != "" && !req.ControlPlane && len(req.FailureDomains) == 0:
		keys = keys[:0]
		start := bucketOf(req.MachineName)
		for i := range uint64(buckets) {
			keys = append(keys, bucketKey(req.Pool, (start+i)%buckets))
		}
	case req.Pool != "":
		keys = []string{freeKey(req.Pool)}
	}
	for _, key := range keys {
		candidates, err := c.cached(ctx, req, key)
		if err != nil {
			return nil, err
		}
		if done, err := try(candidates); done || err != nil {
			return nil, err
		}
	}
	// The cache offers nothing. Read the apiserver (entries created a moment ago may not be cached yet), unless a
	// read found this pool exhausted within the last freshReadInterval (a MachineSet whose pool is empty retries
	// its create many times a second, and each refusal must not cost a List), or the namespace used up its reads
	// (many distinct selectors, dry runs included, must not cost a List each either).
	c.initBounds()
	key := exhaustedKey(req)
	if c.exhausted.has(key, c.now()) || !c.freshReads.allow(req.Namespace, c.now()) {
		return c.cachedPool(ctx, req)
	}
	candidates, inPool, err := c.freshCandidates(ctx, req)
	if err != nil {
		return nil, err
	}
	done, err := try(candidates)
	if !done && err == nil {
		c.exhausted.add(key, c.now())
	} else {
		c.exhausted.remove(key)
	}
	return inPool, err
}

// freshReadInterval is how often, at most, a pool the cache shows exhausted is read again from the apiserver.
const freshReadInterval = time.Second

func exhaustedKey(req Request) string {
	key := req.Namespace + "/" + req.Pool
	if req.Selector != nil {
		key += "?" + req.Selector.String()
	}
	return key
}

// cachedPool returns the request's pool (or namespace) as the cache holds it, for the exhausted message.
func (c *Claimer) cachedPool(ctx context.Context, req Request) ([]infrav1.PooledRemoteMachine, error) {
	list := &infrav1.PooledRemoteMachineList{}
	opts := []client.ListOption{client.InNamespace(req.Namespace)}
	if req.Pool != "" {
		opts = append(opts, client.MatchingFields{IndexPool: req.Pool})
	}
	if err := c.Reader.List(ctx, list, opts...); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// claimFirst claims the first candidate it can; nil, nil when every candidate was taken.
func (c *Claimer) claimFirst(ctx context.Context, req Request, candidates []infrav1.PooledRemoteMachine) (*infrav1.PooledRemoteMachine, error) {
	for i := range candidates {
		entry := &candidates[i]
		if !c.reserve(entry) {
			continue
		}
		claimed, err := c.claimEntry(ctx, req, entry)
		if err == nil {
			return claimed, nil
		}
		// A taken or deleted entry stays reserved: it is not free, whatever the cache says for now.
		if !errors.Is(err, errTaken) && !apierrors.IsNotFound(err) {
			c.reserved.Delete(recentKey(entry))
			return nil, fmt.Errorf("claiming PooledRemoteMachine %s: %w", entry.Name, err)
		}
	}
	return nil, nil
}

// claimEntry writes the claim with the entry's resourceVersion as precondition, re-reading it after a conflict.
// The candidate (possibly the cache's own object) is never modified; the claimed entry is returned.
func (c *Claimer) claimEntry(ctx context.Context, req Request, candidate *infrav1.PooledRemoteMachine) (*infrav1.PooledRemoteMachine, error) {
	entry := candidate.DeepCopy()
	first := true
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			fresh := &infrav1.PooledRemoteMachine{}
			if err := c.APIReader.Get(ctx, client.ObjectKeyFromObject(candidate), fresh); err != nil {
				return err
			}
			entry = fresh
		}
		first = false
		if SkipReason(entry) != "" || !offered(req, entry) {
			return errTaken
		}
		orig := entry.DeepCopy()
		entry.Spec.ClaimRef = &infrav1.PooledMachineClaim{Name: req.MachineName, ClaimedAt: &metav1.Time{Time: c.now()}, ClusterName: req.ClusterName}
		return c.Writer.Patch(ctx, entry, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	})
	return entry, err
}

// Release clears an entry's claim if it is held by the named RemoteMachine. A missing entry or a claim held by
// another machine is not an error: there is nothing to release.
func (c *Claimer) Release(ctx context.Context, namespace, entryName, machineName string) error {
	return c.release(ctx, namespace, entryName, machineName, nil)
}

// ReleaseWithNewHostKeys releases an entry whose cleanup gave the host new SSH host keys: in the same write as the
// claim is cleared, the entry's pinned hostKeys become hostKeys and it gets HostKeysRegeneratedAnnotation, so it
// is never offered, not even for a moment, before a probe logged in with the new keys.
func (c *Claimer) ReleaseWithNewHostKeys(ctx context.Context, namespace, entryName, machineName string, hostKeys []string) error {
	return c.release(ctx, namespace, entryName, machineName, func(entry *infrav1.PooledRemoteMachine) {
		entry.Spec.Machine.HostKeys = slices.Clone(hostKeys)
		if entry.Annotations == nil {
			entry.Annotations = map[string]string{}
		}
		entry.Annotations[infrav1.HostKeysRegeneratedAnnotation] = c.now().UTC().Format(time.RFC3339)
	})
}

func (c *Claimer) release(ctx context.Context, namespace, entryName, machineName string, change func(*infrav1.PooledRemoteMachine)) error {
	entry := &infrav1.PooledRemoteMachine{}
	key := types.NamespacedName{Namespace: namespace, Name: entryName}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.APIReader.Get(ctx, key, entry); err != nil {
			return err
		}
		if entry.Spec.ClaimRef == nil || entry.Spec.ClaimRef.Name != machineName {
			return nil
		}
		orig := entry.DeepCopy()
		entry.Spec.ClaimRef = nil
		if change != nil {
			change(entry)
		}
		return c.Writer.Patch(ctx, entry, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	})
	if apierrors.IsNotFound(err) {
		err = nil
	}
	c.reserved.Delete(key.String())
	return err
}

// Forget drops this process's reservation of an entry whose claim was cleared without Release (a quarantine), so
// the entry is offered again as soon as it returns to service.
func (c *Claimer) Forget(namespace, entryName string) {
	c.reserved.Delete(types.NamespacedName{Namespace: namespace, Name: entryName}.String())
}

// exhausted builds the error for a request no entry can serve, counting why each entry of the pool was skipped.
func exhausted(req Request, inPool []infrav1.PooledRemoteMachine) error {
	e := &ExhaustedError{Pool: req.Pool, Total: len(inPool), Skipped: map[string]int{}}
	if req.Selector != nil && !req.Selector.Empty() {
		e.Selector = req.Selector.String()
	}
	for i := range inPool {
		m := &inPool[i]
		reason := SkipReason(m)
		if reason == "" && req.Selector != nil && !req.Selector.Matches(labels.Set(m.Labels)) {
			reason = SkipNoMatch
		}
		if reason == "" && !ClusterAllowed(m, req.ClusterName) {
			reason = SkipOtherClusters
		}
		if reason == "" {
			// Free when read, but taken by a claim in flight.
			reason = SkipClaimed
		}
		e.Skipped[reason]++
	}
	return e
}

func (c *Claimer) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func recentKey(m *infrav1.PooledRemoteMachine) string {
	return types.NamespacedName{Namespace: m.Namespace, Name: m.Name}.String()
}

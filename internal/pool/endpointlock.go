package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// EndpointLocks makes a host ("address:port", normalised by Endpoint) appear in one PooledRemoteMachine
// cluster-wide. Each offered host has a Lease in the manager's namespace, named after a hash of the endpoint and
// holding "namespace/name/uid" of its entry. Admission of an entry creates the Lease, or takes over a stale one
// with an update conditioned on its resourceVersion: the apiserver lets exactly one of two concurrent creates of
// the same host through, whichever replica serves them. A Lease is stale when its entry is gone, has another UID,
// or offers another host now. Nothing releases a Lease while its entry exists: the PooledRemoteMachine controller
// re-asserts the Lease of every live entry and deletes the Leases of entries that are gone.
type EndpointLocks struct {
	// Client writes the Leases; APIReader reads them, and the entries they name, from the apiserver (never a
	// cache: a lock read from a cache could be out of date).
	Client    client.Client
	APIReader client.Reader
	// Namespace holds the Leases: the manager's own.
	Namespace string
	// Grace is how long a Lease whose entry cannot be found yet is held: admission runs before the entry is stored.
	Grace time.Duration
}

// NewEndpointLocks returns the host locks of a manager whose namespace holds the Leases.
func NewEndpointLocks(mgr interface {
	GetClient() client.Client
	GetAPIReader() client.Reader
}, namespace string) *EndpointLocks {
	return &EndpointLocks{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: namespace, Grace: 30 * time.Second}
}

// The Leases are read and written with the leader-election Role of the manager's namespace
// (config/rbac/leader_election_role.yaml).

const (
	endpointLockPrefix = "capr-host-"
	// EndpointLockLabel marks CAPR's host Leases.
	EndpointLockLabel  = "infrastructure.cluster.x-k8s.io/host-lock"
	endpointAnnotation = "infrastructure.cluster.x-k8s.io/endpoint"
	// storedAnnotation marks a Lease whose entry was seen stored: once that entry is not found, it is gone, and the
	// Lease is stale at once (no grace for an entry being created).
	storedAnnotation = "infrastructure.cluster.x-k8s.io/entry-stored"
	// maxClockSkew is how far in the future a Lease's renewTime may be (another replica's clock); beyond it the
	// time is impossible and gives the Lease no grace.
	maxClockSkew = 10 * time.Second
)

// EndpointLockName returns the name of the Lease of a host's endpoint.
func EndpointLockName(endpoint string) string {
	sum := sha256.Sum256([]byte(endpoint))
	return endpointLockPrefix + hex.EncodeToString(sum[:20])
}

// HolderOf returns the holder identity an entry's Lease records: "namespace/name/uid".
func HolderOf(m *infrav1.PooledRemoteMachine) string {
	return m.Namespace + "/" + m.Name + "/" + string(m.UID)
}

// LeaseHolder returns the "namespace/name" of the entry a Lease names, or "" for none.
func LeaseHolder(lease *coordinationv1.Lease) string {
	parts := strings.SplitN(ptr.Deref(lease.Spec.HolderIdentity, ""), "/", 3)
	if len(parts) != 3 {
		return ""
	}
	return parts[0] + "/" + parts[1]
}

// HeldError says another entry offers the host already.
type HeldError struct {
	// Holder is the "namespace/name/uid" of the entry holding the host; Endpoint the host; Namespace the namespace
	// of the entry refused.
	Holder, Endpoint, Namespace string
}

// Error names the holding entry only to its own namespace: another namespace learns that the host is taken, not
// by whom.
func (e *HeldError) Error() string {
	ns, name, _ := strings.Cut(e.Holder, "/")
	name, _, _ = strings.Cut(name, "/")
	if ns != e.Namespace {
		return fmt.Sprintf("host %s is already offered by a pool entry in another namespace; a host can be in one pool entry only (cluster-wide)", e.Endpoint)
	}
	return fmt.Sprintf("host %s is already offered by PooledRemoteMachine %s in this namespace; a host can be in one pool entry only (cluster-wide)", e.Endpoint, name)
}

// Acquire records m as the entry offering its host, or returns a *HeldError naming the entry that already does.
// With dryRun it only checks.
func (l *EndpointLocks) Acquire(ctx context.Context, m *infrav1.PooledRemoteMachine, dryRun bool) error {
	return l.acquire(ctx, m, dryRun, false)
}

// Assert holds the host's Lease for m, an entry stored in the apiserver: it re-creates a missing Lease, takes over
// a stale one, marks its own as stored, and returns a *HeldError when another live entry holds the host.
func (l *EndpointLocks) Assert(ctx context.Context, m *infrav1.PooledRemoteMachine) error {
	return l.acquire(ctx, m, false, true)
}

func (l *EndpointLocks) acquire(ctx context.Context, m *infrav1.PooledRemoteMachine, dryRun, stored bool) error {
	endpoint := Endpoint(m.Spec.Machine.Address, m.Spec.Machine.Port)
	name := EndpointLockName(endpoint)
	for range 5 {
		lease := &coordinationv1.Lease{}
		err := l.APIReader.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: name}, lease)
		if apierrors.IsNotFound(err) {
			if dryRun {
				return nil
			}
			lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: l.Namespace, Name: name,
				Labels:      map[string]string{EndpointLockLabel: ""},
				Annotations: map[string]string{endpointAnnotation: endpoint}}}
			hold(lease, m, stored)
			err = l.Client.Create(ctx, lease)
			if apierrors.IsAlreadyExists(err) {
				continue // another admission was first: look at what it holds
			}
			return err
		}
		if err != nil {
			return err
		}
		holder := ptr.Deref(lease.Spec.HolderIdentity, "")
		if holder == HolderOf(m) {
			if !stored || isStored(lease) {
				return nil
			}
			markStored(lease)
		} else {
			stale, err := l.stale(ctx, lease, endpoint)
			if err != nil {
				return err
			}
			if !stale {
				return &HeldError{Holder: holder, Endpoint: endpoint, Namespace: m.Namespace}
			}
			if dryRun {
				return nil
			}
			hold(lease, m, stored)
		}
		err = l.Client.Update(ctx, lease) // conditioned on the resourceVersion read
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		}
		return err
	}
	return fmt.Errorf("host %s: its lock kept changing; try again", endpoint)
}

// MarkStored records on m's Lease, if m holds it, that m was seen stored: once m is not found it is gone, and its
// host free at once. The delete webhook calls it; the delete itself may still be refused later, or wait on a
// finalizer, and the Lease stays held while m exists.
func (l *EndpointLocks) MarkStored(ctx context.Context, m *infrav1.PooledRemoteMachine) error {
	lease := &coordinationv1.Lease{}
	name := EndpointLockName(Endpoint(m.Spec.Machine.Address, m.Spec.Machine.Port))
	if err := l.APIReader.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: name}, lease); err != nil {
		return client.IgnoreNotFound(err)
	}
	if ptr.Deref(lease.Spec.HolderIdentity, "") != HolderOf(m) || isStored(lease) {
		return nil
	}
	markStored(lease)
	if err := l.Client.Update(ctx, lease); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return err
	}
	return nil
}

func hold(lease *coordinationv1.Lease, m *infrav1.PooledRemoteMachine, stored bool) {
	now := metav1.NewMicroTime(time.Now())
	lease.Spec.HolderIdentity = ptr.To(HolderOf(m))
	lease.Spec.AcquireTime, lease.Spec.RenewTime = &now, &now
	delete(lease.Annotations, storedAnnotation)
	if stored {
		markStored(lease)
	}
}

// HoldsStored says whether the Lease is m's, marked as the lock of a stored entry.
func HoldsStored(lease *coordinationv1.Lease, m *infrav1.PooledRemoteMachine) bool {
	return ptr.Deref(lease.Spec.HolderIdentity, "") == HolderOf(m) && isStored(lease)
}

func isStored(lease *coordinationv1.Lease) bool {
	_, ok := lease.Annotations[storedAnnotation]
	return ok
}

func markStored(lease *coordinationv1.Lease) {
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[storedAnnotation] = ""
}

// stale says whether a Lease's holder no longer offers the host.
func (l *EndpointLocks) stale(ctx context.Context, lease *coordinationv1.Lease, endpoint string) (bool, error) {
	parts := strings.SplitN(ptr.Deref(lease.Spec.HolderIdentity, ""), "/", 3)
	if len(parts) != 3 {
		return true, nil
	}
	// Admission runs before the entry is stored: a young Lease not yet confirmed by the controller may belong to an
	// entry being created, or being moved to this host by an update. A renew time further in the future than clock
	// skew explains is impossible, and gives no grace.
	now := time.Now()
	t := lease.Spec.RenewTime
	young := t != nil && !isStored(lease) && now.Sub(t.Time) < l.Grace && t.Sub(now) <= maxClockSkew
	entry := &infrav1.PooledRemoteMachine{}
	err := l.APIReader.Get(ctx, types.NamespacedName{Namespace: parts[0], Name: parts[1]}, entry)
	switch {
	case apierrors.IsNotFound(err):
		return !young, nil
	case err != nil:
		return false, err
	case string(entry.UID) != parts[2]:
		return true, nil
	case Endpoint(entry.Spec.Machine.Address, entry.Spec.Machine.Port) != endpoint:
		return !young, nil
	}
	return false, nil
}

// ReleaseGone deletes the Lease if the entry it names no longer offers its host (the entry is gone, or offers
// another host now). It returns how long to wait before asking again when the entry may still be being created.
func (l *EndpointLocks) ReleaseGone(ctx context.Context, lease *coordinationv1.Lease) (time.Duration, error) {
	endpoint := lease.Annotations[endpointAnnotation]
	if endpoint == "" {
		return 0, nil // not one of CAPR's host Leases
	}
	stale, err := l.stale(ctx, lease, endpoint)
	if err != nil || !stale {
		if err == nil && !isStored(lease) {
			return l.Grace, nil
		}
		return 0, err
	}
	err = l.Client.Delete(ctx, lease, client.Preconditions{ResourceVersion: &lease.ResourceVersion})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return 0, nil
	}
	return 0, err
}

// Offered says whether a pool entry (in any namespace) offers the host at endpoint now, read from its Lease.
func (l *EndpointLocks) Offered(ctx context.Context, endpoint string) (bool, error) {
	lease := &coordinationv1.Lease{}
	if err := l.APIReader.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: EndpointLockName(endpoint)}, lease); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	stale, err := l.stale(ctx, lease, endpoint)
	return !stale, err
}

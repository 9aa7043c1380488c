package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	"github.com/capr-project/cluster-api-provider-remote/pool"
)

// EndpointLocks makes a host ("address:port", normalised by pool.Endpoint) appear in one PooledRemoteMachine
// cluster-wide. Each offered host has a Lease in the manager's namespace, named after a hash of the endpoint and
// holding "namespace/name/uid" of its entry. Admission of an entry creates the Lease, or takes over a stale one
// with an update conditioned on its resourceVersion: the apiserver lets exactly one of two concurrent creates of
// the same host through, whichever replica serves them. A Lease is stale when its entry is gone, has another UID,
// or offers another host now; deleting an entry releases its Lease.
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

// The Leases are read and written with the leader-election Role of the manager's namespace
// (config/rbac/leader_election_role.yaml).

const (
	endpointLockPrefix = "capr-host-"
	// EndpointLockLabel marks CAPR's host Leases.
	EndpointLockLabel  = "infrastructure.cluster.x-k8s.io/host-lock"
	endpointAnnotation = "infrastructure.cluster.x-k8s.io/endpoint"
)

func endpointLockName(endpoint string) string {
	sum := sha256.Sum256([]byte(endpoint))
	return endpointLockPrefix + hex.EncodeToString(sum[:20])
}

func holderOf(m *infrav1.PooledRemoteMachine) string {
	return m.Namespace + "/" + m.Name + "/" + string(m.UID)
}

// errHeld carries the entry that holds a host.
type errHeld struct{ holder, endpoint string }

func (e *errHeld) Error() string {
	ns, name, _ := strings.Cut(e.holder, "/")
	name, _, _ = strings.Cut(name, "/")
	return fmt.Sprintf("host %s is already offered by PooledRemoteMachine %s in namespace %s; a host can be in one pool entry only (cluster-wide)", e.endpoint, name, ns)
}

// Acquire records m as the entry offering its host, or says which entry already does. With dryRun it only checks.
func (l *EndpointLocks) Acquire(ctx context.Context, m *infrav1.PooledRemoteMachine, dryRun bool) error {
	endpoint := pool.Endpoint(m.Spec.Machine.Address, m.Spec.Machine.Port)
	name := endpointLockName(endpoint)
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
			l.hold(lease, m)
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
		if holder == holderOf(m) {
			return nil
		}
		stale, err := l.stale(ctx, lease, endpoint)
		if err != nil {
			return err
		}
		if !stale {
			return &errHeld{holder: holder, endpoint: endpoint}
		}
		if dryRun {
			return nil
		}
		l.hold(lease, m)
		err = l.Client.Update(ctx, lease) // conditioned on the resourceVersion read
		if apierrors.IsConflict(err) {
			continue
		}
		return err
	}
	return fmt.Errorf("host %s: its lock kept changing; try again", endpoint)
}

func (l *EndpointLocks) hold(lease *coordinationv1.Lease, m *infrav1.PooledRemoteMachine) {
	now := metav1.NewMicroTime(time.Now())
	lease.Spec.HolderIdentity = ptr.To(holderOf(m))
	lease.Spec.AcquireTime, lease.Spec.RenewTime = &now, &now
}

// stale says whether a Lease's holder no longer offers the host.
func (l *EndpointLocks) stale(ctx context.Context, lease *coordinationv1.Lease, endpoint string) (bool, error) {
	parts := strings.SplitN(ptr.Deref(lease.Spec.HolderIdentity, ""), "/", 3)
	if len(parts) != 3 {
		return true, nil
	}
	entry := &infrav1.PooledRemoteMachine{}
	err := l.APIReader.Get(ctx, types.NamespacedName{Namespace: parts[0], Name: parts[1]}, entry)
	switch {
	case apierrors.IsNotFound(err):
		// Admission runs before the entry is stored: a young Lease may belong to an entry being created.
		if t := lease.Spec.RenewTime; t != nil && time.Since(t.Time) < l.Grace {
			return false, nil
		}
		return true, nil
	case err != nil:
		return false, err
	}
	return string(entry.UID) != parts[2] || pool.Endpoint(entry.Spec.Machine.Address, entry.Spec.Machine.Port) != endpoint, nil
}

// Release drops m's Lease on its host, if m holds it.
func (l *EndpointLocks) Release(ctx context.Context, m *infrav1.PooledRemoteMachine) error {
	name := endpointLockName(pool.Endpoint(m.Spec.Machine.Address, m.Spec.Machine.Port))
	lease := &coordinationv1.Lease{}
	if err := l.APIReader.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: name}, lease); err != nil {
		return client.IgnoreNotFound(err)
	}
	if ptr.Deref(lease.Spec.HolderIdentity, "") != holderOf(m) {
		return nil
	}
	err := l.Client.Delete(ctx, lease, client.Preconditions{ResourceVersion: &lease.ResourceVersion})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// isHeld says whether err says the host is held by another entry.
func isHeld(err error) (*errHeld, bool) {
	var held *errHeld
	ok := errors.As(err, &held)
	return held, ok
}

// Offered says whether a pool entry (in any namespace) offers the host at endpoint now, read from its Lease.
func (l *EndpointLocks) Offered(ctx context.Context, endpoint string) (bool, error) {
	lease := &coordinationv1.Lease{}
	if err := l.APIReader.Get(ctx, client.ObjectKey{Namespace: l.Namespace, Name: endpointLockName(endpoint)}, lease); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	stale, err := l.stale(ctx, lease, endpoint)
	return !stale, err
}

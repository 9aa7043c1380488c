package webhooks

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// ExhaustedNotifier emits a Warning event on the owner of a RemoteMachine refused for an exhausted pool: the
// MachineSet or control plane that keeps trying to create it, where a user looks (kubectl describe machineset), since
// the refusal itself only reaches the owner's controller. One event per owner per Interval at most.
type ExhaustedNotifier struct {
	Recorder events.EventRecorder
	Interval time.Duration

	mu   sync.Mutex
	last map[types.UID]time.Time
}

// NewExhaustedNotifier returns a notifier that tells each owner at most once a minute.
func NewExhaustedNotifier(recorder events.EventRecorder) *ExhaustedNotifier {
	return &ExhaustedNotifier{Recorder: recorder, Interval: time.Minute, last: map[types.UID]time.Time{}}
}

// Notify emits the event on m's controlling owner (its first owner when none controls), unless that owner was told
// within the interval. A RemoteMachine without owners (created by hand) is refused in the user's own terminal.
func (n *ExhaustedNotifier) Notify(m *infrav1.RemoteMachine, message string) {
	if n == nil || len(m.OwnerReferences) == 0 {
		return
	}
	owner := m.OwnerReferences[0]
	for _, ref := range m.OwnerReferences {
		if ref.Controller != nil && *ref.Controller {
			owner = ref
		}
	}
	now := time.Now()
	n.mu.Lock()
	if at, ok := n.last[owner.UID]; ok && now.Sub(at) < n.Interval {
		n.mu.Unlock()
		return
	}
	n.last[owner.UID] = now
	for uid, at := range n.last {
		if now.Sub(at) >= n.Interval {
			delete(n.last, uid)
		}
	}
	n.mu.Unlock()
	regarding := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: owner.APIVersion, Kind: owner.Kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: owner.Name, UID: owner.UID},
	}
	n.Recorder.Eventf(regarding, nil, corev1.EventTypeWarning, infrav1.PoolExhaustedReason, "ClaimHost",
		"Cannot create RemoteMachine %s: %s", m.Name, message)
}

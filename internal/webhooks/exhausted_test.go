package webhooks

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
)

// TestExhaustedNotifierTellsEachOwnerOnce checks that a refused RemoteMachine's controlling owner gets one Warning
// event per interval, that another owner gets its own, and that a RemoteMachine without owners tells no one.
func TestExhaustedNotifierTellsEachOwnerOnce(t *testing.T) {
	g := NewWithT(t)
	recorder := events.NewFakeRecorder(10)
	n := NewExhaustedNotifier(recorder)
	machine := func(owners ...metav1.OwnerReference) *infrav1.RemoteMachine {
		return &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "m", OwnerReferences: owners}}
	}
	ms := metav1.OwnerReference{APIVersion: "cluster.x-k8s.io/v1beta2", Kind: "MachineSet", Name: "ms", UID: "uid-ms", Controller: ptr.To(true)}
	other := metav1.OwnerReference{APIVersion: "cluster.x-k8s.io/v1beta2", Kind: "MachineSet", Name: "other", UID: "uid-other"}

	n.Notify(machine(other, ms), `no free PooledRemoteMachine in pool "workers"`)
	g.Expect(recorder.Events).To(Receive(And(ContainSubstring("Warning PoolExhausted"), ContainSubstring(`pool "workers"`))))
	n.Notify(machine(ms), "again")
	g.Expect(recorder.Events).NotTo(Receive(), "the same owner is told once per interval")
	n.Notify(machine(other), "other")
	g.Expect(recorder.Events).To(Receive(ContainSubstring("other")))
	n.Notify(machine(), "no owner")
	g.Expect(recorder.Events).NotTo(Receive())

	// An interval later (the owner's last event backdated past it) the owner is told again.
	n.last[ms.UID] = time.Now().Add(-n.Interval)
	n.Notify(machine(ms), "after the interval")
	g.Expect(recorder.Events).To(Receive(ContainSubstring("after the interval")))

	var nobody *ExhaustedNotifier
	nobody.Notify(machine(ms), "a nil notifier tells no one")
}

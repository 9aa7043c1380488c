package tasks_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	infrav1 "github.com/capr-project/cluster-api-provider-remote/api/v1beta1"
	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
)

// TestTaskRunnerEventsGoToTheirController: the RemoteMachine and pool controllers share one runner. A pool entry's
// finished probe sent on Events would have been enqueued by the RemoteMachine controller (as a RemoteMachine of the
// entry's name) and never brought the entry back; each type now has its own channel.
func TestTaskRunnerEventsGoToTheirController(t *testing.T) {
	g := NewWithT(t)
	r := tasks.NewWithLimits(tasks.Limits{Total: 2})
	entries := r.EventsFor(&infrav1.PooledRemoteMachine{})
	g.Expect(r.EventsFor(&infrav1.PooledRemoteMachine{})).To(Equal(entries), "one channel per type")
	noop := func(context.Context) (any, error) { return nil, nil }
	r.Start(context.Background(), "e", tasks.Probe, &infrav1.PooledRemoteMachine{ObjectMeta: metav1.ObjectMeta{Name: "entry"}}, noop)
	r.Start(context.Background(), "m", tasks.Bootstrap, &infrav1.RemoteMachine{ObjectMeta: metav1.ObjectMeta{Name: "machine"}}, noop)
	for range 2 {
		select {
		case ev := <-entries:
			g.Expect(ev.Object.GetName()).To(Equal("entry"))
		case ev := <-r.Events:
			g.Expect(ev.Object.GetName()).To(Equal("machine"))
		case <-time.After(10 * time.Second):
			t.Fatal("a finished task sent no event")
		}
	}
	g.Expect(entries).To(BeEmpty())
	g.Expect(r.Events).To(BeEmpty())
}

package tasks_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capr-project/cluster-api-provider-remote/internal/tasks"
)

// slotTasks starts tasks on a runner and holds each one until the test releases it.
type slotTasks struct {
	r       *tasks.Runner
	started chan string // the key of each task as its function starts
	mu      sync.Mutex
	release map[string]chan struct{}
}

func newSlotTasks(limits tasks.Limits) *slotTasks {
	return &slotTasks{r: tasks.NewWithLimits(limits), started: make(chan string, 100), release: map[string]chan struct{}{}}
}

// start starts task ns/name of kind; it runs until released or cancelled.
func (s *slotTasks) start(ns, name string, kind tasks.Kind) bool {
	key := ns + "/" + name
	rel := make(chan struct{})
	s.mu.Lock()
	s.release[key] = rel
	s.mu.Unlock()
	obj := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	return s.r.Start(context.Background(), key, kind, obj, func(ctx context.Context) (any, error) {
		s.started <- key
		select {
		case <-rel:
			return key, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// finish releases task key and waits until its result is there.
func (s *slotTasks) finish(g Gomega, key string, kind tasks.Kind) {
	s.mu.Lock()
	close(s.release[key])
	s.mu.Unlock()
	g.Eventually(func() bool { return s.r.Done(key, kind) }, 5*time.Second, 5*time.Millisecond).Should(BeTrue())
}

// next waits for the next task to start and returns its key.
func (s *slotTasks) next(g Gomega) string {
	var key string
	g.Eventually(s.started, 5*time.Second).Should(Receive(&key))
	return key
}

// TestRunnerNamespaceShare: a tenant's RemoteMachines pointed at hosts that accept a connection and never
// answer used to take every slot for the whole bootstrap timeout, so another namespace's bootstrap waited as long.
// Now namespace a holds at most its share, and namespace b's task starts at once.
func TestRunnerNamespaceShare(t *testing.T) {
	g := NewWithT(t)
	s := newSlotTasks(tasks.Limits{Total: 4, PerNamespace: 2})
	for i := range 20 {
		g.Expect(s.start("a", fmt.Sprint("m", i), tasks.Bootstrap)).To(BeTrue())
	}
	g.Expect([]string{s.next(g), s.next(g)}).To(ConsistOf("a/m0", "a/m1"))
	g.Expect(s.start("b", "m0", tasks.Scan)).To(BeTrue())
	g.Expect(s.next(g)).To(Equal("b/m0"))
	g.Consistently(s.started, 200*time.Millisecond).ShouldNot(Receive(), "namespace a holds no more than 2 slots")

	// A finished task of a gives its slot to a's next one, in the order they were started.
	s.finish(g, "a/m0", tasks.Bootstrap)
	g.Expect(s.next(g)).To(Equal("a/m2"))
}

// TestRunnerCleanupHasOwnSlots: cleanups used to wait behind bootstraps that held every slot, so deletions
// stalled for the bootstrap timeout. Now a cleanup starts while every bootstrap slot is held and more wait.
func TestRunnerCleanupHasOwnSlots(t *testing.T) {
	g := NewWithT(t)
	s := newSlotTasks(tasks.Limits{Total: 2, PerNamespace: 2, Cleanup: 1})
	for i := range 5 {
		g.Expect(s.start("a", fmt.Sprint("m", i), tasks.Bootstrap)).To(BeTrue())
	}
	g.Expect([]string{s.next(g), s.next(g)}).To(ConsistOf("a/m0", "a/m1"))
	g.Expect(s.start("a", "gone", tasks.Cleanup)).To(BeTrue())
	g.Expect(s.next(g)).To(Equal("a/gone"))

	// The cleanup slots are shared fairly too: with 4 of them, one namespace holds at most 2 (the bootstrap share).
	s = newSlotTasks(tasks.Limits{Total: 10, PerNamespace: 5, Cleanup: 4})
	for i := range 5 {
		g.Expect(s.start("a", fmt.Sprint("m", i), tasks.Cleanup)).To(BeTrue())
	}
	g.Expect([]string{s.next(g), s.next(g)}).To(ConsistOf("a/m0", "a/m1"))
	g.Expect(s.start("b", "m0", tasks.Cleanup)).To(BeTrue())
	g.Expect(s.next(g)).To(Equal("b/m0"))
	g.Consistently(s.started, 200*time.Millisecond).ShouldNot(Receive())
}

// TestRunnerRoundRobin: waiting namespaces take turns, so a namespace that queued many tasks first does not
// go before every task of the namespaces that queued after it.
func TestRunnerRoundRobin(t *testing.T) {
	g := NewWithT(t)
	s := newSlotTasks(tasks.Limits{Total: 1, PerNamespace: 1})
	g.Expect(s.start("z", "m0", tasks.Bootstrap)).To(BeTrue())
	g.Expect(s.next(g)).To(Equal("z/m0"))
	for _, ns := range []string{"a", "b", "c"} {
		for i := range 3 {
			g.Expect(s.start(ns, fmt.Sprint("m", i), tasks.Bootstrap)).To(BeTrue())
		}
	}
	var order []string
	last := "z/m0"
	for range 9 {
		s.finish(g, last, tasks.Bootstrap)
		last = s.next(g)
		order = append(order, last)
	}
	g.Expect(order).To(Equal([]string{"a/m0", "b/m0", "c/m0", "a/m1", "b/m1", "c/m1", "a/m2", "b/m2", "c/m2"}))
}

// TestRunnerFewestHeldFirst: of the waiting namespaces, the one holding the fewest slots gets the next free one.
func TestRunnerFewestHeldFirst(t *testing.T) {
	g := NewWithT(t)
	s := newSlotTasks(tasks.Limits{Total: 3, PerNamespace: 3})
	for i := range 4 {
		g.Expect(s.start("a", fmt.Sprint("m", i), tasks.Bootstrap)).To(BeTrue())
	}
	g.Expect([]string{s.next(g), s.next(g), s.next(g)}).To(ConsistOf("a/m0", "a/m1", "a/m2"))
	g.Expect(s.start("b", "m0", tasks.Bootstrap)).To(BeTrue())
	s.finish(g, "a/m0", tasks.Bootstrap) // a still holds 2, b none: b goes first though a queued earlier
	g.Expect(s.next(g)).To(Equal("b/m0"))
}

// TestRunnerCancelWhileWaiting: a task cancelled while it waits for a slot never runs and leaves its place: the
// slot goes to the next task.
func TestRunnerCancelWhileWaiting(t *testing.T) {
	g := NewWithT(t)
	s := newSlotTasks(tasks.Limits{Total: 1, PerNamespace: 1})
	g.Expect(s.start("a", "m0", tasks.Bootstrap)).To(BeTrue())
	g.Expect(s.next(g)).To(Equal("a/m0"))
	g.Expect(s.start("b", "m0", tasks.Bootstrap)).To(BeTrue())
	g.Expect(s.start("c", "m0", tasks.Bootstrap)).To(BeTrue())
	g.Expect(s.r.Running("b/m0", tasks.Bootstrap)).To(BeTrue())

	g.Expect(s.r.CancelAll("b/m0")).To(ConsistOf(tasks.Bootstrap))
	g.Eventually(func() bool { return s.r.Running("b/m0", tasks.Bootstrap) }, 5*time.Second, 5*time.Millisecond).Should(BeFalse())
	g.Expect(s.r.Done("b/m0", tasks.Bootstrap)).To(BeFalse())

	s.finish(g, "a/m0", tasks.Bootstrap)
	g.Expect(s.next(g)).To(Equal("c/m0"), "the cancelled task never ran")
	s.finish(g, "c/m0", tasks.Bootstrap)
	// Every slot is free again: a new task starts at once.
	g.Expect(s.start("d", "m0", tasks.Bootstrap)).To(BeTrue())
	g.Expect(s.next(g)).To(Equal("d/m0"))
}

// TestRunnerCancelAll: deleting an object cancelled its tasks kind by kind, so a kind left out kept running on the
// host after the deletion and its result stayed in memory. CancelAll stops every task of the key, running or
// waiting, forgets their results (those waiting too), and leaves other keys alone.
func TestRunnerCancelAll(t *testing.T) {
	g := NewWithT(t)
	s := newSlotTasks(tasks.Limits{Total: 2, PerNamespace: 2})
	g.Expect(s.start("a", "m0", tasks.Bootstrap)).To(BeTrue())
	g.Expect(s.start("a", "m0", tasks.Accept)).To(BeTrue())
	g.Expect([]string{s.next(g), s.next(g)}).To(ConsistOf("a/m0", "a/m0"))
	g.Expect(s.start("a", "m0", tasks.Scan)).To(BeTrue()) // waits for a slot
	g.Expect(s.start("b", "m0", tasks.Bootstrap)).To(BeTrue())

	stopped := s.r.CancelAll("a/m0")
	g.Expect(stopped).To(ConsistOf(tasks.Bootstrap, tasks.Accept, tasks.Scan))
	g.Eventually(func() bool {
		return s.r.Running("a/m0", tasks.Bootstrap) || s.r.Running("a/m0", tasks.Accept) || s.r.Running("a/m0", tasks.Scan)
	}, 5*time.Second, 5*time.Millisecond).Should(BeFalse())
	for _, k := range []tasks.Kind{tasks.Bootstrap, tasks.Accept, tasks.Scan} {
		g.Expect(s.r.Done("a/m0", k)).To(BeFalse(), "the result of a cancelled %s is forgotten", k)
	}
	g.Expect(s.next(g)).To(Equal("b/m0"), "the freed slots go to the next task")
	g.Expect(s.r.Running("b/m0", tasks.Bootstrap)).To(BeTrue())

	// A result already waiting is forgotten too, and the kind can start again afterwards.
	s.finish(g, "b/m0", tasks.Bootstrap)
	g.Expect(s.r.CancelAll("b/m0")).To(BeEmpty())
	g.Expect(s.r.Done("b/m0", tasks.Bootstrap)).To(BeFalse())
	g.Expect(s.start("b", "m0", tasks.Bootstrap)).To(BeTrue())
}

// Package tasks runs the controllers' long work (SSH scans, bootstraps, cleanups, probes) off the reconcile workers,
// with fair per-namespace slots, one task per object and kind, each cancellable.
package tasks

import (
	"context"
	"reflect"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/capr-project/cluster-api-provider-remote/internal/metrics"
)

// Kind says what a task does; an object runs at most one task of each kind at a time.
type Kind string

// The kinds of task the controllers run.
const (
	// Scan reads a RemoteMachine's host key on first contact, to pin it.
	Scan Kind = "scan"
	// Bootstrap runs a RemoteMachine's bootstrap data on its host.
	Bootstrap Kind = "bootstrap"
	// Accept reads the key a RemoteMachine's host presents, to compare it with the accept-host-key annotation.
	Accept Kind = "accept"
	// Cleanup cleans a deleted RemoteMachine's host; it runs on slots of its own.
	Cleanup Kind = "cleanup"
	// Probe checks that a PooledRemoteMachine's host is reachable.
	Probe Kind = "probe"
	// AcceptEntry reads the key a PooledRemoteMachine's host presents, to compare it with the accept-host-key
	// annotation.
	AcceptEntry Kind = "accept-entry"
)

// DefaultCleanupConcurrency is the number of cleanups run at the same time when Limits.Cleanup is 0.
const DefaultCleanupConcurrency = 5

// Limits bounds how many tasks a Runner runs at the same time.
type Limits struct {
	// Total bounds the tasks other than cleanups run at the same time (at least 1).
	Total int
	// PerNamespace bounds how many of those one namespace runs at the same time, so hosts that never answer in one
	// namespace cannot hold every slot; 0 means half of Total, at least 1.
	PerNamespace int
	// Cleanup bounds the cleanups run at the same time, on slots of their own so deletions progress whatever the
	// bootstraps do; 0 means DefaultCleanupConcurrency. One namespace holds at most the same share of them as of
	// Total (Cleanup*PerNamespace/Total, at least 1).
	Cleanup int
}

// withDefaults fills the zero fields and bounds the others.
func (l Limits) withDefaults() Limits {
	l.Total = max(l.Total, 1)
	if l.PerNamespace <= 0 {
		l.PerNamespace = l.Total / 2
	}
	l.PerNamespace = min(max(l.PerNamespace, 1), l.Total)
	if l.Cleanup <= 0 {
		l.Cleanup = DefaultCleanupConcurrency
	}
	return l
}

// Runner runs long work (SSH bootstrap and cleanup) off the reconcile workers: at most Limits.Total tasks at a
// time (cleanups on Limits.Cleanup slots of their own), no namespace more than its share, one per key and kind, each
// cancellable. Waiting tasks are admitted namespace by namespace, the namespace holding the fewest slots first and
// round robin among equals, so one tenant's stuck hosts delay neither other tenants nor deletions.
// When a task ends its result is kept for the controller to read and the object is sent on Events, which the
// controller watches, so the result is handled by a normal reconcile.
type Runner struct {
	// Events receives the object of each finished task; wire it to the controller with source.Channel.
	Events chan event.GenericEvent

	mu      sync.Mutex
	events  map[reflect.Type]chan event.GenericEvent
	work    *slotPool
	cleanup *slotPool
	running map[taskKey]*task
	done    map[taskKey]Result
}

// Result is what a finished task returned: the task's own result, and its error.
type Result struct {
	Value any
	Err   error
}

// taskKey names one task: an object's key and a kind.
type taskKey struct {
	key  string
	kind Kind
}

type task struct {
	cancel context.CancelFunc
	// forgotten: CancelAll dropped the task, so its result is not kept.
	forgotten bool
}

// NewWithLimits returns a runner bounded by limits.
func NewWithLimits(limits Limits) *Runner {
	l := limits.withDefaults()
	return &Runner{
		Events:  make(chan event.GenericEvent, 1024),
		work:    newSlotPool(l.Total, l.PerNamespace),
		cleanup: newSlotPool(l.Cleanup, max(1, l.Cleanup*l.PerNamespace/l.Total)),
		running: map[taskKey]*task{},
		done:    map[taskKey]Result{},
	}
}

// Start runs fn for key and kind unless such a task is running or its result is waiting; it returns false then.
// The task waits for a slot of obj's namespace; cancelling it while it waits delivers ctx's error as its result.
func (r *Runner) Start(ctx context.Context, key string, kind Kind, obj client.Object, fn func(context.Context) (any, error)) bool {
	k := taskKey{key, kind}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.running[k]; ok {
		return false
	}
	if _, ok := r.done[k]; ok {
		return false
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t := &task{cancel: cancel}
	r.running[k] = t
	obj = obj.DeepCopyObject().(client.Object)
	pool := r.work
	if kind == Cleanup {
		pool = r.cleanup
	}
	// Queued here, under the lock, so tasks of one namespace are admitted in the order they were started.
	w := pool.enqueue(obj.GetNamespace())
	queued := time.Now()
	waiting, running := metrics.Tasks.WithLabelValues(string(kind), "waiting"), metrics.Tasks.WithLabelValues(string(kind), "running")
	waiting.Inc()
	go func() {
		defer cancel()
		var res Result
		err := r.wait(ctx, pool, w)
		waiting.Dec()
		if err != nil {
			res = Result{Err: err}
		} else {
			metrics.TaskQueueWait.WithLabelValues(string(kind)).Observe(time.Since(queued).Seconds())
			running.Inc()
			v, err := fn(ctx)
			running.Dec()
			r.mu.Lock()
			pool.release(w.namespace)
			r.mu.Unlock()
			res = Result{Value: v, Err: err}
		}
		r.mu.Lock()
		delete(r.running, k)
		forgotten := t.forgotten
		if !forgotten {
			r.done[k] = res
		}
		r.mu.Unlock()
		if !forgotten {
			r.eventsOf(obj) <- event.GenericEvent{Object: obj}
		}
	}()
	return true
}

// EventsFor returns the channel that receives the objects of finished tasks of obj's type, so each controller
// sharing the runner gets back its own objects; objects of a type without one go to Events. Call it before the
// first task of that type starts.
func (r *Runner) EventsFor(obj client.Object) chan event.GenericEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := reflect.TypeOf(obj)
	if r.events == nil {
		r.events = map[reflect.Type]chan event.GenericEvent{}
	}
	if _, ok := r.events[t]; !ok {
		r.events[t] = make(chan event.GenericEvent, cap(r.Events))
	}
	return r.events[t]
}

// eventsOf returns the channel of obj's type.
func (r *Runner) eventsOf(obj client.Object) chan event.GenericEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.events[reflect.TypeOf(obj)]; ok {
		return ch
	}
	return r.Events
}

// wait returns once w holds a slot of pool, or ctx's error (and no slot) if ctx ends first.
func (r *Runner) wait(ctx context.Context, pool *slotPool, w *waiter) error {
	select {
	case <-w.admitted:
		return nil
	case <-ctx.Done():
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.holds {
		pool.release(w.namespace) // admitted as it was cancelled: the slot goes to the next one
	} else {
		pool.drop(w)
	}
	return ctx.Err()
}

// Running says whether a task of that kind runs (or waits for a slot) for key.
func (r *Runner) Running(key string, kind Kind) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.running[taskKey{key, kind}]
	return ok
}

// Done says whether a result of key's task of that kind is waiting to be taken.
func (r *Runner) Done(key string, kind Kind) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.done[taskKey{key, kind}]
	return ok
}

// Take returns and forgets the result of key's finished task of that kind.
func (r *Runner) Take(key string, kind Kind) (Result, bool) {
	k := taskKey{key, kind}
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.done[k]
	delete(r.done, k)
	return res, ok
}

// CancelAll cancels everything of key (the object is going away): every running task of every kind is stopped and
// its result, like every result waiting to be taken, is forgotten. It returns the kinds that were running.
func (r *Runner) CancelAll(key string) []Kind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var stopped []Kind
	for k, t := range r.running {
		if k.key == key {
			t.cancel()
			t.forgotten = true
			stopped = append(stopped, k.kind)
		}
	}
	for k := range r.done {
		if k.key == key {
			delete(r.done, k)
		}
	}
	return stopped
}

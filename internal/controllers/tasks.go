package controllers

import (
	"context"
	"reflect"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// DefaultCleanupConcurrency is the number of cleanups run at the same time when TaskLimits.Cleanup is 0.
const DefaultCleanupConcurrency = 5

// cleanupKind is the task kind that runs on the cleanup slots; every other kind runs on the bootstrap slots.
const cleanupKind = "cleanup"

// TaskLimits bounds how many tasks a TaskRunner runs at the same time.
type TaskLimits struct {
	// Total bounds the scans, bootstraps and key acceptances run at the same time (at least 1).
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
func (l TaskLimits) withDefaults() TaskLimits {
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

// TaskRunner runs long work (SSH bootstrap and cleanup) off the reconcile workers: at most Limits.Total tasks at a
// time (cleanups on Limits.Cleanup slots of their own), no namespace more than its share, one per key, each
// cancellable. Waiting tasks are admitted namespace by namespace, the namespace holding the fewest slots first and
// round robin among equals, so one tenant's stuck hosts delay neither other tenants nor deletions.
// When a task ends its result is kept for the controller to read and the object is sent on Events, which the
// controller watches, so the result is handled by a normal reconcile.
type TaskRunner struct {
	// Events receives the object of each finished task; wire it to the controller with source.Channel.
	Events chan event.GenericEvent

	mu        sync.Mutex
	events    map[reflect.Type]chan event.GenericEvent
	bootstrap *slotPool
	cleanup   *slotPool
	running   map[string]*task
	done      map[string]TaskResult
}

// TaskResult is what a finished task returned.
type TaskResult struct {
	// Kind says what ran ("bootstrap", "cleanup").
	Kind string
	// Value is the task's own result; Err its error.
	Value any
	Err   error
}

type task struct {
	cancel context.CancelFunc
}

// NewTaskRunner returns a runner for at most concurrency scans, bootstraps and acceptances at a time (half of them
// at most for one namespace) and DefaultCleanupConcurrency cleanups.
func NewTaskRunner(concurrency int) *TaskRunner {
	return NewTaskRunnerWithLimits(TaskLimits{Total: concurrency})
}

// NewTaskRunnerWithLimits returns a runner bounded by limits.
func NewTaskRunnerWithLimits(limits TaskLimits) *TaskRunner {
	l := limits.withDefaults()
	return &TaskRunner{
		Events:    make(chan event.GenericEvent, 1024),
		bootstrap: newSlotPool(l.Total, l.PerNamespace),
		cleanup:   newSlotPool(l.Cleanup, max(1, l.Cleanup*l.PerNamespace/l.Total)),
		running:   map[string]*task{},
		done:      map[string]TaskResult{},
	}
}

// Start runs fn for key and kind unless such a task is running or its result is waiting; it returns false then.
// The task waits for a slot of obj's namespace; cancelling it while it waits delivers ctx's error as its result.
func (r *TaskRunner) Start(ctx context.Context, key, kind string, obj client.Object, fn func(context.Context) (any, error)) bool {
	key = kind + "/" + key
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.running[key]; ok {
		return false
	}
	if _, ok := r.done[key]; ok {
		return false
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.running[key] = &task{cancel: cancel}
	obj = obj.DeepCopyObject().(client.Object)
	pool := r.bootstrap
	if kind == cleanupKind {
		pool = r.cleanup
	}
	// Queued here, under the lock, so tasks of one namespace are admitted in the order they were started.
	w := pool.enqueue(obj.GetNamespace())
	go func() {
		defer cancel()
		var res TaskResult
		if err := r.wait(ctx, pool, w); err != nil {
			res = TaskResult{Kind: kind, Err: err}
		} else {
			v, err := fn(ctx)
			r.mu.Lock()
			pool.release(w.namespace)
			r.mu.Unlock()
			res = TaskResult{Kind: kind, Value: v, Err: err}
		}
		r.mu.Lock()
		delete(r.running, key)
		r.done[key] = res
		r.mu.Unlock()
		r.eventsOf(obj) <- event.GenericEvent{Object: obj}
	}()
	return true
}

// EventsFor returns the channel that receives the objects of finished tasks of obj's type, so each controller
// sharing the runner gets back its own objects; objects of a type without one go to Events. Call it before the
// first task of that type starts (in SetupWithManager).
func (r *TaskRunner) EventsFor(obj client.Object) chan event.GenericEvent {
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
func (r *TaskRunner) eventsOf(obj client.Object) chan event.GenericEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.events[reflect.TypeOf(obj)]; ok {
		return ch
	}
	return r.Events
}

// wait returns once w holds a slot of pool, or ctx's error (and no slot) if ctx ends first.
func (r *TaskRunner) wait(ctx context.Context, pool *slotPool, w *waiter) error {
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
func (r *TaskRunner) Running(key, kind string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.running[kind+"/"+key]
	return ok
}

// Done says whether a result of key's task of that kind is waiting to be taken.
func (r *TaskRunner) Done(key, kind string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.done[kind+"/"+key]
	return ok
}

// Take returns and forgets the result of key's finished task of that kind.
func (r *TaskRunner) Take(key, kind string) (TaskResult, bool) {
	key = kind + "/" + key
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.done[key]
	delete(r.done, key)
	return res, ok
}

// Cancel stops key's running task of that kind, if any; its result is still delivered, and can be taken.
func (r *TaskRunner) Cancel(key, kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.running[kind+"/"+key]; ok {
		t.cancel()
	}
}

// slotPool hands out capacity slots, at most perNamespace to one namespace. Its methods are called with the
// runner's lock held.
type slotPool struct {
	capacity, perNamespace int
	inUse                  int
	held                   map[string]int       // slots each namespace holds
	waiting                map[string][]*waiter // each namespace's waiting tasks, oldest first
	order                  []string             // namespaces with waiting tasks, next in turn first
}

// waiter is one task waiting for a slot; admitted is closed when it gets one.
type waiter struct {
	namespace string
	admitted  chan struct{}
	holds     bool
}

func newSlotPool(capacity, perNamespace int) *slotPool {
	return &slotPool{capacity: capacity, perNamespace: perNamespace, held: map[string]int{}, waiting: map[string][]*waiter{}}
}

// enqueue queues a task of namespace ns and admits whoever may run now.
func (p *slotPool) enqueue(ns string) *waiter {
	w := &waiter{namespace: ns, admitted: make(chan struct{})}
	if len(p.waiting[ns]) == 0 {
		p.order = append(p.order, ns)
	}
	p.waiting[ns] = append(p.waiting[ns], w)
	p.admit()
	return w
}

// release frees a slot namespace ns held and admits whoever may run now.
func (p *slotPool) release(ns string) {
	p.inUse--
	if p.held[ns]--; p.held[ns] <= 0 {
		delete(p.held, ns)
	}
	p.admit()
}

// drop removes a waiting task that no longer wants a slot.
func (p *slotPool) drop(w *waiter) {
	q := p.waiting[w.namespace]
	for i := range q {
		if q[i] == w {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) > 0 {
		p.waiting[w.namespace] = q
		return
	}
	delete(p.waiting, w.namespace)
	p.removeFromOrder(w.namespace)
}

// admit gives free slots to waiting tasks: each to the oldest task of the namespace that holds the fewest slots
// and is below its share, the earliest in turn among equals; that namespace then goes to the end of the turn.
func (p *slotPool) admit() {
	for p.inUse < p.capacity {
		best := -1
		for i, ns := range p.order {
			if h := p.held[ns]; h < p.perNamespace && (best < 0 || h < p.held[p.order[best]]) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		ns := p.order[best]
		q := p.waiting[ns]
		w := q[0]
		q[0] = nil
		p.order = append(p.order[:best], p.order[best+1:]...)
		if len(q) > 1 {
			p.waiting[ns] = q[1:]
			p.order = append(p.order, ns)
		} else {
			delete(p.waiting, ns)
		}
		p.inUse++
		p.held[ns]++
		w.holds = true
		close(w.admitted)
	}
}

func (p *slotPool) removeFromOrder(ns string) {
	for i := range p.order {
		if p.order[i] == ns {
			p.order = append(p.order[:i], p.order[i+1:]...)
			return
		}
	}
}

package controllers

import (
	"context"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// TaskRunner runs long work (SSH bootstrap and cleanup) off the reconcile workers: at most Concurrency tasks at a
// time, one per key, each cancellable. When a task ends its result is kept for the controller to read and the
// object is sent on Events, which the controller watches, so the result is handled by a normal reconcile.
type TaskRunner struct {
	// Events receives the object of each finished task; wire it to the controller with source.Channel.
	Events chan event.GenericEvent

	sem     chan struct{}
	mu      sync.Mutex
	running map[string]*task
	done    map[string]TaskResult
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

// NewTaskRunner returns a runner for at most concurrency tasks at a time.
func NewTaskRunner(concurrency int) *TaskRunner {
	return &TaskRunner{
		Events:  make(chan event.GenericEvent, 1024),
		sem:     make(chan struct{}, concurrency),
		running: map[string]*task{},
		done:    map[string]TaskResult{},
	}
}

// Start runs fn for key and kind unless such a task is running or its result is waiting; it returns false then.
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
	go func() {
		defer cancel()
		var res TaskResult
		select {
		case r.sem <- struct{}{}:
			v, err := fn(ctx)
			<-r.sem
			res = TaskResult{Kind: kind, Value: v, Err: err}
		case <-ctx.Done():
			res = TaskResult{Kind: kind, Err: ctx.Err()}
		}
		r.mu.Lock()
		delete(r.running, key)
		r.done[key] = res
		r.mu.Unlock()
		r.Events <- event.GenericEvent{Object: obj}
	}()
	return true
}

// Running says whether a task of that kind runs for key.
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

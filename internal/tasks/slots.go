package tasks

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

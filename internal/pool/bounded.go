package pool

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// expiringSet remembers keys for a while: at most max keys, each for ttl. A key is kept as a 16-byte hash, so what
// a client sends (a pool name, a selector) costs the set the same few bytes whatever its size. When full, expired
// keys are swept first, then the oldest are dropped: forgetting a key only costs one more apiserver read.
type expiringSet struct {
	max int
	ttl time.Duration

	mu    sync.Mutex
	order *list.List // of *expiringKey, oldest first
	keys  map[[16]byte]*list.Element
}

type expiringKey struct {
	hash [16]byte
	at   time.Time
}

func newExpiringSet(maxKeys int, ttl time.Duration) *expiringSet {
	return &expiringSet{max: maxKeys, ttl: ttl, order: list.New(), keys: map[[16]byte]*list.Element{}}
}

func hashKey(key string) [16]byte {
	sum := sha256.Sum256([]byte(key))
	return [16]byte(sum[:16])
}

// has says whether key was added less than ttl before now.
func (s *expiringSet) has(key string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.keys[hashKey(key)]
	return ok && now.Sub(e.Value.(*expiringKey).at) < s.ttl
}

// add records key at now, making room if the set is full.
func (s *expiringSet) add(key string, now time.Time) {
	h := hashKey(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.keys[h]; ok {
		s.order.Remove(e)
	}
	s.sweep(now)
	for s.order.Len() >= s.max {
		s.drop(s.order.Front())
	}
	s.keys[h] = s.order.PushBack(&expiringKey{hash: h, at: now})
}

// remove forgets key.
func (s *expiringSet) remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.keys[hashKey(key)]; ok {
		s.drop(e)
	}
}

// len returns how many keys the set holds, expired ones not yet swept included.
func (s *expiringSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.Len()
}

// sweep drops the expired keys: the oldest come first, so it stops at the first live one.
func (s *expiringSet) sweep(now time.Time) {
	for e := s.order.Front(); e != nil && now.Sub(e.Value.(*expiringKey).at) >= s.ttl; e = s.order.Front() {
		s.drop(e)
	}
}

func (s *expiringSet) drop(e *list.Element) {
	delete(s.keys, e.Value.(*expiringKey).hash)
	s.order.Remove(e)
}

// namespaceLimiter allows each namespace a rate of events, remembering at most max namespaces (the least recently
// used is forgotten first).
type namespaceLimiter struct {
	limit rate.Limit
	burst int
	max   int

	mu       sync.Mutex
	order    *list.List // of *namespaceBucket, least recently used first
	limiters map[string]*list.Element
}

type namespaceBucket struct {
	namespace string
	limiter   *rate.Limiter
}

func newNamespaceLimiter(limit rate.Limit, burst, maxNamespaces int) *namespaceLimiter {
	return &namespaceLimiter{limit: limit, burst: burst, max: maxNamespaces, order: list.New(), limiters: map[string]*list.Element{}}
}

// allow takes one token of namespace's bucket at now; false when it is empty.
func (l *namespaceLimiter) allow(namespace string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.limiters[namespace]
	if ok {
		l.order.MoveToBack(e)
	} else {
		for l.order.Len() >= l.max {
			oldest := l.order.Front()
			delete(l.limiters, oldest.Value.(*namespaceBucket).namespace)
			l.order.Remove(oldest)
		}
		// A namespace name is at most 63 bytes (the apiserver checks it before admission).
		e = l.order.PushBack(&namespaceBucket{namespace: namespace, limiter: rate.NewLimiter(l.limit, l.burst)})
		l.limiters[namespace] = e
	}
	return e.Value.(*namespaceBucket).limiter.AllowN(now, 1)
}

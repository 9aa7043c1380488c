package pool

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestExhaustedSetIsBounded: every exhausted-pool answer used to keep a key holding the whole selector, forever
// (a sync.Map never pruned), so distinct selectors grew the webhook's memory without limit. The set keeps at most
// its bound of fixed-size keys, each for its ttl.
func TestExhaustedSetIsBounded(t *testing.T) {
	g := NewWithT(t)
	now := time.Unix(1000, 0)
	s := newExpiringSet(8, time.Second)
	s.add("a", now)
	g.Expect(s.has("a", now.Add(999*time.Millisecond))).To(BeTrue())
	g.Expect(s.has("a", now.Add(time.Second))).To(BeFalse(), "a key expires after its ttl")
	g.Expect(s.has("b", now)).To(BeFalse())

	for i := range 100 {
		s.add(fmt.Sprint("k", i), now)
		g.Expect(s.len()).To(BeNumerically("<=", 8))
	}
	g.Expect(s.has("k99", now)).To(BeTrue(), "the newest keys are kept")
	g.Expect(s.has("k0", now)).To(BeFalse(), "the oldest were dropped")

	// Adding after the ttl sweeps every expired key.
	s.add("late", now.Add(2*time.Second))
	g.Expect(s.len()).To(Equal(1))
	s.remove("late")
	g.Expect(s.len()).To(BeZero())

	// A key's size does not matter: a 1 MiB key costs what a short one does.
	var before, after runtime.MemStats
	big := newExpiringSet(4096, time.Minute)
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 300 {
		big.add(fmt.Sprint(i)+strings.Repeat("x", 1<<20), now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	g.Expect(int64(after.HeapInuse)-int64(before.HeapInuse)).To(BeNumerically("<", 1<<20), "300 keys of 1 MiB hold well under 1 MiB")
	runtime.KeepAlive(big)
}

// TestNamespaceLimiter: each namespace gets its burst, then its rate; the namespaces remembered are bounded.
func TestNamespaceLimiter(t *testing.T) {
	g := NewWithT(t)
	now := time.Unix(1000, 0)
	l := newNamespaceLimiter(2, 5, 3)
	allowed := 0
	for range 20 {
		if l.allow("a", now) {
			allowed++
		}
	}
	g.Expect(allowed).To(Equal(5), "the burst")
	g.Expect(l.allow("a", now.Add(500*time.Millisecond))).To(BeTrue(), "one more after half a second at 2/s")
	g.Expect(l.allow("a", now.Add(500*time.Millisecond))).To(BeFalse())
	g.Expect(l.allow("b", now)).To(BeTrue(), "another namespace has its own bucket")
	for i := range 100 {
		l.allow(fmt.Sprint("ns", i), now)
	}
	g.Expect(l.order.Len()).To(Equal(3))
	g.Expect(l.limiters).To(HaveLen(3))
}

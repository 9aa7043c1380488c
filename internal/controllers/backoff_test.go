package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// TestBackoff checks the waits between attempts that failed before anything ran: doubling, up to the cap.
func TestBackoff(t *testing.T) {
	g := NewWithT(t)
	r := &RemoteMachineReconciler{RetryInterval: time.Second, MaxRetryInterval: 10 * time.Second}
	var waits []time.Duration
	for range 6 {
		waits = append(waits, r.backoff("m"))
	}
	g.Expect(waits).To(Equal([]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}))
	g.Expect(r.backoff("other")).To(Equal(time.Second), "per machine")
}

// Package memwatch measures what a piece of code costs in memory, for tests that bound it.
package memwatch

import (
	"fmt"
	"runtime"
	"time"
)

// Usage is what a function cost in memory, in bytes.
type Usage struct {
	// PeakHeap is the highest heap in use (runtime.MemStats.HeapInuse) seen while it ran, above the heap in use
	// before it started.
	PeakHeap uint64
	// PeakSys is the highest memory obtained from the OS (runtime.MemStats.Sys) seen while it ran, above the same
	// before it started.
	PeakSys uint64
	// Allocated is what it allocated in all (runtime.MemStats.TotalAlloc), freed or not.
	Allocated uint64
}

func (u Usage) String() string {
	return fmt.Sprintf("peak heap in use +%d MiB, peak Sys +%d MiB, allocated %d MiB", u.PeakHeap>>20, u.PeakSys>>20, u.Allocated>>20)
}

// Measure runs f and samples the heap every millisecond while it runs.
func Measure(f func()) Usage {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop, peaks := make(chan struct{}), make(chan [2]uint64)
	go func() {
		var heap, sys uint64
		var m runtime.MemStats
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			heap, sys = max(heap, m.HeapInuse), max(sys, m.Sys)
			select {
			case <-stop:
				peaks <- [2]uint64{heap, sys}
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	p := <-peaks
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	return Usage{
		PeakHeap:  max(p[0], after.HeapInuse, before.HeapInuse) - before.HeapInuse,
		PeakSys:   max(p[1], after.Sys, before.Sys) - before.Sys,
		Allocated: after.TotalAlloc - before.TotalAlloc,
	}
}

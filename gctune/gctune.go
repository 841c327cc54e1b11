// Package gctune gives Go's garbage collector a floor of headroom, so that a
// daemon with a small live heap and a high allocation rate does not collect
// dozens of times a second.
//
// Go sets the next collection's heap goal at live + (live + stacks +
// globals) × GOGC/100, and at least 4 MiB × GOGC/100 (runtime/mgcpacer.go).
// The relay's live heap is a few MiB while it receives, and every message
// allocates a few times its size (TLS handshake, reading, verifying,
// filing): at GOGC=200 that was a collection every ~30 ms with one
// connection per message. Each collection stops the world twice, and on a
// loaded machine a stop waits until the OS runs every thread of the
// process again: the store's group commit, which every 250 waits for,
// stalled behind them (docs/PERFORMANCE.md).
//
// A Tuner therefore lets the heap grow by max(scan × base/100, floor)
// between collections, scan being what the runtime scales GOGC by (live
// heap, stacks, globals; while scan is under 4 MiB the runtime's minimum
// decides, and the heap may reach floor in all). That is the base
// percentage as before once scan is large (a thousand IMAP sessions on a
// big INBOX cost no more memory than with a fixed GOGC), and at least
// floor bytes of garbage while it is small. Go has no such knob (GOMEMLIMIT
// is a ceiling), so the Tuner re-reads those figures after each collection
// and sets the percentage to match. A memory limit (GOMEMLIMIT) still
// bounds the heap.
package gctune

import (
	"math"
	"math/bits"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// scanMetrics are the three terms the runtime scales GOGC by. Stacks count
// as much as the heap: with a thousand idle sessions they alone weigh as
// much as the live heap.
var scanMetrics = []string{
	"/gc/heap/live:bytes",    // heap marked live by the last collection
	"/gc/scan/stack:bytes",   // stacks scanned by the last collection
	"/gc/scan/globals:bytes", // scannable globals
}

// minScan is the least scan Percent divides the floor by. The runtime
// never sets a goal below a minimum heap of 4 MiB × GOGC/100
// (defaultHeapMinimum in runtime/mgcpacer.go), so a percentage computed for
// a smaller scan (right after start, before any collection) would raise
// that minimum past the floor: at 1 MiB the first collection would wait for
// a 128 MiB heap instead of 32.
const minScan = 4 << 20

// Percent is the GC percentage giving max(scan × base/100, floor) of heap
// headroom, rounded up, where scan is what the runtime scales the
// percentage by: the live heap, stacks and globals.
func Percent(scan, floor uint64, base int) int {
	if base < 0 {
		return base // the collector is off: nothing to pace
	}
	if scan < minScan {
		scan = minScan
	}
	// scan × base/100 ≥ floor, in 128 bits (a quotient of 2^64 or more,
	// hi ≥ 100, is past any floor).
	if hi, lo := bits.Mul64(scan, uint64(base)); hi >= 100 {
		return base
	} else if q, _ := bits.Div64(hi, lo, 100); q >= floor {
		return base
	}
	// ⌈floor × 100 / scan⌉ in 128 bits (no overflow for any floor; the
	// high word is below 100, so below scan, as Div64 requires), capped:
	// debug.SetGCPercent keeps an int32, and a larger value would wrap to a
	// negative one and turn the collector off.
	hi, lo := bits.Mul64(floor, 100)
	lo, carry := bits.Add64(lo, scan-1, 0)
	q, _ := bits.Div64(hi+carry, lo, scan)
	return int(min(q, math.MaxInt32))
}

// Tuner keeps the collector's percentage at Percent(live heap + stacks +
// globals, floor, base) until Stop. The GC percentage is process-wide: run
// one Tuner per process.
type Tuner struct {
	floor uint64
	base  int
	set   atomic.Int64 // the percentage last set, for Percent

	mu      sync.Mutex // orders adjust and Stop
	stopped bool
	sample  []metrics.Sample
}

// Start sets the collector's percentage for what the last collection found
// and keeps it up to date after every collection.
func Start(base int, floor uint64) *Tuner {
	t := &Tuner{floor: floor, base: base}
	for _, name := range scanMetrics {
		t.sample = append(t.sample, metrics.Sample{Name: name})
	}
	t.adjust()
	t.arm()
	return t
}

// Stop ends the adjustments and puts the percentage back to base.
func (t *Tuner) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	t.stopped = true
	t.set.Store(int64(t.base))
	debug.SetGCPercent(t.base)
}

// Percent is the percentage the Tuner set last.
func (t *Tuner) Percent() int { return int(t.set.Load()) }

// sentinel is a heap object nothing refers to, so that the next collection
// finds it unreachable and runs its cleanup: Go's only hook on "a
// collection just finished". It holds a pointer so that it is never one of
// the tiny allocations the runtime batches together (whose cleanups may
// wait for their neighbours).
type sentinel struct{ _ *byte }

// arm attaches the cleanup that adjusts the percentage and re-arms, once
// per collection.
func (t *Tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *Tuner) {
		if t.adjust() {
			t.arm()
		}
	}, t)
}

// adjust sets the percentage for what the last collection found; false
// once stopped.
func (t *Tuner) adjust() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.sample)
	var scan uint64
	for _, v := range t.sample {
		if v.Value.Kind() != metrics.KindUint64 {
			return true // not reported by this runtime: leave the percentage alone
		}
		scan += v.Value.Uint64()
	}
	p := Percent(scan, t.floor, t.base)
	if int64(p) != t.set.Load() {
		t.set.Store(int64(p))
		debug.SetGCPercent(p)
	}
	return true
}

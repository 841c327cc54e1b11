// Package gctune gives Go's garbage collector a floor of headroom, so that a
// daemon with a small live heap and a high allocation rate does not collect
// dozens of times a second.
//
// Go sets the next collection's heap goal at live × (1 + GOGC/100). The
// relay's live heap is a few MiB while it receives, and every message
// allocates a few times its size (TLS handshake, reading, verifying,
// filing): at GOGC=200 that was a collection every ~30 ms with one
// connection per message. Each collection stops the world twice, and on a
// loaded machine a stop waits until the OS runs every thread of the
// process again: the store's group commit, which every 250 waits for,
// stalled behind them (docs/PERFORMANCE.md).
//
// A Tuner therefore lets the heap grow by max(live × base/100, floor)
// between collections: the base percentage as before once the live heap is
// large (a thousand IMAP sessions on a big INBOX cost no more memory than
// with a fixed GOGC), and at least floor bytes of garbage while it is small.
// Go has no such knob (GOMEMLIMIT is a ceiling), so the Tuner re-reads the
// live heap after each collection and sets the percentage to match. A
// memory limit (GOMEMLIMIT) still bounds the heap.
package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// liveMetric is the heap marked live by the last collection.
const liveMetric = "/gc/heap/live:bytes"

// minLive keeps Percent finite when the runtime reports a near-empty heap
// (right after start): below it the floor is taken as relative to minLive.
const minLive = 1 << 20

// Percent is the GC percentage giving a heap of live bytes max(live ×
// base/100, floor) of headroom, rounded up.
func Percent(live, floor uint64, base int) int {
	if live < minLive {
		live = minLive
	}
	headroom := live * uint64(base) / 100
	if headroom >= floor {
		return base
	}
	return int((floor*100 + live - 1) / live)
}

// Tuner keeps the collector's percentage at Percent(live heap, floor, base)
// until Stop. The GC percentage is process-wide: run one Tuner per process.
type Tuner struct {
	floor uint64
	base  int
	set   atomic.Int64 // the percentage last set, for Percent

	mu      sync.Mutex // orders adjust and Stop
	stopped bool
	sample  []metrics.Sample
}

// Start sets the collector's percentage for the current live heap and
// keeps it up to date after every collection.
func Start(base int, floor uint64) *Tuner {
	t := &Tuner{floor: floor, base: base, sample: []metrics.Sample{{Name: liveMetric}}}
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

// adjust sets the percentage for the live heap the last collection found;
// false once stopped.
func (t *Tuner) adjust() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.sample)
	if t.sample[0].Value.Kind() != metrics.KindUint64 {
		return true // not reported by this runtime: leave the percentage alone
	}
	p := Percent(t.sample[0].Value.Uint64(), t.floor, t.base)
	if int64(p) != t.set.Load() {
		t.set.Store(int64(p))
		debug.SetGCPercent(p)
	}
	return true
}

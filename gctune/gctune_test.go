package gctune

import (
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const MiB = 1 << 20
	tests := []struct {
		name  string
		scan  uint64
		floor uint64
		base  int
		want  int
	}{
		{"large heap keeps base", 100 * MiB, 32 * MiB, 200, 200},
		{"headroom equals floor", 16 * MiB, 32 * MiB, 200, 200},
		{"small heap gets floor", 4 * MiB, 32 * MiB, 200, 800},
		{"rounds up", 6 * MiB, 32 * MiB, 200, 534},
		{"nothing counts as 4 MiB", 0, 32 * MiB, 200, 800},
		{"less than 4 MiB counts as 4", 1 * MiB, 32 * MiB, 100, 800},
		{"no floor", 2 * MiB, 0, 100, 100},
		{"collector off stays off", 2 * MiB, 32 * MiB, -1, -1},
		{"huge floor capped at int32", 4 * MiB, 1 << 62, 200, 1<<31 - 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.scan, tc.floor, tc.base); got != tc.want {
				t.Errorf("Percent(%d, %d, %d) = %d, want %d", tc.scan, tc.floor, tc.base, got, tc.want)
			}
		})
	}
}

// gogc reads the runtime's GC percentage without changing it.
func gogc(t *testing.T) int {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatal("runtime does not report /gc/gogc:percent")
	}
	return int(s[0].Value.Uint64())
}

// collect runs a collection and waits until every cleanup queued by then
// has run, the Tuner's among them: runtime.GC returns once the sweep is
// done, and the sweep queues the cleanups of the objects it frees. The
// Tuner's cleanup arms the next sentinel before its batch counts as
// executed, so after collect the next collection finds a sentinel.
func collect(t *testing.T) {
	t.Helper()
	runtime.GC()
	s := []metrics.Sample{
		{Name: "/gc/cleanups/queued:cleanups"},
		{Name: "/gc/cleanups/executed:cleanups"},
	}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		t.Fatal("runtime does not report /gc/cleanups/*")
	}
	queued := s[0].Value.Uint64()
	deadline := time.Now().Add(10 * time.Second)
	for metrics.Read(s); s[1].Value.Uint64() < queued; metrics.Read(s) {
		if time.Now().After(deadline) {
			t.Fatalf("cleanups queued by a collection not run after 10 s (%d of %d)", s[1].Value.Uint64(), queued)
		}
		time.Sleep(time.Millisecond)
	}
}

// collectUntil runs collections until cond holds (the Tuner adjusts from a
// cleanup that runs shortly after a collection, on another goroutine).
func collectUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s of collections: %s", what)
		}
		collect(t)
	}
}

// TestTunerFollowsLiveHeap: with a small live heap the percentage gives the
// floor; holding a large allocation brings it back to base; Stop restores
// base and ends the adjustments.
func TestTunerFollowsLiveHeap(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	const base, floor = 200, 256 << 20
	tu := Start(base, floor)
	t.Cleanup(tu.Stop)
	if p := tu.Percent(); p <= base || gogc(t) != p {
		t.Fatalf("at start: tuner set %d, runtime has %d; want above %d (this test's heap is far below %d MiB / 2)", p, gogc(t), base, floor>>20)
	}

	// A live 200 MiB: 400 MiB of headroom at base, above the floor.
	big := make([]byte, 200<<20)
	for i := range big {
		big[i] = byte(i)
	}
	collectUntil(t, "percentage not back to base with 200 MiB live", func() bool {
		return tu.Percent() == base && gogc(t) == base
	})
	runtime.KeepAlive(big)
	big = nil

	collectUntil(t, "percentage not raised again once the 200 MiB were freed", func() bool {
		return tu.Percent() > base && gogc(t) == tu.Percent()
	})

	tu.Stop()
	if got := gogc(t); got != base {
		t.Fatalf("after Stop: runtime percentage %d, want base %d", got, base)
	}
	debug.SetGCPercent(150)
	// Two collections would do: the first lets a cleanup still running
	// arm its sentinel, the second runs that sentinel's cleanup.
	for range 3 {
		collect(t)
	}
	if got := gogc(t); got != 150 {
		t.Errorf("a stopped Tuner changed the percentage to %d", got)
	}
	tu.Stop() // twice is harmless
	if got := gogc(t); got != 150 {
		t.Errorf("a second Stop changed the percentage to %d", got)
	}
}

// deep recurses n frames of about 1 KiB each, says so on ready, then waits
// for release: a goroutine holding a large stack.
func deep(n int, ready chan<- struct{}, release <-chan struct{}) byte {
	var pad [1024]byte
	pad[n%len(pad)] = byte(n)
	if n == 0 {
		ready <- struct{}{}
		<-release
		return pad[0]
	}
	return deep(n-1, ready, release) + pad[n%len(pad)]
}

// holdStacks starts n goroutines, each holding a stack of about 256 KiB of
// frames until the test ends, and returns once all are that deep.
func holdStacks(t *testing.T, n int) {
	t.Helper()
	ready := make(chan struct{})
	release := make(chan struct{})
	done := make(chan struct{})
	for range n {
		go func() {
			deep(256, ready, release) // ~256 KiB of frames
			done <- struct{}{}
		}()
	}
	t.Cleanup(func() {
		close(release)
		for range n {
			<-done
		}
	})
	for range n {
		<-ready
	}
}

// TestTunerCountsStacks: the runtime scales the percentage by stacks and
// globals as well as the live heap, so many goroutines with large stacks
// and a small heap already give headroom beyond the floor: the Tuner must
// not raise the percentage then (the first version, which counted the live
// heap alone, did).
func TestTunerCountsStacks(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })
	holdStacks(t, 256)

	// 256 stacks of ~235 KiB in use: ~60 MiB scanned, 120 at 200 %, over
	// the floor.
	const base, floor = 200, 64 << 20
	tu := Start(base, floor)
	t.Cleanup(tu.Stop)
	stack := []metrics.Sample{{Name: "/gc/scan/stack:bytes"}}
	collectUntil(t, "percentage not at base with the stacks scanned", func() bool {
		metrics.Read(stack)
		return stack[0].Value.Uint64() >= 48<<20 && tu.Percent() == base && gogc(t) == base
	})
}

// pacerState is what the runtime's pacer computed after the last
// collection, read at once.
type pacerState struct {
	live, stack, globals, goal, limit uint64
	gogc                              int
	cycles                            uint64
}

func readPacer(t *testing.T) pacerState {
	t.Helper()
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/gc/heap/goal:bytes"},
		{Name: "/gc/gomemlimit:bytes"},
		{Name: "/gc/gogc:percent"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	metrics.Read(s)
	for _, v := range s {
		if v.Value.Kind() != metrics.KindUint64 {
			t.Fatalf("runtime does not report %s", v.Name)
		}
	}
	return pacerState{
		live: s[0].Value.Uint64(), stack: s[1].Value.Uint64(), globals: s[2].Value.Uint64(),
		goal: s[3].Value.Uint64(), limit: s[4].Value.Uint64(),
		gogc: int(s[5].Value.Uint64()), cycles: s[6].Value.Uint64(),
	}
}

// checkGoal checks the heap goal the runtime derived from the Tuner's
// percentage, which is the Tuner's purpose and rests on its reading of the
// pacer (runtime/mgcpacer.go, gcControllerState.commit): goal = live +
// (live + stacks + globals) x GOGC/100, at least 4 MiB x GOGC/100. So:
// the heap may grow by floor at least (by floor minus a live heap under
// 4 MiB when scan is below 4 MiB: then the goal is the minimum heap, floor),
// and by no more than max(floor, scan x base/100) plus the percentage's
// rounding and the runtime's own slack (1 MiB of sweep distance).
func checkGoal(t *testing.T, base int, floor uint64) pacerState {
	t.Helper()
	var p pacerState
	for i := 0; ; i++ {
		collect(t)
		collect(t) // the Tuner has adjusted for the last collection
		p = readPacer(t)
		if readPacer(t).cycles == p.cycles {
			break // no collection in between: a consistent reading
		}
		if i == 100 {
			t.Fatal("collections keep starting on their own")
		}
	}
	if p.limit != math.MaxInt64 {
		t.Skipf("GOMEMLIMIT is set (%d): the heap goal is not the percentage's", p.limit)
	}
	scan := p.live + p.stack + p.globals
	if want := Percent(scan, floor, base); p.gogc != want {
		t.Fatalf("percentage %d, want Percent(%d, %d, %d) = %d", p.gogc, scan, floor, base, want)
	}
	least := p.live + floor
	if scan < minScan {
		least = floor
	}
	most := p.live + max(floor, scan*uint64(base)/100) + scan/100 + 1<<20
	if p.goal < least || p.goal > most {
		t.Fatalf("heap goal %d MiB with live %d MiB, stacks %d MiB, globals %d KiB at %d %%: want %d to %d MiB (floor %d MiB, base %d %%)",
			p.goal>>20, p.live>>20, p.stack>>20, p.globals>>10, p.gogc, least>>20, most>>20, floor>>20, base)
	}
	return p
}

// TestTunerHeapGoal checks the runtime's heap goal, not only the
// percentage: with this test's small heap (the minimum heap decides), with
// a large one (base decides), and with large stacks and a floor above what
// base gives them (the stack term decides: counting allocated instead of
// scanned stack space, or leaving stacks out, misses the floor or
// overshoots it).
func TestTunerHeapGoal(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	t.Run("small heap", func(t *testing.T) {
		const base, floor = 200, 256 << 20
		tu := Start(base, floor)
		defer tu.Stop()
		p := checkGoal(t, base, floor)
		t.Logf("live %d KiB, stacks %d KiB, globals %d KiB: %d %%, goal %d MiB", p.live>>10, p.stack>>10, p.globals>>10, p.gogc, p.goal>>20)
	})
	t.Run("large heap", func(t *testing.T) {
		const base, floor = 200, 64 << 20
		big := make([]*[1 << 20]byte, 64) // 64 MiB live: 128 at base
		for i := range big {
			big[i] = new([1 << 20]byte)
		}
		tu := Start(base, floor)
		defer tu.Stop()
		if p := checkGoal(t, base, floor); p.gogc != base {
			t.Errorf("percentage %d with 64 MiB live, want base %d", p.gogc, base)
		}
		runtime.KeepAlive(big)
	})
	t.Run("large stacks", func(t *testing.T) {
		holdStacks(t, 256) // ~60 MiB scanned, ~128 MiB of stacks allocated
		const base, floor = 200, 192 << 20
		tu := Start(base, floor)
		defer tu.Stop()
		p := checkGoal(t, base, floor)
		if p.stack < 48<<20 || p.gogc <= base {
			t.Errorf("stacks %d MiB scanned, percentage %d: want 48 MiB or more, above %d", p.stack>>20, p.gogc, base)
		}
	})
}

// TestSentinelHoldsPointer: a pointer-free sentinel under 16 bytes would be a
// tiny allocation, sharing its block with other objects: a long-lived
// neighbour would keep it reachable and stop the Tuner for good (see
// runtime.AddCleanup on batching).
func TestSentinelHoldsPointer(t *testing.T) {
	typ := reflect.TypeFor[sentinel]()
	if typ.Size() == 0 {
		t.Fatal("zero-size sentinel: its cleanup may never run")
	}
	for i := range typ.NumField() {
		switch typ.Field(i).Type.Kind() {
		case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Chan,
			reflect.Func, reflect.Interface, reflect.Slice, reflect.String:
			return
		}
	}
	t.Fatalf("sentinel %v holds no pointer: a tiny allocation", typ)
}

// TestPercentMatchesBigInt checks the 128-bit arithmetic against math/big
// over values spread across the whole uint64 range.
func TestPercentMatchesBigInt(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bigU := func(v uint64) *big.Int { return new(big.Int).SetUint64(v) }
	for range 20000 {
		scan := r.Uint64() >> r.UintN(64)
		floor := r.Uint64() >> r.UintN(64)
		base := []int{0, 100, 200, 12345, math.MaxInt32}[r.IntN(5)]
		got := Percent(scan, floor, base)

		s := bigU(max(scan, minScan))
		headroom := new(big.Int).Mul(s, big.NewInt(int64(base)))
		headroom.Div(headroom, big.NewInt(100))
		want := base
		if headroom.Cmp(bigU(floor)) < 0 {
			q := new(big.Int).Mul(bigU(floor), big.NewInt(100))
			q.Add(q, new(big.Int).Sub(s, big.NewInt(1)))
			q.Div(q, s)
			want = math.MaxInt32
			if q.IsInt64() && q.Int64() < math.MaxInt32 {
				want = int(q.Int64())
			}
		}
		if got != want {
			t.Fatalf("Percent(%d, %d, %d) = %d, want %d", scan, floor, base, got, want)
		}
	}
}

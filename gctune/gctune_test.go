package gctune

import (
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

// collectUntil runs collections until cond holds (the Tuner adjusts from a
// cleanup that runs shortly after a collection, on another goroutine).
func collectUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s of collections: %s", what)
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
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
	for range 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	if got := gogc(t); got != 150 {
		t.Errorf("a stopped Tuner changed the percentage to %d", got)
	}
	tu.Stop() // twice is harmless
	if got := gogc(t); got != 150 {
		t.Errorf("a second Stop changed the percentage to %d", got)
	}
}

// deep recurses n frames of about 1 KiB each, then waits for release: a
// goroutine holding a large stack.
func deep(n int, release <-chan struct{}) byte {
	var pad [1024]byte
	pad[n%len(pad)] = byte(n)
	if n == 0 {
		<-release
		return pad[0]
	}
	return deep(n-1, release) + pad[n%len(pad)]
}

// TestTunerCountsStacks: the runtime scales the percentage by stacks and
// globals as well as the live heap, so many goroutines with large stacks
// and a small heap already give headroom beyond the floor: the Tuner must
// not raise the percentage then (it once did, and a relay with a thousand
// idle sessions grew 60 MiB more than at a plain GOGC=200).
func TestTunerCountsStacks(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	release := make(chan struct{})
	done := make(chan struct{})
	const goroutines = 256
	for range goroutines {
		go func() {
			deep(256, release) // ~256 KiB of frames
			done <- struct{}{}
		}()
	}
	defer func() {
		close(release)
		for range goroutines {
			<-done
		}
	}()

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

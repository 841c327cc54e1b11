package main

import (
	"runtime/debug"
	"runtime/metrics"
	"testing"

	"mssrelay/gctune"
)

func gcPercentNow(t *testing.T) int {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// scanNow is what the runtime scales the GC percentage by (live heap,
// scanned stacks, globals), with the count of finished collections.
func scanNow(t *testing.T) (scan, cycles uint64) {
	t.Helper()
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	metrics.Read(s)
	for _, v := range s {
		if v.Value.Kind() != metrics.KindUint64 {
			t.Fatalf("runtime does not report %s", v.Name)
		}
	}
	return s[0].Value.Uint64() + s[1].Value.Uint64() + s[2].Value.Uint64(), s[3].Value.Uint64()
}

// TestStartGCTuner: without GOGC the daemon paces the collector itself (at
// least defaultGCPercent, more while the heap is small); with GOGC set the
// runtime's reading of it stands.
func TestStartGCTuner(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	for _, env := range []string{"50", "off", "200", "100"} {
		stop := startGCTuner(env)
		if got := gcPercentNow(t); got != 100 {
			t.Errorf("GOGC=%s in the environment: percentage changed to %d", env, got)
		}
		stop()
		if got := gcPercentNow(t); got != 100 {
			t.Errorf("GOGC=%s in the environment: stop changed the percentage to %d", env, got)
		}
	}

	// The percentage set at start is the one for the daemon's base and
	// floor and the scan the last collection found. A collection between
	// the two readings changes the scan: try again then.
	for i := 0; ; i++ {
		_, c0 := scanNow(t)
		stop := startGCTuner("")
		got := gcPercentNow(t)
		scan, c1 := scanNow(t)
		want := gctune.Percent(scan, defaultGCFloor, defaultGCPercent)
		if c0 == c1 {
			if got != want || got < defaultGCPercent {
				t.Errorf("GOGC unset, scan %d KiB: percentage %d, want Percent(%d, %d, %d) = %d",
					scan>>10, got, scan, uint64(defaultGCFloor), defaultGCPercent, want)
			}
		}
		stop()
		if got := gcPercentNow(t); got != defaultGCPercent {
			t.Errorf("GOGC unset, tuner stopped: percentage %d, want %d", got, defaultGCPercent)
		}
		if c0 == c1 {
			break
		}
		if i == 100 {
			t.Fatal("a collection ran between every pair of readings")
		}
	}
}

package main

import (
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

func gcPercentNow(t *testing.T) int {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestStartGCTuner: without GOGC the daemon paces the collector itself (at
// least defaultGCPercent, more while the heap is small); with GOGC set the
// runtime's reading of it stands.
func TestStartGCTuner(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	stop := startGCTuner("50")
	if got := gcPercentNow(t); got != 100 {
		t.Errorf("GOGC=50 in the environment: percentage changed to %d", got)
	}
	stop()
	if got := gcPercentNow(t); got != 100 {
		t.Errorf("GOGC=50 in the environment: stop changed the percentage to %d", got)
	}

	stop = startGCTuner("")
	if got := gcPercentNow(t); got < defaultGCPercent {
		t.Errorf("GOGC unset: percentage %d, want at least %d", got, defaultGCPercent)
	}
	stop()
	if got := gcPercentNow(t); got != defaultGCPercent {
		t.Errorf("GOGC unset, tuner stopped: percentage %d, want %d", got, defaultGCPercent)
	}
}

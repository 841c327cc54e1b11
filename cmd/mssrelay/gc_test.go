package main

import (
	"runtime/debug"
	"testing"
)

// TestSetGCPercent: the daemon's collector target is defaultGCPercent
// unless GOGC is set, in which case the runtime's reading of it stands.
func TestSetGCPercent(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	setGCPercent("")
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Errorf("GOGC unset: collector target %d, want %d", got, defaultGCPercent)
	}
	setGCPercent("50")
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=50 in the environment: target changed to %d", got)
	}
}

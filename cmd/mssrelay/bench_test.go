package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStartCPUProfile(t *testing.T) {
	stop, err := startCPUProfile("")
	if err != nil {
		t.Fatalf("no path: %v", err)
	}
	stop()

	path := filepath.Join(t.TempDir(), "cpu.out")
	stop, err = startCPUProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 {
		t.Fatal("empty profile: not even the header was written")
	}

	if _, err := startCPUProfile(filepath.Join(t.TempDir(), "missing", "cpu.out")); err == nil {
		t.Fatal("a profile in a missing directory was accepted")
	}
}

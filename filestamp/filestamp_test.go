package filestamp

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStamp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a")
	if err := os.WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	data, s1, err := Read(p, 10, time.Now())
	if err != nil || string(data) != "one" || s1.Racy || s1.Path != p {
		t.Fatalf("Read: %q %+v %v", data, s1, err)
	}
	s2, err := Stat(p, time.Now())
	if err != nil || !s1.Same(s2) {
		t.Fatalf("unchanged file: %+v vs %+v, %v", s1, s2, err)
	}
	// Replaced by rename with the same size and times: another inode.
	q := filepath.Join(dir, "b")
	if err := os.WriteFile(q, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(q, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(q, p); err != nil {
		t.Fatal(err)
	}
	if s3, _ := Stat(p, time.Now()); s1.Same(s3) {
		t.Error("a file replaced by rename looks unchanged")
	}
	// Just written: racy, so a caller reads it again later.
	if err := os.WriteFile(p, []byte("three"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s4, _ := Stat(p, time.Now()); !s4.Racy {
		t.Error("a file modified just now is not racy")
	}
	if (Stamp{}).Same(s1) || !(Stamp{}).Same(Stamp{}) {
		t.Error("the zero stamp must equal only itself")
	}
}

func TestReadRefusals(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte("0123456789X"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"too large", big, "larger than 10 bytes"},
		{"a directory", dir, "not a regular file"},
		{"a FIFO (would block on open)", fifo, "not a regular file"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := Read(tc.path, 10, time.Now()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Read: %v, want %q", err, tc.want)
			}
		})
	}
}

package store

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

func TestOpenFileMode(t *testing.T) {
	_, path := openTemp(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Fatalf("database mode %o, want no group/other access", perm)
	}
}

// TestOpenLocked opens the same file twice. flock locks belong to the open
// file description, so a second Open in the same process conflicts too;
// a subprocess checks the cross-process case the daemon cares about.
func TestOpenLocked(t *testing.T) {
	_, path := openTemp(t)
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open: %v; want ErrLocked naming %s", err, path)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenLockedHelper$")
	cmd.Env = append(os.Environ(), "STORE_LOCK_HELPER="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("subprocess: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "LOCKED-OK") {
		t.Fatalf("subprocess did not see ErrLocked:\n%s", out)
	}
}

func TestOpenLockedHelper(t *testing.T) {
	path := os.Getenv("STORE_LOCK_HELPER")
	if path == "" {
		t.Skip("helper for TestOpenLocked")
	}
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open in subprocess: %v", err)
	}
	fmt.Println("LOCKED-OK")
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	s, path := openTemp(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, be32(SchemaVersion+1)) })
	if cerr := db.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	_, err = Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "schema version 2") {
		t.Fatalf("Open of newer schema: %v", err)
	}
}

func TestOpenNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(path, []byte(strings.Repeat("junk", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open(junk) = %v", err)
	}
}

package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// populated opens a store with n filings for two pharmacies, flags, a
// copy and audit events.
func populated(t *testing.T, n int) (*Store, string) {
	t.Helper()
	s, path := openTemp(t)
	for i := 1; i <= n; i++ {
		f := testFiling(i, "pharma@example.org", "nurse@example.org")
		f.Audit = []AuditEvent{{Kind: AuditSMTPAccept, Actor: f.Sender, Outcome: "250"}}
		mustFile(t, s, f)
	}
	if _, err := s.UpdateFlags("pharma@example.org", Inbox, []uint32{1}, FlagsAdd, []string{`\Seen`}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Copy("pharma@example.org", Inbox, []uint32{1}, "Archive"); err != nil {
		t.Fatal(err)
	}
	return s, path
}

// sameContent compares what two stores hold: records with bytes,
// mailboxes with entries, the audit trail.
func sameContent(t *testing.T, a, b *Store) {
	t.Helper()
	for id := uint64(1); ; id++ {
		ra, errA := a.Record(id)
		rb, errB := b.Record(id)
		if errors.Is(errA, ErrNotFound) && errors.Is(errB, ErrNotFound) {
			break
		}
		if errA != nil || errB != nil || fmt.Sprint(ra) != fmt.Sprint(rb) {
			t.Fatalf("record %d: %+v (%v) vs %+v (%v)", id, ra, errA, rb, errB)
		}
		ba, _ := a.Bytes(id)
		bb, _ := b.Bytes(id)
		if !bytes.Equal(ba, bb) {
			t.Fatalf("record %d bytes differ", id)
		}
	}
	for _, acct := range []string{"pharma@example.org", "nurse@example.org"} {
		ma, _ := a.Mailboxes(acct)
		mb, _ := b.Mailboxes(acct)
		if fmt.Sprint(ma) != fmt.Sprint(mb) {
			t.Fatalf("%s mailboxes:\n%+v\n%+v", acct, ma, mb)
		}
		for _, m := range ma {
			_, ea, _ := a.Entries(acct, m.Name)
			_, eb, _ := b.Entries(acct, m.Name)
			if fmt.Sprint(ea) != fmt.Sprint(eb) {
				t.Fatalf("%s %s entries differ", acct, m.Name)
			}
		}
	}
	sa, ha, errA := a.AuditHead()
	sb, hb, errB := b.AuditHead()
	if errA != nil || errB != nil || sa != sb || ha != hb {
		t.Fatalf("audit heads %d %x / %d %x (%v %v)", sa, ha, sb, hb, errA, errB)
	}
}

// TestBackupRoundTrip: a snapshot taken while the store is open is a
// complete database; opened, it holds the same records, mailboxes and
// audit trail, the chain verifies, and it accepts new filings.
func TestBackupRoundTrip(t *testing.T) {
	s, _ := populated(t, 5)
	dir := t.TempDir()
	out := filepath.Join(dir, "backup.db")
	info, err := s.BackupFile(out)
	if err != nil {
		t.Fatalf("BackupFile: %v", err)
	}
	if info.Records != 5 || info.Accounts != 2 || info.AuditRecords != 5 || info.Schema != SchemaVersion {
		t.Errorf("backup info %+v", info)
	}
	if _, head, _ := s.AuditHead(); head != info.AuditHead {
		t.Errorf("backup audit head %x, store %x", info.AuditHead, head)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("backup file %v, %v: want mode 0600", fi, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("backup directory holds %d files, want only the backup", len(ents))
	}
	// Overwriting an older backup is atomic and fine.
	mustFile(t, s, testFiling(6, "pharma@example.org"))
	if info, err = s.BackupFile(out); err != nil || info.Records != 6 {
		t.Fatalf("second BackupFile: %+v, %v", info, err)
	}

	restored, err := Open(out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	sameContent(t, s, restored)
	if n, err := restored.AuditVerify(nil); err != nil || n != 5 {
		t.Errorf("restored audit: %d, %v", n, err)
	}
	res := mustFile(t, restored, testFiling(7, "pharma@example.org"))
	if res.ID != 7 {
		t.Errorf("filing in the restored copy got record %d, want 7", res.ID)
	}
	checkConsistent(t, restored)
}

// TestBackupHot takes snapshots while filings commit concurrently: each
// snapshot is one consistent state (records 1..n with their bytes and
// entries, an audit record for each), whatever it caught.
func TestBackupHot(t *testing.T) {
	s, _ := openTemp(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 200; i++ {
				f := testFiling(w*1000+i, "pharma@example.org")
				f.Audit = []AuditEvent{{Kind: AuditSMTPAccept, Outcome: "250"}}
				if _, err := s.File(context.Background(), f); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	dir := t.TempDir()
	for i := range 5 {
		p := filepath.Join(dir, fmt.Sprintf("hot%d.db", i))
		info, err := s.BackupFile(p)
		if err != nil {
			cancel()
			wg.Wait()
			t.Fatalf("hot backup %d: %v", i, err)
		}
		if uint64(info.Records) != info.AuditRecords {
			t.Errorf("snapshot %d: %d records but %d audit records", i, info.Records, info.AuditRecords)
		}
		c, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkConsistent(t, c)
		_, es, err := c.Entries("pharma@example.org", Inbox)
		if err != nil && info.Records > 0 {
			t.Fatal(err)
		}
		if len(es) != info.Records {
			t.Errorf("snapshot %d: %d records, %d INBOX entries", i, info.Records, len(es))
		}
		c.Close()
	}
	cancel()
	wg.Wait()
}

type failWriter struct{ after int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errors.New("disk full")
	}
	w.after--
	return len(p), nil
}

// TestBackupFailures: a failing writer is reported; a failed BackupFile
// leaves neither a partial file nor the temporary one, and keeps an
// existing backup.
func TestBackupFailures(t *testing.T) {
	s, _ := populated(t, 2)
	if _, err := s.Backup(&failWriter{after: 2}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Backup to a failing writer: %v", err)
	}
	if _, err := s.BackupFile(filepath.Join(t.TempDir(), "missing", "b.db")); err == nil {
		t.Error("BackupFile into a missing directory succeeded")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "b.db")
	if err := os.WriteFile(out, []byte("previous backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := WriteFileAtomic(out, func(f *os.File) error {
		_, _ = f.WriteString("half")
		return errors.New("interrupted")
	})
	if err == nil {
		t.Fatal("WriteFileAtomic ignored fill's error")
	}
	if b, _ := os.ReadFile(out); string(b) != "previous backup" {
		t.Errorf("the existing file became %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("a failed write left %d files", len(ents))
	}
	s.Close()
	if _, err := s.Backup(&bytes.Buffer{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Backup after Close: %v", err)
	}
}

// TestVerifyFileRefuses: files that are not a complete, intact database
// of this schema are refused with the reason.
func TestVerifyFileRefuses(t *testing.T) {
	s, path := populated(t, 3)
	good := filepath.Join(t.TempDir(), "good.db")
	if _, err := s.BackupFile(good); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(change func(tx *bbolt.Tx) error) func(string) error {
		return func(p string) error {
			if err := os.WriteFile(p, data, 0o600); err != nil {
				return err
			}
			db, err := bbolt.Open(p, 0o600, nil)
			if err != nil {
				return err
			}
			err = db.Update(change)
			return errors.Join(err, db.Close())
		}
	}
	for _, c := range []struct {
		name string
		make func(p string) error
		want string
	}{
		{"missing", func(string) error { return nil }, "no such file"},
		{"junk", func(p string) error { return os.WriteFile(p, bytes.Repeat([]byte("junk"), 4096), 0o600) }, "invalid"},
		{"truncated", func(p string) error { return os.WriteFile(p, data[:len(data)/2], 0o600) }, "is truncated"},
		{"not mssrelay", func(p string) error {
			db, err := bbolt.Open(p, 0o600, nil)
			if err != nil {
				return err
			}
			return db.Close()
		}, "not an mssrelay database"},
		{"damaged pages", func(p string) error {
			// Every page after the meta pages claims another page id:
			// bbolt asserts on the first one read.
			d := slices.Clone(data)
			ps := os.Getpagesize()
			for off := 2 * ps; off+8 <= len(d); off += ps {
				d[off] ^= 0x5a
			}
			return os.WriteFile(p, d, 0o600)
		}, "damaged page"},
		{"newer schema", edit(func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, be32(SchemaVersion+1)) }), "run a newer mssrelay"},
		{"bucket missing", edit(func(tx *bbolt.Tx) error { return tx.DeleteBucket(bucketIdxINS) }), "bucket idx_ins missing"},
		{"corrupt record", edit(func(tx *bbolt.Tx) error { return tx.Bucket(bucketRecords).Put(be64(2), []byte{9}) }), "corrupt"},
		{"audit altered", edit(func(tx *bbolt.Tx) error { return tx.Bucket(bucketAudit).Delete(be64(2)) }), "audit trail broken at record 2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.db")
			if err := c.make(p); err != nil {
				t.Fatal(err)
			}
			_, err := VerifyFile(p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("VerifyFile: %v; want an error containing %q", err, c.want)
			}
		})
	}
	// The live database is locked by its open Store.
	if _, err := VerifyFile(path); !errors.Is(err, ErrLocked) {
		t.Errorf("VerifyFile of the open database: %v; want ErrLocked", err)
	}
}

// TestOpenReadOnly reads a closed database without writing it; writes
// through it fail; the relay's lock keeps it out.
func TestOpenReadOnly(t *testing.T) {
	s, path := populated(t, 2)
	if _, err := OpenReadOnly(path, Options{LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("OpenReadOnly while open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	r, err := OpenReadOnly(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ms, err := r.Mailboxes("pharma@example.org"); err != nil || len(ms) != 5 {
		t.Errorf("Mailboxes read-only: %v, %v", ms, err)
	}
	if _, err := r.File(context.Background(), testFiling(9, "pharma@example.org")); err == nil {
		t.Error("File through a read-only store succeeded")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a read-only open changed the file")
	}
}

// TestCompactFile purges, then compacts: in place with a .bak, and into
// a new file; the result verifies, holds the same data, is smaller, and
// keeps ids going up (sequences are copied).
func TestCompactFile(t *testing.T) {
	s, path := openTemp(t)
	big := bytes.Repeat([]byte("x"), 64<<10)
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= 60; i++ {
		f := filingAt(i, base.Add(time.Duration(i)*time.Hour), "pharma@example.org")
		f.Raw = append(slices.Clone(f.Raw), big...)
		mustFile(t, s, f)
	}
	if n, err := s.Purge(context.Background(), base.Add(55*time.Hour), 0); err != nil || n != 54 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	if _, err := CompactFile(path, CompactOptions{LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "offline only") {
		t.Fatalf("CompactFile while open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile(path)

	out := filepath.Join(t.TempDir(), "compact.db")
	res, err := CompactFile(path, CompactOptions{Output: out})
	if err != nil {
		t.Fatalf("CompactFile -o: %v", err)
	}
	if res.After >= res.Before || res.Output != out || res.Backup != "" {
		t.Errorf("compact to new file: %+v", res)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
		t.Error("compacting to another file changed the database")
	}
	if _, err := CompactFile(path, CompactOptions{Output: out}); !errors.Is(err, ErrExists) {
		t.Errorf("CompactFile onto an existing output: %v", err)
	}

	res, err = CompactFile(path, CompactOptions{})
	if err != nil {
		t.Fatalf("CompactFile in place: %v", err)
	}
	if res.Backup != path+".bak" || res.After >= res.Before {
		t.Errorf("compact in place: %+v", res)
	}
	if bak, _ := os.ReadFile(path + ".bak"); !bytes.Equal(bak, orig) {
		t.Error(".bak is not the old file")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm()&0o077 != 0 || fi.Size() != res.After {
		t.Errorf("compacted file %v", fi)
	}
	old, err := OpenReadOnly(path+".bak", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sameContent(t, old, c)
	checkConsistent(t, c)
	if res := mustFile(t, c, testFiling(100, "pharma@example.org")); res.ID != 61 || res.Entries[0].UID != 61 {
		t.Errorf("filing after compaction: %+v (ids and UIDs must go on)", res)
	}
	c.Close()
	if _, err := CompactFile(path, CompactOptions{NoBackup: true}); err != nil {
		t.Fatal(err)
	}
	if bak, _ := os.ReadFile(path + ".bak"); !bytes.Equal(bak, orig) {
		t.Error("NoBackup replaced the previous .bak")
	}
	if _, err := CompactFile(filepath.Join(t.TempDir(), "none.db"), CompactOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CompactFile of a missing file: %v", err)
	}
}

// TestRestoreFile restores an older backup over a database that went on:
// the data is the backup's, every mailbox has a UIDVALIDITY never used by
// either file, so the UIDs the restored store hands out again cannot be
// mistaken by a client for the ones it saw; the replaced file is kept.
func TestRestoreFile(t *testing.T) {
	s, path := populated(t, 2)
	bak := filepath.Join(t.TempDir(), "b.db")
	if _, err := s.BackupFile(bak); err != nil {
		t.Fatal(err)
	}
	mustFile(t, s, testFiling(3, "pharma@example.org"))
	if _, err := RestoreFile(bak, path, 50*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("RestoreFile while open: %v", err)
	}
	live, _ := s.Mailboxes("pharma@example.org")
	var maxUV uint32
	for _, m := range live {
		maxUV = max(maxUV, m.UIDValidity)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	replaced, _ := os.ReadFile(path)

	res, err := RestoreFile(bak, path, 0)
	if err != nil {
		t.Fatalf("RestoreFile: %v", err)
	}
	if res.Backup.Records != 2 || res.Mailboxes != 10 || res.Previous != path+".before-restore" {
		t.Errorf("restore result %+v", res)
	}
	if prev, _ := os.ReadFile(res.Previous); !bytes.Equal(prev, replaced) {
		t.Error("the replaced database was not kept")
	}
	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Record(3); !errors.Is(err, ErrNotFound) {
		t.Errorf("record 3 (after the backup) present in the restored store: %v", err)
	}
	for _, acct := range []string{"pharma@example.org", "nurse@example.org"} {
		boxes, _ := r.Mailboxes(acct)
		for _, m := range boxes {
			if m.UIDValidity <= maxUV {
				t.Errorf("%s %s: UIDVALIDITY %d not above %d, the replaced store's", acct, m.Name, m.UIDValidity, maxUV)
			}
		}
	}
	var last AuditRecord
	if _, err := r.AuditVerify(func(a AuditRecord) { last = a }); err != nil || last.Kind != "admin.restore" {
		t.Errorf("audit after restore: last %+v, %v", last, err)
	}
	checkConsistent(t, r)

	junk := filepath.Join(t.TempDir(), "junk.db")
	if err := os.WriteFile(junk, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Close()
	before, _ := os.ReadFile(path)
	if _, err := RestoreFile(junk, path, 0); err == nil || !strings.Contains(err.Error(), "not a usable backup") {
		t.Errorf("restore of junk: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a refused restore changed the database")
	}
	// A new host: nothing to replace.
	fresh := filepath.Join(t.TempDir(), "mssrelay.db")
	if res, err := RestoreFile(bak, fresh, 0); err != nil || res.Previous != "" {
		t.Errorf("restore onto a new host: %+v, %v", res, err)
	}
}

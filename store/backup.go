package store

// Backups, read-only access and compaction.
//
// A backup is a bbolt snapshot written by Tx.WriteTo in one read
// transaction: a consistent copy of every committed transaction up to its
// start, taken while the relay runs (writers go on; the file only grows
// meanwhile). The snapshot is a complete database file: restoring is
// replacing mssrelay.db with it while the relay is stopped.
//
// A read transaction must not wait on a slow reader (LIBRARY-NOTES: it
// blocks the writer's remaps), so Backup is for local files: BackupFile
// writes one atomically, and the admin endpoint (relay/metrics) stages the
// snapshot in a local file before sending it over HTTP.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Backup writes a consistent snapshot of the database to w and returns
// the number of bytes written (the database's size). It holds one read
// transaction for the whole copy, so w must be fast: a local file, not a
// network connection.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("store: backup of %s: %w", s.path, err)
	}
	return n, nil
}

// BackupFile writes a snapshot to path atomically: into a temporary file
// in the same directory (mode 0600), fsync'd, then renamed over path, and
// the directory fsync'd; a failure leaves no partial file and an existing
// path untouched. The snapshot is checked with VerifyFile before the
// rename.
func (s *Store) BackupFile(path string) (*FileInfo, error) {
	var info *FileInfo
	err := WriteFileAtomic(path, func(f *os.File) error {
		if _, err := s.Backup(f); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("store: backup: %w", err)
		}
		var err error
		info, err = VerifyFile(f.Name())
		return err
	})
	return info, err
}

// WriteFileAtomic creates path's content through fill, which writes into
// a temporary file in path's directory (mode 0600); fill must leave its
// data synced. The file is then closed and renamed over path, and the
// directory synced. On any error the temporary file is removed and path
// is left as it was.
func WriteFileAtomic(path string, fill func(f *os.File) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := fill(f); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: %s: %w", f.Name(), err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", dir, err)
	}
	return nil
}

// OpenReadOnly opens an existing database for reading (bbolt's shared
// lock: other readers may open it too, the relay may not). The schema must
// be the current one: a database that needs an upgrade is refused, since a
// read-only open cannot write it. Write operations on the returned Store
// fail.
func OpenReadOnly(path string, opts Options) (*Store, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout, ReadOnly: true})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: %w (lock not obtained within %s: is mssrelay running on this file?)", path, ErrLocked, timeout)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = db.View(func(tx *bbolt.Tx) (err error) {
		defer recoverPage(&err, path)
		// A truncated copy (an interrupted transfer) has pages past its
		// end: say so before bbolt reads one.
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if fi.Size() < tx.Size() {
			return fmt.Errorf("store: %s is truncated: %d bytes, its meta page says %d: %w", path, fi.Size(), tx.Size(), errCorrupt)
		}
		return checkCurrent(tx, path)
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s := &Store{db: db, path: path, now: now, max: DefaultMaxMessageBytes, watchers: make(map[string]map[*watcher]struct{})}
	s.idle = sync.NewCond(&s.mu)
	return s, nil
}

// checkCurrent refuses a database that is not of the current layout, or
// lacks one of its buckets.
func checkCurrent(tx *bbolt.Tx, path string) error {
	ver, ok, err := schemaVersion(tx, path)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("store: %s is not an mssrelay database (no meta bucket)", path)
	case ver > SchemaVersion:
		return fmt.Errorf("store: %s has schema version %d, this mssrelay understands up to %d: run a newer mssrelay", path, ver, SchemaVersion)
	case ver < SchemaVersion:
		return fmt.Errorf("store: %s has schema version %d and needs an upgrade to %d: open it with the relay (or any admin command that writes) first", path, ver, SchemaVersion)
	}
	for _, name := range topBuckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("store: %s: %w: bucket %s missing", path, errCorrupt, name)
		}
	}
	return nil
}

// FileInfo summarises a database file checked by VerifyFile.
type FileInfo struct {
	Path         string
	Size         int64
	Schema       uint32
	Records      int      // filed and appended messages
	Accounts     int      // accounts with mailboxes
	AuditRecords uint64   // records of the audit trail, chain verified
	AuditHead    [32]byte // hash of the last audit record
}

// VerifyFile checks that path is a complete, usable mssrelay database:
// bbolt's page-level consistency check (every page reachable once, no
// page both used and free), the current schema with all its buckets,
// every record decodable, and the audit trail's hash chain intact. It
// opens the file read-only.
func VerifyFile(path string) (*FileInfo, error) {
	s, err := OpenReadOnly(path, Options{LockTimeout: time.Second})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	info := &FileInfo{Path: path, Schema: SchemaVersion}
	err = s.view(func(tx *bbolt.Tx) (err error) {
		defer recoverPage(&err, path)
		info.Size = tx.Size()
		if err := walkAll(tx, path); err != nil {
			return err
		}
		// The first problem is enough to refuse the file; reading the
		// channel to its end lets the checker's goroutine finish.
		var bad error
		for err := range tx.Check() {
			if bad == nil {
				bad = err
			}
		}
		if bad != nil {
			return fmt.Errorf("store: %s: consistency check: %w", path, bad)
		}
		err = tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("%w: record key of %d bytes", errCorrupt, len(k))
			}
			if _, err := decodeRecord(beUint64(k), v); err != nil {
				return err
			}
			info.Records++
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: %s: %w", path, err)
		}
		return tx.Bucket(bucketAccounts).ForEach(func(_, v []byte) error {
			if v == nil { // a nested bucket: one account
				info.Accounts++
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	var last [32]byte
	n, err := s.AuditVerify(func(r AuditRecord) { last = r.Hash })
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	info.AuditRecords, info.AuditHead = n, last
	return info, nil
}

// recoverPage turns a panic of bbolt's page checks (it trusts pages once
// the meta page's checksum passed, and asserts when one is damaged) into
// an error for *err.
func recoverPage(err *error, path string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("store: %s: %w: damaged page (%v)", path, errCorrupt, r)
	}
}

// walkAll reads every bucket and key once, on this goroutine, so that a
// damaged page is reported as an error here. It must run before
// tx.Check: rebuilding the free list of a file written with
// NoFreelistSync walks the pages on a goroutine of bbolt's own, where a
// panic could not be recovered and would end the process.
func walkAll(tx *bbolt.Tx, path string) (err error) {
	defer recoverPage(&err, path)
	var walk func(b *bbolt.Bucket) error
	walk = func(b *bbolt.Bucket) error {
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					return walk(nb)
				}
			}
			return nil
		})
	}
	return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error { return walk(b) })
}

// CompactOptions configure CompactFile.
type CompactOptions struct {
	// Output names a new file to write the compacted copy to, leaving the
	// database as it is; it must not exist. Empty: compact in place.
	Output string
	// NoBackup, in place, does not keep the old file as PATH.bak.
	NoBackup bool
	// LockTimeout bounds the wait for the database's lock (default 1 s):
	// compaction is offline only.
	LockTimeout time.Duration
	// TxMaxSize is the bytes copied per transaction into the new file
	// (default 64 MiB).
	TxMaxSize int64
}

// CompactResult describes a compaction.
type CompactResult struct {
	Before, After int64  // file sizes
	Output        string // the compacted file (the database's path when in place)
	Backup        string // the old file kept in place (PATH.bak), "" when none
}

// CompactFile rewrites the database at path into a new file holding only
// live pages (bbolt.Compact): bbolt never shrinks its file, so after a
// purge this is how the space comes back. It is offline only: it holds the
// database's exclusive lock throughout, and fails with ErrLocked while the
// relay runs. The new file is synced and checked with VerifyFile, and must
// hold as many records and audit records as the old one, before it
// replaces the old file by rename (the old one is kept as PATH.bak unless
// NoBackup). Bucket sequences are copied, so record ids and mailbox ids
// are never reused after a compaction.
func CompactFile(path string, opts CompactOptions) (*CompactResult, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	txMax := opts.TxMaxSize
	if txMax <= 0 {
		txMax = 64 << 20
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: compact: %w", err)
	}
	if opts.Output != "" {
		if _, err := os.Lstat(opts.Output); err == nil {
			return nil, fmt.Errorf("store: compact: %s already exists: %w", opts.Output, ErrExists)
		}
	}
	// Read-write, for the exclusive lock: nobody else opens the file while
	// it is being copied and replaced. bbolt writes nothing on open.
	src, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: compact %s: %w (is mssrelay running? compaction is offline only: stop the relay first)", path, ErrLocked)
		}
		return nil, fmt.Errorf("store: compact: open %s: %w", path, err)
	}
	defer src.Close()
	var before int64
	var records, audits int
	err = src.View(func(tx *bbolt.Tx) error {
		if err := checkCurrent(tx, path); err != nil {
			return err
		}
		before = tx.Size()
		records = tx.Bucket(bucketRecords).Stats().KeyN
		audits = tx.Bucket(bucketAudit).Stats().KeyN
		return nil
	})
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil {
		before = fi.Size()
	}

	target := opts.Output
	if target == "" {
		target = path
	}
	res := &CompactResult{Before: before, Output: target}
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".compact-*")
	if err != nil {
		return nil, fmt.Errorf("store: compact: %w", err)
	}
	tmpName := tmp.Name()
	_ = tmp.Close()
	done := false
	defer func() {
		if !done {
			_ = os.Remove(tmpName)
		}
	}()
	// NoSync while copying a file nobody uses yet: it is synced once, in
	// full, before it gets a name that matters.
	dst, err := bbolt.Open(tmpName, 0o600, &bbolt.Options{Timeout: timeout, NoSync: true, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("store: compact: create %s: %w", tmpName, err)
	}
	if err := bbolt.Compact(dst, src, txMax); err != nil {
		_ = dst.Close()
		return nil, fmt.Errorf("store: compact %s: %w", path, err)
	}
	if err := dst.Sync(); err != nil {
		_ = dst.Close()
		return nil, fmt.Errorf("store: compact: sync: %w", err)
	}
	if err := dst.Close(); err != nil {
		return nil, fmt.Errorf("store: compact: %w", err)
	}
	if err := syncFile(tmpName); err != nil {
		return nil, err
	}
	info, err := VerifyFile(tmpName)
	if err != nil {
		return nil, fmt.Errorf("store: compact: the new file does not verify, %s is unchanged: %w", path, err)
	}
	if info.Records != records || int(info.AuditRecords) != audits {
		return nil, fmt.Errorf("store: compact: the new file holds %d records and %d audit records, the old one %d and %d: %s is unchanged",
			info.Records, info.AuditRecords, records, audits, path)
	}
	res.After = info.Size
	if fi, err := os.Stat(tmpName); err == nil {
		res.After = fi.Size()
	}

	if opts.Output != "" {
		// A link does not replace an existing file, unlike a rename: the
		// output cannot clobber a file created meanwhile.
		if err := os.Link(tmpName, opts.Output); err != nil {
			return nil, fmt.Errorf("store: compact: %w", err)
		}
		_ = os.Remove(tmpName)
		done = true
		return res, syncDir(filepath.Dir(opts.Output))
	}
	if !opts.NoBackup {
		bak := path + ".bak"
		if err := os.Remove(bak); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("store: compact: %w", err)
		}
		// The old file stays complete under the .bak name; path is
		// replaced by one rename, so it always names a whole database.
		if err := os.Link(path, bak); err != nil {
			return nil, fmt.Errorf("store: compact: keep %s: %w", bak, err)
		}
		res.Backup = bak
	}
	if err := os.Rename(tmpName, path); err != nil {
		return nil, fmt.Errorf("store: compact: %w", err)
	}
	done = true
	return res, syncDir(filepath.Dir(path))
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", path, err)
	}
	return nil
}

// RenewUIDValidity gives every mailbox of every account a new
// UIDVALIDITY, above floor and above every value this database handed
// out, and returns how many mailboxes it renewed. A database restored from
// a backup has older UIDNEXTs than the one it replaces: the UIDs it gives
// next were already seen by clients for other messages, and RFC 3501
// §2.3.1.1 forbids reusing a UID under the same UIDVALIDITY. Clients see
// the new UIDVALIDITY and resynchronise each mailbox.
func (s *Store) RenewUIDValidity(floor uint32) (int, error) {
	var n int
	err := s.write(0, func(w *wtx) error {
		n = 0
		w.mark()
		mb := w.tx.Bucket(bucketMeta)
		if v := mb.Get(keyUIDValidity); len(v) != 4 || binary.BigEndian.Uint32(v) < floor {
			if err := mb.Put(keyUIDValidity, be32(floor)); err != nil {
				return fmt.Errorf("store: write uidvalidity: %w", err)
			}
		}
		// Listed first, written after: bbolt forbids changing a bucket
		// under its own ForEach.
		type mbox struct{ account, name string }
		var all []mbox
		accts := w.tx.Bucket(bucketAccounts)
		err := accts.ForEach(func(acct, v []byte) error {
			ab := accts.Bucket(acct)
			if v != nil || ab == nil {
				return nil
			}
			return ab.Bucket(bucketNames).ForEach(func(name, _ []byte) error {
				all = append(all, mbox{string(acct), string(name)})
				return nil
			})
		})
		if err != nil {
			return err
		}
		for _, m := range all {
			bx, err := openBox(accts.Bucket([]byte(m.account)), m.name)
			if err != nil {
				return err
			}
			if bx.info.UIDValidity, err = nextUIDValidity(w); err != nil {
				return err
			}
			bx.info.ModSeq++
			if err := bx.save(); err != nil {
				return err
			}
			w.changed(m.account, m.name)
			n++
		}
		return nil
	})
	return n, err
}

// RestoreResult describes a restore.
type RestoreResult struct {
	Backup    *FileInfo // the restored file, as checked
	Mailboxes int       // mailboxes given a new UIDVALIDITY
	Previous  string    // the replaced database kept under this name ("" when there was none)
}

// RestoreFile replaces the database at path with the backup from,
// offline: the backup is checked (VerifyFile), copied next to path, every
// mailbox of the copy gets a new UIDVALIDITY above any the replaced
// database handed out (RenewUIDValidity), an admin.restore audit record is
// appended, and the copy is renamed over path. The replaced database is
// kept as PATH.before-restore. The current database's lock is held
// throughout: ErrLocked while the relay runs.
func RestoreFile(from, path string, lockTimeout time.Duration) (*RestoreResult, error) {
	if lockTimeout <= 0 {
		lockTimeout = time.Second
	}
	info, err := VerifyFile(from)
	if err != nil {
		return nil, fmt.Errorf("store: restore: %s is not a usable backup: %w", from, err)
	}
	res := &RestoreResult{Backup: info}
	var floor uint32
	if _, err := os.Stat(path); err == nil {
		cur, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockTimeout, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: restore over %s: %w (is mssrelay running? restore is offline only: stop the relay first)", path, ErrLocked)
		}
		if err == nil {
			defer cur.Close()
			// The UIDVALIDITY counter of the database being replaced, if
			// it can still be read: the restored mailboxes must go past
			// it.
			_ = cur.View(func(tx *bbolt.Tx) (err error) {
				defer recoverPage(&err, path)
				if mb := tx.Bucket(bucketMeta); mb != nil {
					if v := mb.Get(keyUIDValidity); len(v) == 4 {
						floor = binary.BigEndian.Uint32(v)
					}
				}
				return nil
			})
		}
		// A database too damaged to open is what a restore is for: it is
		// replaced all the same; time-based UIDVALIDITYs still move on.
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".restore-*")
	if err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	src, err := os.Open(from)
	if err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	_, err = io.Copy(tmp, src)
	src.Close()
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("store: restore: copy %s: %w", from, err)
	}
	s, err := Open(tmp.Name(), Options{LockTimeout: lockTimeout})
	if err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	res.Mailboxes, err = s.RenewUIDValidity(floor)
	if err == nil {
		err = s.Audit(context.Background(), AuditEvent{Kind: AuditAdminPrefix + "restore", Subject: "file=" + filepath.Base(from),
			Outcome: "ok", Detail: fmt.Sprintf("%d mailboxes given a new UIDVALIDITY", res.Mailboxes)})
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		prev := path + ".before-restore"
		if err := os.Remove(prev); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("store: restore: %w", err)
		}
		if err := os.Link(path, prev); err != nil {
			return nil, fmt.Errorf("store: restore: keep %s: %w", prev, err)
		}
		res.Previous = prev
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("store: restore: %w", err)
	}
	done = true
	return res, syncDir(filepath.Dir(path))
}

package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors added to those of api.go.
var (
	ErrClosed      = errors.New("store: closed")
	ErrInvalidFlag = errors.New("store: invalid flag")
	ErrTooLarge    = errors.New("store: value too large")
	ErrInvalid     = errors.New("store: invalid argument")
)

// Limits on what callers may hand the store. Everything here may come from
// an SMTP or IMAP peer, so every size and count is bounded.
const (
	DefaultLockTimeout     = 2 * time.Second
	DefaultMaxMessageBytes = 64 << 20 // bbolt copes with values of a few tens of MiB
	MaxMetaBytes           = 4 << 20
	MaxRecipients          = 1000
	MaxAccountBytes        = 320     // RFC 5321 §4.5.3.1: 64 local + @ + 255 domain
	MaxFieldBytes          = 998     // RFC 5322 §2.1.1 line length: Message-ID and friends
	MaxMailboxNameBytes    = 255     // our limit on mailbox names
	MaxFlagBytes           = 128     // one flag or keyword
	MaxFlags               = 64      // flags and keywords per entry
	MaxMailboxes           = 1000    // per account
	MaxUIDs                = 1 << 22 // UIDs per command ("1:*" of a 5-year mailbox)
)

// Stats counts work done since Open.
type Stats struct {
	Commits    uint64 // write transactions committed, each one fsync'ing
	Filings    uint64 // File calls that filed a new record
	Duplicates uint64 // File calls answered with Duplicate
	Writes     uint64 // committed operations that wrote (File, Append, flags…)
}

// Store is the bbolt database. Safe for concurrent use.
type Store struct {
	db   *bbolt.DB
	path string
	now  func() time.Time
	max  int64 // largest message accepted

	// Group commit state (commit.go), guarded by mu.
	mu       sync.Mutex
	idle     *sync.Cond // signalled when leading becomes false
	pending  []*call
	leading  bool // a goroutine is running a batch
	closed   bool
	closeErr error

	// durableTx is the id of the last transaction known fsync'd. A read
	// transaction can see a commit whose meta page is written but not yet
	// synced; answers that promise durability check against this.
	durableTx atomic.Int64

	commits, filings, duplicates, writes atomic.Uint64

	quota atomic.Pointer[QuotaFunc] // per-account quota policy (quota.go); nil: none

	queueSig chan struct{} // QueueChanged

	wmu      sync.Mutex
	watchers map[string]map[*watcher]struct{}
}

// Open opens (creating if needed) the database at path (mode 0600).
//
// The file lock is waited for up to opts.LockTimeout; past it Open returns
// an error matching ErrLocked. A database written by a newer schema is
// refused rather than misread.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: timeout,
		// Safe: the freelist is rebuilt by scanning on the next open after
		// a crash; it saves writing the freelist on every commit.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open %s: %w (lock not obtained within %s: is another mssrelay running on this file?)", path, ErrLocked, timeout)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	var txid int
	err = db.Update(func(tx *bbolt.Tx) error {
		txid = tx.ID()
		return initSchema(tx, path)
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s := &Store{
		db:       db,
		path:     path,
		now:      now,
		max:      DefaultMaxMessageBytes,
		watchers: make(map[string]map[*watcher]struct{}),
		queueSig: make(chan struct{}, 1),
	}
	s.idle = sync.NewCond(&s.mu)
	s.SetQuota(opts.Quota)
	s.durableTx.Store(int64(txid))
	return s, nil
}

// Close waits for in-flight commits (calls already queued are committed)
// and closes the file. Later calls fail with ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		err := s.closeErr
		s.mu.Unlock()
		return err
	}
	s.closed = true
	for s.leading || len(s.pending) > 0 {
		s.idle.Wait()
	}
	// bbolt's Close also waits for open read transactions.
	err := s.db.Close()
	if err != nil {
		err = fmt.Errorf("store: close %s: %w", s.path, err)
	}
	s.closeErr = err
	s.mu.Unlock()
	return err
}

// Stats returns counters since Open; Commits/Filings is the number of
// fsync'ing commits per filed message.
func (s *Store) Stats() Stats {
	return Stats{
		Commits:    s.commits.Load(),
		Filings:    s.filings.Load(),
		Duplicates: s.duplicates.Load(),
		Writes:     s.writes.Load(),
	}
}

// Path returns the database file name.
func (s *Store) Path() string { return s.path }

// view runs fn in a read transaction.
func (s *Store) view(fn func(tx *bbolt.Tx) error) error {
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Record returns a record's metadata.
func (s *Store) Record(id uint64) (*Record, error) {
	var r *Record
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		r, err = getRecord(tx, id)
		return err
	})
	return r, err
}

func getRecord(tx *bbolt.Tx, id uint64) (*Record, error) {
	v := tx.Bucket(bucketRecords).Get(be64(id))
	if v == nil {
		return nil, fmt.Errorf("store: record %d: %w", id, ErrNotFound)
	}
	r, err := decodeRecord(id, v) // decoding copies every field
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return r, nil
}

// RecordByNumber finds a record by prescription number.
func (s *Store) RecordByNumber(number string) (*Record, error) {
	var r *Record
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketIdxNum).Get([]byte(number))
		if v == nil || number == "" {
			return fmt.Errorf("store: prescription number: %w", ErrNotFound)
		}
		id, _, err := decodeIdx(v)
		if err != nil {
			return fmt.Errorf("store: number index: %w", err)
		}
		r, err = getRecord(tx, id)
		return err
	})
	return r, err
}

// RecordsByPatient returns the ids of the records filed for a patient INS,
// in filing order.
func (s *Store) RecordsByPatient(ins string) ([]uint64, error) {
	return s.scanIndex(bucketIdxINS, ins)
}

// RecordsByPrescriber returns the ids of the records signed by an IDNPS,
// in filing order.
func (s *Store) RecordsByPrescriber(idnps string) ([]uint64, error) {
	return s.scanIndex(bucketIdxIDNPS, idnps)
}

func (s *Store) scanIndex(bucket []byte, value string) ([]uint64, error) {
	if value == "" || !validText(value) || len(value) > MaxFieldBytes {
		return nil, nil
	}
	prefix := append([]byte(value), 0)
	var ids []uint64
	err := s.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, _ := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
			ids = append(ids, beUint64(k[len(prefix):]))
		}
		return nil
	})
	return ids, err
}

// Bytes returns a copy of a record's raw bytes.
func (s *Store) Bytes(id uint64) ([]byte, error) {
	return s.getCopy(bucketRaw, id, true)
}

// Meta returns a copy of a record's opaque cache (nil when none was stored).
func (s *Store) Meta(id uint64) ([]byte, error) {
	return s.getCopy(bucketRMeta, id, false)
}

func (s *Store) getCopy(bucket []byte, id uint64, required bool) ([]byte, error) {
	var out []byte
	err := s.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucket).Get(be64(id))
		if v == nil {
			if required || tx.Bucket(bucketRecords).Get(be64(id)) == nil {
				return fmt.Errorf("store: record %d: %w", id, ErrNotFound)
			}
			return nil
		}
		// bbolt values live in the mmap and are valid only inside the
		// transaction.
		out = append(make([]byte, 0, len(v)), v...)
		return nil
	})
	return out, err
}

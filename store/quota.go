package store

// Per-account quota.
//
// Each account bucket holds a usage record (keyUsage): the number of
// entries and their bytes over all the account's mailboxes. It is the sum
// of the mailboxes' own counters (boxInfo.Messages and Size) and is kept in
// step with them by construction: box.save applies the difference between
// the counters it writes and the counters it read, so every path that adds
// or removes entries and saves its mailbox (File, Append, Copy, Expunge,
// and whatever comes later) updates the account too, in the same
// transaction; DeleteMailbox subtracts the mailbox it drops. A database
// written before this record existed gets it computed from the mailboxes'
// counters (not their entries) on the first change or read.
//
// The quota is checked inside the write transaction that adds entries,
// before the operation writes anything (wtx.mark), so an operation over
// quota is a clean refusal: nothing of it is written, for any recipient,
// and the other operations of the same batch go on.

import (
	"errors"
	"fmt"

	"go.etcd.io/bbolt"
)

// ErrOverQuota is matched (errors.Is) by the error of an operation that
// would take an account past its quota; errors.As with *QuotaError gives
// the account and the numbers.
var ErrOverQuota = errors.New("store: over quota")

// QuotaFunc returns an account's limits: the most bytes and the most
// messages its mailboxes may hold together; 0 means no limit. It is called
// inside write transactions, once per account an operation adds to: it
// must be fast and must not call the Store.
type QuotaFunc func(account string) (maxBytes int64, maxMessages uint32)

// QuotaError says which account is over which limit. It matches
// ErrOverQuota.
type QuotaError struct {
	Account     string
	Messages    uint64 // messages held before the operation
	Bytes       int64  // bytes held before the operation
	AddMessages uint64 // what the operation would add
	AddBytes    int64
	MaxMessages uint32 // the limits in force (0: none)
	MaxBytes    int64
}

func (e *QuotaError) Error() string {
	if e.MaxMessages > 0 && e.Messages+e.AddMessages > uint64(e.MaxMessages) {
		return fmt.Sprintf("store: account %s: %v: %d messages held, %d more would pass the limit of %d",
			e.Account, ErrOverQuota, e.Messages, e.AddMessages, e.MaxMessages)
	}
	return fmt.Sprintf("store: account %s: %v: %d bytes held, %d more would pass the limit of %d",
		e.Account, ErrOverQuota, e.Bytes, e.AddBytes, e.MaxBytes)
}

// Unwrap makes errors.Is(err, ErrOverQuota) hold.
func (e *QuotaError) Unwrap() error { return ErrOverQuota }

// Usage is what an account's mailboxes hold together.
type Usage struct {
	Messages uint64
	Bytes    int64
}

var keyUsage = []byte("usage")

// SetQuota replaces the quota policy (nil: no quota). Operations already
// queued may run under either policy.
func (s *Store) SetQuota(fn QuotaFunc) {
	if fn == nil {
		s.quota.Store(nil)
		return
	}
	s.quota.Store(&fn)
}

func (s *Store) quotaFor(account string) (maxBytes int64, maxMessages uint32) {
	p := s.quota.Load()
	if p == nil {
		return 0, 0
	}
	return (*p)(account)
}

// Usage returns what account's mailboxes hold (zero for an account the
// store does not know).
func (s *Store) Usage(account string) (Usage, error) {
	var u Usage
	err := s.view(func(tx *bbolt.Tx) error {
		ab := accountBucket(tx, account)
		if ab == nil {
			return nil
		}
		var err error
		u, err = readUsage(ab)
		return err
	})
	return u, err
}

// CheckQuota tells whether one more message of size bytes would fit in
// account's quota now: nil, or an error matching ErrOverQuota. It only
// reads, so the answer may be stale by the time the message is filed: the
// filing checks again in its own transaction (the source of truth). The
// SMTP session uses it to refuse a full mailbox at RCPT (RFC 5321
// §4.5.3.1.10) rather than after DATA.
func (s *Store) CheckQuota(account string, size int64) error {
	maxB, maxM := s.quotaFor(account)
	if maxB <= 0 && maxM == 0 {
		return nil
	}
	return s.view(func(tx *bbolt.Tx) error {
		return checkQuota(tx, account, maxB, maxM, 1, size)
	})
}

// checkQuotaTx refuses adding msgs messages of bytes in all to account.
// Called before the operation writes (a clean refusal).
func (s *Store) checkQuotaTx(tx *bbolt.Tx, account string, msgs uint64, bytes int64) error {
	maxB, maxM := s.quotaFor(account)
	if maxB <= 0 && maxM == 0 {
		return nil
	}
	return checkQuota(tx, account, maxB, maxM, msgs, bytes)
}

func checkQuota(tx *bbolt.Tx, account string, maxB int64, maxM uint32, msgs uint64, bytes int64) error {
	var u Usage
	if ab := accountBucket(tx, account); ab != nil {
		var err error
		if u, err = readUsage(ab); err != nil {
			return err
		}
	}
	// Exactly at the limit is within it: a quota of 10 messages holds 10.
	if (maxM > 0 && u.Messages+msgs > uint64(maxM)) || (maxB > 0 && u.Bytes+bytes > maxB) {
		return &QuotaError{Account: account, Messages: u.Messages, Bytes: u.Bytes,
			AddMessages: msgs, AddBytes: bytes, MaxMessages: maxM, MaxBytes: maxB}
	}
	return nil
}

// readUsage returns the account's usage record, or the sum of its
// mailboxes' counters when the record was never written.
func readUsage(ab *bbolt.Bucket) (Usage, error) {
	if v := ab.Get(keyUsage); v != nil {
		return decodeUsage(v)
	}
	return sumBoxes(ab)
}

// sumBoxes adds up the mailboxes' stored counters.
func sumBoxes(ab *bbolt.Bucket) (Usage, error) {
	var u Usage
	boxes := ab.Bucket(bucketBoxes)
	if boxes == nil {
		return u, nil
	}
	err := boxes.ForEach(func(id, v []byte) error {
		if v != nil {
			return nil // not a bucket
		}
		b := boxes.Bucket(id)
		in, err := decodeInfo(b.Get(keyInfo))
		if err != nil {
			return fmt.Errorf("store: mailbox %x info: %w", id, err)
		}
		u.Messages += uint64(in.Messages)
		u.Bytes += in.Size
		return nil
	})
	return u, err
}

// addUsage applies a change of the account's counters. It must run before
// the mailbox info carrying the same change is written, since a missing
// record is computed from the stored mailbox infos.
func addUsage(ab *bbolt.Bucket, dMsgs, dBytes int64) error {
	if dMsgs == 0 && dBytes == 0 {
		return nil
	}
	u, err := readUsage(ab)
	if err != nil {
		return err
	}
	m := int64(u.Messages) + dMsgs
	b := u.Bytes + dBytes
	if m < 0 || b < 0 {
		return fmt.Errorf("store: %w: account usage would become %d messages, %d bytes", errCorrupt, m, b)
	}
	u.Messages, u.Bytes = uint64(m), b
	if err := ab.Put(keyUsage, encodeUsage(u)); err != nil {
		return fmt.Errorf("store: write account usage: %w", err)
	}
	return nil
}

func encodeUsage(u Usage) []byte {
	e := enc{b: make([]byte, 0, 16)}
	e.b = append(e.b, formatV1)
	e.uvarint(u.Messages)
	e.varint(u.Bytes)
	return e.b
}

func decodeUsage(v []byte) (Usage, error) {
	d := dec{b: v}
	d.format("account usage")
	var u Usage
	u.Messages = d.uvarint("usage messages")
	u.Bytes = d.varint("usage bytes")
	if d.err != nil {
		return Usage{}, fmt.Errorf("store: %w", d.err)
	}
	return u, nil
}

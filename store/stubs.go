package store

import (
	"context"
	"errors"
	"time"
)

var errTODO = errors.New("store: not implemented yet")

// Store is the bbolt database. Safe for concurrent use.
type Store struct{}

// Open opens (creating if needed) the database at path (mode 0600).
func Open(path string, opts Options) (*Store, error) { return nil, errTODO }

// Close waits for in-flight commits and closes the file.
func (s *Store) Close() error { return errTODO }

// File writes the record, its indexes and one INBOX entry per recipient in
// one transaction; when it returns nil the data is fsync'd. Concurrent calls
// share commits (group commit). A resend of the same prescription (same
// Number and Digest, or same Sender+MessageID and Digest) returns the first
// filing with Duplicate set; the same Number with another Digest returns
// ErrReplay.
func (s *Store) File(ctx context.Context, f *Filing) (*Filed, error) { return nil, errTODO }

// Record returns a record's metadata.
func (s *Store) Record(id uint64) (*Record, error) { return nil, errTODO }

// RecordByNumber finds a record by prescription number.
func (s *Store) RecordByNumber(number string) (*Record, error) { return nil, errTODO }

// Bytes returns a copy of a record's raw bytes.
func (s *Store) Bytes(id uint64) ([]byte, error) { return nil, errTODO }

// Meta returns a copy of a record's opaque cache.
func (s *Store) Meta(id uint64) ([]byte, error) { return nil, errTODO }

// EnsureAccount creates the account's INBOX (and Sent, Drafts, Trash,
// Archive with their special-use) if missing.
func (s *Store) EnsureAccount(account string) error { return errTODO }

// Mailboxes lists an account's mailboxes, sorted by name.
func (s *Store) Mailboxes(account string) ([]MailboxInfo, error) { return nil, errTODO }

// Mailbox describes one mailbox; ErrNotFound when absent. "INBOX" is
// case-insensitive (RFC 3501 §5.1).
func (s *Store) Mailbox(account, name string) (*MailboxInfo, error) { return nil, errTODO }

// Entries returns the mailbox's entries sorted by UID, with its info read
// in the same transaction.
func (s *Store) Entries(account, mailbox string) (*MailboxInfo, []Entry, error) {
	return nil, nil, errTODO
}

// UpdateFlags changes flags of the entries with the given UIDs (missing
// UIDs are skipped) and returns the updated entries.
func (s *Store) UpdateFlags(account, mailbox string, uids []uint32, op FlagOp, flags []string) ([]Entry, error) {
	return nil, errTODO
}

// Expunge removes the entries flagged \Deleted (restricted to uids when
// non-nil) and returns the removed UIDs in ascending order. Records stay.
func (s *Store) Expunge(account, mailbox string, uids []uint32) ([]uint32, error) {
	return nil, errTODO
}

// Append stores raw as a new record owned by account and adds an entry to
// mailbox (IMAP APPEND). It returns the entry.
func (s *Store) Append(account, mailbox string, raw []byte, flags []string, date time.Time, meta []byte) (*Delivered, error) {
	return nil, errTODO
}

// Copy adds entries pointing at the same records to dest; returns the
// source and destination UIDs in order.
func (s *Store) Copy(account, mailbox string, uids []uint32, dest string) (uidValidity uint32, src, dst []uint32, err error) {
	return 0, nil, nil, errTODO
}

// CreateMailbox, DeleteMailbox, RenameMailbox, SetSubscribed manage an
// account's folders.
func (s *Store) CreateMailbox(account, name string) error          { return errTODO }
func (s *Store) DeleteMailbox(account, name string) error          { return errTODO }
func (s *Store) RenameMailbox(account, from, to string) error      { return errTODO }
func (s *Store) SetSubscribed(account, name string, on bool) error { return errTODO }

// Watch returns a channel that receives (without blocking the writer; a
// full channel drops the send, a receiver rereads state anyway) after every
// commit that changed one of account's mailboxes, and a cancel function.
func (s *Store) Watch(account string) (<-chan Change, func()) { return nil, func() {} }

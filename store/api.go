// Package store keeps filed messages and mailbox views in bbolt.
//
// A filed message (the legal record: immutable bytes plus metadata) is kept
// apart from the per-account mailbox entries (UID, flags, internal date) that
// point at it, so that expunging from a mailbox never destroys the record.
package store

import (
	"errors"
	"time"
)

// Errors callers test with errors.Is.
var (
	ErrNotFound     = errors.New("store: not found")
	ErrExists       = errors.New("store: already exists")
	ErrReplay       = errors.New("store: prescription number already filed with other content")
	ErrLocked       = errors.New("store: database is locked by another process")
	ErrInvalidName  = errors.New("store: invalid mailbox name")
	ErrMailboxInUse = errors.New("store: mailbox cannot be deleted") // INBOX
)

// Options configure Open.
type Options struct {
	// LockTimeout bounds the wait for another process's file lock
	// (default 2 s); past it Open returns ErrLocked.
	LockTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Quota is the per-account quota policy (nil: no quota); see
	// QuotaFunc and Store.SetQuota.
	Quota QuotaFunc
}

// Filing is one accepted message, ready to be filed.
type Filing struct {
	Raw        []byte    // exact bytes received (trace headers already prepended)
	Received   time.Time // becomes each entry's INTERNALDATE
	Sender     string    // authenticated account (envelope sender)
	Recipients []string  // local accounts; each gets an INBOX entry
	Number     string    // prescription number ("" when none)
	Digest     [32]byte  // SHA-256 of the signed content: identifies a resend
	MessageID  string    // Message-ID header value ("" when none)
	Signer     string    // signer e-mail
	IDNPS      string    // signer IDNPS
	PatientINS string    // for the index by patient ("" when none)
	Delivery   string    // the patient's delivery choice as signed: "messaging-only", "paper" or ""
	Opposition bool      // the patient objects to the prescriber seeing execution data
	Meta       []byte    // opaque cache (the IMAP layer stores ENVELOPE/BODYSTRUCTURE here)
	// Audit events appended to the audit trail in the filing's own
	// transaction, so that an acceptance and its record commit together.
	// Each Subject gets "record=<id>" put in front. A Duplicate or refused
	// filing appends nothing: record those with Store.Audit.
	Audit []AuditEvent
	// Jobs enter the outbound queue with the filing (RecordID is set to
	// the new record's id): a copy for the patient, an MDN. A duplicate
	// filing queues nothing.
	Jobs []Job
	// Events are added to the record's history after RxFiled and one
	// RxDelivered per recipient, which File writes itself.
	Events []RxEvent
}

// Delivered is one mailbox entry created by File.
type Delivered struct {
	Account     string
	Mailbox     string
	UIDValidity uint32
	UID         uint32
}

// Filed is the outcome of File.
type Filed struct {
	ID        uint64      // record id
	Duplicate bool        // same Number (or same Sender+MessageID) and Digest were filed before: nothing new written
	Entries   []Delivered // empty when Duplicate
}

// Record is the legal record's metadata (without the bytes).
type Record struct {
	ID         uint64
	Received   time.Time
	Size       int64
	Sender     string
	Recipients []string
	Number     string
	Digest     [32]byte
	MessageID  string
	Signer     string
	IDNPS      string
	PatientINS string
	Delivery   string // the patient's delivery choice as signed ("" when not stated)
	Opposition bool   // the patient objects to the prescriber seeing execution data
	Owner      string // account that created it: Sender for File, the appending account for Append
	Appended   bool   // created by IMAP APPEND: not a verified filing, in no index
}

// MailboxInfo describes one mailbox of an account.
type MailboxInfo struct {
	Name        string
	UIDValidity uint32
	UIDNext     uint32
	Messages    uint32
	Unseen      uint32
	Size        int64 // total bytes
	Subscribed  bool
	SpecialUse  string // `\Sent`, `\Drafts`, `\Trash`, `\Archive` or ""
	ModSeq      uint64 // increases on every change of the mailbox (new, flags, expunge)
}

// Entry is one message as a mailbox shows it.
type Entry struct {
	UID          uint32
	RecordID     uint64
	Flags        []string // system flags (`\Seen`…) and keywords, case kept, sorted
	InternalDate time.Time
	Size         int64
}

// FlagOp says how UpdateFlags combines flags.
type FlagOp int

const (
	FlagsSet FlagOp = iota + 1
	FlagsAdd
	FlagsRemove
)

// Change tells watchers that an account's mailbox changed (after commit).
type Change struct {
	Account string
	Mailbox string
}

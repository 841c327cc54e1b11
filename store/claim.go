package store

// Claims: an executant retrieving a prescription already filed, from its
// number and the patient's INS (relay/claim, docs/claim.md). A successful
// claim adds an entry to the executant's INBOX that points at the SAME
// record: the legal record is never copied.
//
//	claims   record id (uint64 BE) ‖ account → format ‖ time ‖ uidvalidity ‖ uid
//
// The claims index says which accounts received a record by claim (the
// record's Recipients say who received it by filing), so that the entries
// of a record are found by looking only in those accounts' mailboxes, and
// so that `mssrelay rx show` can list who claimed it. The bucket is
// created by the first claim (readers take a missing bucket as empty): the
// schema version does not change and an older mssrelay that opens the
// file simply does not know the bucket.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"
)

// AuditSMTPClaim is the audit kind of a claim, successful or refused.
const AuditSMTPClaim = "smtp.claim"

var bucketClaims = []byte("claims")

// ClaimRecord is one account's claim of a record, as the claims index
// keeps it.
type ClaimRecord struct {
	RecordID    uint64
	Account     string
	Time        time.Time // when the current INBOX entry was filed by a claim
	UIDValidity uint32    // INBOX's UIDVALIDITY then
	UID         uint32    // the entry's UID in INBOX
}

// RecordEntry is one mailbox entry that points at a record.
type RecordEntry struct {
	Account     string
	Mailbox     string
	UIDValidity uint32
	UID         uint32
	Flags       []string
}

func claimKey(recordID uint64, account string) []byte {
	k := make([]byte, 0, 8+len(account))
	k = binary.BigEndian.AppendUint64(k, recordID)
	return append(k, account...)
}

func encodeClaim(c *ClaimRecord) []byte {
	e := enc{b: make([]byte, 0, 24)}
	e.b = append(e.b, formatV1)
	e.time(c.Time)
	e.uvarint(uint64(c.UIDValidity))
	e.uvarint(uint64(c.UID))
	return e.b
}

func decodeClaim(k, v []byte) (ClaimRecord, error) {
	var c ClaimRecord
	if len(k) <= 8 {
		return c, fmt.Errorf("store: claims: %w: key of %d bytes", errCorrupt, len(k))
	}
	c.RecordID = binary.BigEndian.Uint64(k)
	c.Account = string(k[8:])
	d := dec{b: v}
	d.format("claim")
	c.Time = d.time("claim time")
	c.UIDValidity = d.u32("claim uidvalidity")
	c.UID = d.u32("claim uid")
	if d.err != nil {
		return c, fmt.Errorf("store: claims: record %d, %s: %w", c.RecordID, c.Account, d.err)
	}
	return c, nil
}

// entryRecordID reads only the record id of an encoded entry: scanning a
// mailbox for one record then costs a varint per entry, not a decode.
func entryRecordID(v []byte) (uint64, error) {
	if len(v) < 2 || v[0] != formatV1 {
		return 0, fmt.Errorf("%w: bad entry format", errCorrupt)
	}
	id, n := binary.Uvarint(v[1:])
	if n <= 0 {
		return 0, fmt.Errorf("%w: bad entry record", errCorrupt)
	}
	return id, nil
}

// findInBox returns the lowest UID of bx's entries pointing at recordID
// (0 when none).
func findInBox(bx *box, recordID uint64) (uint32, error) {
	var uid uint32
	c := bx.entries.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 4 {
			return 0, fmt.Errorf("store: mailbox %q: %w: uid key of %d bytes", bx.name, errCorrupt, len(k))
		}
		id, err := entryRecordID(v)
		if err != nil {
			return 0, fmt.Errorf("store: mailbox %q: %w", bx.name, err)
		}
		if id == recordID {
			uid = binary.BigEndian.Uint32(k)
			break
		}
	}
	return uid, nil
}

// claimedBy lists the accounts the claims index names for a record.
func claimedBy(tx *bbolt.Tx, recordID uint64) ([]ClaimRecord, error) {
	b := tx.Bucket(bucketClaims)
	if b == nil {
		return nil, nil
	}
	prefix := binary.BigEndian.AppendUint64(nil, recordID)
	var out []ClaimRecord
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		cr, err := decodeClaim(k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, cr)
	}
	return out, nil
}

// heldEntry finds an entry of account pointing at rec, in ANY of the
// account's mailboxes: an executant that claimed a prescription and then
// moved it to Archive (COPY+EXPUNGE or MOVE) holds it still, and a claim
// must not file it a second time. Looked for in this order: the INBOX
// entry the claims index names (one lookup), else the lowest UID in INBOX,
// else the lowest UID of the other mailboxes in name order. Only a
// recipient of the record or an account the claims index names can hold
// an entry of it (entries move only within an account: COPY and MOVE;
// APPEND makes a record of its own), so any other account costs no scan.
// nil when there is none (never delivered, or expunged since from every
// mailbox).
func heldEntry(tx *bbolt.Tx, rec *Record, account string) (*Delivered, error) {
	ab := accountBucket(tx, account)
	if ab == nil {
		return nil, nil
	}
	names := ab.Bucket(bucketNames)
	hasInbox := names.Get([]byte(Inbox)) != nil
	claimed := false
	if b := tx.Bucket(bucketClaims); b != nil {
		key := claimKey(rec.ID, account)
		if v := b.Get(key); v != nil {
			claimed = true
			cr, err := decodeClaim(key, v)
			if err != nil {
				return nil, err
			}
			if hasInbox {
				bx, err := openBox(ab, Inbox)
				if err != nil {
					return nil, err
				}
				if cr.UIDValidity == bx.info.UIDValidity {
					ev, ok, err := bx.getEntry(cr.UID)
					if err != nil {
						return nil, err
					}
					if ok && ev.RecordID == rec.ID {
						return &Delivered{Account: account, Mailbox: Inbox, UIDValidity: bx.info.UIDValidity, UID: cr.UID}, nil
					}
				}
			}
		}
	}
	if !claimed && !slices.Contains(rec.Recipients, account) {
		return nil, nil
	}
	// The names first, the boxes after: no bucket is opened while the
	// cursor over the names is live.
	var order []string
	if hasInbox {
		order = append(order, Inbox)
	}
	if err := names.ForEach(func(k, _ []byte) error {
		if string(k) != Inbox {
			order = append(order, string(k))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("store: %s mailboxes: %w", account, err)
	}
	for _, name := range order {
		bx, err := openBox(ab, name)
		if err != nil {
			return nil, err
		}
		uid, err := findInBox(bx, rec.ID)
		if err != nil {
			return nil, err
		}
		if uid != 0 {
			return &Delivered{Account: account, Mailbox: name, UIDValidity: bx.info.UIDValidity, UID: uid}, nil
		}
	}
	return nil, nil
}

// Deliver files an existing record into account's INBOX: a new entry
// pointing at the same record (never a second record), with the claims
// index updated and audit appended in the same transaction; when it
// returns, all of it is fsync'd and the account's watchers (IMAP IDLE) are
// woken. The account is created if needed.
//
// It is idempotent: when any mailbox of account already holds an entry
// for the record (an earlier claim, or the account is a recipient of the
// filing; kept in INBOX or moved since to Archive or any other folder),
// that entry is returned with existing set (its Mailbox says where) and
// nothing is written, audit included (record that with Store.Audit). The
// check runs in the write transaction that would file the entry, so two
// claims racing, or a claim racing a MOVE, cannot file it twice. An entry
// expunged since from every mailbox is filed anew, with a new UID.
//
// Each audit Subject gets "record=<id>" put in front and
// " mbox=INBOX uid=<uid>" at the end. A record created by IMAP APPEND is
// refused (ErrInvalid): it is its owner's private copy, not a filing. An
// account over quota gets an error matching ErrOverQuota, written nothing.
func (s *Store) Deliver(ctx context.Context, recordID uint64, account string, audit []AuditEvent) (d *Delivered, existing bool, err error) {
	if err := checkAccount(account); err != nil {
		return nil, false, err
	}
	evs, auditSize, err := normAuditEvents(audit)
	if err != nil {
		return nil, false, fmt.Errorf("deliver audit: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, false, fmt.Errorf("store: deliver: %w", err)
	}
	err = s.write(auditSize+64, func(w *wtx) error {
		d, existing = nil, false
		rec, err := getRecord(w.tx, recordID)
		if err != nil {
			return err
		}
		if rec.Appended {
			return fmt.Errorf("%w: record %d was appended over IMAP, it is not a filing", ErrInvalid, recordID)
		}
		if d, err = heldEntry(w.tx, rec, account); err != nil || d != nil {
			existing = d != nil
			return err
		}
		if err := s.checkQuotaTx(w.tx, account, 1, rec.Size); err != nil {
			return err
		}
		w.mark()
		ab, err := ensureAccount(w, account, false)
		if err != nil {
			return err
		}
		bx, err := openBox(ab, Inbox)
		if err != nil {
			return err
		}
		uid, err := bx.addEntry(&entryVal{RecordID: recordID, InternalDate: w.now, Size: rec.Size})
		if err != nil {
			return err
		}
		if err := bx.save(); err != nil {
			return err
		}
		w.changed(account, Inbox)
		b, err := w.tx.CreateBucketIfNotExists(bucketClaims)
		if err != nil {
			return fmt.Errorf("store: claims bucket: %w", err)
		}
		cr := &ClaimRecord{RecordID: recordID, Account: account, Time: w.now, UIDValidity: bx.info.UIDValidity, UID: uid}
		if err := b.Put(claimKey(recordID, account), encodeClaim(cr)); err != nil {
			return fmt.Errorf("store: claims index: %w", err)
		}
		if err := addRxEvents(w, recordID, RxEvent{Kind: RxClaimed, Actor: account, Detail: fmt.Sprintf("%s uid=%d", Inbox, uid)}); err != nil {
			return err
		}
		tagged := withRecordID(evs, recordID)
		for i := range tagged {
			tagged[i].Subject = cleanAuditField(fmt.Sprintf("%s mbox=%s uid=%d", tagged[i].Subject, Inbox, uid))
		}
		if err := appendAudit(w, tagged); err != nil {
			return err
		}
		d = &Delivered{Account: account, Mailbox: Inbox, UIDValidity: bx.info.UIDValidity, UID: uid}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return d, existing, nil
}

// Claims lists the accounts that received a record by claim, sorted by
// account, with when their current INBOX entry was filed.
func (s *Store) Claims(recordID uint64) ([]ClaimRecord, error) {
	var out []ClaimRecord
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		out, err = claimedBy(tx, recordID)
		return err
	})
	return out, err
}

// RecordEntries returns every mailbox entry that points at a record, in
// every mailbox of the accounts that can hold one: the record's recipients
// and the accounts that claimed it (entries move only within an account:
// COPY and MOVE). Entries come sorted by account, mailbox and UID. Its cost
// grows with the size of those accounts' mailboxes: a varint read per
// entry, in one read transaction. ErrNotFound when the record does not
// exist.
func (s *Store) RecordEntries(recordID uint64) ([]RecordEntry, error) {
	var out []RecordEntry
	err := s.view(func(tx *bbolt.Tx) error {
		out = nil
		rec, err := getRecord(tx, recordID)
		if err != nil {
			return err
		}
		accounts := slices.Clone(rec.Recipients)
		claims, err := claimedBy(tx, recordID)
		if err != nil {
			return err
		}
		for _, c := range claims {
			accounts = append(accounts, c.Account)
		}
		slices.Sort(accounts)
		for _, acct := range slices.Compact(accounts) {
			ab := accountBucket(tx, acct)
			if ab == nil {
				continue
			}
			err := ab.Bucket(bucketNames).ForEach(func(name, _ []byte) error {
				bx, err := openBox(ab, string(name))
				if err != nil {
					return err
				}
				c := bx.entries.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					if len(k) != 4 {
						return fmt.Errorf("store: %s mailbox %q: %w: uid key of %d bytes", acct, bx.name, errCorrupt, len(k))
					}
					id, err := entryRecordID(v)
					if err != nil {
						return fmt.Errorf("store: %s mailbox %q: %w", acct, bx.name, err)
					}
					if id != recordID {
						continue
					}
					ev, err := decodeEntry(v)
					if err != nil {
						return fmt.Errorf("store: %s mailbox %q: %w", acct, bx.name, err)
					}
					out = append(out, RecordEntry{Account: acct, Mailbox: bx.name, UIDValidity: bx.info.UIDValidity,
						UID: binary.BigEndian.Uint32(k), Flags: ev.Flags})
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

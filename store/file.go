package store

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"
)

// checkFiling bounds everything a peer controls before any transaction.
func (s *Store) checkFiling(f *Filing) error {
	if f == nil {
		return fmt.Errorf("%w: nil filing", ErrInvalid)
	}
	if len(f.Raw) == 0 {
		return fmt.Errorf("%w: empty message", ErrInvalid)
	}
	if int64(len(f.Raw)) > s.max {
		return fmt.Errorf("%w: message of %d bytes (limit %d)", ErrTooLarge, len(f.Raw), s.max)
	}
	if len(f.Meta) > MaxMetaBytes {
		return fmt.Errorf("%w: meta of %d bytes (limit %d)", ErrTooLarge, len(f.Meta), MaxMetaBytes)
	}
	if f.Sender != "" {
		if err := checkAccount(f.Sender); err != nil {
			return fmt.Errorf("sender: %w", err)
		}
	}
	if len(f.Recipients) > MaxRecipients {
		return fmt.Errorf("%w: more than %d recipients", ErrTooLarge, MaxRecipients)
	}
	for _, r := range f.Recipients {
		if err := checkAccount(r); err != nil {
			return fmt.Errorf("recipient: %w", err)
		}
	}
	for i := range f.Jobs {
		if err := checkJob(&f.Jobs[i]); err != nil {
			return err
		}
	}
	for _, fld := range []struct{ name, v string }{
		{"prescription number", f.Number}, {"Message-ID", f.MessageID}, {"signer", f.Signer},
		{"IDNPS", f.IDNPS}, {"patient INS", f.PatientINS},
	} {
		if len(fld.v) > MaxFieldBytes || !validText(fld.v) {
			return fmt.Errorf("%w: %s too long or holds control characters", ErrInvalid, fld.name)
		}
	}
	return nil
}

// uniqueRecipients drops repeated recipients, keeping the first order.
func uniqueRecipients(in []string) []string {
	out := make([]string, 0, len(in))
	seen := make(map[string]struct{}, len(in))
	for _, r := range in {
		if _, ok := seen[r]; ok {
			continue
		}
		seen[r] = struct{}{}
		out = append(out, r)
	}
	return out
}

// findResend looks f up in the dedupe indexes: the prescription number,
// then the sender's Message-ID. The same key with the same digest is a
// resend (the first filing's id, dup set); the same key with another digest
// is a replay: a second prescription under a filed number, or a sender
// reusing a Message-ID for other content (RFC 5322 §3.6.4 makes it unique).
func findResend(tx *bbolt.Tx, f *Filing) (id uint64, dup bool, err error) {
	type key struct {
		b    []byte
		k    []byte
		what string
	}
	var keys []key
	if f.Number != "" {
		keys = append(keys, key{bucketIdxNum, []byte(f.Number), "prescription number"})
	}
	if f.MessageID != "" {
		keys = append(keys, key{bucketIdxMsgID, msgIDKey(f.Sender, f.MessageID), "Message-ID from this sender"})
	}
	for _, k := range keys {
		v := tx.Bucket(k.b).Get(k.k)
		if v == nil {
			continue
		}
		id, digest, err := decodeIdx(v)
		if err != nil {
			return 0, false, fmt.Errorf("store: dedupe index: %w", err)
		}
		if digest == f.Digest {
			return id, true, nil
		}
		return 0, false, fmt.Errorf("store: %s already filed as record %d with other content: %w", k.what, id, ErrReplay)
	}
	return 0, false, nil
}

// putRecord writes a new record with its bytes and cache; the caller has
// called w.mark().
func putRecord(tx *bbolt.Tx, rec *Record, raw, meta []byte) (uint64, error) {
	records := appendOnly(tx.Bucket(bucketRecords))
	id, err := records.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("store: record id: %w", err)
	}
	rec.ID = id
	key := be64(id)
	if err := records.Put(key, encodeRecord(rec)); err != nil {
		return 0, fmt.Errorf("store: write record %d: %w", id, err)
	}
	if err := appendOnly(tx.Bucket(bucketRaw)).Put(key, raw); err != nil {
		return 0, fmt.Errorf("store: write record %d bytes: %w", id, err)
	}
	if len(meta) > 0 {
		if err := appendOnly(tx.Bucket(bucketRMeta)).Put(key, meta); err != nil {
			return 0, fmt.Errorf("store: write record %d meta: %w", id, err)
		}
	}
	return id, nil
}

// File writes the record, its indexes and one INBOX entry per recipient in
// one transaction; when it returns nil the data is fsync'd. Concurrent calls
// share commits (group commit, see commit.go). A resend of the same
// prescription (same Number and Digest, or same Sender+MessageID and Digest)
// returns the first filing with Duplicate set and writes nothing; either key
// already filed with another Digest returns ErrReplay.
// Recipients are deduplicated; each gets its account created if needed.
//
// ctx is checked before the filing is queued; once queued, File waits for
// the commit (one fsync) so that the answer is never unknown.
func (s *Store) File(ctx context.Context, f *Filing) (*Filed, error) {
	if err := s.checkFiling(f); err != nil {
		return nil, err
	}
	audit, auditSize, err := normAuditEvents(f.Audit)
	if err != nil {
		return nil, fmt.Errorf("filing audit: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: file: %w", err)
	}
	// A resend found in durable state needs no commit at all.
	var fast *Filed
	err = s.view(func(tx *bbolt.Tx) error {
		if !s.durable(tx) {
			return nil
		}
		id, dup, err := findResend(tx, f)
		if dup {
			fast = &Filed{ID: id, Duplicate: true}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if fast != nil {
		s.duplicates.Add(1)
		return fast, nil
	}

	recips := uniqueRecipients(f.Recipients)
	var out *Filed
	err = s.write(int64(len(f.Raw)+len(f.Meta))+auditSize, func(w *wtx) error {
		out = nil
		id, dup, err := findResend(w.tx, f)
		if err != nil {
			return err
		}
		if dup {
			out = &Filed{ID: id, Duplicate: true}
			return nil
		}
		// Every recipient's quota before anything is written: one
		// recipient over quota refuses the whole filing, so that the
		// sender's retry (452 4.2.2 is transient) cannot file twice.
		for _, r := range recips {
			if err := s.checkQuotaTx(w.tx, r, 1, int64(len(f.Raw))); err != nil {
				return err
			}
		}
		w.mark()
		received := f.Received
		if received.IsZero() {
			received = w.now
		}
		id, err = putRecord(w.tx, &Record{
			Received: received, Size: int64(len(f.Raw)), Sender: f.Sender, Recipients: recips,
			Number: f.Number, Digest: f.Digest, MessageID: f.MessageID, Signer: f.Signer,
			IDNPS: f.IDNPS, PatientINS: f.PatientINS, Delivery: f.Delivery, Opposition: f.Opposition, Owner: f.Sender,
		}, f.Raw, f.Meta)
		if err != nil {
			return err
		}
		if err := putIndexes(w.tx, f, id); err != nil {
			return err
		}
		res := &Filed{ID: id, Entries: make([]Delivered, 0, len(recips))}
		for _, r := range recips {
			ab, err := ensureAccount(w, r, false)
			if err != nil {
				return err
			}
			bx, err := openBox(ab, Inbox)
			if err != nil {
				return err
			}
			uid, err := bx.addEntry(&entryVal{RecordID: id, InternalDate: received, Size: int64(len(f.Raw))})
			if err != nil {
				return err
			}
			if err := bx.save(); err != nil {
				return err
			}
			w.changed(r, Inbox)
			res.Entries = append(res.Entries, Delivered{Account: r, Mailbox: Inbox, UIDValidity: bx.info.UIDValidity, UID: uid})
		}
		// Same transaction: the audit record, the history and the
		// outbound jobs exist exactly when the filing does
		// (ARCHITECTURE.md, store.File).
		evs := make([]RxEvent, 0, 1+len(recips)+len(f.Events))
		evs = append(evs, RxEvent{Time: received, Kind: RxFiled, Actor: f.Sender})
		for _, r := range recips {
			evs = append(evs, RxEvent{Time: received, Kind: RxDelivered, Actor: r, Detail: Inbox})
		}
		evs = append(evs, f.Events...)
		if err := addRxEvents(w, id, evs...); err != nil {
			return err
		}
		jobs := make([]Job, len(f.Jobs))
		for i, j := range f.Jobs {
			j.RecordID = id
			jobs[i] = j
		}
		if _, err := putJobs(w, jobs); err != nil {
			return err
		}
		if err := appendAudit(w, withRecordID(audit, id)); err != nil {
			return err
		}
		out = res
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out.Duplicate {
		s.duplicates.Add(1)
	} else {
		s.filings.Add(1)
	}
	return out, nil
}

func putIndexes(tx *bbolt.Tx, f *Filing, id uint64) error {
	if f.Number != "" {
		if err := tx.Bucket(bucketIdxNum).Put([]byte(f.Number), encodeIdx(id, f.Digest)); err != nil {
			return fmt.Errorf("store: number index: %w", err)
		}
	}
	if f.MessageID != "" {
		// The first filing under a Message-ID keeps it: with a Number, a
		// reused Message-ID is not what identifies the prescription.
		b := tx.Bucket(bucketIdxMsgID)
		key := msgIDKey(f.Sender, f.MessageID)
		if b.Get(key) == nil {
			if err := b.Put(key, encodeIdx(id, f.Digest)); err != nil {
				return fmt.Errorf("store: Message-ID index: %w", err)
			}
		}
	}
	if f.PatientINS != "" {
		if err := tx.Bucket(bucketIdxINS).Put(indexKey(f.PatientINS, id), []byte{}); err != nil {
			return fmt.Errorf("store: patient index: %w", err)
		}
	}
	if f.IDNPS != "" {
		if err := tx.Bucket(bucketIdxIDNPS).Put(indexKey(f.IDNPS, id), []byte{}); err != nil {
			return fmt.Errorf("store: prescriber index: %w", err)
		}
	}
	return nil
}

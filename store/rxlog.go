package store

// The history of a prescription: what happened to one filed record, in
// order, for `mssrelay rx show` and for the prescriber's questions
// ("was it fetched? forwarded? executed?"). Unlike the audit trail, which is
// one chain for everything, the history is kept per record so that it is
// read with one prefix scan.
//
//	rxlog     id (uint64 BE) ‖ seq (uint64 BE) → encoded RxEvent
//	rxfetch   id (uint64 BE) ‖ account         → empty: the account fetched it
//	rxexec    id (uint64 BE)                   → encoded first execution
//
// Every event is written in the transaction that makes it true (filing,
// claim, flag change, queue outcome), so the history never claims more or
// less than the store holds.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

var (
	bucketRxLog   = []byte("rxlog")
	bucketRxFetch = []byte("rxfetch")
	bucketRxExec  = []byte("rxexec")
)

// Kinds of RxEvent.
const (
	RxFiled          = "filed"           // accepted and filed (Actor: the sender)
	RxDelivered      = "delivered"       // an INBOX entry for a recipient (Actor: the account)
	RxClaimed        = "claimed"         // filed into an executant's INBOX by a claim
	RxFetched        = "fetched"         // first time an account's client fetched the bytes
	RxExecuted       = "executed"        // an executant set $Dispensed (first time per account)
	RxForwardQueued  = "forward.queued"  // a copy for the patient entered the outbound queue
	RxForwarded      = "forwarded"       // the patient's operator accepted the copy (250)
	RxForwardDelayed = "forward.delayed" // still undelivered after the delay warning age
	RxForwardFailed  = "forward.failed"  // given up: the patient needs a paper copy
	RxNotForwarded   = "not.forwarded"   // forwarding was asked but refused by policy: paper copy
	RxRelayQueued    = "relay.queued"    // a copy for a recipient at another operator entered the queue
	RxRelayed        = "relayed"         // the other operator accepted it (250)
	RxRelayFailed    = "relay.failed"    // given up: the recipient did not get it
	RxNotified       = "notified"        // a notification (DSN, MDN, execution) reached the prescriber
	RxNotifyFailed   = "notify.failed"   // a notification could not be delivered
)

// KeywordDispensed is the IMAP keyword an executant sets on its copy of a
// prescription to record that it was executed (dispensed): docs/imap.md.
const KeywordDispensed = "$Dispensed"

// RxEvent is one step in a record's history.
type RxEvent struct {
	Time   time.Time // zero: the commit's clock reading
	Kind   string    // RxFiled, RxForwarded…
	Actor  string    // account or address concerned, "" when none
	Detail string    // short text: a reply code, a reason, a job id; never clinical content
}

// Execution is the first execution of a record.
type Execution struct {
	Account string
	Time    time.Time
}

func encodeRxEvent(ev *RxEvent) []byte {
	e := enc{b: make([]byte, 0, 32+len(ev.Kind)+len(ev.Actor)+len(ev.Detail))}
	e.b = append(e.b, formatV1)
	e.time(ev.Time)
	e.str(ev.Kind)
	e.str(ev.Actor)
	e.str(ev.Detail)
	return e.b
}

func decodeRxEvent(v []byte) (RxEvent, error) {
	d := dec{b: v}
	d.format("rx event")
	var ev RxEvent
	ev.Time = d.time("rx event time")
	ev.Kind = d.str("rx event kind")
	ev.Actor = d.str("rx event actor")
	ev.Detail = d.str("rx event detail")
	return ev, d.err
}

// cleanRxEvent bounds and flattens what callers (and peers, through reply
// texts) put in an event.
func cleanRxEvent(ev RxEvent, now time.Time) RxEvent {
	if ev.Time.IsZero() {
		ev.Time = now
	}
	ev.Kind = cleanAuditField(ev.Kind)
	ev.Actor = cleanAuditField(ev.Actor)
	ev.Detail = cleanAuditField(ev.Detail)
	return ev
}

// addRxEvents appends events to record id's history in w. The caller has
// called w.mark().
func addRxEvents(w *wtx, id uint64, evs ...RxEvent) error {
	b, err := w.tx.CreateBucketIfNotExists(bucketRxLog)
	if err != nil {
		return fmt.Errorf("store: history bucket: %w", err)
	}
	for _, ev := range evs {
		seq, err := b.NextSequence()
		if err != nil {
			return fmt.Errorf("store: history sequence: %w", err)
		}
		ev = cleanRxEvent(ev, w.now)
		k := binary.BigEndian.AppendUint64(be64(id), seq)
		if err := b.Put(k, encodeRxEvent(&ev)); err != nil {
			return fmt.Errorf("store: record %d history: %w", id, err)
		}
	}
	return nil
}

// RecordEvents returns record id's history, oldest first. A record without
// history (filed before histories existed) gives an empty list.
func (s *Store) RecordEvents(id uint64) ([]RxEvent, error) {
	var out []RxEvent
	err := s.view(func(tx *bbolt.Tx) error {
		out = nil
		b := tx.Bucket(bucketRxLog)
		if b == nil {
			return nil
		}
		prefix := be64(id)
		c := b.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			ev, err := decodeRxEvent(v)
			if err != nil {
				return fmt.Errorf("store: record %d history: %w", id, err)
			}
			out = append(out, ev)
		}
		return nil
	})
	return out, err
}

// deleteRxHistory removes a purged record's history, fetch marks and
// execution.
func deleteRxHistory(tx *bbolt.Tx, id uint64) error {
	prefix := be64(id)
	for _, name := range [][]byte{bucketRxLog, bucketRxFetch} {
		b := tx.Bucket(name)
		if b == nil {
			continue
		}
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return fmt.Errorf("store: purge record %d history: %w", id, err)
			}
		}
	}
	if b := tx.Bucket(bucketRxExec); b != nil {
		if err := b.Delete(prefix); err != nil {
			return fmt.Errorf("store: purge record %d execution: %w", id, err)
		}
	}
	return nil
}

// MarkFetched records that account's mail client fetched the bytes of the
// given records: the first fetch per (record, account) adds RxFetched to
// the history; later ones write nothing. Records created by IMAP APPEND
// and missing records are skipped. It costs a read transaction when
// nothing is new, so the IMAP layer may call it on every FETCH.
func (s *Store) MarkFetched(account string, ids []uint64) error {
	if err := checkAccount(account); err != nil {
		return err
	}
	fresh := func(tx *bbolt.Tx) ([]uint64, error) {
		var out []uint64
		fb := tx.Bucket(bucketRxFetch)
		for _, id := range ids {
			if fb != nil && fb.Get(append(be64(id), account...)) != nil {
				continue
			}
			rec, err := getRecord(tx, id)
			if err != nil {
				if errors.Is(err, ErrNotFound) {
					continue
				}
				return nil, err
			}
			if rec.Appended {
				continue
			}
			out = append(out, id)
		}
		return out, nil
	}
	var todo []uint64
	if err := s.view(func(tx *bbolt.Tx) (err error) { todo, err = fresh(tx); return err }); err != nil || len(todo) == 0 {
		return err
	}
	return s.write(int64(64*len(todo)), func(w *wtx) error {
		todo, err := fresh(w.tx)
		if err != nil || len(todo) == 0 {
			return err
		}
		w.mark()
		fb, err := w.tx.CreateBucketIfNotExists(bucketRxFetch)
		if err != nil {
			return fmt.Errorf("store: fetch marks: %w", err)
		}
		for _, id := range todo {
			if err := fb.Put(append(be64(id), account...), []byte{}); err != nil {
				return fmt.Errorf("store: fetch mark: %w", err)
			}
			if err := addRxEvents(w, id, RxEvent{Kind: RxFetched, Actor: account}); err != nil {
				return err
			}
		}
		return nil
	})
}

// RecordExecution returns the first execution of record id, or nil.
func (s *Store) RecordExecution(id uint64) (*Execution, error) {
	var out *Execution
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		out, err = execution(tx, id)
		return err
	})
	return out, err
}

func execution(tx *bbolt.Tx, id uint64) (*Execution, error) {
	b := tx.Bucket(bucketRxExec)
	if b == nil {
		return nil, nil
	}
	v := b.Get(be64(id))
	if v == nil {
		return nil, nil
	}
	d := dec{b: v}
	d.format("execution")
	ex := &Execution{Time: d.time("execution time"), Account: d.str("execution account")}
	if d.err != nil {
		return nil, fmt.Errorf("store: record %d execution: %w", id, d.err)
	}
	return ex, nil
}

// dispensedChange is called by UpdateFlags for each entry whose flags
// change: when KeywordDispensed appears on an entry of a filed
// prescription, the record's history gets RxExecuted; the first execution
// of the record is kept and, unless the patient objected (the record's
// Opposition), an execution notice to the prescriber enters the outbound
// queue, all in the flag change's own transaction.
func dispensedChange(w *wtx, account string, recordID uint64, before, after []string) error {
	had, has := hasKeyword(before, KeywordDispensed), hasKeyword(after, KeywordDispensed)
	if had == has {
		return nil
	}
	rec, err := getRecord(w.tx, recordID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	if rec.Appended || rec.Number == "" {
		return nil
	}
	if !has {
		return addRxEvents(w, recordID, RxEvent{Kind: RxExecuted, Actor: account, Detail: "withdrawn: " + KeywordDispensed + " removed"})
	}
	if err := addRxEvents(w, recordID, RxEvent{Kind: RxExecuted, Actor: account}); err != nil {
		return err
	}
	first, err := execution(w.tx, recordID)
	if err != nil || first != nil {
		return err
	}
	b, err := w.tx.CreateBucketIfNotExists(bucketRxExec)
	if err != nil {
		return fmt.Errorf("store: executions: %w", err)
	}
	e := enc{}
	e.b = append(e.b, formatV1)
	e.time(w.now)
	e.str(account)
	if err := b.Put(be64(recordID), e.b); err != nil {
		return fmt.Errorf("store: record %d execution: %w", recordID, err)
	}
	if rec.Opposition {
		return addRxEvents(w, recordID, RxEvent{Kind: RxNotified, Actor: rec.Sender, Detail: "execution not notified: the patient objected"})
	}
	_, err = putJobs(w, []Job{{Kind: JobExecuted, RecordID: recordID, To: rec.Sender, Actor: account}})
	return err
}

func hasKeyword(flags []string, kw string) bool {
	for _, f := range flags {
		if strings.EqualFold(f, kw) {
			return true
		}
	}
	return false
}

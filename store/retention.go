package store

// Retention of the legal record.
//
// A filed prescription is the legal record, kept for the legal period (5
// years by default, configs retention.records) whatever its mailboxes
// show. Past it, Purge removes it entirely: the record, its bytes and cached
// metadata, its index keys (prescription number, Message-ID, patient INS,
// prescriber IDNPS) and every mailbox entry pointing at it. Mailbox
// counters (messages, unseen, size) follow and the mailbox's ModSeq
// increases, so that IMAP sessions report the EXPUNGE; UIDNEXT does not go
// back, so no UID is ever reused (RFC 3501 §2.3.1.1). Messages stored by
// IMAP APPEND are records too and follow the same rule: the store keeps
// nothing longer than the retention period.
//
// A purged prescription number is forgotten with its record: the same
// number can be filed again. Replay protection therefore covers the
// retention period, not forever. That is deliberate: keeping a number
// after its record would keep data about a prescription beyond its
// retention, and a prescription is valid for months, not years, so a copy
// replayed five years later is refused by the executant's own checks of its
// dates, not by this index.
//
// The work is split so that the single bbolt writer is never held long:
//
//  1. find candidates (records received before the cutoff) in short read
//     transactions over the records bucket;
//  2. find the mailbox entries pointing at them, also in read
//     transactions, by walking the mailboxes of the accounts that can hold
//     such entries: the record's recipients (File puts an entry in each
//     one's INBOX), its owner (Append) and the accounts that claimed it
//     (claim.go); COPY and MOVE stay inside one account. Each mailbox's
//     UIDNEXT is noted when it is walked;
//  3. delete in batches (DefaultPurgeBatch records per write transaction,
//     through the group commit), each batch with one store.purge audit
//     record in the same transaction. The batch deletes the entries found
//     in step 2 that still exist, plus any entry pointing at one of its
//     records among those created since step 2: UIDs only grow, so those
//     are the entries at or above the noted UIDNEXT, and every entry of a
//     mailbox created since (mailbox ids only grow too). No entry can thus
//     be left pointing at a purged record, however the steps interleave
//     with IMAP COPY.
//
// Every deletion is checked again in the write transaction (the record
// still exists and is still older than the cutoff), so a concurrent Purge
// or a clock change cannot remove a record the cutoff does not cover.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"go.etcd.io/bbolt"
)

// Bounds of a purge.
const (
	// DefaultPurgeBatch records are removed per write transaction: a few
	// milliseconds of writer time each, so filings queued meanwhile wait
	// for one short commit, not for the whole purge.
	DefaultPurgeBatch = 500
	// MaxPurgeBatch bounds the batch a caller may ask for.
	MaxPurgeBatch = 10_000
	// purgeScanChunk records (or mailbox entries) are read per read
	// transaction while looking for candidates.
	purgeScanChunk = 10_000
	// purgeRound bounds the candidates handled per round (steps 1 to 3):
	// the memory a purge holds, on a first run over years of records.
	purgeRound = 50_000
)

// Purge removes the records received before before, in batches of batch
// records (DefaultPurgeBatch when batch <= 0), with everything that points
// at them (see the top of this file). It returns the number of records
// removed, also when it stops early with an error. ctx is checked between
// batches: a cancelled purge has committed whole batches only.
//
// A record that cannot be decoded is left in place and reported in the
// error after the others were purged.
func (s *Store) Purge(ctx context.Context, before time.Time, batch int) (n int, err error) {
	if batch <= 0 {
		batch = DefaultPurgeBatch
	}
	if batch > MaxPurgeBatch {
		return 0, fmt.Errorf("%w: purge batch of %d records (at most %d)", ErrInvalid, batch, MaxPurgeBatch)
	}
	var corrupt []uint64
	next := uint64(1)
	for {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("store: purge: %w", err)
		}
		round, err := s.purgeCandidates(next, before)
		if err != nil {
			return n, err
		}
		corrupt = append(corrupt, round.corrupt...)
		if len(round.ids) > 0 {
			k, err := s.purgeRound(ctx, round, before, batch)
			n += k
			if err != nil {
				return n, err
			}
		}
		if round.done {
			break
		}
		next = round.next
	}
	if len(corrupt) > 0 {
		return n, fmt.Errorf("store: purge: %d records could not be decoded and were kept (first: record %d): %w", len(corrupt), corrupt[0], errCorrupt)
	}
	return n, nil
}

// candidates is step 1's result for one round.
type candidates struct {
	ids      []uint64            // ascending
	accounts map[string]struct{} // recipients and owners of ids
	corrupt  []uint64
	next     uint64 // first record id not looked at yet
	done     bool   // the records bucket was read to its end
}

// purgeCandidates collects up to purgeRound records received before
// before, starting at record id next, in read transactions of at most
// purgeScanChunk records each.
func (s *Store) purgeCandidates(next uint64, before time.Time) (*candidates, error) {
	c := &candidates{accounts: map[string]struct{}{}, next: next}
	for len(c.ids) < purgeRound {
		end := true
		err := s.view(func(tx *bbolt.Tx) error {
			cur := tx.Bucket(bucketRecords).Cursor()
			seen := 0
			for k, v := cur.Seek(be64(c.next)); k != nil; k, v = cur.Next() {
				if seen == purgeScanChunk || len(c.ids) == purgeRound {
					end = false
					return nil
				}
				seen++
				if len(k) != 8 {
					return fmt.Errorf("store: purge: %w: record key of %d bytes", errCorrupt, len(k))
				}
				id := beUint64(k)
				c.next = id + 1
				r, err := decodeRecord(id, v)
				if err != nil {
					c.corrupt = append(c.corrupt, id)
					continue
				}
				if !r.Received.Before(before) {
					continue
				}
				accts, err := recordAccounts(tx, r)
				if err != nil {
					return err
				}
				c.ids = append(c.ids, id)
				for _, a := range accts {
					c.accounts[a] = struct{}{}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if end {
			c.done = true
			break
		}
	}
	return c, nil
}

// recordAccounts lists the accounts whose mailboxes may hold entries
// pointing at r: its recipients (File), its owner (Append) and the
// accounts that claimed it (Deliver, claim.go).
func recordAccounts(tx *bbolt.Tx, r *Record) ([]string, error) {
	out := make([]string, 0, len(r.Recipients)+1)
	out = append(out, r.Recipients...)
	if r.Owner != "" {
		out = append(out, r.Owner)
	}
	claims, err := claimedBy(tx, r.ID)
	if err != nil {
		return nil, fmt.Errorf("store: purge record %d: %w", r.ID, err)
	}
	for _, c := range claims {
		out = append(out, c.Account)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// entryLoc is one mailbox entry found in step 2.
type entryLoc struct {
	account string
	box     uint64 // mailbox id (key in the account's boxes bucket)
	uid     uint32
}

// walked is what step 2 saw of one mailbox: entries created later have a
// UID at or above uidNext.
type walked struct {
	uidNext uint32
}

// boxKey names a mailbox across accounts.
type boxKey struct {
	account string
	box     uint64
}

// entryMap is step 2's result.
type entryMap struct {
	locs   map[uint64][]entryLoc // record id → entries pointing at it
	walked map[boxKey]walked
}

// findEntries walks every mailbox of accounts (step 2) and returns the
// entries pointing at ids, in read transactions of at most purgeScanChunk
// entries each.
func (s *Store) findEntries(ids []uint64, accounts map[string]struct{}) (*entryMap, error) {
	want := make(map[uint64]struct{}, len(ids))
	for _, id := range ids {
		want[id] = struct{}{}
	}
	em := &entryMap{locs: map[uint64][]entryLoc{}, walked: map[boxKey]walked{}}
	names := make([]string, 0, len(accounts))
	for a := range accounts {
		names = append(names, a)
	}
	sort.Strings(names)
	for _, account := range names {
		var boxes []uint64
		err := s.view(func(tx *bbolt.Tx) error {
			ab := accountBucket(tx, account)
			if ab == nil {
				return nil
			}
			return ab.Bucket(bucketBoxes).ForEach(func(k, _ []byte) error {
				if len(k) != 8 {
					return fmt.Errorf("store: purge: account %s: %w: mailbox id of %d bytes", account, errCorrupt, len(k))
				}
				boxes = append(boxes, beUint64(k))
				return nil
			})
		})
		if err != nil {
			return nil, err
		}
		for _, id := range boxes {
			if err := s.walkBox(account, id, want, em); err != nil {
				return nil, err
			}
		}
	}
	return em, nil
}

// walkBox reads one mailbox's entries in chunks, noting its UIDNEXT in
// the first transaction.
func (s *Store) walkBox(account string, id uint64, want map[uint64]struct{}, em *entryMap) error {
	key := boxKey{account, id}
	from := uint32(1)
	first := true
	for {
		end := true
		err := s.view(func(tx *bbolt.Tx) error {
			bx, err := boxByID(tx, account, id)
			if err != nil || bx == nil {
				return err // nil, nil: deleted meanwhile
			}
			if first {
				em.walked[key] = walked{uidNext: bx.info.UIDNext}
				first = false
			}
			cur := bx.entries.Cursor()
			seen := 0
			for k, v := cur.Seek(be32(from)); k != nil; k, v = cur.Next() {
				if seen == purgeScanChunk {
					end = false
					return nil
				}
				seen++
				if len(k) != 4 {
					return fmt.Errorf("store: purge: account %s mailbox %d: %w: uid key of %d bytes", account, id, errCorrupt, len(k))
				}
				uid := binary.BigEndian.Uint32(k)
				from = uid + 1
				rid, err := entryRecordID(v)
				if err != nil {
					return fmt.Errorf("store: purge: account %s mailbox %d uid %d: %w", account, id, uid, err)
				}
				if _, ok := want[rid]; ok {
					em.locs[rid] = append(em.locs[rid], entryLoc{account: account, box: id, uid: uid})
				}
			}
			return nil
		})
		if err != nil || end {
			return err
		}
	}
}

// boxByID opens a mailbox by its id, through its name so that the box is
// set up exactly as openBox does (quota bookkeeping included); nil, nil
// when the account or the mailbox does not exist.
func boxByID(tx *bbolt.Tx, account string, id uint64) (*box, error) {
	ab := accountBucket(tx, account)
	if ab == nil || ab.Bucket(bucketBoxes).Bucket(be64(id)) == nil {
		return nil, nil
	}
	name, err := boxName(ab, account, be64(id))
	if err != nil {
		return nil, err
	}
	return openBox(ab, name)
}

// purgeRound runs steps 2 and 3 for one round of candidates.
func (s *Store) purgeRound(ctx context.Context, c *candidates, before time.Time, batch int) (int, error) {
	em, err := s.findEntries(c.ids, c.accounts)
	if err != nil {
		return 0, err
	}
	n := 0
	for start := 0; start < len(c.ids); start += batch {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("store: purge: %w", err)
		}
		ids := c.ids[start:min(start+batch, len(c.ids))]
		k, err := s.purgeBatch(ids, before, em)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// purgeBatch removes one batch of records in one write transaction, with
// its audit record.
func (s *Store) purgeBatch(ids []uint64, before time.Time, em *entryMap) (int, error) {
	var purged int
	err := s.write(0, func(w *wtx) error {
		purged = 0
		tx := w.tx
		var victims []*Record
		for _, id := range ids {
			v := tx.Bucket(bucketRecords).Get(be64(id))
			if v == nil {
				continue // purged meanwhile
			}
			r, err := decodeRecord(id, v)
			if err != nil || !r.Received.Before(before) {
				continue
			}
			victims = append(victims, r)
		}
		if len(victims) == 0 {
			return nil
		}
		w.mark()
		set := make(map[uint64]struct{}, len(victims))
		accounts := map[string]struct{}{}
		for _, r := range victims {
			set[r.ID] = struct{}{}
			accts, err := recordAccounts(tx, r)
			if err != nil {
				return err
			}
			for _, a := range accts {
				accounts[a] = struct{}{}
			}
			if err := deleteRecord(tx, r); err != nil {
				return err
			}
		}
		removed, err := purgeEntries(w, victims, set, accounts, em)
		if err != nil {
			return err
		}
		evs, _, err := normAuditEvents([]AuditEvent{{
			Kind:  AuditPurge,
			Actor: "-",
			// Identifiers only: never the patient's INS or the number.
			Subject: fmt.Sprintf("records=%d first=%d last=%d", len(victims), victims[0].ID, victims[len(victims)-1].ID),
			Outcome: "ok",
			Detail:  fmt.Sprintf("received before %s; %d mailbox entries removed", before.UTC().Format(time.RFC3339), removed),
		}})
		if err != nil {
			return err
		}
		if err := appendAudit(w, evs); err != nil {
			return err
		}
		purged = len(victims)
		return nil
	})
	return purged, err
}

// deleteRecord removes a record, its bytes, its cache, its claims and the
// index keys that point at it. An index key pointing at another record (a Message-ID
// kept by an earlier filing, see putIndexes) stays.
func deleteRecord(tx *bbolt.Tx, r *Record) error {
	key := be64(r.ID)
	for _, name := range [][]byte{bucketRecords, bucketRaw, bucketRMeta} {
		if err := tx.Bucket(name).Delete(key); err != nil {
			return fmt.Errorf("store: purge record %d: %w", r.ID, err)
		}
	}
	if r.Number != "" {
		if err := deleteDedupe(tx, bucketIdxNum, []byte(r.Number), r.ID); err != nil {
			return err
		}
	}
	if r.MessageID != "" {
		if err := deleteDedupe(tx, bucketIdxMsgID, msgIDKey(r.Sender, r.MessageID), r.ID); err != nil {
			return err
		}
	}
	if r.PatientINS != "" {
		if err := tx.Bucket(bucketIdxINS).Delete(indexKey(r.PatientINS, r.ID)); err != nil {
			return fmt.Errorf("store: purge record %d: patient index: %w", r.ID, err)
		}
	}
	if r.IDNPS != "" {
		if err := tx.Bucket(bucketIdxIDNPS).Delete(indexKey(r.IDNPS, r.ID)); err != nil {
			return fmt.Errorf("store: purge record %d: prescriber index: %w", r.ID, err)
		}
	}
	if err := deleteRxHistory(tx, r.ID); err != nil {
		return err
	}
	if b := tx.Bucket(bucketClaims); b != nil {
		claims, err := claimedBy(tx, r.ID)
		if err != nil {
			return fmt.Errorf("store: purge record %d: %w", r.ID, err)
		}
		for _, c := range claims {
			if err := b.Delete(claimKey(r.ID, c.Account)); err != nil {
				return fmt.Errorf("store: purge record %d: claims index: %w", r.ID, err)
			}
		}
	}
	return nil
}

// deleteDedupe deletes a dedupe index key when it points at record id.
func deleteDedupe(tx *bbolt.Tx, bucket, key []byte, id uint64) error {
	b := tx.Bucket(bucket)
	v := b.Get(key)
	if v == nil {
		return nil
	}
	if got, _, err := decodeIdx(v); err != nil || got != id {
		return nil // another record's key (or damaged: left for inspection)
	}
	if err := b.Delete(key); err != nil {
		return fmt.Errorf("store: purge record %d: %s index: %w", id, bucket, err)
	}
	return nil
}

// purgeEntries deletes every entry pointing at a record of set: those
// step 2 found, and those created since (see the top of this file). It
// returns how many it deleted.
func purgeEntries(w *wtx, victims []*Record, set map[uint64]struct{}, accounts map[string]struct{}, em *entryMap) (int, error) {
	type hit struct {
		uid uint32
		ev  entryVal
	}
	hits := map[boxKey][]hit{}
	add := func(k boxKey, uid uint32, ev entryVal) {
		for _, h := range hits[k] {
			if h.uid == uid {
				return
			}
		}
		hits[k] = append(hits[k], hit{uid, ev})
	}
	boxes := map[boxKey]*box{}
	open := func(k boxKey) (*box, error) {
		if bx, ok := boxes[k]; ok {
			return bx, nil
		}
		bx, err := boxByID(w.tx, k.account, k.box)
		boxes[k] = bx
		return bx, err
	}
	// Entries step 2 found.
	for _, r := range victims {
		for _, l := range em.locs[r.ID] {
			k := boxKey{l.account, l.box}
			bx, err := open(k)
			if err != nil {
				return 0, err
			}
			if bx == nil {
				continue // mailbox deleted, entries with it
			}
			ev, ok, err := bx.getEntry(l.uid)
			if err != nil {
				return 0, err
			}
			if ok && ev.RecordID == r.ID {
				add(k, l.uid, ev)
			}
		}
	}
	// Entries created since step 2 walked their mailbox.
	accts := make([]string, 0, len(accounts))
	for a := range accounts {
		accts = append(accts, a)
	}
	sort.Strings(accts)
	for _, account := range accts {
		ab := accountBucket(w.tx, account)
		if ab == nil {
			continue
		}
		var ids []uint64
		err := ab.Bucket(bucketBoxes).ForEach(func(k, _ []byte) error {
			if len(k) == 8 {
				ids = append(ids, beUint64(k))
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("store: purge: account %s: %w", account, err)
		}
		for _, id := range ids {
			k := boxKey{account, id}
			// A mailbox step 2 did not walk was created since (ids are
			// never reused): all of it is new.
			from := uint32(1)
			if wk, ok := em.walked[k]; ok {
				from = wk.uidNext
			}
			bx, err := open(k)
			if err != nil {
				return 0, err
			}
			if bx == nil {
				continue
			}
			cur := bx.entries.Cursor()
			for ck, v := cur.Seek(be32(from)); ck != nil; ck, v = cur.Next() {
				if len(ck) != 4 {
					return 0, fmt.Errorf("store: purge: account %s mailbox %d: %w: uid key", account, id, errCorrupt)
				}
				rid, err := entryRecordID(v)
				if err != nil {
					return 0, fmt.Errorf("store: purge: account %s mailbox %d: %w", account, id, err)
				}
				if _, ok := set[rid]; !ok {
					continue
				}
				ev, err := decodeEntry(v)
				if err != nil {
					return 0, fmt.Errorf("store: purge: account %s mailbox %d: %w", account, id, err)
				}
				add(k, binary.BigEndian.Uint32(ck), ev)
			}
		}
	}
	// Delete outside any cursor walk (deleting under a bbolt cursor skips
	// keys), keeping each mailbox's counters as Expunge does.
	keys := make([]boxKey, 0, len(hits))
	for k := range hits {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].account != keys[j].account {
			return keys[i].account < keys[j].account
		}
		return keys[i].box < keys[j].box
	})
	removed := 0
	for _, k := range keys {
		bx := boxes[k]
		for _, h := range hits[k] {
			if err := bx.removeEntry(h.uid, &h.ev); err != nil {
				return 0, fmt.Errorf("store: purge: account %s: %w", k.account, err)
			}
			removed++
		}
		bx.info.ModSeq++
		if err := bx.save(); err != nil {
			return 0, err
		}
		w.changed(k.account, bx.name)
	}
	return removed, nil
}

// boxName finds a mailbox's name from its id (at most MaxMailboxes names
// to look through).
func boxName(ab *bbolt.Bucket, account string, id []byte) (string, error) {
	var name string
	err := ab.Bucket(bucketNames).ForEach(func(k, v []byte) error {
		if name == "" && bytes.Equal(v, id) {
			name = string(k)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("store: account %s: %w", account, err)
	}
	if name == "" {
		return "", fmt.Errorf("store: account %s: %w: mailbox %x has no name", account, errCorrupt, id)
	}
	return name, nil
}

// RetentionPolicy says what RunRetention keeps.
type RetentionPolicy struct {
	// Cutoff returns, for the current time, the receive time before which
	// records are purged (configs.Period.Before for retention.records).
	// Required.
	Cutoff func(now time.Time) time.Time
	// Interval is the time between two purges (default 24h). The first
	// purge runs at once, so that a relay restarted daily still purges.
	Interval time.Duration
	// Batch is the number of records per transaction (default
	// DefaultPurgeBatch).
	Batch int
	// After, when set, is called after each purge with its result
	// (metrics, tests).
	After func(purged int, err error)
}

// DefaultPurgeInterval is RetentionPolicy.Interval's default.
const DefaultPurgeInterval = 24 * time.Hour

// RunRetention purges records past the policy's cutoff now and then every
// Interval, until ctx is done; it returns nil then. Each purge is logged
// (counts and the cutoff, never identifiers of patients); an error is
// logged and retried at the next interval. The clock is the store's
// (Options.Now). The caller owns the goroutine and must cancel ctx before
// closing the store.
func (s *Store) RunRetention(ctx context.Context, p RetentionPolicy, log *slog.Logger) error {
	if p.Cutoff == nil {
		return fmt.Errorf("%w: retention policy without a cutoff", ErrInvalid)
	}
	interval := p.Interval
	if interval <= 0 {
		interval = DefaultPurgeInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cutoff := p.Cutoff(s.now())
		start := time.Now()
		n, err := s.Purge(ctx, cutoff, p.Batch)
		switch {
		case err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
			log.Info("retention purge interrupted by shutdown", "records", n, "cutoff", cutoff.UTC().Format(time.RFC3339))
		case err != nil:
			log.Error("retention purge failed", "records", n, "cutoff", cutoff.UTC().Format(time.RFC3339), "err", err)
		default:
			log.Info("retention purge", "records", n, "cutoff", cutoff.UTC().Format(time.RFC3339),
				"duration", time.Since(start).Round(time.Millisecond).String())
		}
		if p.After != nil {
			p.After(n, err)
		}
		t.Reset(interval)
	}
}

package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// clock is an injectable, settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func openClock(t *testing.T, start time.Time) (*Store, *clock, string) {
	t.Helper()
	c := &clock{t: start}
	path := t.TempDir() + "/mss.db"
	s, err := Open(path, Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, c, path
}

// filingAt is testFiling(n) received at t.
func filingAt(n int, t time.Time, recipients ...string) *Filing {
	f := testFiling(n, recipients...)
	f.Received = t
	return f
}

// checkConsistent asserts the invariants a purge must keep, over the
// whole database: every entry points at an existing record; every
// mailbox's counters equal a recount of its entries and UIDNEXT is above
// every UID; every index key points at an existing record; every account's
// usage (quota.go) is the sum of its mailboxes; every claim names a
// record.
func checkConsistent(t *testing.T, s *Store) {
	t.Helper()
	err := s.view(func(tx *bbolt.Tx) error {
		records := tx.Bucket(bucketRecords)
		exists := func(id uint64) bool { return records.Get(be64(id)) != nil }
		for _, b := range [][]byte{bucketRaw} {
			if err := tx.Bucket(b).ForEach(func(k, _ []byte) error {
				if !exists(beUint64(k)) {
					return fmt.Errorf("%s holds key %d without a record", b, beUint64(k))
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketRMeta).ForEach(func(k, _ []byte) error {
			if !exists(beUint64(k)) {
				return fmt.Errorf("rmeta %d without a record", beUint64(k))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, b := range [][]byte{bucketIdxNum, bucketIdxMsgID} {
			if err := tx.Bucket(b).ForEach(func(k, v []byte) error {
				id, _, err := decodeIdx(v)
				if err != nil || !exists(id) {
					return fmt.Errorf("%s key %q points at missing record %d (%v)", b, k, id, err)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		for _, b := range [][]byte{bucketIdxINS, bucketIdxIDNPS} {
			if err := tx.Bucket(b).ForEach(func(k, _ []byte) error {
				if id := beUint64(k[len(k)-8:]); !exists(id) {
					return fmt.Errorf("%s key points at missing record %d", b, id)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if cb := tx.Bucket(bucketClaims); cb != nil {
			if err := cb.ForEach(func(k, _ []byte) error {
				if id := beUint64(k[:8]); !exists(id) {
					return fmt.Errorf("claim of missing record %d", id)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketAccounts).ForEach(func(acct, _ []byte) error {
			ab := tx.Bucket(bucketAccounts).Bucket(acct)
			var sum Usage
			err := ab.Bucket(bucketNames).ForEach(func(name, _ []byte) error {
				bx, err := openBox(ab, string(name))
				if err != nil {
					return err
				}
				var msgs, unseen uint32
				var size int64
				var last uint32
				err = bx.entries.ForEach(func(k, v []byte) error {
					ev, err := decodeEntry(v)
					if err != nil {
						return err
					}
					if !exists(ev.RecordID) {
						return fmt.Errorf("%s %s uid %d points at missing record %d", acct, name, binary.BigEndian.Uint32(k), ev.RecordID)
					}
					msgs++
					size += ev.Size
					if !hasFlag(ev.Flags, flagSeen) {
						unseen++
					}
					last = binary.BigEndian.Uint32(k)
					return nil
				})
				if err != nil {
					return err
				}
				in := bx.info
				if in.Messages != msgs || in.Unseen != unseen || in.Size != size || in.UIDNext <= last {
					return fmt.Errorf("%s %s: info %+v, entries say messages %d unseen %d size %d last uid %d", acct, name, in, msgs, unseen, size, last)
				}
				sum.Messages += uint64(msgs)
				sum.Bytes += size
				return nil
			})
			if err != nil {
				return err
			}
			u, err := readUsage(ab)
			if err != nil {
				return err
			}
			if u != sum {
				return fmt.Errorf("%s: usage %+v, mailboxes hold %+v", acct, u, sum)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("inconsistent store: %v", err)
	}
}

func purgeRecords(t *testing.T, s *Store) []AuditRecord {
	t.Helper()
	var out []AuditRecord
	if _, err := s.AuditVerify(func(r AuditRecord) {
		if r.Kind == AuditPurge {
			out = append(out, r)
		}
	}); err != nil {
		t.Fatalf("audit chain after purge: %v", err)
	}
	return out
}

// TestPurge files old and recent prescriptions, spreads their entries
// (copies, a move, flags, a claim by another account, an old APPEND) and
// purges: everything of the old records goes, nothing of the recent ones,
// counters and usage stay consistent, UIDs go on, the audit says what
// happened without naming a patient.
func TestPurge(t *testing.T) {
	ctx := context.Background()
	old := time.Date(2019, 3, 1, 10, 0, 0, 0, time.UTC)
	recent := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	cutoff := time.Date(2020, 3, 1, 0, 0, 0, 0, time.UTC)
	s, clk, path := openClock(t, old)
	const pharma, nurse, claimer = "pharma@example.org", "nurse@example.org", "gare@example.org"

	var oldIDs, newIDs []uint64
	for i := 1; i <= 4; i++ {
		oldIDs = append(oldIDs, mustFile(t, s, filingAt(i, old.Add(time.Duration(i)*time.Hour), pharma, nurse)).ID)
	}
	for i := 5; i <= 7; i++ {
		newIDs = append(newIDs, mustFile(t, s, filingAt(i, recent, pharma)).ID)
	}
	// An appended draft, stored when the clock said 2019.
	if _, err := s.Append(pharma, "Drafts", []byte("Subject: draft\r\n\r\nold draft\r\n"), nil, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	clk.set(recent)
	if _, err := s.Append(pharma, "Drafts", []byte("Subject: draft\r\n\r\nnew draft\r\n"), nil, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateFlags(pharma, Inbox, []uint32{1, 5}, FlagsAdd, []string{`\Seen`, "$Executed"}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Copy(pharma, Inbox, []uint32{1, 2, 5}, "Archive"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Move(nurse, Inbox, []uint32{3}, "Trash"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Deliver(ctx, oldIDs[1], claimer, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Deliver(ctx, newIDs[0], claimer, nil); err != nil {
		t.Fatal(err)
	}
	before, err := s.Mailboxes(pharma)
	if err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, s)

	ch, cancel := s.Watch(claimer)
	defer cancel()
	n, err := s.Purge(ctx, cutoff, 0)
	if err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if n != 5 { // four filings and the old draft
		t.Fatalf("Purge removed %d records, want 5", n)
	}
	select {
	case c := <-ch:
		if c.Mailbox != Inbox {
			t.Errorf("claimer notified of %+v", c)
		}
	default:
		t.Error("the claimer's watcher was not told its INBOX changed")
	}
	checkConsistent(t, s)
	s = reopen(t, s, path)
	checkConsistent(t, s)

	for i, id := range oldIDs {
		if _, err := s.Record(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("old record %d still there: %v", id, err)
		}
		if _, err := s.Bytes(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("old record %d bytes: %v", id, err)
		}
		if _, err := s.RecordByNumber(testFiling(i + 1).Number); !errors.Is(err, ErrNotFound) {
			t.Errorf("number of old record %d still indexed: %v", id, err)
		}
		if cl, err := s.Claims(id); err != nil || len(cl) != 0 {
			t.Errorf("claims of old record %d: %v, %v", id, cl, err)
		}
	}
	for _, id := range newIDs {
		if _, err := s.Bytes(id); err != nil {
			t.Errorf("recent record %d: %v", id, err)
		}
	}
	if ids, _ := s.RecordsByPatient(testFiling(1).PatientINS); !slices.Equal(ids, newIDs) {
		t.Errorf("patient index %v, want %v", ids, newIDs)
	}
	if ids, _ := s.RecordsByPrescriber(testFiling(1).IDNPS); !slices.Equal(ids, newIDs) {
		t.Errorf("prescriber index %v, want %v", ids, newIDs)
	}
	for _, c := range []struct {
		account, box string
		uids         []uint32
	}{
		{pharma, Inbox, []uint32{5, 6, 7}},
		{pharma, "Archive", []uint32{3}}, // copy of INBOX uid 5
		{pharma, "Drafts", []uint32{2}},
		{nurse, Inbox, nil},
		{nurse, "Trash", nil},
		{claimer, Inbox, []uint32{2}},
	} {
		_, es, err := s.Entries(c.account, c.box)
		if err != nil {
			t.Fatal(err)
		}
		var uids []uint32
		for _, e := range es {
			uids = append(uids, e.UID)
		}
		if !slices.Equal(uids, c.uids) {
			t.Errorf("%s %s holds UIDs %v, want %v", c.account, c.box, uids, c.uids)
		}
	}
	after, _ := s.Mailboxes(pharma)
	for i := range after {
		if after[i].UIDNext != before[i].UIDNext || after[i].UIDValidity != before[i].UIDValidity {
			t.Errorf("%s: UIDNEXT/UIDVALIDITY moved from %d/%d to %d/%d", after[i].Name, before[i].UIDNext, before[i].UIDValidity, after[i].UIDNext, after[i].UIDValidity)
		}
		if after[i].Messages < before[i].Messages && after[i].ModSeq <= before[i].ModSeq {
			t.Errorf("%s lost entries without a new ModSeq", after[i].Name)
		}
	}

	purges := purgeRecords(t, s)
	if len(purges) != 1 {
		t.Fatalf("%d store.purge audit records, want one per batch (1)", len(purges))
	}
	p := purges[0]
	if p.Subject != "records=5 first=1 last=8" || !strings.Contains(p.Detail, "2020-03-01T00:00:00Z") || !strings.Contains(p.Detail, "12 mailbox entries") {
		t.Errorf("purge audit %+v", p)
	}
	for _, secret := range []string{testFiling(1).PatientINS, testFiling(1).Number} {
		if strings.Contains(p.Subject+p.Detail, secret) {
			t.Errorf("purge audit names %q", secret)
		}
	}

	// A purged number can be filed again: new record, new UID.
	res := mustFile(t, s, filingAt(1, recent, pharma))
	if res.Duplicate || res.ID != 10 || res.Entries[0].UID != 8 { // ids 8 and 9 were the drafts
		t.Errorf("refiling a purged number: %+v", res)
	}
	// A second purge with the same cutoff finds nothing and audits nothing.
	if n, err := s.Purge(ctx, cutoff, 0); err != nil || n != 0 {
		t.Errorf("second Purge = %d, %v", n, err)
	}
	if len(purgeRecords(t, s)) != 1 {
		t.Error("an empty purge wrote an audit record")
	}
}

// TestPurgeBoundaryAndBatches: a record received exactly at the cutoff is
// kept; batches get one audit record each, with their own id range.
func TestPurgeBoundaryAndBatches(t *testing.T) {
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _, _ := openClock(t, base)
	for i := 1; i <= 7; i++ {
		mustFile(t, s, filingAt(i, base.Add(time.Duration(i)*time.Minute), "pharma@example.org"))
	}
	cut := base.Add(6 * time.Minute) // records 1..5 are before, 6 is at, 7 after
	n, err := s.Purge(context.Background(), cut, 2)
	if err != nil || n != 5 {
		t.Fatalf("Purge = %d, %v; want 5", n, err)
	}
	if _, err := s.Record(6); err != nil {
		t.Errorf("record received at the cutoff was purged: %v", err)
	}
	var subjects []string
	for _, r := range purgeRecords(t, s) {
		subjects = append(subjects, r.Subject)
	}
	want := []string{"records=2 first=1 last=2", "records=2 first=3 last=4", "records=1 first=5 last=5"}
	if !slices.Equal(subjects, want) {
		t.Errorf("purge audit subjects %q, want %q", subjects, want)
	}
	checkConsistent(t, s)
}

func TestPurgeRefusals(t *testing.T) {
	s, _ := openTemp(t)
	mustFile(t, s, testFiling(1, "pharma@example.org"))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name  string
		ctx   context.Context
		batch int
		want  error
	}{
		{"batch too large", context.Background(), MaxPurgeBatch + 1, ErrInvalid},
		{"cancelled", cancelled, 0, context.Canceled},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := s.Purge(c.ctx, time.Now(), c.batch)
			if !errors.Is(err, c.want) || n != 0 {
				t.Errorf("Purge = %d, %v; want 0, %v", n, err, c.want)
			}
		})
	}
	if _, err := s.Record(1); err != nil {
		t.Errorf("a refused purge removed a record: %v", err)
	}
}

// TestPurgeKeepsOtherMessageID: an index key that points at another
// record stays. File never lets two records share a Message-ID key (the
// second is a replay), so the record is edited by hand to claim the first
// one's Message-ID: the purge must check where the key points, not trust
// the record.
func TestPurgeKeepsOtherMessageID(t *testing.T) {
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _, _ := openClock(t, base)
	f1 := filingAt(1, base.Add(time.Hour), "pharma@example.org")
	r1 := mustFile(t, s, f1)
	r2 := mustFile(t, s, filingAt(2, base, "pharma@example.org"))
	err := s.db.Update(func(tx *bbolt.Tx) error {
		rec, err := getRecord(tx, r2.ID)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketIdxMsgID).Delete(msgIDKey(rec.Sender, rec.MessageID)); err != nil {
			return err
		}
		rec.MessageID = f1.MessageID
		return tx.Bucket(bucketRecords).Put(be64(r2.ID), encodeRecord(rec))
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Purge(context.Background(), base.Add(time.Minute), 0); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	if _, err := s.Record(r2.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record %d not purged", r2.ID)
	}
	// A resend of f1 found by its Message-ID alone is still a duplicate.
	resend := *f1
	resend.Number = ""
	if res := mustFile(t, s, &resend); !res.Duplicate || res.ID != r1.ID {
		t.Errorf("resend of the kept filing: %+v", res)
	}
	checkConsistent(t, s)
}

// TestPurgeEntriesCreatedMeanwhile runs the steps of a purge by hand and
// copies an old message into a mailbox between finding the entries and
// deleting them, once into an existing mailbox and once into a new one,
// and claims it for an account that held nothing: no entry may be left
// pointing at the purged record.
func TestPurgeEntriesCreatedMeanwhile(t *testing.T) {
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _, _ := openClock(t, base)
	const pharma, late = "pharma@example.org", "late@example.org"
	old := mustFile(t, s, filingAt(1, base, pharma))
	mustFile(t, s, filingAt(2, base.Add(48*time.Hour), pharma))
	cut := base.Add(time.Hour)

	c, err := s.purgeCandidates(1, cut)
	if err != nil || !slices.Equal(c.ids, []uint64{old.ID}) || !c.done {
		t.Fatalf("candidates %+v, %v", c, err)
	}
	em, err := s.findEntries(c.ids, c.accounts)
	if err != nil || len(em.locs[old.ID]) != 1 {
		t.Fatalf("entries %+v, %v", em, err)
	}
	if _, _, _, err := s.Copy(pharma, Inbox, []uint32{1}, "Archive"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateMailbox(pharma, "Old"); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Copy(pharma, "Archive", []uint32{1}, "Old"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Deliver(context.Background(), old.ID, late, nil); err != nil {
		t.Fatal(err)
	}
	n, err := s.purgeBatch(c.ids, cut, em)
	if err != nil || n != 1 {
		t.Fatalf("purgeBatch = %d, %v", n, err)
	}
	checkConsistent(t, s)
	for _, b := range []struct{ account, box string }{{pharma, "Archive"}, {pharma, "Old"}, {late, Inbox}} {
		if info, err := s.Mailbox(b.account, b.box); err != nil || info.Messages != 0 {
			t.Errorf("%s %s after purge: %+v, %v", b.account, b.box, info, err)
		}
	}
}

// TestRunRetention drives the loop with an injected clock: the first purge
// runs at once with the cutoff computed from the store's clock, and the
// loop returns when its context ends.
func TestRunRetention(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	s, _, _ := openClock(t, now)
	mustFile(t, s, filingAt(1, now.AddDate(-5, 0, -1), "pharma@example.org"))
	mustFile(t, s, filingAt(2, now.AddDate(-5, 0, 1), "pharma@example.org"))

	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		n   int
		err error
	}
	results := make(chan result, 1)
	var cutoffs []time.Time
	done := make(chan error, 1)
	go func() {
		done <- s.RunRetention(ctx, RetentionPolicy{
			Cutoff:   func(t time.Time) time.Time { cutoffs = append(cutoffs, t); return t.AddDate(-5, 0, 0) },
			Interval: time.Hour,
			After:    func(n int, err error) { results <- result{n, err} },
		}, nil)
	}()
	select {
	case r := <-results:
		if r.err != nil || r.n != 1 {
			t.Errorf("first run purged %d, %v; want 1", r.n, r.err)
		}
	case <-time.After(time.Minute): // a guard against a hang, not a timing assertion
		t.Fatal("RunRetention did not purge at start")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunRetention returned %v after cancel", err)
	}
	if len(cutoffs) != 1 || !cutoffs[0].Equal(now) {
		t.Errorf("cutoff computed from %v, want the store clock %v", cutoffs, now)
	}
	if _, err := s.Record(2); err != nil {
		t.Errorf("record inside the retention period purged: %v", err)
	}
	if err := s.RunRetention(context.Background(), RetentionPolicy{}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("RunRetention without a cutoff: %v", err)
	}
}

// TestPurgeCorruptRecord: a record that does not decode cannot be dated,
// so it is kept and reported, and does not stop the others' purge.
func TestPurgeCorruptRecord(t *testing.T) {
	base := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _, _ := openClock(t, base)
	for i := 1; i <= 3; i++ {
		mustFile(t, s, filingAt(i, base, "pharma@example.org"))
	}
	if err := s.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketRecords).Put(be64(2), []byte{1, 0xff})
	}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Purge(context.Background(), base.Add(time.Hour), 0)
	if n != 2 || !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "record 2") {
		t.Fatalf("Purge = %d, %v; want 2 and an error naming record 2", n, err)
	}
	if err := s.view(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketRecords).Get(be64(2)) == nil || tx.Bucket(bucketRaw).Get(be64(2)) == nil {
			return errors.New("the undecodable record was removed")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

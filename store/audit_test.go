package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"go.etcd.io/bbolt"
)

func auditEv(i int) AuditEvent {
	return AuditEvent{
		Time:    time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
		Kind:    AuditAuthOK,
		Actor:   "pharmacie@example.org",
		Remote:  "192.0.2.7:51234",
		Subject: fmt.Sprintf("event=%d", i),
		Outcome: "235 2.7.0",
		Detail:  "imap login",
	}
}

func mustAudit(t testing.TB, s *Store, evs ...AuditEvent) {
	t.Helper()
	if err := s.Audit(context.Background(), evs...); err != nil {
		t.Fatalf("Audit: %v", err)
	}
}

// verifyAll runs AuditVerify and returns the records it reported intact.
func verifyAll(t testing.TB, s *Store) ([]AuditRecord, error) {
	t.Helper()
	var recs []AuditRecord
	n, err := s.AuditVerify(func(r AuditRecord) { recs = append(recs, r) })
	if n != uint64(len(recs)) {
		t.Fatalf("AuditVerify returned n=%d but reported %d records", n, len(recs))
	}
	return recs, err
}

func TestAuditEmpty(t *testing.T) {
	s, _ := openTemp(t)
	n, err := s.AuditVerify(nil)
	if n != 0 || err != nil {
		t.Fatalf("empty trail: n=%d err=%v", n, err)
	}
	if seq, _, err := s.AuditHead(); seq != 0 || err != nil {
		t.Fatalf("empty head: %d %v", seq, err)
	}
	mustAudit(t, s) // no events: no-op
	if s.Stats().Commits != 0 {
		t.Error("Audit with no events committed")
	}
}

// TestAuditConcurrent appends from 32 goroutines at once: every event is
// in the trail exactly once, the chain verifies, and commits are shared
// (never more than one per call).
func TestAuditConcurrent(t *testing.T) {
	s, _ := openTemp(t)
	const workers, calls = 32, 20
	var wg sync.WaitGroup
	var fails atomic.Int32
	before := s.Stats().Commits
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range calls {
				// Every third call carries two events.
				evs := []AuditEvent{auditEv(g*1000 + 2*c)}
				if c%3 == 0 {
					evs = append(evs, auditEv(g*1000+2*c+1))
				}
				if err := s.Audit(context.Background(), evs...); err != nil {
					t.Error(err)
					fails.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	if fails.Load() > 0 {
		t.FailNow()
	}
	want := workers * (calls + (calls+2)/3)
	recs, err := verifyAll(t, s)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if len(recs) != want {
		t.Fatalf("%d records, want %d", len(recs), want)
	}
	seen := make(map[string]bool)
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i+1, r.Seq)
		}
		if seen[r.Subject] {
			t.Fatalf("event %q recorded twice", r.Subject)
		}
		seen[r.Subject] = true
	}
	if commits := s.Stats().Commits - before; commits > workers*calls {
		t.Errorf("%d commits for %d calls", commits, workers*calls)
	}
	seq, hash, err := s.AuditHead()
	if err != nil || seq != uint64(want) || hash != recs[len(recs)-1].Hash {
		t.Errorf("head %d %x %v, want %d and the last record's hash", seq, hash[:4], err, want)
	}
}

// TestAuditRetryAfterRollback batches audit appends with an operation
// that fails after writing: the batch is rolled back and run again, and the
// appends must recompute their hashes from the head they then see.
func TestAuditRetryAfterRollback(t *testing.T) {
	s, _ := openTemp(t)
	mustAudit(t, s, auditEv(0))
	release, leaderDone := blockLeader(t, s)
	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 9)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 4 {
				errs[i] = s.write(0, func(w *wtx) error {
					w.mark()
					if err := appendAudit(w, []AuditEvent{auditEv(999)}); err != nil {
						return err
					}
					return errBoom // after writing: forces a rollback
				})
				return
			}
			errs[i] = s.Audit(context.Background(), auditEv(i+1))
		}()
		waitPending(s, i+1) // queue in order: the failing op in the middle
	}
	release()
	wg.Wait()
	if err := <-leaderDone; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if i == 4 {
			if !errors.Is(err, errBoom) {
				t.Errorf("failing op: %v", err)
			}
		} else if err != nil {
			t.Errorf("audit %d: %v", i, err)
		}
	}
	recs, err := verifyAll(t, s)
	if err != nil {
		t.Fatalf("verify after a rolled-back batch: %v", err)
	}
	if len(recs) != 1+8 {
		t.Fatalf("%d records, want 9", len(recs))
	}
	for _, r := range recs {
		if r.Subject == "event=999" {
			t.Error("the rolled-back operation's event was kept")
		}
	}
}

func TestAuditReopen(t *testing.T) {
	s, path := openTemp(t)
	for i := range 5 {
		mustAudit(t, s, auditEv(i))
	}
	s = reopen(t, s, path)
	mustAudit(t, s, auditEv(5), auditEv(6))
	recs, err := verifyAll(t, s)
	if err != nil || len(recs) != 7 {
		t.Fatalf("after reopen: %d records, %v", len(recs), err)
	}
	if recs[5].Prev != recs[4].Hash || recs[6].Seq != 7 {
		t.Error("the chain did not continue across the reopen")
	}
	if !recs[6].Time.Equal(auditEv(6).Time) || recs[6].Kind != AuditAuthOK || recs[6].Actor != "pharmacie@example.org" ||
		recs[6].Remote != "192.0.2.7:51234" || recs[6].Outcome != "235 2.7.0" || recs[6].Detail != "imap login" {
		t.Errorf("record read back differs: %+v", recs[6].AuditEvent)
	}
}

// TestAuditWithFiling: the events of a Filing commit with it, get the
// record id, and nothing is appended for a duplicate, a replay or an
// invalid event.
func TestAuditWithFiling(t *testing.T) {
	s, _ := openTemp(t)
	accept := AuditEvent{Kind: AuditSMTPAccept, Actor: "dr@example.org", Remote: "198.51.100.2:4000", Subject: "rx=RX00000001", Outcome: "250 2.0.0"}
	f := testFiling(1, acct)
	f.Audit = []AuditEvent{accept}
	res := mustFile(t, s, f)
	recs, err := verifyAll(t, s)
	if err != nil || len(recs) != 1 {
		t.Fatalf("after filing: %d records, %v", len(recs), err)
	}
	wantSubj := fmt.Sprintf("record=%d rx=RX00000001", res.ID)
	if recs[0].Subject != wantSubj || recs[0].Kind != AuditSMTPAccept || recs[0].Time.IsZero() {
		t.Errorf("audit record %+v, want subject %q and a time", recs[0].AuditEvent, wantSubj)
	}
	if f.Audit[0].Subject != "rx=RX00000001" {
		t.Error("File modified the caller's events")
	}

	cases := []struct {
		name    string
		filing  func() *Filing
		wantErr error
	}{
		{"resend (duplicate)", func() *Filing { return testFiling(1, acct) }, nil},
		{"replay of the number", func() *Filing {
			g := testFiling(1, acct)
			g.Raw = append(g.Raw, "forged"...)
			g.Digest = sha256.Sum256(g.Raw)
			g.MessageID = "<other@example.org>"
			return g
		}, ErrReplay},
		{"invalid kind", func() *Filing { return testFiling(2, acct) }, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := tc.filing()
			g.Audit = []AuditEvent{accept}
			if tc.wantErr == ErrInvalid {
				g.Audit = []AuditEvent{{Kind: "SMTP Accept"}}
			}
			out, err := s.File(context.Background(), g)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
			} else if err != nil || !out.Duplicate {
				t.Fatalf("want a duplicate, got %+v %v", out, err)
			}
			if n, err := s.AuditVerify(nil); n != 1 || err != nil {
				t.Errorf("trail has %d records (%v), want still 1", n, err)
			}
		})
	}
	if _, err := s.RecordByNumber(testFiling(2).Number); !errors.Is(err, ErrNotFound) {
		t.Errorf("filing with an invalid audit event was filed: %v", err)
	}
}

// TestAuditDuplicateInBatch: a resend queued in the same batch as the
// first filing is answered inside the transaction (not the fast path) and
// must not append its events either.
func TestAuditDuplicateInBatch(t *testing.T) {
	s, _ := openTemp(t)
	release, leaderDone := blockLeader(t, s)
	var wg sync.WaitGroup
	outs := make([]*Filed, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := testFiling(7, acct)
			f.Audit = []AuditEvent{{Kind: AuditSMTPAccept, Subject: fmt.Sprintf("try=%d", i)}}
			outs[i], errs[i] = s.File(context.Background(), f)
		}()
		waitPending(s, i+1)
	}
	release()
	wg.Wait()
	if err := <-leaderDone; err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[1] != nil || outs[0].Duplicate || !outs[1].Duplicate {
		t.Fatalf("filings: %+v %v / %+v %v", outs[0], errs[0], outs[1], errs[1])
	}
	recs, err := verifyAll(t, s)
	if err != nil || len(recs) != 1 || !strings.HasSuffix(recs[0].Subject, "try=0") {
		t.Fatalf("trail %+v %v: want only the first filing's event", recs, err)
	}
}

func TestAuditNormalise(t *testing.T) {
	s, _ := openTemp(t)
	for _, kind := range []string{"", "Smtp.accept", "smtp..accept", ".smtp", "smtp.", "smtp_accept", "smtp accept", "smtp.accept\n", strings.Repeat("a", MaxAuditKindBytes+1)} {
		if err := s.Audit(context.Background(), AuditEvent{Kind: kind}); !errors.Is(err, ErrInvalid) {
			t.Errorf("kind %q: err %v, want ErrInvalid", kind, err)
		}
	}
	if err := s.Audit(context.Background(), make([]AuditEvent, MaxAuditEvents+1)...); !errors.Is(err, ErrTooLarge) {
		t.Errorf("too many events: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Audit(ctx, auditEv(0)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}

	long := strings.Repeat("é", MaxAuditFieldBytes) // 2 bytes a rune: the cut falls inside one
	mustAudit(t, s, AuditEvent{
		Kind: "admin.rx.show", Actor: "", Remote: "a\r\nb\x00c\u0085d", Subject: long, Outcome: "\xff\xfe", Detail: "ok",
	})
	recs, err := verifyAll(t, s)
	if err != nil || len(recs) != 1 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	r := recs[0]
	if r.Actor != "-" {
		t.Errorf("empty actor stored as %q, want -", r.Actor)
	}
	if r.Remote != "a  b c d" {
		t.Errorf("control characters kept: %q", r.Remote)
	}
	if len(r.Subject) > MaxAuditFieldBytes || !strings.HasSuffix(r.Subject, "…") || !utf8.ValidString(r.Subject) {
		t.Errorf("long field: %d bytes, valid UTF-8 %v", len(r.Subject), utf8.ValidString(r.Subject))
	}
	if r.Outcome != "\uFFFD" && r.Outcome != "\uFFFD\uFFFD" {
		t.Errorf("invalid UTF-8 stored as %q", r.Outcome)
	}
}

// TestAuditEncodingKnownAnswer pins the canonical encoding documented for
// external verifiers, built here independently of auditBody.
func TestAuditEncodingKnownAnswer(t *testing.T) {
	ev := AuditEvent{Time: time.Unix(1740823200, 123456789), Kind: "smtp.refuse", Actor: "dr@example.org",
		Remote: "192.0.2.1:25", Subject: "rx=RX1", Outcome: "554 5.7.7 sig_integrity", Detail: ""}
	var want bytes.Buffer
	want.WriteByte(1)
	_ = binary.Write(&want, binary.BigEndian, uint64(42))
	_ = binary.Write(&want, binary.BigEndian, int64(1740823200))
	_ = binary.Write(&want, binary.BigEndian, uint32(123456789))
	for _, f := range []string{ev.Kind, ev.Actor, ev.Remote, ev.Subject, ev.Outcome, ev.Detail} {
		_ = binary.Write(&want, binary.BigEndian, uint32(len(f)))
		want.WriteString(f)
	}
	body := auditBody(42, &ev)
	if !bytes.Equal(body, want.Bytes()) {
		t.Fatalf("body\n%x\nwant\n%x", body, want.Bytes())
	}
	var prev [32]byte
	prev[0] = 0xab
	h := sha256.Sum256(append(prev[:], want.Bytes()...))
	if auditHash(prev, body) != h {
		t.Error("hash is not SHA-256(prev || body)")
	}
}

// ---- tampering ----

// tamperBase makes a store with n audit events and returns its closed file.
func tamperBase(t *testing.T, n int) string {
	t.Helper()
	s, path := openTemp(t)
	for i := 0; i < n; i += MaxAuditEvents {
		evs := make([]AuditEvent, 0, MaxAuditEvents)
		for j := i; j < n && j < i+MaxAuditEvents; j++ {
			evs = append(evs, auditEv(j))
		}
		mustAudit(t, s, evs...)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// tamperCopy copies the database, changes it with raw bbolt as an intruder
// with write access would, and opens the copy as a Store.
func tamperCopy(t *testing.T, base string, change func(tx *bbolt.Tx) error) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tampered.db")
	copyFile(t, base, path)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(change); err != nil {
		t.Fatalf("tampering: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func auditBucket(tx *bbolt.Tx) *bbolt.Bucket { return tx.Bucket(bucketAudit) }

func getCopyTx(tx *bbolt.Tx, seq uint64) []byte {
	return append([]byte(nil), auditBucket(tx).Get(be64(seq))...)
}

// rewrite replaces record seq's subject and gives it a fresh, correct hash
// (an intruder who knows the algorithm), without touching later records.
func rewrite(tx *bbolt.Tx, seq uint64, subject string) (AuditRecord, error) {
	rec, _, err := decodeAuditValue(auditBucket(tx).Get(be64(seq)))
	if err != nil {
		return rec, err
	}
	rec.Subject = subject
	body := auditBody(seq, &rec.AuditEvent)
	rec.Hash = auditHash(rec.Prev, body)
	v := append(append(append([]byte(nil), body...), rec.Prev[:]...), rec.Hash[:]...)
	return rec, auditBucket(tx).Put(be64(seq), v)
}

func TestAuditTamper(t *testing.T) {
	const n = 10
	base := tamperBase(t, n)
	cases := []struct {
		name   string
		change func(tx *bbolt.Tx) error
		seq    uint64
		reason string
	}{
		{"one byte of a record changed", func(tx *bbolt.Tx) error {
			v := getCopyTx(tx, 5)
			i := bytes.Index(v, []byte("event=4"))
			v[i+6] = '8'
			return auditBucket(tx).Put(be64(5), v)
		}, 5, AuditAltered},
		{"middle record deleted", func(tx *bbolt.Tx) error {
			return auditBucket(tx).Delete(be64(5))
		}, 5, AuditMissing},
		{"two records swapped", func(tx *bbolt.Tx) error {
			a, b := getCopyTx(tx, 4), getCopyTx(tx, 7)
			if err := auditBucket(tx).Put(be64(4), b); err != nil {
				return err
			}
			return auditBucket(tx).Put(be64(7), a)
		}, 4, AuditReordered},
		{"last record deleted", func(tx *bbolt.Tx) error {
			return auditBucket(tx).Delete(be64(n))
		}, n, AuditMissing},
		{"last three records deleted", func(tx *bbolt.Tx) error {
			for seq := uint64(n - 2); seq <= n; seq++ {
				if err := auditBucket(tx).Delete(be64(seq)); err != nil {
					return err
				}
			}
			return nil
		}, n - 2, AuditMissing},
		{"all records deleted", func(tx *bbolt.Tx) error {
			for seq := uint64(1); seq <= n; seq++ {
				if err := auditBucket(tx).Delete(be64(seq)); err != nil {
					return err
				}
			}
			return nil
		}, 1, AuditMissing},
		{"audit bucket dropped", func(tx *bbolt.Tx) error {
			return tx.DeleteBucket(bucketAudit)
		}, 1, AuditMissing},
		{"first record deleted", func(tx *bbolt.Tx) error {
			return auditBucket(tx).Delete(be64(1))
		}, 1, AuditMissing},
		{"record rewritten with a fresh hash", func(tx *bbolt.Tx) error {
			_, err := rewrite(tx, 5, "event=forged")
			return err
		}, 6, AuditAltered},
		{"last record rewritten with a fresh hash", func(tx *bbolt.Tx) error {
			_, err := rewrite(tx, n, "event=forged")
			return err
		}, n, AuditHeadMismatch},
		{"record moved to the end", func(tx *bbolt.Tx) error {
			v := getCopyTx(tx, n)
			if err := auditBucket(tx).Delete(be64(n)); err != nil {
				return err
			}
			return auditBucket(tx).Put(be64(n+1), v)
		}, n, AuditMissing},
		{"forged record appended without the head", func(tx *bbolt.Tx) error {
			last, _, err := decodeAuditValue(auditBucket(tx).Get(be64(n)))
			if err != nil {
				return err
			}
			ev := auditEv(99)
			body := auditBody(n+1, &ev)
			h := auditHash(last.Hash, body)
			return auditBucket(tx).Put(be64(n+1), append(append(body, last.Hash[:]...), h[:]...))
		}, n + 1, AuditHeadMismatch},
		{"head deleted", func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketMeta).Delete(keyAuditHead)
		}, n, AuditHeadMismatch},
		{"head hash changed", func(tx *bbolt.Tx) error {
			v := append([]byte(nil), tx.Bucket(bucketMeta).Get(keyAuditHead)...)
			v[20] ^= 1
			return tx.Bucket(bucketMeta).Put(keyAuditHead, v)
		}, n, AuditHeadMismatch},
		{"head truncated", func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyAuditHead, []byte{1, 2, 3})
		}, n, AuditHeadMismatch},
		{"value truncated", func(tx *bbolt.Tx) error {
			return auditBucket(tx).Put(be64(3), getCopyTx(tx, 3)[:40])
		}, 3, AuditAltered},
		{"stray key in the bucket", func(tx *bbolt.Tx) error {
			return auditBucket(tx).Put([]byte{0, 0, 0, 0, 0, 0, 0, 5, 1}, []byte("x"))
		}, 6, AuditAltered},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tamperCopy(t, base, tc.change)
			recs, err := verifyAll(t, s)
			var brk *AuditBreak
			if !errors.As(err, &brk) {
				t.Fatalf("verify: %v, want an *AuditBreak", err)
			}
			if brk.Seq != tc.seq || brk.Reason != tc.reason {
				t.Fatalf("break %v; want record %d %s", brk, tc.seq, tc.reason)
			}
			// Everything before the break was reported intact, in order.
			if tc.reason != AuditHeadMismatch && uint64(len(recs)) != tc.seq-1 {
				t.Errorf("%d records reported before a break at %d", len(recs), tc.seq)
			}
		})
	}
}

// TestAuditEveryByte flips each byte of one record in turn: every change
// is detected at that record.
func TestAuditEveryByte(t *testing.T) {
	base := tamperBase(t, 4)
	path := filepath.Join(t.TempDir(), "t.db")
	copyFile(t, base, path)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var orig []byte
	if err := db.View(func(tx *bbolt.Tx) error { orig = getCopyTx(tx, 2); return nil }); err != nil {
		t.Fatal(err)
	}
	s := &Store{db: db} // enough for the read path (view)
	for i := range orig {
		v := append([]byte(nil), orig...)
		v[i] ^= 0x01
		if err := db.Update(func(tx *bbolt.Tx) error { return auditBucket(tx).Put(be64(2), v) }); err != nil {
			t.Fatal(err)
		}
		_, err := s.AuditVerify(nil)
		var brk *AuditBreak
		if !errors.As(err, &brk) || brk.Seq != 2 || brk.Reason != AuditAltered {
			t.Fatalf("byte %d flipped: %v, want record 2 altered", i, err)
		}
	}
}

// TestAuditRewriteUndetectable documents the limit stated in
// docs/security-model.md: with write access and no secret, a rewrite of
// the records from some point on plus the head verifies. Only an export
// kept elsewhere (its hashes) reveals it.
func TestAuditRewriteUndetectable(t *testing.T) {
	base := tamperBase(t, 6)
	var exported [32]byte
	func() {
		s, err := Open(base, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, exported, _ = s.AuditHead()
	}()
	s := tamperCopy(t, base, func(tx *bbolt.Tx) error {
		rec, err := rewrite(tx, 3, "event=forged")
		if err != nil {
			return err
		}
		prev := rec.Hash
		for seq := uint64(4); seq <= 6; seq++ {
			r, _, err := decodeAuditValue(auditBucket(tx).Get(be64(seq)))
			if err != nil {
				return err
			}
			body := auditBody(seq, &r.AuditEvent)
			h := auditHash(prev, body)
			if err := auditBucket(tx).Put(be64(seq), append(append(body, prev[:]...), h[:]...)); err != nil {
				return err
			}
			prev = h
		}
		return tx.Bucket(bucketMeta).Put(keyAuditHead, encodeAuditHead(auditHead{Seq: 6, Hash: prev}))
	})
	if n, err := s.AuditVerify(nil); err != nil || n != 6 {
		t.Fatalf("consistent rewrite: n=%d err=%v (the limit changed: update the docs)", n, err)
	}
	if _, head, _ := s.AuditHead(); head == exported {
		t.Fatal("rewrite kept the head hash: an external copy of it could not reveal the rewrite")
	}
}

// TestAuditAppendAfterTamper: appending after the last record or the head
// was removed never overwrites a record, and verify still reports the
// break.
func TestAuditAppendAfterTamper(t *testing.T) {
	base := tamperBase(t, 5)
	cases := []struct {
		name   string
		change func(tx *bbolt.Tx) error
		seq    uint64
		reason string
	}{
		{"last record deleted", func(tx *bbolt.Tx) error { return auditBucket(tx).Delete(be64(5)) }, 5, AuditMissing},
		{"head deleted", func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyAuditHead) }, 6, AuditAltered},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tamperCopy(t, base, tc.change)
			mustAudit(t, s, auditEv(100))
			_, err := s.AuditVerify(nil)
			var brk *AuditBreak
			if !errors.As(err, &brk) || brk.Seq != tc.seq || brk.Reason != tc.reason {
				t.Fatalf("verify: %v; want record %d %s", err, tc.seq, tc.reason)
			}
			var first string
			if err := s.AuditSince(time.Time{}, func(r AuditRecord) error {
				if r.Seq == 1 {
					first = r.Subject
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if first != "event=0" {
				t.Errorf("record 1 is now %q: overwritten", first)
			}
		})
	}
}

// TestAuditLong crosses the chunk size of the walks.
func TestAuditLong(t *testing.T) {
	n := auditChunk + 100
	base := tamperBase(t, n)
	s, err := Open(base, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.AuditVerify(nil); err != nil || got != uint64(n) {
		t.Fatalf("verify: %d %v, want %d", got, err, n)
	}
	cnt, last := 0, uint64(0)
	err = s.AuditSince(auditEv(100).Time, func(r AuditRecord) error {
		if r.Seq <= last {
			t.Fatalf("out of order: %d after %d", r.Seq, last)
		}
		last = r.Seq
		cnt++
		return nil
	})
	if err != nil || cnt != n-100 {
		t.Fatalf("since: %d records (%v), want %d", cnt, err, n-100)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := tamperCopy(t, base, func(tx *bbolt.Tx) error { return auditBucket(tx).Delete(be64(auditChunk + 1)) })
	var brk *AuditBreak
	if _, err := s2.AuditVerify(nil); !errors.As(err, &brk) || brk.Seq != auditChunk+1 || brk.Reason != AuditMissing {
		t.Fatalf("deletion after the first chunk: %v", err)
	}
}

func TestAuditSince(t *testing.T) {
	s, _ := openTemp(t)
	for i := range 10 {
		mustAudit(t, s, auditEv(i))
	}
	// A late event with an earlier time: time need not follow seq.
	mustAudit(t, s, auditEv(2))
	var got []uint64
	if err := s.AuditSince(auditEv(5).Time, func(r AuditRecord) error { got = append(got, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[6 7 8 9 10]" {
		t.Errorf("since event 5: %v", got)
	}
	stop := errors.New("stop")
	calls := 0
	err := s.AuditSince(time.Time{}, func(AuditRecord) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("fn error: %v after %d calls", err, calls)
	}
}

func FuzzAuditDecode(f *testing.F) {
	ev := auditEv(1)
	body := auditBody(1, &ev)
	var zero [32]byte
	h := auditHash(zero, body)
	f.Add(append(append(body, zero[:]...), h[:]...))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, v []byte) {
		rec, hashOK, err := decodeAuditValue(v)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes: no two values
		// share a content, so every byte is covered by the hash.
		again := append(append(auditBody(rec.Seq, &rec.AuditEvent), rec.Prev[:]...), rec.Hash[:]...)
		if !bytes.Equal(again, v) {
			t.Fatalf("decoded value re-encodes differently:\n%x\n%x", v, again)
		}
		if hashOK != (auditHash(rec.Prev, again[:len(again)-64]) == rec.Hash) {
			t.Fatal("hashOK disagrees with the hash")
		}
	})
}

func FuzzAuditClean(f *testing.F) {
	f.Add("a\r\nb")
	f.Add(strings.Repeat("é", 600))
	f.Add("\xc2\x85\xff")
	f.Fuzz(func(t *testing.T, s string) {
		c := cleanAuditField(s)
		if len(c) > MaxAuditFieldBytes || !validText(c) {
			t.Fatalf("cleanAuditField(%q) = %q", s, c)
		}
		if validText(s) && len(s) <= MaxAuditFieldBytes && c != s {
			t.Fatalf("clean field changed: %q → %q", s, c)
		}
	})
}

// BenchmarkAudit appends single events from 1 and 32 concurrent callers
// and reports events/s and commits per event (each commit is two
// fdatasyncs).
func BenchmarkAudit(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s, _ := openTemp(b)
			before := s.Stats().Commits
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						ev := AuditEvent{Kind: AuditIMAPFetch, Actor: "pharmacie@example.org", Remote: "192.0.2.7:51234",
							Subject: fmt.Sprintf("record=%d mbox=INBOX uid=%d", i, i), Outcome: "OK"}
						if err := s.Audit(context.Background(), ev); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(s.Stats().Commits-before)/float64(b.N), "commits/event")
			if n, err := s.AuditVerify(nil); err != nil || n != uint64(b.N) {
				b.Fatalf("verify: %d %v", n, err)
			}
		})
	}
}

// BenchmarkAuditVerify walks a 100,000-record trail (records/s of
// AuditVerify: decode, SHA-256, link and head checks).
func BenchmarkAuditVerify(b *testing.B) {
	s, _ := openTemp(b)
	const n = 100_000
	evs := make([]AuditEvent, 0, MaxAuditEvents)
	for i := range n {
		evs = append(evs, auditEv(i))
		if len(evs) == MaxAuditEvents || i == n-1 {
			mustAudit(b, s, evs...)
			evs = evs[:0]
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if got, err := s.AuditVerify(nil); err != nil || got != n {
			b.Fatal(got, err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

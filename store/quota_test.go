package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// fixedQuota gives every account the same limits.
func fixedQuota(maxBytes int64, maxMessages uint32) QuotaFunc {
	return func(string) (int64, uint32) { return maxBytes, maxMessages }
}

// recount adds up the account's entries one by one: what the usage
// counter must always equal.
func recount(t *testing.T, s *Store, account string) Usage {
	t.Helper()
	boxes, err := s.Mailboxes(account)
	if err != nil {
		t.Fatal(err)
	}
	var u Usage
	for _, b := range boxes {
		info, entries, err := s.Entries(account, b.Name)
		if err != nil {
			t.Fatal(err)
		}
		if uint32(len(entries)) != info.Messages {
			t.Fatalf("%s: %d entries, info says %d", b.Name, len(entries), info.Messages)
		}
		var size int64
		for _, e := range entries {
			size += e.Size
		}
		if size != info.Size {
			t.Fatalf("%s: entries hold %d bytes, info says %d", b.Name, size, info.Size)
		}
		u.Messages += uint64(len(entries))
		u.Bytes += size
	}
	return u
}

func checkUsage(t *testing.T, s *Store, account string) Usage {
	t.Helper()
	got, err := s.Usage(account)
	if err != nil {
		t.Fatal(err)
	}
	if want := recount(t, s, account); got != want {
		t.Fatalf("usage counter %+v, recount %+v", got, want)
	}
	return got
}

func msgOf(size int) []byte {
	head := "Subject: q\r\n\r\n"
	return []byte(head + strings.Repeat("x", size-len(head)))
}

// TestQuotaLimits: under, exactly at and over each limit, for each
// operation that adds entries. The account holds 2 messages of 100 bytes
// before the operation under test.
func TestQuotaLimits(t *testing.T) {
	type op func(s *Store) error
	fileOne := func(size int) op {
		return func(s *Store) error {
			f := testFiling(99, acct)
			f.Raw = msgOf(size)
			_, err := s.File(context.Background(), f)
			return err
		}
	}
	appendOne := func(size int) op {
		return func(s *Store) error {
			_, err := s.Append(acct, "Drafts", msgOf(size), nil, time.Time{}, nil)
			return err
		}
	}
	copyBoth := func(s *Store) error { // copies the two 100-byte messages
		_, _, _, err := s.Copy(acct, Inbox, []uint32{1, 2}, "Archive")
		return err
	}
	tests := []struct {
		name     string
		maxBytes int64
		maxMsgs  uint32
		op       op
		over     bool
	}{
		{"file under message limit", 0, 4, fileOne(100), false},
		{"file at message limit", 0, 3, fileOne(100), false},
		{"file over message limit", 0, 2, fileOne(100), true},
		{"file under byte limit", 400, 0, fileOne(100), false},
		{"file at byte limit", 300, 0, fileOne(100), false},
		{"file over byte limit", 299, 0, fileOne(100), true},
		{"append under message limit", 0, 4, appendOne(50), false},
		{"append at message limit", 0, 3, appendOne(50), false},
		{"append over message limit", 0, 2, appendOne(50), true},
		{"append at byte limit", 250, 0, appendOne(50), false},
		{"append over byte limit", 249, 0, appendOne(50), true},
		{"copy under message limit", 0, 5, copyBoth, false},
		{"copy at message limit", 0, 4, copyBoth, false},
		{"copy over message limit", 0, 3, copyBoth, true},
		{"copy at byte limit", 400, 0, copyBoth, false},
		{"copy over byte limit", 399, 0, copyBoth, true},
		{"both limits, bytes over", 399, 100, copyBoth, true},
		{"no limit", 0, 0, copyBoth, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTemp(t)
			if err := s.EnsureAccount(acct); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if _, err := s.Append(acct, Inbox, msgOf(100), nil, time.Time{}, nil); err != nil {
					t.Fatalf("setup %d: %v", i, err)
				}
			}
			s.SetQuota(fixedQuota(tc.maxBytes, tc.maxMsgs))
			before := checkUsage(t, s, acct)
			commits := s.Stats().Commits
			err := tc.op(s)
			after := checkUsage(t, s, acct)
			if !tc.over {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if after == before {
					t.Fatalf("nothing added: usage %+v", after)
				}
				return
			}
			if !errors.Is(err, ErrOverQuota) {
				t.Fatalf("err = %v, want ErrOverQuota", err)
			}
			var qe *QuotaError
			if !errors.As(err, &qe) || qe.Account != acct || !strings.Contains(err.Error(), acct) {
				t.Fatalf("error %v does not name the account", err)
			}
			if after != before || s.Stats().Commits != commits {
				t.Fatalf("refused operation wrote: usage %+v → %+v, commits %d → %d", before, after, commits, s.Stats().Commits)
			}
		})
	}
}

// TestQuotaFilingAllOrNothing: a filing for two recipients, one of them
// full, files nothing at all (no record, no index, no entry), so that the
// sender's retry after 452 cannot be a replay or a duplicate.
func TestQuotaFilingAllOrNothing(t *testing.T) {
	s, _ := openTemp(t)
	const full, roomy = "full@example.org", "roomy@example.org"
	s.SetQuota(func(a string) (int64, uint32) {
		if a == full {
			return 0, 1
		}
		return 0, 0
	})
	mustFile(t, s, testFiling(1, full))
	f := testFiling(2, roomy, full)
	_, err := s.File(context.Background(), f)
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Account != full || qe.MaxMessages != 1 || qe.Messages != 1 {
		t.Fatalf("err = %v (%+v), want QuotaError for %s", err, qe, full)
	}
	if _, err := s.RecordByNumber(f.Number); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused filing left a record: %v", err)
	}
	if u, _ := s.Usage(roomy); u != (Usage{}) {
		t.Fatalf("the recipient with room got an entry: %+v", u)
	}
	if st := s.Stats(); st.Filings != 1 {
		t.Fatalf("filings = %d, want 1", st.Filings)
	}
	// Once the full mailbox is emptied, the same filing goes through.
	if _, err := s.UpdateFlags(full, Inbox, []uint32{1}, FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Expunge(full, Inbox, nil); err != nil {
		t.Fatal(err)
	}
	res := mustFile(t, s, f)
	if res.Duplicate || len(res.Entries) != 2 {
		t.Fatalf("retry: %+v", res)
	}
	// A resend of what is filed is answered Duplicate even when the
	// mailbox is full again: nothing new would be written.
	if res := mustFile(t, s, f); !res.Duplicate {
		t.Fatalf("resend over quota: %+v", res)
	}
}

// TestQuotaCountersAfterExpungeAndDelete: expunging and deleting mailboxes
// give room back.
func TestQuotaCountersAfterExpungeAndDelete(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.EnsureAccount(acct); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateMailbox(acct, "Old"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.Append(acct, "Old", msgOf(100+i), nil, time.Time{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	mustFile(t, s, testFiling(1, acct))
	s.SetQuota(fixedQuota(0, 4))
	if _, err := s.Append(acct, Inbox, msgOf(100), nil, time.Time{}, nil); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("fifth message: %v", err)
	}
	u := checkUsage(t, s, acct)
	if u.Messages != 4 {
		t.Fatalf("usage %+v", u)
	}
	if _, err := s.UpdateFlags(acct, "Old", []uint32{2}, FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Expunge(acct, "Old", nil); err != nil {
		t.Fatal(err)
	}
	if got := checkUsage(t, s, acct); got.Messages != 3 || got.Bytes != u.Bytes-101 {
		t.Fatalf("after expunge: %+v", u)
	}
	if _, err := s.Append(acct, Inbox, msgOf(100), nil, time.Time{}, nil); err != nil {
		t.Fatalf("after expunge: %v", err)
	}
	if err := s.DeleteMailbox(acct, "Old"); err != nil {
		t.Fatal(err)
	}
	if u := checkUsage(t, s, acct); u.Messages != 2 {
		t.Fatalf("after delete: %+v", u)
	}
	for range 2 {
		if _, err := s.Append(acct, Inbox, msgOf(100), nil, time.Time{}, nil); err != nil {
			t.Fatalf("after delete: %v", err)
		}
	}
	checkUsage(t, s, acct)
}

// TestQuotaMoveAtLimit: MOVE does not change what an account holds, so an
// account at its quota can still move messages (to Trash, to delete them).
func TestQuotaMoveAtLimit(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.EnsureAccount(acct); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Append(acct, Inbox, msgOf(100), []string{`\Seen`}, time.Time{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	s.SetQuota(fixedQuota(300, 3))
	if _, _, _, err := s.Copy(acct, Inbox, []uint32{1}, "Trash"); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("copy at the limit: %v", err)
	}
	uv, src, dst, err := s.Move(acct, Inbox, []uint32{1, 3, 7}, "Trash")
	if err != nil {
		t.Fatalf("move at the limit: %v", err)
	}
	trash, _ := s.Mailbox(acct, "Trash")
	if uv != trash.UIDValidity || fmt.Sprint(src) != "[1 3]" || fmt.Sprint(dst) != "[1 2]" {
		t.Fatalf("move: uv %d src %v dst %v", uv, src, dst)
	}
	inbox, entries, _ := s.Entries(acct, Inbox)
	if inbox.Messages != 1 || entries[0].UID != 2 || inbox.Unseen != 0 || trash.Messages != 2 || trash.Unseen != 0 {
		t.Fatalf("after move: inbox %+v, trash %+v", inbox, trash)
	}
	// Into the same mailbox: renumbered, nothing gained or lost.
	if _, src, dst, err := s.Move(acct, "Trash", []uint32{1}, "Trash"); err != nil || fmt.Sprint(src, dst) != "[1] [3]" {
		t.Fatalf("move into itself: %v %v %v", src, dst, err)
	}
	if u := checkUsage(t, s, acct); u != (Usage{Messages: 3, Bytes: 300}) {
		t.Fatalf("usage %+v", u)
	}
}

// TestQuotaConcurrentAppends: the check runs inside the write
// transaction, so concurrent appends sharing group commits never pass the
// limit together.
func TestQuotaConcurrentAppends(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.EnsureAccount(acct); err != nil {
		t.Fatal(err)
	}
	const limit, tries = 10, 40
	s.SetQuota(fixedQuota(0, limit))
	var wg sync.WaitGroup
	errs := make(chan error, tries)
	for range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Append(acct, Inbox, msgOf(64), nil, time.Time{}, nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok, over := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrOverQuota):
			over++
		default:
			t.Fatalf("append: %v", err)
		}
	}
	if ok != limit || over != tries-limit {
		t.Fatalf("%d accepted, %d over quota; want %d and %d", ok, over, limit, tries-limit)
	}
	checkUsage(t, s, acct)
}

// TestUsageMatchesRecount runs a random sequence of every operation that
// adds or removes entries and checks after each step that the O(1)
// counter equals a full recount of the entries, for two accounts.
func TestUsageMatchesRecount(t *testing.T) {
	s, path := openTemp(t)
	accounts := []string{"a@example.org", "b@example.org"}
	for _, a := range accounts {
		if err := s.EnsureAccount(a); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	boxes := []string{Inbox, "Archive", "Trash", "Work", "Work/Sub"}
	pick := func() (string, string) { return accounts[rng.IntN(2)], boxes[rng.IntN(len(boxes))] }
	uidsOf := func(a, b string) []uint32 {
		_, es, err := s.Entries(a, b)
		if err != nil {
			return nil
		}
		var out []uint32
		for _, e := range es {
			if rng.IntN(2) == 0 {
				out = append(out, e.UID)
			}
		}
		return out
	}
	// Known refusals are part of the sequence: a missing mailbox, an
	// existing name, over quota.
	allowed := func(err error) bool {
		return err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) ||
			errors.Is(err, ErrOverQuota) || errors.Is(err, ErrMailboxInUse) || errors.Is(err, ErrInvalidName)
	}
	s.SetQuota(fixedQuota(40_000, 60))
	ops := map[string]int{}
	for step := range 600 {
		a, b := pick()
		_, b2 := pick()
		var err error
		var name string
		switch rng.IntN(10) {
		case 0, 1:
			name = "file"
			_, err = s.File(context.Background(), testFiling(step, accounts[:1+rng.IntN(2)]...))
		case 2:
			name = "append"
			_, err = s.Append(a, b, msgOf(50+rng.IntN(500)), nil, time.Time{}, nil)
		case 3:
			name = "copy"
			_, _, _, err = s.Copy(a, b, uidsOf(a, b), b2)
		case 4:
			name = "move"
			_, _, _, err = s.Move(a, b, uidsOf(a, b), b2)
		case 5, 6:
			name = "expunge"
			if _, err = s.UpdateFlags(a, b, uidsOf(a, b), FlagsAdd, []string{`\Deleted`}); err == nil {
				_, err = s.Expunge(a, b, nil)
			}
		case 7:
			name = "delete"
			err = s.DeleteMailbox(a, b)
		case 8:
			name = "create"
			err = s.CreateMailbox(a, b)
		case 9:
			name = "rename"
			err = s.RenameMailbox(a, b, b2)
		}
		if !allowed(err) {
			t.Fatalf("step %d %s: %v", step, name, err)
		}
		if err == nil {
			ops[name]++
		}
		for _, a := range accounts {
			checkUsage(t, s, a)
		}
	}
	for _, name := range []string{"file", "append", "copy", "move", "expunge", "delete", "create", "rename"} {
		if ops[name] == 0 {
			t.Errorf("the sequence never ran %s successfully", name)
		}
	}
	// The counter survives a reopen.
	s = reopen(t, s, path)
	for _, a := range accounts {
		checkUsage(t, s, a)
	}
}

// TestUsageWithoutRecord: a database written before the usage record
// existed gets it from the mailboxes' counters.
func TestUsageWithoutRecord(t *testing.T) {
	s, path := openTemp(t)
	for i := range 3 {
		mustFile(t, s, testFiling(i, acct))
	}
	want := checkUsage(t, s, acct)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		ab := tx.Bucket(bucketAccounts).Bucket([]byte(acct))
		if !bytes.Equal(ab.Get(keyUsage), encodeUsage(want)) {
			return fmt.Errorf("stored usage %x, want %x", ab.Get(keyUsage), encodeUsage(want))
		}
		return ab.Delete(keyUsage)
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s2, err := Open(path, Options{Quota: fixedQuota(0, 4)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if u, err := s2.Usage(acct); err != nil || u != want {
		t.Fatalf("usage without record: %+v, %v; want %+v", u, err, want)
	}
	mustFile(t, s2, testFiling(10, acct))
	if _, err := s2.File(context.Background(), testFiling(11, acct)); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("fifth message: %v", err)
	}
	if u, _ := s2.Usage(acct); u.Messages != 4 {
		t.Fatalf("usage %+v", u)
	}
}

func TestCheckQuota(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.CheckQuota("nobody@example.org", 1<<40); err != nil {
		t.Fatalf("no policy: %v", err)
	}
	s.SetQuota(fixedQuota(1000, 2))
	if err := s.CheckQuota("nobody@example.org", 1000); err != nil {
		t.Fatalf("unknown account, exactly the limit: %v", err)
	}
	if err := s.CheckQuota("nobody@example.org", 1001); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("unknown account over the byte limit: %v", err)
	}
	mustFile(t, s, testFiling(1, acct))
	mustFile(t, s, testFiling(2, acct))
	if err := s.CheckQuota(acct, 1); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("full account: %v", err)
	}
}

func TestUsageDecode(t *testing.T) {
	for _, u := range []Usage{{}, {1, 2}, {1 << 40, 1 << 50}} {
		got, err := decodeUsage(encodeUsage(u))
		if err != nil || got != u {
			t.Errorf("round trip %+v: %+v, %v", u, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {}, {2, 0, 0}, {formatV1}, {formatV1, 0x80}} {
		if _, err := decodeUsage(bad); !errors.Is(err, errCorrupt) {
			t.Errorf("decode %x: %v", bad, err)
		}
	}
}

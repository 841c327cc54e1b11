package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFileReadBack(t *testing.T) {
	s, path := openTemp(t)
	f := testFiling(1, "pharma@example.org", "nurse@example.org", "pharma@example.org")
	res := mustFile(t, s, f)
	if res.Duplicate || res.ID == 0 {
		t.Fatalf("got %+v, want a new record", res)
	}
	if len(res.Entries) != 2 {
		t.Fatalf("entries %+v: want one per distinct recipient", res.Entries)
	}
	for _, d := range res.Entries {
		if d.Mailbox != Inbox || d.UID != 1 || d.UIDValidity == 0 {
			t.Errorf("delivered %+v", d)
		}
	}
	s = reopen(t, s, path)
	got, err := s.Bytes(res.ID)
	if err != nil || !bytes.Equal(got, f.Raw) {
		t.Fatalf("Bytes = %q, %v; want %q", got, err, f.Raw)
	}
	meta, err := s.Meta(res.ID)
	if err != nil || !bytes.Equal(meta, f.Meta) {
		t.Fatalf("Meta = %q, %v", meta, err)
	}
	rec, err := s.Record(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := Record{ID: res.ID, Received: f.Received, Size: int64(len(f.Raw)), Sender: f.Sender,
		Recipients: []string{"pharma@example.org", "nurse@example.org"}, Number: f.Number, Digest: f.Digest,
		MessageID: f.MessageID, Signer: f.Signer, IDNPS: f.IDNPS, PatientINS: f.PatientINS, Delivery: f.Delivery, Owner: f.Sender}
	if !rec.Received.Equal(want.Received) {
		t.Errorf("Received %v want %v", rec.Received, want.Received)
	}
	rec.Received = want.Received
	if fmt.Sprint(*rec) != fmt.Sprint(want) {
		t.Errorf("Record\n got %+v\nwant %+v", *rec, want)
	}
	byNum, err := s.RecordByNumber(f.Number)
	if err != nil || byNum.ID != res.ID {
		t.Errorf("RecordByNumber = %+v, %v", byNum, err)
	}
	if _, err := s.RecordByNumber("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RecordByNumber(unknown) err = %v", err)
	}
	if ids, err := s.RecordsByPatient(f.PatientINS); err != nil || len(ids) != 1 || ids[0] != res.ID {
		t.Errorf("RecordsByPatient = %v, %v", ids, err)
	}
	if ids, err := s.RecordsByPrescriber(f.IDNPS); err != nil || len(ids) != 1 || ids[0] != res.ID {
		t.Errorf("RecordsByPrescriber = %v, %v", ids, err)
	}
	if ids, _ := s.RecordsByPatient(f.PatientINS[:14]); len(ids) != 0 {
		t.Errorf("prefix of an INS matched %v", ids)
	}
	info, entries, err := s.Entries("nurse@example.org", "inbox")
	if err != nil {
		t.Fatal(err)
	}
	if info.Messages != 1 || info.Unseen != 1 || info.Size != int64(len(f.Raw)) || len(entries) != 1 ||
		entries[0].RecordID != res.ID || !entries[0].InternalDate.Equal(f.Received) {
		t.Errorf("INBOX %+v entries %+v", info, entries)
	}
	if _, err := s.Bytes(res.ID + 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("Bytes(missing) err = %v", err)
	}
}

func TestFileDedupe(t *testing.T) {
	base := testFiling(1, "a@example.org")
	other := func(mut func(f *Filing)) *Filing {
		f := *testFiling(1, "a@example.org")
		mut(&f)
		return &f
	}
	noNumber := func(mut func(f *Filing)) *Filing {
		f := *testFiling(2, "a@example.org")
		f.Number = ""
		mut(&f)
		return &f
	}
	tests := []struct {
		name       string
		first, sec *Filing
		wantDup    bool
		wantErr    error
	}{
		{"same number same digest", base, other(func(f *Filing) { f.MessageID = "<other@x>" }), true, nil},
		{"same number other digest", base, other(func(f *Filing) { f.Digest[0] ^= 1 }), false, ErrReplay},
		{"other number, other Message-ID", base, other(func(f *Filing) { f.Number = "RX-other"; f.MessageID = "<other@x>"; f.Digest[0] ^= 1 }), false, nil},
		{"other number, Message-ID reused with other content", base, other(func(f *Filing) { f.Number = "RX-other"; f.Digest[0] ^= 1 }), false, ErrReplay},
		{"no number: same msgid same digest", noNumber(func(*Filing) {}), noNumber(func(*Filing) {}), true, nil},
		{"no number: same msgid other digest", noNumber(func(*Filing) {}), noNumber(func(f *Filing) { f.Digest[0] ^= 1 }), false, ErrReplay},
		{"no number: other sender", noNumber(func(*Filing) {}), noNumber(func(f *Filing) { f.Sender = "dr2@example.org"; f.Digest[0] ^= 1 }), false, nil},
		{"no number no msgid", noNumber(func(f *Filing) { f.MessageID = "" }), noNumber(func(f *Filing) { f.MessageID = "" }), false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTemp(t)
			first := mustFile(t, s, tc.first)
			before := s.Stats()
			res, err := s.File(context.Background(), tc.sec)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if s.Stats().Commits != before.Commits {
					t.Errorf("a refused filing committed")
				}
				return
			}
			if res.Duplicate != tc.wantDup {
				t.Fatalf("Duplicate = %v, want %v", res.Duplicate, tc.wantDup)
			}
			info, _ := s.Mailbox("a@example.org", Inbox)
			if tc.wantDup {
				if res.ID != first.ID || len(res.Entries) != 0 {
					t.Errorf("duplicate = %+v, want ID %d and no entries", res, first.ID)
				}
				if info.Messages != 1 || s.Stats().Commits != before.Commits {
					t.Errorf("duplicate wrote: messages %d, commits %d→%d", info.Messages, before.Commits, s.Stats().Commits)
				}
			} else if res.ID == first.ID || info.Messages != 2 {
				t.Errorf("second filing %+v, INBOX has %d", res, info.Messages)
			}
		})
	}
}

func TestFileRefusals(t *testing.T) {
	s, _ := openTemp(t)
	tests := []struct {
		name string
		mut  func(f *Filing)
		want error
	}{
		{"empty raw", func(f *Filing) { f.Raw = nil }, ErrInvalid},
		{"too large", func(f *Filing) { f.Raw = make([]byte, DefaultMaxMessageBytes+1) }, ErrTooLarge},
		{"meta too large", func(f *Filing) { f.Meta = make([]byte, MaxMetaBytes+1) }, ErrTooLarge},
		{"too many recipients", func(f *Filing) { f.Recipients = make([]string, MaxRecipients+1) }, ErrTooLarge},
		{"empty recipient", func(f *Filing) { f.Recipients = []string{""} }, ErrInvalid},
		{"control char in recipient", func(f *Filing) { f.Recipients = []string{"a\x00b"} }, ErrInvalid},
		{"long recipient", func(f *Filing) { f.Recipients = []string{strings.Repeat("a", MaxAccountBytes+1)} }, ErrInvalid},
		{"NUL in sender", func(f *Filing) { f.Sender = "a\x00b" }, ErrInvalid},
		{"NUL in INS", func(f *Filing) { f.PatientINS = "1\x00" }, ErrInvalid},
		{"long number", func(f *Filing) { f.Number = strings.Repeat("1", MaxFieldBytes+1) }, ErrInvalid},
		{"bad UTF-8 message-id", func(f *Filing) { f.MessageID = "\xff" }, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := testFiling(1, "a@example.org")
			tc.mut(f)
			if _, err := s.File(context.Background(), f); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := s.File(context.Background(), nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil filing: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.File(ctx, testFiling(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: %v", err)
	}
	if st := s.Stats(); st.Filings != 0 || st.Commits != 0 {
		t.Errorf("refusals wrote: %+v", st)
	}
}

func TestFileConcurrent(t *testing.T) {
	s, path := openTemp(t)
	const n = 64
	var wg sync.WaitGroup
	results := make([]*Filed, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every other filing also goes to a second, shared account.
			rcpt := []string{"pharma@example.org"}
			if i%2 == 0 {
				rcpt = append(rcpt, "lab@example.org")
			}
			results[i], errs[i] = s.File(context.Background(), testFiling(i, rcpt...))
		}()
	}
	wg.Wait()
	ids := map[uint64]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("filing %d: %v", i, errs[i])
		}
		if results[i].Duplicate {
			t.Fatalf("filing %d reported duplicate", i)
		}
		ids[results[i].ID]++
	}
	if len(ids) != n {
		t.Fatalf("%d distinct record ids for %d filings", len(ids), n)
	}
	st := s.Stats()
	if st.Filings != n || st.Commits == 0 || st.Commits > n {
		t.Errorf("stats %+v", st)
	}
	t.Logf("%d filings in %d commits", st.Filings, st.Commits)

	s = reopen(t, s, path)
	for _, acct := range []struct {
		name string
		want int
	}{{"pharma@example.org", n}, {"lab@example.org", n / 2}} {
		info, entries, err := s.Entries(acct.name, Inbox)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != acct.want || int(info.Messages) != acct.want || int(info.Unseen) != acct.want ||
			info.UIDNext != uint32(acct.want+1) {
			t.Fatalf("%s: %d entries, info %+v", acct.name, len(entries), info)
		}
		seen := map[uint64]bool{}
		for i, e := range entries {
			if e.UID != uint32(i+1) { // dense and unique
				t.Fatalf("%s: entry %d has UID %d", acct.name, i, e.UID)
			}
			if seen[e.RecordID] {
				t.Fatalf("%s: record %d twice", acct.name, e.RecordID)
			}
			seen[e.RecordID] = true
		}
	}
	for i := range n {
		rec, err := s.RecordByNumber(testFiling(i).Number)
		if err != nil || rec.ID != results[i].ID {
			t.Fatalf("filing %d: RecordByNumber = %+v, %v", i, rec, err)
		}
		b, err := s.Bytes(rec.ID)
		if err != nil || !bytes.Equal(b, testFiling(i).Raw) {
			t.Fatalf("filing %d: bytes differ: %v", i, err)
		}
	}
}

// TestFileConcurrentResends files the same prescription from many
// goroutines at once: exactly one files it, the others get Duplicate.
func TestFileConcurrentResends(t *testing.T) {
	s, _ := openTemp(t)
	const n = 32
	var wg sync.WaitGroup
	res := make([]*Filed, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = s.File(context.Background(), testFiling(7, "a@example.org"))
		}()
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !res[i].Duplicate {
			fresh++
		}
		if res[i].ID != res[0].ID {
			t.Fatalf("ids differ: %d vs %d", res[i].ID, res[0].ID)
		}
	}
	info, _ := s.Mailbox("a@example.org", Inbox)
	if fresh != 1 || info.Messages != 1 {
		t.Fatalf("%d fresh filings, %d messages; want 1, 1", fresh, info.Messages)
	}
}

func TestFileNoRecipients(t *testing.T) {
	s, _ := openTemp(t)
	f := testFiling(3)
	f.Digest = sha256.Sum256(f.Raw)
	res := mustFile(t, s, f)
	if len(res.Entries) != 0 || res.ID == 0 {
		t.Fatalf("%+v", res)
	}
	if _, err := s.Bytes(res.ID); err != nil {
		t.Fatal(err)
	}
}

// TestRecordWithoutDelivery: records written before the delivery field
// existed decode with an empty choice.
func TestRecordWithoutDelivery(t *testing.T) {
	r := &Record{Received: time.Unix(1700000000, 0).UTC(), Sender: "dr@example.org", Number: "RX1", Delivery: "paper"}
	full := encodeRecord(r)
	// The trailing length-prefixed string, then the opposition flag.
	old := full[:len(full)-1-len("paper")-1]
	got, err := decodeRecord(1, old)
	if err != nil {
		t.Fatal(err)
	}
	if got.Delivery != "" || got.Number != "RX1" {
		t.Errorf("old record decoded as %+v", got)
	}
	got, err = decodeRecord(1, full[:len(full)-1])
	if err != nil || got.Delivery != "paper" || got.Opposition {
		t.Errorf("record without opposition decoded as %+v, %v", got, err)
	}
	r.Opposition = true
	got, err = decodeRecord(1, encodeRecord(r))
	if err != nil || got.Delivery != "paper" || !got.Opposition {
		t.Errorf("new record decoded as %+v, %v", got, err)
	}
}

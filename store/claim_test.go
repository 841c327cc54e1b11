package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestDeliver: a claim adds an INBOX entry pointing at the same record,
// wakes the account's watchers, records the claim and its audit event in
// one transaction, and is idempotent.
func TestDeliver(t *testing.T) {
	s, path := openTemp(t)
	const pharma, other = "pharma@example.org", "gare@example.org"
	res := mustFile(t, s, testFiling(1, pharma))
	// Some unrelated mail first, so that the claimed entry is not UID 1.
	if err := s.EnsureAccount(other); err != nil {
		t.Fatal(err)
	}
	mustFile(t, s, testFiling(2, other))

	ch, cancel := s.Watch(other)
	defer cancel()
	audit := []AuditEvent{{Kind: AuditSMTPClaim, Actor: other, Remote: "192.0.2.1:1234", Subject: "rx=RX00000001", Outcome: "250"}}
	d, existing, err := s.Deliver(context.Background(), res.ID, other, audit)
	if err != nil || existing {
		t.Fatalf("Deliver = %+v, %v, %v", d, existing, err)
	}
	if d.Account != other || d.Mailbox != Inbox || d.UID != 2 {
		t.Errorf("delivered %+v, want INBOX uid 2 of %s", d, other)
	}
	select {
	case c := <-ch:
		if c.Account != other || c.Mailbox != Inbox {
			t.Errorf("change %+v", c)
		}
	default:
		t.Error("watcher not notified after the claim committed")
	}
	_, entries, err := s.Entries(other, Inbox)
	if err != nil || len(entries) != 2 || entries[1].RecordID != res.ID || entries[1].UID != d.UID {
		t.Fatalf("INBOX of %s = %+v, %v", other, entries, err)
	}
	if entries[1].Size != int64(len(testFiling(1).Raw)) {
		t.Errorf("entry size %d", entries[1].Size)
	}

	// Idempotent: the same claim again returns the same entry and writes
	// nothing (no commit, no audit record).
	before := s.Stats().Commits
	seqBefore, _, _ := s.AuditHead()
	d2, existing, err := s.Deliver(context.Background(), res.ID, other, audit)
	if err != nil || !existing || *d2 != *d {
		t.Fatalf("second Deliver = %+v, %v, %v; want the first entry %+v", d2, existing, err, d)
	}
	if s.Stats().Commits != before {
		t.Error("an idempotent Deliver committed")
	}
	if seq, _, _ := s.AuditHead(); seq != seqBefore {
		t.Error("an idempotent Deliver appended audit")
	}
	// A recipient of the filing already holds it.
	d3, existing, err := s.Deliver(context.Background(), res.ID, pharma, nil)
	if err != nil || !existing || d3.UID != 1 {
		t.Errorf("Deliver to a recipient = %+v, %v, %v", d3, existing, err)
	}

	// Exactly one record, one claim, one audit record with record and uid.
	if n := s.Stats().Filings; n != 2 {
		t.Errorf("%d filings", n)
	}
	s = reopen(t, s, path)
	claims, err := s.Claims(res.ID)
	if err != nil || len(claims) != 1 || claims[0].Account != other || claims[0].UID != d.UID || claims[0].UIDValidity != d.UIDValidity || claims[0].Time.IsZero() {
		t.Fatalf("Claims = %+v, %v", claims, err)
	}
	var recs []AuditRecord
	if _, err := s.AuditVerify(func(r AuditRecord) { recs = append(recs, r) }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Kind != AuditSMTPClaim || recs[0].Subject != "record=1 rx=RX00000001 mbox=INBOX uid=2" {
		t.Errorf("audit %+v", recs)
	}

	// Expunged since: filed anew with a new UID, the index follows.
	if _, err := s.UpdateFlags(other, Inbox, []uint32{d.UID}, FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Expunge(other, Inbox, nil); err != nil {
		t.Fatal(err)
	}
	d4, existing, err := s.Deliver(context.Background(), res.ID, other, nil)
	if err != nil || existing || d4.UID != 3 {
		t.Fatalf("Deliver after expunge = %+v, %v, %v", d4, existing, err)
	}
	if claims, _ := s.Claims(res.ID); len(claims) != 1 || claims[0].UID != 3 {
		t.Errorf("claims after re-delivery %+v", claims)
	}
}

func TestDeliverRefusals(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	if _, _, err := s.Deliver(ctx, 42, "a@example.org", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown record: %v", err)
	}
	if _, _, err := s.Deliver(ctx, 1, "", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty account: %v", err)
	}
	if err := s.EnsureAccount("owner@example.org"); err != nil {
		t.Fatal(err)
	}
	app, err := s.Append("owner@example.org", Inbox, []byte("Subject: x\r\n\r\nx\r\n"), nil, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, entries, _ := s.Entries("owner@example.org", Inbox)
	if _, _, err := s.Deliver(ctx, entries[0].RecordID, "thief@example.org", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("appended record %+v delivered: %v", app, err)
	}
	if _, _, err := s.Deliver(ctx, 1, "a@example.org", []AuditEvent{{Kind: "Bad Kind"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad audit kind: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.Deliver(cctx, 1, "a@example.org", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// TestDeliverQuota: a claim into a full mailbox writes nothing.
func TestDeliverQuota(t *testing.T) {
	s, _ := openTemp(t)
	res := mustFile(t, s, testFiling(1, "pharma@example.org"))
	s.SetQuota(func(string) (int64, uint32) { return 0, 1 })
	mustFile(t, s, testFiling(2, "full@example.org"))
	if _, _, err := s.Deliver(context.Background(), res.ID, "full@example.org", nil); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("over quota: %v", err)
	}
	if claims, _ := s.Claims(res.ID); len(claims) != 0 {
		t.Errorf("claims index written by a refused claim: %+v", claims)
	}
}

// TestRecordEntries finds every entry of a record, with its flags, in the
// recipients' and claimants' mailboxes, and only those.
func TestRecordEntries(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	res := mustFile(t, s, testFiling(1, "a@example.org"))
	mustFile(t, s, testFiling(2, "a@example.org", "b@example.org"))
	if _, _, err := s.Deliver(ctx, res.ID, "b@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateFlags("a@example.org", Inbox, []uint32{1}, FlagsAdd, []string{"$Dispensed"}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Copy("a@example.org", Inbox, []uint32{1}, "Archive"); err != nil {
		t.Fatal(err)
	}
	got, err := s.RecordEntries(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range got {
		lines = append(lines, e.Account+" "+e.Mailbox+" "+strings.Join(e.Flags, ","))
	}
	want := "a@example.org Archive $Dispensed|a@example.org INBOX $Dispensed|b@example.org INBOX "
	if strings.Join(lines, "|") != want {
		t.Errorf("RecordEntries:\n got %q\nwant %q", strings.Join(lines, "|"), want)
	}
	if _, err := s.RecordEntries(99); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown record: %v", err)
	}
}

func TestClaimCodec(t *testing.T) {
	in := ClaimRecord{RecordID: 7, Account: "a@example.org", Time: time.Unix(1700000000, 5), UIDValidity: 9, UID: 11}
	out, err := decodeClaim(claimKey(7, in.Account), encodeClaim(&in))
	if err != nil || out.RecordID != 7 || out.Account != in.Account || !out.Time.Equal(in.Time) || out.UID != 11 || out.UIDValidity != 9 {
		t.Fatalf("round trip %+v, %v", out, err)
	}
	for _, bad := range [][]byte{nil, {2}, {1}, {1, 0x80}} {
		if _, err := decodeClaim(claimKey(7, "a"), bad); !errors.Is(err, errCorrupt) {
			t.Errorf("decodeClaim(%x) err = %v", bad, err)
		}
	}
	if _, err := decodeClaim([]byte{1, 2}, encodeClaim(&in)); !errors.Is(err, errCorrupt) {
		t.Errorf("short key: %v", err)
	}
	if _, err := entryRecordID([]byte{1}); !errors.Is(err, errCorrupt) {
		t.Errorf("entryRecordID of a truncated value: %v", err)
	}
}

// TestDeliverConcurrent: claims of one record by one account racing in
// the same group commit file one entry; every caller gets it.
func TestDeliverConcurrent(t *testing.T) {
	s, _ := openTemp(t)
	res := mustFile(t, s, testFiling(1, "pharma@example.org"))
	const n = 16
	type out struct {
		d        *Delivered
		existing bool
		err      error
	}
	ch := make(chan out, n)
	for i := 0; i < n; i++ {
		go func() {
			d, existing, err := s.Deliver(context.Background(), res.ID, "gare@example.org", nil)
			ch <- out{d, existing, err}
		}()
	}
	fresh := 0
	var uid uint32
	for i := 0; i < n; i++ {
		o := <-ch
		if o.err != nil {
			t.Fatal(o.err)
		}
		if !o.existing {
			fresh++
		}
		if uid != 0 && o.d.UID != uid {
			t.Errorf("UIDs %d and %d for one claim", uid, o.d.UID)
		}
		uid = o.d.UID
	}
	if fresh != 1 {
		t.Errorf("%d callers filed an entry, want 1", fresh)
	}
	if info, err := s.Mailbox("gare@example.org", Inbox); err != nil || info.Messages != 1 {
		t.Errorf("INBOX %+v, %v", info, err)
	}
}

// TestDeliverHeldElsewhere: an account that moved its copy out of INBOX
// (MOVE, or COPY then EXPUNGE) still holds the record: Deliver returns
// that entry, mailbox and UID, and writes nothing; the account never
// holds the record twice. Only when every copy is expunged is it filed
// anew.
func TestDeliverHeldElsewhere(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	const pharma, gare = "pharma@example.org", "gare@example.org"
	res := mustFile(t, s, testFiling(1, pharma))
	d, existing, err := s.Deliver(ctx, res.ID, gare, nil)
	if err != nil || existing {
		t.Fatalf("claim: %+v, %v, %v", d, existing, err)
	}

	// The claimant MOVEs its copy to Archive.
	uv, _, dst, err := s.Move(gare, Inbox, []uint32{d.UID}, "Archive")
	if err != nil || len(dst) != 1 {
		t.Fatalf("Move: %v %v", dst, err)
	}
	// The recipient COPYs its copy to Archive and expunges INBOX's.
	if _, _, _, err := s.Copy(pharma, Inbox, []uint32{1}, "Archive"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateFlags(pharma, Inbox, []uint32{1}, FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Expunge(pharma, Inbox, nil); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		account string
		uid     uint32
	}{{gare, dst[0]}, {pharma, 1}} {
		before := s.Stats().Commits
		seq, _, _ := s.AuditHead()
		got, existing, err := s.Deliver(ctx, res.ID, c.account, []AuditEvent{{Kind: AuditSMTPClaim, Actor: c.account, Outcome: "250"}})
		if err != nil || !existing || got.Mailbox != "Archive" || got.UID != c.uid || got.Account != c.account {
			t.Errorf("%s: Deliver = %+v, %v, %v; want Archive uid %d, existing", c.account, got, existing, err, c.uid)
		}
		if c.account == gare && got != nil && got.UIDValidity != uv {
			t.Errorf("UIDVALIDITY %d, Archive's is %d", got.UIDValidity, uv)
		}
		if s.Stats().Commits != before {
			t.Errorf("%s: a Deliver of a record held in Archive committed", c.account)
		}
		if after, _, _ := s.AuditHead(); after != seq {
			t.Errorf("%s: a Deliver of a record held in Archive appended audit", c.account)
		}
		if info, err := s.Mailbox(c.account, Inbox); err != nil || info.Messages != 0 {
			t.Errorf("%s: INBOX %+v, %v; want empty", c.account, info, err)
		}
	}
	entries, err := s.RecordEntries(res.ID)
	if err != nil || len(entries) != 2 {
		t.Fatalf("RecordEntries = %+v, %v; want one entry per account", entries, err)
	}

	// Expunged everywhere: filed anew.
	if _, err := s.UpdateFlags(gare, "Archive", dst, FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Expunge(gare, "Archive", nil); err != nil {
		t.Fatal(err)
	}
	d2, existing, err := s.Deliver(ctx, res.ID, gare, nil)
	if err != nil || existing || d2.Mailbox != Inbox || d2.UID <= d.UID {
		t.Errorf("after expunging every copy: %+v, %v, %v; want a new INBOX entry", d2, existing, err)
	}
}

// TestDeliverRaceWithMove: a MOVE racing claims of the same account never
// lets a claim file a second entry: the check and the filing share one
// write transaction.
func TestDeliverRaceWithMove(t *testing.T) {
	s, _ := openTemp(t)
	const gare = "gare@example.org"
	res := mustFile(t, s, testFiling(1, "pharma@example.org"))
	d, _, err := s.Deliver(context.Background(), res.ID, gare, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make(chan error, n+1)
	go func() {
		_, _, _, err := s.Move(gare, Inbox, []uint32{d.UID}, "Archive")
		errs <- err
	}()
	for range n {
		go func() {
			_, existing, err := s.Deliver(context.Background(), res.ID, gare, nil)
			if err == nil && !existing {
				err = errors.New("a claim filed a second entry")
			}
			errs <- err
		}()
	}
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	entries, err := s.RecordEntries(res.ID)
	held := 0
	for _, e := range entries {
		if e.Account == gare {
			held++
		}
	}
	if err != nil || held != 1 {
		t.Errorf("%s holds %d entries of the record (%+v, %v), want 1", gare, held, entries, err)
	}
}

package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const acct = "pharma@example.org"

func names(t *testing.T, s *Store, account string) string {
	t.Helper()
	mbs, err := s.Mailboxes(account)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range mbs {
		out = append(out, m.Name+m.SpecialUse)
	}
	return strings.Join(out, ",")
}

func TestEnsureAccount(t *testing.T) {
	s, _ := openTemp(t)
	if _, err := s.Mailboxes(acct); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown account: %v", err)
	}
	if err := s.EnsureAccount(acct); err != nil {
		t.Fatal(err)
	}
	const want = `Archive\Archive,Drafts\Drafts,INBOX,Sent\Sent,Trash\Trash`
	if got := names(t, s, acct); got != want {
		t.Fatalf("mailboxes %s, want %s", got, want)
	}
	mbs, _ := s.Mailboxes(acct)
	uv := map[uint32]bool{}
	for _, m := range mbs {
		if !m.Subscribed || m.UIDNext != 1 || m.Messages != 0 || uv[m.UIDValidity] || m.UIDValidity == 0 {
			t.Errorf("mailbox %+v (UIDVALIDITY must be unique and set)", m)
		}
		uv[m.UIDValidity] = true
	}
	commits := s.Stats().Commits
	if err := s.EnsureAccount(acct); err != nil || s.Stats().Commits != commits {
		t.Errorf("second EnsureAccount: %v, commits %d→%d", err, commits, s.Stats().Commits)
	}
	// A renamed Trash keeps its special-use and is not recreated; a
	// deleted Drafts is.
	if err := s.RenameMailbox(acct, "Trash", "Corbeille"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMailbox(acct, "Drafts"); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureAccount(acct); err != nil {
		t.Fatal(err)
	}
	const want2 = `Archive\Archive,Corbeille\Trash,Drafts\Drafts,INBOX,Sent\Sent`
	if got := names(t, s, acct); got != want2 {
		t.Fatalf("mailboxes %s, want %s", got, want2)
	}
	if err := s.EnsureAccount(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty account: %v", err)
	}
}

func TestUIDsAndUIDValidity(t *testing.T) {
	s, path := openTemp(t)
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	mustFile(t, s, testFiling(1, acct))
	mustFile(t, s, testFiling(2, acct))
	if err := s.CreateMailbox(acct, "Ordonnances"); err != nil {
		t.Fatal(err)
	}
	_, _, dst, err := s.Copy(acct, Inbox, []uint32{1, 2}, "Ordonnances")
	if err != nil || fmt.Sprint(dst) != "[1 2]" {
		t.Fatalf("Copy = %v, %v", dst, err)
	}
	before, _ := s.Mailbox(acct, "Ordonnances")
	inboxBefore, _ := s.Mailbox(acct, Inbox)

	// Expunge the highest UID: it must not be handed out again.
	if _, err := s.UpdateFlags(acct, Inbox, []uint32{2}, FlagsAdd, []string{`\Deleted`}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Expunge(acct, Inbox, nil); err != nil || fmt.Sprint(got) != "[2]" {
		t.Fatalf("Expunge = %v, %v", got, err)
	}
	s = reopen(t, s, path)
	res := mustFile(t, s, testFiling(3, acct))
	if res.Entries[0].UID != 3 || res.Entries[0].UIDValidity != inboxBefore.UIDValidity {
		t.Fatalf("after expunge+reopen got %+v, want UID 3 UIDVALIDITY %d", res.Entries[0], inboxBefore.UIDValidity)
	}
	after, _ := s.Mailbox(acct, "Ordonnances")
	if after.UIDValidity != before.UIDValidity || after.UIDNext != 3 {
		t.Fatalf("after reopen %+v, before %+v", after, before)
	}
	// Delete and recreate: a new UIDVALIDITY, UIDs restart.
	if err := s.DeleteMailbox(acct, "Ordonnances"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateMailbox(acct, "Ordonnances"); err != nil {
		t.Fatal(err)
	}
	re, _ := s.Mailbox(acct, "Ordonnances")
	if re.UIDValidity == before.UIDValidity || re.UIDNext != 1 || re.Messages != 0 {
		t.Fatalf("recreated %+v, old UIDVALIDITY %d", re, before.UIDValidity)
	}
	_ = now
}

func TestUIDValidityMonotonicAcrossClock(t *testing.T) {
	// A clock that goes backwards (restored VM, bad NTP) must not make a
	// recreated mailbox reuse a UIDVALIDITY.
	path := t.TempDir() + "/mss.db"
	clock := time.Unix(2_000_000_000, 0)
	s, err := Open(path, Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateMailbox(acct, "x"); err != nil {
		t.Fatal(err)
	}
	first, _ := s.Mailbox(acct, "x")
	if first.UIDValidity < 2_000_000_000 {
		t.Errorf("UIDVALIDITY %d not derived from the clock", first.UIDValidity)
	}
	clock = time.Unix(1_000_000_000, 0)
	if err := s.DeleteMailbox(acct, "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateMailbox(acct, "x"); err != nil {
		t.Fatal(err)
	}
	second, _ := s.Mailbox(acct, "x")
	if second.UIDValidity <= first.UIDValidity {
		t.Fatalf("UIDVALIDITY went from %d to %d", first.UIDValidity, second.UIDValidity)
	}
}

func TestExpungeKeepsRecord(t *testing.T) {
	s, _ := openTemp(t)
	f := testFiling(1, acct)
	res := mustFile(t, s, f)
	mustFile(t, s, testFiling(2, acct))
	// Not flagged \Deleted: nothing happens.
	if got, err := s.Expunge(acct, Inbox, []uint32{1}); err != nil || len(got) != 0 {
		t.Fatalf("Expunge without \\Deleted = %v, %v", got, err)
	}
	if _, err := s.UpdateFlags(acct, Inbox, []uint32{1, 2}, FlagsAdd, []string{`\deleted`}); err != nil {
		t.Fatal(err)
	}
	// Restricted to uid 1 (UID EXPUNGE, RFC 4315 §2.1).
	if got, err := s.Expunge(acct, Inbox, []uint32{1, 99}); err != nil || fmt.Sprint(got) != "[1]" {
		t.Fatalf("Expunge = %v, %v", got, err)
	}
	info, entries, _ := s.Entries(acct, Inbox)
	if info.Messages != 1 || len(entries) != 1 || entries[0].UID != 2 || info.Size != int64(len(testFiling(2).Raw)) {
		t.Fatalf("after expunge %+v %+v", info, entries)
	}
	if b, err := s.Bytes(res.ID); err != nil || string(b) != string(f.Raw) {
		t.Fatalf("record gone after expunge: %v", err)
	}
	if _, err := s.Record(res.ID); err != nil {
		t.Fatal(err)
	}
	// The number stays filed: a resend is still a duplicate.
	again := mustFile(t, s, testFiling(1, acct))
	if !again.Duplicate {
		t.Errorf("resend after expunge was filed again")
	}
}

func TestUpdateFlags(t *testing.T) {
	tests := []struct {
		name    string
		initial []string
		op      FlagOp
		flags   []string
		want    string
		unseen  uint32
		wantErr error
	}{
		{"add seen canonical case", nil, FlagsAdd, []string{`\SEEN`}, `[\Seen]`, 0, nil},
		{"recent ignored", nil, FlagsAdd, []string{`\Recent`, `\Flagged`}, `[\Flagged]`, 1, nil},
		{"set replaces", []string{`\Seen`, "$Label1"}, FlagsSet, []string{`\Answered`}, `[\Answered]`, 1, nil},
		{"remove seen", []string{`\Seen`}, FlagsRemove, []string{`\seen`}, `[]`, 1, nil},
		{"keyword keeps first spelling", []string{"$Forwarded"}, FlagsAdd, []string{"$FORWARDED", "Urgent"}, `[$Forwarded Urgent]`, 1, nil},
		{"set keeps stored spelling", []string{"$Forwarded"}, FlagsSet, []string{"$forwarded"}, `[$Forwarded]`, 1, nil},
		{"dedupe within request", nil, FlagsAdd, []string{"todo", "TODO", `\Seen`, `\seen`}, `[\Seen todo]`, 0, nil},
		{"remove keyword any case", []string{"Urgent", `\Seen`}, FlagsRemove, []string{"URGENT"}, `[\Seen]`, 0, nil},
		{"unknown system flag", nil, FlagsAdd, []string{`\Bogus`}, "", 1, ErrInvalidFlag},
		{"keyword with space", nil, FlagsAdd, []string{"a b"}, "", 1, ErrInvalidFlag},
		{"keyword with bracket", nil, FlagsAdd, []string{"a]"}, "", 1, ErrInvalidFlag},
		{"non-ASCII keyword", nil, FlagsAdd, []string{"é"}, "", 1, ErrInvalidFlag},
		{"empty flag", nil, FlagsAdd, []string{""}, "", 1, ErrInvalidFlag},
		{"too long", nil, FlagsAdd, []string{strings.Repeat("k", MaxFlagBytes+1)}, "", 1, ErrInvalidFlag},
		{"bad op", nil, FlagOp(9), nil, "", 1, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openTemp(t)
			mustFile(t, s, testFiling(1, acct))
			if tc.initial != nil {
				if _, err := s.UpdateFlags(acct, Inbox, []uint32{1}, FlagsSet, tc.initial); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := s.Mailbox(acct, Inbox)
			got, err := s.UpdateFlags(acct, Inbox, []uint32{1, 42}, tc.op, tc.flags)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			info, entries, _ := s.Entries(acct, Inbox)
			if info.Unseen != tc.unseen {
				t.Errorf("Unseen = %d, want %d", info.Unseen, tc.unseen)
			}
			if err != nil {
				if info.ModSeq != before.ModSeq {
					t.Errorf("refused update bumped ModSeq")
				}
				return
			}
			if len(got) != 1 || got[0].UID != 1 {
				t.Fatalf("returned %+v, want entry 1 only", got)
			}
			if fmt.Sprint(got[0].Flags) != tc.want || fmt.Sprint(entries[0].Flags) != tc.want {
				t.Errorf("flags returned %v stored %v, want %s", got[0].Flags, entries[0].Flags, tc.want)
			}
		})
	}
}

func TestMailboxNames(t *testing.T) {
	tests := []struct {
		name, canon string
		err         error
	}{
		{"Ordonnances", "Ordonnances", nil},
		{"Ordonnances/2025", "Ordonnances/2025", nil},
		{"Pharmacie/Réserve", "Pharmacie/Réserve", nil},
		{"inbox/Sub", "INBOX/Sub", nil},
		{"INBOXES", "INBOXES", nil},
		{strings.Repeat("a", 255), strings.Repeat("a", 255), nil},
		{"", "", ErrInvalidName},
		{"inbox", "", ErrInvalidName},
		{"INBOX", "", ErrInvalidName},
		{"/a", "", ErrInvalidName},
		{"a/", "", ErrInvalidName},
		{"a//b", "", ErrInvalidName},
		{"a\tb", "", ErrInvalidName},
		{"a\x00b", "", ErrInvalidName},
		{"a\u0085b", "", ErrInvalidName},
		{"\xffa", "", ErrInvalidName},
		{"a*", "", ErrInvalidName},
		{"a%b", "", ErrInvalidName},
		{strings.Repeat("a", 256), "", ErrInvalidName},
	}
	s, _ := openTemp(t)
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.name), func(t *testing.T) {
			err := s.CreateMailbox(acct, tc.name)
			if !errors.Is(err, tc.err) {
				t.Fatalf("CreateMailbox err = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			m, err := s.Mailbox(acct, tc.name)
			if err != nil || m.Name != tc.canon || m.Subscribed {
				t.Fatalf("Mailbox = %+v, %v; want %q unsubscribed", m, err, tc.canon)
			}
			if err := s.CreateMailbox(acct, tc.name); !errors.Is(err, ErrExists) {
				t.Errorf("second create: %v", err)
			}
		})
	}
	if _, err := s.Mailbox(acct, "iNbOx"); err != nil {
		t.Errorf("INBOX lookup is case-insensitive: %v", err)
	}
	if _, err := s.Mailbox(acct, "a//b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("invalid lookup: %v", err)
	}
}

// TestCreateMailboxParents: CREATE makes the superiors a name lacks (RFC
// 3501 §6.3.3 SHOULD), unsubscribed, but not a level that still has
// mailboxes below it after its own deletion (§6.3.4), nor INBOX.
func TestCreateMailboxParents(t *testing.T) {
	s, _ := openTemp(t)
	// A fresh account: the account, its defaults and both parents.
	if err := s.CreateMailbox(acct, "x/y/z"); err != nil {
		t.Fatal(err)
	}
	const want = `Archive\Archive,Drafts\Drafts,INBOX,Sent\Sent,Trash\Trash,x,x/y,x/y/z`
	if got := names(t, s, acct); got != want {
		t.Fatalf("after CREATE x/y/z: %s\nwant %s", got, want)
	}
	for _, n := range []string{"x", "x/y"} {
		m, err := s.Mailbox(acct, n)
		if err != nil || m.Subscribed || m.UIDNext != 1 {
			t.Errorf("parent %s = %+v, %v; want an empty unsubscribed mailbox", n, m, err)
		}
	}
	// x deleted: x/y/z keeps the level x; creating x/w does not bring
	// x back as a mailbox.
	if err := s.DeleteMailbox(acct, "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateMailbox(acct, "x/w"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mailbox(acct, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted level x recreated by CREATE x/w: %v", err)
	}
	// Below a mailbox whose own parent is only a level, nothing is made.
	if err := s.CreateMailbox(acct, "x/y/q"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateMailbox(acct, "inbox/a/b"); err != nil {
		t.Fatal(err)
	}
	const want2 = `Archive\Archive,Drafts\Drafts,INBOX,INBOX/a,INBOX/a/b,Sent\Sent,Trash\Trash,x/w,x/y,x/y/q,x/y/z`
	if got := names(t, s, acct); got != want2 {
		t.Fatalf("after more CREATEs: %s\nwant %s", got, want2)
	}

	// The parents count against MaxMailboxes: a CREATE that would pass it
	// creates nothing.
	mbs, err := s.Mailboxes(acct)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(mbs); i < MaxMailboxes-5; i++ {
		if err := s.CreateMailbox(acct, fmt.Sprintf("f%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	deep := "d" + strings.Repeat("/d", 10)
	before := names(t, s, acct)
	if err := s.CreateMailbox(acct, deep); !errors.Is(err, ErrTooLarge) {
		t.Errorf("CREATE of 11 mailboxes with room for 5: %v", err)
	}
	if got := names(t, s, acct); got != before {
		t.Errorf("a refused CREATE changed the mailboxes")
	}
}

func TestDeleteMailbox(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.EnsureAccount(acct); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"INBOX", "inbox"} {
		if err := s.DeleteMailbox(acct, n); !errors.Is(err, ErrMailboxInUse) {
			t.Errorf("DeleteMailbox(%s) = %v", n, err)
		}
	}
	if err := s.DeleteMailbox(acct, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete missing: %v", err)
	}
	d, err := s.Append(acct, "Archive", []byte("Subject: kept\r\n\r\nx"), []string{`\Seen`}, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, entries, _ := s.Entries(acct, "Archive")
	if err := s.CreateMailbox(acct, "Archive/2024"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMailbox(acct, "Archive"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mailbox(acct, "Archive/2024"); err != nil {
		t.Errorf("child deleted with parent: %v", err)
	}
	if _, err := s.Bytes(entries[0].RecordID); err != nil {
		t.Errorf("record of deleted mailbox gone: %v (delivered %+v)", err, d)
	}
}

func TestRenameMailbox(t *testing.T) {
	s, _ := openTemp(t)
	mustFile(t, s, testFiling(1, acct))
	mustFile(t, s, testFiling(2, acct))
	for _, n := range []string{"A", "A/B", "A/B/C", "AB", "Z"} {
		if err := s.CreateMailbox(acct, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, _, err := s.Copy(acct, Inbox, []uint32{1}, "A/B"); err != nil {
		t.Fatal(err)
	}
	ab, _ := s.Mailbox(acct, "A/B")

	refusals := []struct {
		from, to string
		err      error
	}{
		{"missing", "M", ErrNotFound},
		{"A", "Z", ErrExists},
		{"A", "A", ErrExists},
		{"A", "inbox", ErrInvalidName},
		{"A", "bad//name", ErrInvalidName},
		{"A", "A/B", ErrExists},
	}
	for _, r := range refusals {
		if err := s.RenameMailbox(acct, r.from, r.to); !errors.Is(err, r.err) {
			t.Errorf("Rename(%s→%s) = %v, want %v", r.from, r.to, err, r.err)
		}
	}
	if err := s.RenameMailbox(acct, "A", "Q"); err != nil {
		t.Fatal(err)
	}
	const want = `AB,Archive\Archive,Drafts\Drafts,INBOX,Q,Q/B,Q/B/C,Sent\Sent,Trash\Trash,Z`
	if got := names(t, s, acct); got != want {
		t.Fatalf("after rename: %s\nwant %s", got, want)
	}
	qb, _, err := s.Entries(acct, "Q/B")
	if err != nil || qb.UIDValidity != ab.UIDValidity || qb.Messages != 1 {
		t.Fatalf("renamed child %+v (was %+v): %v", qb, ab, err)
	}

	// Renaming into its own subtree moves the children along; the new
	// name's superiors, gone with the subtree, are created again, empty
	// (RFC 3501 §6.3.5 SHOULD).
	if err := s.RenameMailbox(acct, "Q", "Q/B/D"); err != nil {
		t.Fatal(err)
	}
	const want2 = `AB,Archive\Archive,Drafts\Drafts,INBOX,Q,Q/B,Q/B/D,Q/B/D/B,Q/B/D/B/C,Sent\Sent,Trash\Trash,Z`
	if got := names(t, s, acct); got != want2 {
		t.Fatalf("after nested rename: %s\nwant %s", got, want2)
	}
	if q, err := s.Mailbox(acct, "Q/B"); err != nil || q.Messages != 0 || q.UIDValidity == ab.UIDValidity {
		t.Errorf("recreated parent Q/B = %+v, %v; want empty with a new UIDVALIDITY", q, err)
	}
	// A rename below a missing level creates it; below an existing one,
	// nothing more.
	if err := s.RenameMailbox(acct, "Z", "N/O/Z"); err != nil {
		t.Fatal(err)
	}
	if err := s.RenameMailbox(acct, "AB", "N/AB"); err != nil {
		t.Fatal(err)
	}
	const want3 = `Archive\Archive,Drafts\Drafts,INBOX,N,N/AB,N/O,N/O/Z,Q,Q/B,Q/B/D,Q/B/D/B,Q/B/D/B/C,Sent\Sent,Trash\Trash`
	if got := names(t, s, acct); got != want3 {
		t.Fatalf("after renames below new levels: %s\nwant %s", got, want3)
	}
}

func TestRenameInbox(t *testing.T) {
	s, _ := openTemp(t)
	mustFile(t, s, testFiling(1, acct))
	mustFile(t, s, testFiling(2, acct))
	if err := s.CreateMailbox(acct, "INBOX/Sub"); err != nil {
		t.Fatal(err)
	}
	old, _ := s.Mailbox(acct, Inbox)
	// RFC 3501 §6.3.5: messages move, INBOX stays (empty), children stay.
	if err := s.RenameMailbox(acct, "inbox", "Old"); err != nil {
		t.Fatal(err)
	}
	moved, entries, err := s.Entries(acct, "Old")
	if err != nil || len(entries) != 2 || moved.Messages != 2 || moved.UIDNext != 3 {
		t.Fatalf("Old = %+v %+v, %v", moved, entries, err)
	}
	inbox, inboxEntries, err := s.Entries(acct, Inbox)
	if err != nil || len(inboxEntries) != 0 || inbox.Messages != 0 || inbox.UIDValidity == old.UIDValidity {
		t.Fatalf("INBOX after rename %+v (old %+v), %v", inbox, old, err)
	}
	if _, err := s.Mailbox(acct, "INBOX/Sub"); err != nil {
		t.Errorf("INBOX child moved: %v", err)
	}
	if _, err := s.Mailbox(acct, "Old/Sub"); !errors.Is(err, ErrNotFound) {
		t.Errorf("INBOX child renamed: %v", err)
	}
	res := mustFile(t, s, testFiling(3, acct))
	if res.Entries[0].UIDValidity != inbox.UIDValidity {
		t.Errorf("new filing landed in %+v", res.Entries[0])
	}
}

func TestCopyAndAppend(t *testing.T) {
	s, _ := openTemp(t)
	r1 := mustFile(t, s, testFiling(1, acct))
	mustFile(t, s, testFiling(2, acct))
	if _, err := s.UpdateFlags(acct, Inbox, []uint32{2}, FlagsSet, []string{`\Seen`, "$Label1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Copy(acct, Inbox, []uint32{1}, "Nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("copy to missing mailbox: %v", err)
	}
	uv, src, dst, err := s.Copy(acct, Inbox, []uint32{2, 1, 7}, "Archive")
	if err != nil {
		t.Fatal(err)
	}
	arch, entries, _ := s.Entries(acct, "Archive")
	if uv != arch.UIDValidity || fmt.Sprint(src) != "[1 2]" || fmt.Sprint(dst) != "[1 2]" {
		t.Fatalf("Copy = %d %v %v (archive %+v)", uv, src, dst, arch)
	}
	if arch.Messages != 2 || arch.Unseen != 1 || entries[0].RecordID != r1.ID || fmt.Sprint(entries[1].Flags) != `[$Label1 \Seen]` {
		t.Fatalf("archive %+v entries %+v", arch, entries)
	}
	// Copy into the same mailbox appends new UIDs.
	if _, _, dst, err := s.Copy(acct, "Archive", []uint32{1, 2}, "Archive"); err != nil || fmt.Sprint(dst) != "[3 4]" {
		t.Fatalf("self copy = %v, %v", dst, err)
	}

	date := time.Date(2024, 12, 31, 23, 59, 0, 0, time.UTC)
	d, err := s.Append(acct, "Drafts", []byte("Subject: brouillon\r\n\r\nx"), []string{`\Draft`, `\Recent`}, date, []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	drafts, de, _ := s.Entries(acct, "Drafts")
	if d.UID != 1 || d.UIDValidity != drafts.UIDValidity || len(de) != 1 || !de[0].InternalDate.Equal(date) ||
		fmt.Sprint(de[0].Flags) != `[\Draft]` {
		t.Fatalf("append %+v entries %+v", d, de)
	}
	rec, err := s.Record(de[0].RecordID)
	if err != nil || !rec.Appended || rec.Owner != acct || fmt.Sprint(rec.Recipients) != "["+acct+"]" || rec.Number != "" {
		t.Fatalf("appended record %+v, %v", rec, err)
	}
	if meta, _ := s.Meta(rec.ID); string(meta) != "m" {
		t.Errorf("meta %q", meta)
	}
	if _, err := s.Append(acct, "Nope", []byte("x"), nil, date, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("append to missing: %v", err)
	}
	if _, err := s.Append(acct, Inbox, []byte("x"), []string{`\Nope`}, date, nil); !errors.Is(err, ErrInvalidFlag) {
		t.Errorf("append bad flag: %v", err)
	}
}

func TestSubscribeAndModSeq(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.CreateMailbox(acct, "Lab"); err != nil {
		t.Fatal(err)
	}
	m0, _ := s.Mailbox(acct, "Lab")
	if err := s.SetSubscribed(acct, "Lab", true); err != nil {
		t.Fatal(err)
	}
	m1, _ := s.Mailbox(acct, "Lab")
	if !m1.Subscribed || m1.ModSeq <= m0.ModSeq {
		t.Fatalf("after subscribe %+v (before %+v)", m1, m0)
	}
	if err := s.SetSubscribed(acct, "nope", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("subscribe missing: %v", err)
	}
	if _, err := s.Append(acct, "Lab", []byte("x"), nil, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	m2, _ := s.Mailbox(acct, "Lab")
	if m2.ModSeq <= m1.ModSeq || m2.Messages != 1 || m2.Unseen != 1 || m2.Size != 1 {
		t.Fatalf("after append %+v", m2)
	}
}

func TestWatch(t *testing.T) {
	s, _ := openTemp(t)
	mine, cancelMine := s.Watch(acct)
	defer cancelMine()
	other, cancelOther := s.Watch("other@example.org")
	mustFile(t, s, testFiling(1, acct))
	select {
	case c := <-mine:
		if c.Account != acct || c.Mailbox != Inbox {
			t.Errorf("change %+v", c)
		}
	default:
		t.Fatal("watcher not notified (notification happens before File returns)")
	}
	select {
	case c := <-other:
		t.Fatalf("other account's watcher woken: %+v", c)
	default:
	}
	// Many commits with nobody reading never block the writer.
	for i := 2; i < 10; i++ {
		mustFile(t, s, testFiling(i, acct))
	}
	<-mine
	cancelOther()
	cancelOther() // idempotent
	mustFile(t, s, testFiling(20, "other@example.org"))
	select {
	case c := <-other:
		t.Fatalf("cancelled watcher woken: %+v", c)
	default:
	}
	s.wmu.Lock()
	n := len(s.watchers)
	s.wmu.Unlock()
	if n != 1 {
		t.Errorf("%d accounts watched, want 1", n)
	}
	// Flag changes notify too, refusals do not.
	if _, err := s.UpdateFlags(acct, Inbox, []uint32{1}, FlagsAdd, []string{`\Seen`}); err != nil {
		t.Fatal(err)
	}
	if c := <-mine; c.Mailbox != Inbox {
		t.Errorf("flag change %+v", c)
	}
	if _, err := s.File(context.Background(), func() *Filing { f := testFiling(1, acct); f.Digest[0]++; return f }()); !errors.Is(err, ErrReplay) {
		t.Fatal(err)
	}
	select {
	case c := <-mine:
		t.Fatalf("refusal notified %+v", c)
	default:
	}
}

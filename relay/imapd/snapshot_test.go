package imapd

import (
	"path/filepath"
	"testing"
	"time"

	"mssrelay/store"
)

// TestMailboxSnapshotShared: sessions selecting an unchanged mailbox get
// the same entry list (one copy for a thousand idle clients); a change
// gives a new list and leaves the old one as it was.
func TestMailboxSnapshotShared(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const acct = "pharma@example.org"
	if err := st.EnsureAccount(acct); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := st.Append(acct, store.Inbox, []byte("Subject: x\r\n\r\ny\r\n"), nil, time.Time{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	svc := New(Config{Store: st})
	_, a, err := svc.mailboxEntries(st, acct, "inbox")
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := svc.mailboxEntries(st, acct, store.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 3 || &a[0] != &b[0] {
		t.Fatalf("two reads of an unchanged mailbox did not share one list (%d entries)", len(a))
	}
	if _, err := st.UpdateFlags(acct, store.Inbox, []uint32{1}, store.FlagsAdd, []string{`\Seen`}); err != nil {
		t.Fatal(err)
	}
	info, c, err := svc.mailboxEntries(st, acct, store.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if &c[0] == &a[0] || len(c[0].Flags) != 1 || len(a[0].Flags) != 0 || info.Unseen != 2 {
		t.Fatalf("after a change: new list %v (flags %v), old list flags %v, unseen %d", &c[0] != &a[0], c[0].Flags, a[0].Flags, info.Unseen)
	}

	// A view that changes its entries copies them first.
	sel := &selected{entries: c, shared: true}
	sel.own()
	sel.entries[0].Flags = nil
	if len(c[0].Flags) != 1 {
		t.Error("a session's change reached the shared snapshot")
	}
}

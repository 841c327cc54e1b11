package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/metrics"
	"mssrelay/store"
)

const testINS = "180017512345610"

// storeDemo makes a demo data directory whose store holds three
// prescriptions for the demo pharmacy, one seen and copied to Archive.
func storeDemo(t *testing.T) (dir string, info *demo.Info) {
	t.Helper()
	dir = t.TempDir()
	info, _, err := demo.Ensure(dir, demo.DefaultPorts())
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pharma := info.Pharmacy.Address
	for i := 1; i <= 3; i++ {
		raw := []byte(fmt.Sprintf("From: %s\r\n\r\nsigned prescription %d\r\n", info.Prescriber.Address, i))
		if _, err := st.File(context.Background(), &store.Filing{
			Raw: raw, Received: time.Date(2025, 3, i, 9, 0, 0, 0, time.UTC), Sender: info.Prescriber.Address,
			Recipients: []string{pharma}, Number: fmt.Sprintf("RX-CMD-%d", i), Digest: sha256.Sum256(raw), PatientINS: testINS,
			Audit: []store.AuditEvent{{Kind: store.AuditSMTPAccept, Outcome: "250"}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.UpdateFlags(pharma, store.Inbox, []uint32{2}, store.FlagsAdd, []string{`\Seen`, "$Dispensed"}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := st.Copy(pharma, store.Inbox, []uint32{2}, "Archive"); err != nil {
		t.Fatal(err)
	}
	return dir, info
}

// lockStore holds the store open as a running relay does.
func lockStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func runStoreCmd(fn func(args []string, out *bytes.Buffer) error, args ...string) (string, error) {
	var out bytes.Buffer
	err := fn(args, &out)
	return out.String(), err
}

func backupCmd(args []string, out *bytes.Buffer) error {
	return cmdBackup(context.Background(), args, out)
}
func compactCmd(args []string, out *bytes.Buffer) error { return cmdCompact(args, out) }
func mailboxCmd(args []string, out *bytes.Buffer) error { return cmdMailbox(args, out) }
func restoreCmd(args []string, out *bytes.Buffer) error { return cmdRestore(args, out) }

// TestBackupOffline: with the relay stopped, backup reads the store,
// records itself in the audit trail, and writes a checked copy that opens
// and verifies.
func TestBackupOffline(t *testing.T) {
	dir, _ := storeDemo(t)
	outDir := t.TempDir()
	out := filepath.Join(outDir, "b.db")
	text, err := runStoreCmd(backupCmd, "-data", dir, out)
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, text)
	}
	if !strings.Contains(text, "relay stopped") || !strings.Contains(text, "backup written to "+out) ||
		!strings.Contains(text, "3 records") || !strings.Contains(text, "audit trail intact (4 records") {
		t.Errorf("backup output %q", text)
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 1 {
		t.Errorf("backup left %d files in the output directory", len(ents))
	}
	copyStore, err := store.Open(out, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer copyStore.Close()
	var last store.AuditRecord
	if n, err := copyStore.AuditVerify(func(r store.AuditRecord) { last = r }); err != nil || n != 4 {
		t.Fatalf("copy's audit: %d, %v", n, err)
	}
	if last.Kind != "admin.backup" || last.Subject != "file=b.db" {
		t.Errorf("last audit record of the copy %+v, want the backup itself", last)
	}
	if rec, err := copyStore.RecordByNumber("RX-CMD-3"); err != nil || rec.PatientINS != testINS {
		t.Errorf("record in the copy: %+v, %v", rec, err)
	}
}

// TestBackupOnline: while the store is locked, backup asks the admin
// endpoint (here the real metrics handler over a real store, as the relay
// serves it) and writes the same checked copy.
func TestBackupOnline(t *testing.T) {
	dir, _ := storeDemo(t)
	st := lockStore(t, dir)
	tok, err := metrics.NewBackupToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(metrics.Handler(nil, metrics.HandlerOptions{Backup: &metrics.BackupOptions{
		Snapshot: st.Backup, Dir: dir, Token: tok,
	}}))
	defer srv.Close()
	cfgPath := withAdmin(t, dir, strings.TrimPrefix(srv.URL, "http://"))

	out := filepath.Join(t.TempDir(), "online.db")
	text, err := runStoreCmd(backupCmd, "-config", cfgPath, out)
	if err != nil {
		t.Fatalf("online backup: %v\n%s", err, text)
	}
	if !strings.Contains(text, "asking the running relay at "+srv.URL) || !strings.Contains(text, "3 records") {
		t.Errorf("online backup output %q", text)
	}
	info, err := store.VerifyFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, head, _ := st.AuditHead(); head != info.AuditHead || info.Records != 3 {
		t.Errorf("online backup %+v does not match the running store", info)
	}

	// A wrong token (a relay restarted since) is refused, and FILE is
	// not created.
	if err := os.WriteFile(filepath.Join(dir, metrics.BackupTokenFile), []byte("stale\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(t.TempDir(), "refused.db")
	if _, err := runStoreCmd(backupCmd, "-config", cfgPath, out2); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("backup with a stale token: %v", err)
	}
	if _, err := os.Stat(out2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused backup created %s", out2)
	}
}

// withAdmin writes a copy of the demo config with admin.listen set.
func withAdmin(t *testing.T, dir, listen string) string {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(dir, demo.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "admin.toml")
	text := string(cfg) + fmt.Sprintf("\n[admin]\nlisten = %q\n", listen)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBackupRefusals(t *testing.T) {
	dir, _ := storeDemo(t)
	empty := t.TempDir()
	if _, _, err := demo.Ensure(empty, demo.DefaultPorts()); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "x.db")
	cases := []struct {
		name  string
		args  []string
		lock  bool
		usage bool
		want  string
	}{
		{"no file", []string{"-data", dir}, false, true, "exactly one output file"},
		{"two files", []string{"-data", dir, out, out}, false, true, "exactly one output file"},
		{"onto the store", []string{"-data", dir, filepath.Join(dir, relay.DBFile)}, false, true, "is the store itself"},
		{"no store yet", []string{"-data", empty, out}, false, false, "no store to back up"},
		{"running without admin.listen", []string{"-data", dir, out}, true, false, "admin.listen is not set"},
		{"running, no token", []string{"-config", withAdmin(t, dir, "127.0.0.1:1"), out}, true, false, "backup token cannot be read"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.lock {
				st := lockStore(t, dir)
				defer st.Close()
			}
			_, err := runStoreCmd(backupCmd, c.args...)
			var ue usageError
			if err == nil || errors.As(err, &ue) != c.usage || !strings.Contains(err.Error(), c.want) {
				t.Errorf("backup %v: %v (usage error %v); want %q", c.args, err, c.usage, c.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused backup created %s", out)
			}
		})
	}
}

func TestCompactCommand(t *testing.T) {
	dir, _ := storeDemo(t)
	db := filepath.Join(dir, relay.DBFile)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-data", dir, "extra"}, "unexpected argument"},
		{[]string{"-data", dir, "-o", "x.db", "-no-backup"}, "-no-backup applies to compacting in place"},
		{[]string{"-data", dir, "-o", db}, "is the store itself"},
	} {
		var ue usageError
		if _, err := runStoreCmd(compactCmd, c.args...); !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("compact %v: %v; want a usage error with %q", c.args, err, c.want)
		}
	}

	st := lockStore(t, dir)
	if _, err := runStoreCmd(compactCmd, "-data", dir); err == nil || !strings.Contains(err.Error(), "relay is stopped") {
		t.Errorf("compact while the store is in use: %v", err)
	}
	st.Close()

	out := filepath.Join(t.TempDir(), "c.db")
	text, err := runStoreCmd(compactCmd, "-data", dir, "-o", out)
	if err != nil || !strings.Contains(text, "compacted into "+out) {
		t.Fatalf("compact -o: %v\n%s", err, text)
	}
	if _, err := os.Stat(db + ".bak"); !errors.Is(err, os.ErrNotExist) {
		t.Error("compact -o made a .bak")
	}
	text, err = runStoreCmd(compactCmd, "-data", dir)
	if err != nil || !strings.Contains(text, "kept as "+db+".bak") {
		t.Fatalf("compact: %v\n%s", err, text)
	}
	info, err := store.VerifyFile(db)
	if err != nil || info.Records != 3 {
		t.Errorf("compacted store: %+v, %v", info, err)
	}
}

func TestMailboxCommands(t *testing.T) {
	dir, info := storeDemo(t)
	pharma := info.Pharmacy.Address

	text, err := runStoreCmd(mailboxCmd, "list", "-data", dir, pharma)
	if err != nil {
		t.Fatalf("mailbox list: %v", err)
	}
	for _, want := range []string{pharma + ": 5 folders, 4 messages", "FOLDER", "UIDVALIDITY", "INBOX", `\Archive`, `\Trash`} {
		if !strings.Contains(text, want) {
			t.Errorf("mailbox list lacks %q:\n%s", want, text)
		}
	}
	inbox := lineWith(text, "INBOX")
	if f := strings.Fields(inbox); len(f) < 9 || f[1] != "3" || f[2] != "2" || f[6] != "4" { // the size takes two fields
		t.Errorf("INBOX row %q: want 3 messages, 2 unseen, UIDNEXT 4", inbox)
	}

	// The domain's case does not matter, as for a login.
	local, domain, _ := strings.Cut(pharma, "@")
	upper := local + "@" + strings.ToUpper(domain)
	text, err = runStoreCmd(mailboxCmd, "show", "-data", dir, upper)
	if err != nil {
		t.Fatalf("mailbox show: %v", err)
	}
	for _, want := range []string{"INBOX: 3 messages, 2 unseen", "UID", "RX-CMD-1", "RX-CMD-3", "2025-03-02T09:00:00Z", `$Dispensed \Seen`} {
		if !strings.Contains(text, want) {
			t.Errorf("mailbox show lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, testINS) || strings.Contains(text, "signed prescription") {
		t.Errorf("mailbox show prints clinical content:\n%s", text)
	}
	text, err = runStoreCmd(mailboxCmd, "show", "-data", dir, pharma, "Archive")
	if err != nil || !strings.Contains(text, "RX-CMD-2") || strings.Contains(text, "RX-CMD-1") {
		t.Errorf("mailbox show Archive: %v\n%s", err, text)
	}

	for _, c := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{nil, true, "mailbox list ACCOUNT"},
		{[]string{"drop"}, true, "unknown mailbox subcommand"},
		{[]string{"list", "-data", dir}, true, "exactly one account"},
		{[]string{"show", "-data", dir, pharma, "INBOX", "x"}, true, "optionally a folder"},
		{[]string{"list", "-data", dir, "nobody@example.org"}, false, "no mailboxes"},
		{[]string{"show", "-data", dir, pharma, "Nope"}, false, `no folder "Nope"`},
	} {
		_, err := runStoreCmd(mailboxCmd, c.args...)
		var ue usageError
		if err == nil || errors.As(err, &ue) != c.usage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("mailbox %v: %v; want %q (usage %v)", c.args, err, c.want, c.usage)
		}
	}
	st := lockStore(t, dir)
	defer st.Close()
	if _, err := runStoreCmd(mailboxCmd, "list", "-data", dir, pharma); !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "stop the relay") {
		t.Errorf("mailbox list while the store is in use: %v", err)
	}
}

func lineWith(text, word string) string {
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == word {
			return l
		}
	}
	return ""
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestRestoreCommand: back up, file more, restore: the store is the
// backup's again, with new UIDVALIDITYs, and the replaced file is kept.
func TestRestoreCommand(t *testing.T) {
	dir, info := storeDemo(t)
	bak := filepath.Join(t.TempDir(), "b.db")
	if _, err := runStoreCmd(backupCmd, "-data", dir, bak); err != nil {
		t.Fatal(err)
	}
	before, _ := runStoreCmd(mailboxCmd, "list", "-data", dir, info.Pharmacy.Address)

	st := lockStore(t, dir)
	if _, err := runStoreCmd(restoreCmd, "-data", dir, bak); !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "stop the relay") {
		t.Errorf("restore while the store is in use: %v", err)
	}
	st.Close()
	for _, c := range [][]string{{"-data", dir}, {"-data", dir, filepath.Join(dir, relay.DBFile)}} {
		var ue usageError
		if _, err := runStoreCmd(restoreCmd, c...); !errors.As(err, &ue) {
			t.Errorf("restore %v: %v, want a usage error", c, err)
		}
	}
	text, err := runStoreCmd(restoreCmd, "-data", dir, bak)
	if err != nil || !strings.Contains(text, "restored 3 records") || !strings.Contains(text, "5 mailboxes have a new UIDVALIDITY") ||
		!strings.Contains(text, relay.DBFile+".before-restore") {
		t.Fatalf("restore: %v\n%s", err, text)
	}
	after, _ := runStoreCmd(mailboxCmd, "list", "-data", dir, info.Pharmacy.Address)
	uv := func(text string) string { return strings.Fields(lineWith(text, "INBOX"))[5] } // the size takes two fields
	if uv(before) == uv(after) {
		t.Errorf("INBOX UIDVALIDITY unchanged by restore (%s)", uv(after))
	}
}

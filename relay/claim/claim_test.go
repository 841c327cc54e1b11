package claim

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/store"
)

// fixture is a claim service over a real store, with a recorded audit and
// a fake clock.
type fixture struct {
	t      *testing.T
	st     *store.Store
	svc    *Service
	clk    *clock
	events []store.AuditEvent
	slept  []time.Duration
	n      int
}

var (
	pharma = &configs.Account{Address: "pharma@example.org", Role: configs.RoleExecutant}
	gare   = &configs.Account{Address: "gare@example.org", Role: configs.RoleExecutant}
	labo   = &configs.Account{Address: "labo@example.org", Role: configs.RoleExecutant}
	doctor = &configs.Account{Address: "dr@example.org", Role: configs.RolePrescriber, RPPS: "10101201234"}
)

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "mss.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, st: st, clk: newClock()}
	cfg.Address = "claim@example.org"
	f.svc = New(Options{Config: cfg, Store: st, Now: f.clk.now,
		Audit: func(ev store.AuditEvent) { f.events = append(f.events, ev) },
		Sleep: func(d time.Duration) { f.slept = append(f.slept, d) }})
	return f
}

// file files a prescription (unverifiable signature: claims never verify
// again) for recipients; header goes into the signed entity.
func (f *fixture) file(header string, recipients ...string) (number string, id uint64) {
	f.t.Helper()
	f.n++
	number = "RX-TEST-" + string(rune('a'+f.n))
	content := []byte(header + "Content-Type: text/plain\r\n\r\nprescription " + number + "\r\n")
	raw := mime.BuildDetached([]byte("From: dr@example.org\r\nSubject: Ordonnance\r\n"), content, []byte("not a real signature"))
	res, err := f.st.File(context.Background(), &store.Filing{Raw: raw, Sender: doctor.Address, Recipients: recipients,
		Number: number, Digest: sha256.Sum256(content), PatientINS: ins})
	if err != nil {
		f.t.Fatal(err)
	}
	return number, res.ID
}

func (f *fixture) claim(acct *configs.Account, number, i string) *Reply {
	f.t.Helper()
	return f.svc.Claim(context.Background(), Request{Account: acct, Remote: "192.0.2.7:4242",
		Raw: Message(acct.Address, "claim@example.org", number, i, "m@example.org", f.clk.now())})
}

func (f *fixture) dispense(acct *configs.Account, uid uint32) {
	f.t.Helper()
	if _, err := f.st.UpdateFlags(acct.Address, store.Inbox, []uint32{uid}, store.FlagsAdd, []string{"$dispensed"}); err != nil {
		f.t.Fatal(err)
	}
}

func otherINS(t *testing.T) string {
	k, err := mime.ComputeINSKey("2840375123456")
	if err != nil {
		t.Fatal(err)
	}
	return "2840375123456" + k
}

// TestClaimPaths runs each path once and checks the reply, the audit event
// and what was filed.
func TestClaimPaths(t *testing.T) {
	f := newFixture(t, Config{MaxPerHour: 100, FailureDelay: time.Second, ExecutionsAllowed: 1})
	plain, plainID := f.file("", pharma.Address)
	reserved, _ := f.file("X-Ordonnance-Restrict: Labo <labo@example.org>\r\n", pharma.Address)
	executed, _ := f.file("", pharma.Address)
	f.dispense(pharma, 3)

	cases := []struct {
		name        string
		acct        *configs.Account
		number, ins string
		outcome     string
		delayed     bool
	}{
		{"prescriber", doctor, plain, ins, "550 5.7.1 role", false},
		{"unknown number", gare, "RX-NOPE", ins, "550 5.7.1 no_match", true},
		{"wrong INS", gare, plain, otherINS(t), "550 5.7.1 no_match", true},
		{"bad INS key", gare, plain, ins[:13] + "00", "554 5.6.0 syntax", true},
		{"reserved", gare, reserved, ins, "550 5.7.1 restricted", false},
		{"reserved, listed", labo, reserved, ins, "250", false},
		{"reserved, recipient", pharma, reserved, ins, "250", false},
		{"executed", gare, executed, ins, "550 5.7.1 executed", false},
		{"ok", gare, plain, ins, "250", false},
		{"repeated", gare, plain, ins, "250", false},
	}
	for _, c := range cases {
		f.events = nil
		r := f.claim(c.acct, c.number, c.ins)
		if r.Outcome() != c.outcome {
			t.Errorf("%s: %s %q, want %s", c.name, r.Outcome(), r.Message, c.outcome)
		}
		if (r.Delay > 0) != c.delayed {
			t.Errorf("%s: delay %v", c.name, r.Delay)
		}
		// Refusals and repeats are audited through the hook; a filing
		// commits its own audit record.
		if r.Reason != "ok" && (len(f.events) != 1 || f.events[0].Kind != store.AuditSMTPClaim || f.events[0].Outcome != c.outcome ||
			f.events[0].Actor != c.acct.Address || f.events[0].Remote != "192.0.2.7:4242") {
			t.Errorf("%s: audit %+v", c.name, f.events)
		}
		for _, ev := range f.events {
			if strings.Contains(ev.Subject+ev.Detail, ins[:13]) || strings.Contains(ev.Subject+ev.Detail, otherINS(t)[:13]) {
				t.Errorf("%s: INS in audit %+v", c.name, ev)
			}
		}
	}
	if f.events[0].Subject != "record=1 rx="+plain+" mbox=INBOX uid=1" {
		t.Errorf("repeat audit subject %q", f.events[0].Subject)
	}
	// Same reply for an unknown number and a wrong INS.
	a, b := f.claim(gare, "RX-NOPE", ins), f.claim(gare, plain+"x", ins)
	if a.Code != b.Code || a.Enhanced != b.Enhanced || a.Message != b.Message {
		t.Errorf("unknown number %+v and wrong INS %+v differ", a, b)
	}
	// The claimant's INBOX holds the one claimed record, once.
	_, entries, err := f.st.Entries(gare.Address, store.Inbox)
	if err != nil || len(entries) != 1 || entries[0].RecordID != plainID {
		t.Errorf("claimant INBOX %+v, %v", entries, err)
	}
	if n := f.st.Stats().Filings; n != 3 {
		t.Errorf("%d records, want the 3 filed", n)
	}
	if claims, _ := f.st.Claims(plainID); len(claims) != 1 || claims[0].Account != gare.Address {
		t.Errorf("claims index %+v", claims)
	}
}

// TestClaimAllowance: executions_allowed counts the accounts that marked
// their copy $Dispensed (any folder, any case), each once.
func TestClaimAllowance(t *testing.T) {
	f := newFixture(t, Config{MaxPerHour: 100, ExecutionsAllowed: 2})
	number, id := f.file("", pharma.Address)
	f.dispense(pharma, 1)
	// A copy in Archive does not make a second execution.
	if _, _, _, err := f.st.Copy(pharma.Address, store.Inbox, []uint32{1}, "Archive"); err != nil {
		t.Fatal(err)
	}
	r := f.claim(gare, number, ins)
	if !r.OK() {
		t.Fatalf("one execution of two allowed: %s %s", r.Outcome(), r.Message)
	}
	f.dispense(gare, r.Delivered.UID)
	if r := f.claim(labo, number, ins); r.Outcome() != "550 5.7.1 executed" {
		t.Fatalf("two executions of two: %s", r.Outcome())
	}
	// What was already claimed stays: a repeat by an executor is 250.
	if r := f.claim(gare, number, ins); !r.OK() || r.Reason != "existing" || r.Delivered.UIDValidity == 0 {
		t.Errorf("repeat after dispensing: %s %s", r.Outcome(), r.Reason)
	}
	entries, _ := f.st.RecordEntries(id)
	if executions(entries) != 2 {
		t.Errorf("executions = %d over %+v", executions(entries), entries)
	}
}

// TestClaimDelays: failures are held back longer and longer (Hold sleeps
// the delay); a success starts over; the hourly limit refuses at once.
func TestClaimDelays(t *testing.T) {
	f := newFixture(t, Config{MaxPerHour: 5, FailureDelay: 100 * time.Millisecond})
	number, _ := f.file("", pharma.Address)
	for i := 0; i < 3; i++ {
		f.svc.Hold(f.claim(gare, "RX-GUESS", ins))
	}
	if want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}; strings.Join(durs(f.slept), ",") != strings.Join(durs(want), ",") {
		t.Errorf("slept %v, want %v", f.slept, want)
	}
	f.slept = nil
	if r := f.claim(gare, number, ins); !r.OK() || r.Delay != 0 {
		t.Fatalf("good claim: %s delay %v", r.Outcome(), r.Delay)
	}
	if r := f.claim(gare, "RX-GUESS", ins); r.Delay != 100*time.Millisecond {
		t.Errorf("failure after a success delayed %v", r.Delay)
	}
	r := f.claim(gare, number, ins) // the sixth within the hour
	if r.Outcome() != "451 4.7.1 rate_limited" || r.Delay != 0 {
		t.Errorf("over the limit: %s delay %v", r.Outcome(), r.Delay)
	}
	f.clk.add(time.Hour)
	if r := f.claim(gare, number, ins); !r.OK() {
		t.Errorf("an hour later: %s", r.Outcome())
	}
}

func durs(ds []time.Duration) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.String())
	}
	return out
}

func TestClaimQuotaAndSize(t *testing.T) {
	f := newFixture(t, Config{})
	number, _ := f.file("", pharma.Address)
	f.st.SetQuota(func(a string) (int64, uint32) {
		if a == gare.Address {
			return 0, 1
		}
		return 0, 0
	})
	if err := f.st.EnsureAccount(gare.Address); err != nil {
		t.Fatal(err)
	}
	// gare's quota of 1 message is taken by its own filing.
	f.file("", gare.Address)
	if r := f.claim(gare, number, ins); r.Outcome() != "452 4.2.2 over_quota" {
		t.Errorf("over quota: %s", r.Outcome())
	}
	big := f.svc.Claim(context.Background(), Request{Account: gare, Raw: make([]byte, MaxMessageBytes+1)})
	if big.Outcome() != "552 5.3.4 too_large" {
		t.Errorf("too large: %s", big.Outcome())
	}
	if r := f.svc.TooLarge(gare, ""); r.Code != 552 {
		t.Errorf("TooLarge: %s", r.Outcome())
	}
	if r := f.svc.CheckSender(doctor, ""); r == nil || r.Outcome() != "550 5.7.1 role" {
		t.Errorf("CheckSender(prescriber) = %+v", r)
	}
	if r := f.svc.CheckSender(gare, ""); r != nil {
		t.Errorf("CheckSender(executant) = %+v", r)
	}
	if !f.svc.IsClaimAddress("claim@EXAMPLE.org") || f.svc.IsClaimAddress("Claim@example.org") || f.svc.IsClaimAddress("gare@example.org") {
		t.Error("IsClaimAddress")
	}
}

// TestRepliesDocumented keeps docs/claim.md in step: every reply has a
// row with its code and reason label.
func TestRepliesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/claim.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(\\d{3}) (\\d\\.\\d\\.\\d)` \\| `([a-z_]+)` \\|")
	documented := map[string]bool{}
	for _, m := range row.FindAllSubmatch(doc, -1) {
		documented[string(m[1])+" "+string(m[2])+" "+string(m[3])] = true
	}
	for _, r := range Replies() {
		k := r.Outcome()
		if r.OK() {
			k = "250 2.0.0 " + r.Reason
		}
		if !documented[k] {
			t.Errorf("reply %s (%s) has no row in docs/claim.md", k, r.Message)
		}
	}
	if len(documented) != len(Replies()) {
		t.Errorf("docs/claim.md documents %d replies, the code has %d", len(documented), len(Replies()))
	}
}

// TestClaimHeldElsewhere: a claimant that moved its copy to Archive and
// marked it $Dispensed claims again: 250 existing naming Archive and the
// UID there, nothing filed, and not "executed" for its own execution.
func TestClaimHeldElsewhere(t *testing.T) {
	f := newFixture(t, Config{MaxPerHour: 100, ExecutionsAllowed: 1})
	number, id := f.file("", pharma.Address)
	r := f.claim(gare, number, ins)
	if r.Reason != "ok" {
		t.Fatalf("claim: %s %s", r.Outcome(), r.Message)
	}
	_, _, dst, err := f.st.Move(gare.Address, store.Inbox, []uint32{r.Delivered.UID}, "Archive")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.UpdateFlags(gare.Address, "Archive", dst, store.FlagsAdd, []string{KeywordDispensed}); err != nil {
		t.Fatal(err)
	}
	f.events = nil
	r = f.claim(gare, number, ins)
	want := fmt.Sprintf("Prescription %s is already in your mailbox Archive (UID %d), not filed twice", number, dst[0])
	if r.Outcome() != "250" || r.Reason != "existing" || r.Message != want {
		t.Fatalf("repeat after MOVE: %s %s %q\nwant 250 existing %q", r.Outcome(), r.Reason, r.Message, want)
	}
	if d := r.Delivered; d == nil || d.Mailbox != "Archive" || d.UID != dst[0] {
		t.Errorf("Delivered %+v", r.Delivered)
	}
	if len(f.events) != 1 || f.events[0].Subject != fmt.Sprintf("record=%d rx=%s mbox=Archive uid=%d", id, number, dst[0]) ||
		f.events[0].Outcome != "250" || f.events[0].Detail != "already in Archive, not filed twice" {
		t.Errorf("audit %+v", f.events)
	}
	entries, err := f.st.RecordEntries(id)
	if err != nil {
		t.Fatal(err)
	}
	if d := held(entries, gare.Address); d == nil || d.Mailbox != "Archive" {
		t.Errorf("held = %+v over %+v", d, entries)
	}
	if n := len(entries); n != 2 {
		t.Errorf("%d entries of the record, want 2 (recipient's INBOX, claimant's Archive): %+v", n, entries)
	}
	// Another executant is refused: the claimant's execution counts.
	if r := f.claim(labo, number, ins); r.Outcome() != "550 5.7.1 executed" {
		t.Errorf("another executant after the execution: %s", r.Outcome())
	}
}

// TestHeld: INBOX is preferred; otherwise the first other mailbox.
func TestHeld(t *testing.T) {
	es := []store.RecordEntry{
		{Account: "a", Mailbox: "Archive", UID: 4},
		{Account: "b", Mailbox: "Archive", UID: 5},
		{Account: "b", Mailbox: "INBOX", UID: 6},
		{Account: "b", Mailbox: "Trash", UID: 7},
	}
	for _, c := range []struct {
		account, mailbox string
		uid              uint32
	}{{"a", "Archive", 4}, {"b", "INBOX", 6}, {"c", "", 0}} {
		d := held(es, c.account)
		if (d == nil) != (c.uid == 0) || d != nil && (d.Mailbox != c.mailbox || d.UID != c.uid) {
			t.Errorf("held(%s) = %+v, want %s %d", c.account, d, c.mailbox, c.uid)
		}
	}
}

func TestMailboxText(t *testing.T) {
	for in, want := range map[string]string{
		"Archive":         "Archive",
		"INBOX/2026":      "INBOX/2026",
		"Délivrées":       `"D\u00e9livr\u00e9es"`,
		"Old mail":        `"Old mail"`,
		`a"b`:             `"a\"b"`,
		"Archive/Réseau ": `"Archive/R\u00e9seau "`,
	} {
		if got := mailboxText(in); got != want {
			t.Errorf("mailboxText(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestClaimStoreError: a store that fails (closed here) answers 451 4.3.0
// store_error, audited, and does not count as a guess.
func TestClaimStoreError(t *testing.T) {
	f := newFixture(t, Config{MaxPerHour: 100, FailureDelay: time.Second})
	number, _ := f.file("", pharma.Address)
	if err := f.st.Close(); err != nil {
		t.Fatal(err)
	}
	r := f.claim(gare, number, ins)
	if r.Outcome() != "451 4.3.0 store_error" || r.Message != "Temporary failure, try again later" || r.Delay != 0 {
		t.Fatalf("closed store: %s %q delay %v", r.Outcome(), r.Message, r.Delay)
	}
	if len(f.events) != 1 || f.events[0].Outcome != "451 4.3.0 store_error" || f.events[0].Subject != "rx="+number || f.events[0].Actor != gare.Address {
		t.Errorf("audit %+v", f.events)
	}
}

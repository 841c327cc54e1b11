package loadgen_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"mssrelay/relay/demo"
	"mssrelay/relay/loadgen"
)

// sessionsOptions points a sessions run at the in-process relay's
// implicit-TLS IMAP port as the given demo user.
func sessionsOptions(t *testing.T, info *demo.Info, u demo.User, sessions, c int) loadgen.IMAPSessionsOptions {
	t.Helper()
	tlsCfg, err := info.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	return loadgen.IMAPSessionsOptions{
		IMAP: loadgen.IMAPOptions{Addr: info.IMAPTLS, TLS: tlsCfg, User: u.Address, Password: u.Password,
			Concurrency: c, Timeout: 30 * time.Second},
		Sessions: sessions,
	}
}

// TestIMAPSessionsAgainstRelay submits one prescription, then runs 20
// short sessions from 2 workers: every one must log in, examine INBOX,
// fetch the whole message and log out, on a connection of its own.
func TestIMAPSessionsAgainstRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay")
	}
	const sessions, c = 20, 2
	info := startRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	b, err := loadgen.Prepare(loadgen.Config{N: 1, From: info.Prescriber.Address, To: info.Pharmacy.Address,
		Signers: demoSigners(t, info, loadgen.KeysP256)})
	if err != nil {
		t.Fatal(err)
	}
	sr, err := loadgen.RunSMTP(ctx, b, smtpOptions(t, info))
	if err != nil {
		t.Fatal(err)
	}
	assertAllAccepted(t, "submission", b, sr)

	r, err := loadgen.RunIMAPSessions(ctx, sessionsOptions(t, info, info.Pharmacy, sessions, c))
	if err != nil {
		t.Fatal(err)
	}
	if r.Completed != sessions || r.Failed != 0 || r.NotRun != 0 || len(r.Errors) != 0 {
		t.Errorf("completed %d of %d, failed %d, not run %d, errors %v", r.Completed, sessions, r.Failed, r.NotRun, r.Errors)
	}
	if r.Concurrency != c || r.Session.Count != sessions {
		t.Errorf("%d workers and %d session latencies, want %d and %d", r.Concurrency, r.Session.Count, c, sessions)
	}
	// The stored message carries the submitted one plus trace headers.
	if r.Size < b.Bytes {
		t.Errorf("message of %d bytes in the mailbox, %d were submitted", r.Size, b.Bytes)
	}
	if r.Bytes != int64(sessions)*r.Size {
		t.Errorf("%d bytes fetched, want %d sessions × %d", r.Bytes, sessions, r.Size)
	}
	if r.UID == 0 {
		t.Error("no UID reported for the fetched message")
	}
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "20 of 20") {
		t.Errorf("report does not say 20 of 20 completed:\n%s", text.String())
	}
	t.Logf("\n%s", text.String())

	// The run changed nothing: BODY.PEEK[] left the message unseen, and
	// it is still the only one.
	ir, err := loadgen.RunIMAP(ctx, loadgen.IMAPOptions{Addr: info.IMAPTLS, TLS: sessionsOptions(t, info, info.Pharmacy, 1, 1).IMAP.TLS,
		User: info.Pharmacy.Address, Password: info.Pharmacy.Password})
	if err != nil {
		t.Fatal(err)
	}
	if ir.Exists != 1 {
		t.Errorf("INBOX holds %d messages after the run, want 1", ir.Exists)
	}
}

// TestIMAPSessionsRefused: a run that cannot start says why, before any
// session is counted.
func TestIMAPSessionsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay")
	}
	info := startRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tests := []struct {
		name    string
		edit    func(o *loadgen.IMAPSessionsOptions)
		wantIs  error
		wantSub string
	}{
		{name: "empty mailbox", edit: func(*loadgen.IMAPSessionsOptions) {}, wantIs: loadgen.ErrEmptyMailbox},
		{name: "wrong password", edit: func(o *loadgen.IMAPSessionsOptions) { o.IMAP.Password += "x" }, wantSub: "LOGIN"},
		{name: "no address", edit: func(o *loadgen.IMAPSessionsOptions) { o.IMAP.Addr = "" }, wantSub: "no server address"},
		{name: "no sessions", edit: func(o *loadgen.IMAPSessionsOptions) { o.Sessions = 0 }, wantSub: "must be positive"},
		{name: "no such mailbox", edit: func(o *loadgen.IMAPSessionsOptions) { o.IMAP.Mailbox = "Nowhere" }, wantSub: "EXAMINE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A fresh relay's second pharmacy has an empty INBOX.
			o := sessionsOptions(t, info, info.Pharmacy2, 3, 1)
			tt.edit(&o)
			r, err := loadgen.RunIMAPSessions(ctx, o)
			if err == nil {
				t.Fatalf("run succeeded (%+v), want an error", r)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q is not %q", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("error %q does not mention %q", err, tt.wantSub)
			}
		})
	}
}

package loadgen_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"mssrelay/relay/demo"
	"mssrelay/relay/loadgen"
	"mssrelay/relay/metrics"
)

// idleOptions points an idle run at the in-process relay: IMAP over
// implicit TLS as the demo pharmacy, SMTP submission with STARTTLS as the
// demo prescriber.
func idleOptions(t *testing.T, info *demo.Info, imapN, smtpN int) loadgen.IdleOptions {
	t.Helper()
	tlsCfg, err := info.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	return loadgen.IdleOptions{
		IMAP: loadgen.IMAPOptions{Addr: info.IMAPTLS, TLS: tlsCfg,
			User: info.Pharmacy.Address, Password: info.Pharmacy.Password, Timeout: 30 * time.Second},
		IMAPSessions: imapN,
		SMTP:         smtpOptions(t, info),
		SMTPSessions: smtpN,
		Dialers:      4,
	}
}

// TestIdleAgainstRelay opens a few idle sessions against a real relay and
// checks that each one was set up (IMAP: LOGIN, SELECT INBOX, and IDLE or
// NOOP polling; SMTP: STARTTLS and AUTH), survived the hold, and that the
// relay itself counted them while memory was read from its admin /metrics.
func TestIdleAgainstRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay")
	}
	const imapN, smtpN = 5, 3
	tests := []struct {
		name      string
		noIDLE    bool
		hold      time.Duration
		keepAlive time.Duration
		wantState string
	}{
		{name: "IDLE", wantState: "LOGIN+SELECT INBOX+IDLE"},
		// A short hold with keep-alives due during it: the NOOPs must not
		// break a session. (The count of NOOPs depends on the clock and is
		// not asserted.)
		{name: "NOOP polling", noIDLE: true, hold: 50 * time.Millisecond, keepAlive: 10 * time.Millisecond,
			wantState: "LOGIN+SELECT INBOX"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, r := startRelayServer(t)
			admin := httptest.NewServer(metrics.Handler(r.Metrics(), metrics.HandlerOptions{}))
			defer admin.Close()

			o := idleOptions(t, info, imapN, smtpN)
			o.NoIDLE, o.Hold, o.KeepAlive = tt.noIDLE, tt.hold, tt.keepAlive
			o.Measure = func(ctx context.Context) (*loadgen.Memory, error) {
				return loadgen.ScrapeMemory(ctx, admin.Client(), admin.URL+"/metrics")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			rep, err := loadgen.RunIdle(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if rep.IMAPOpen != imapN || rep.IMAPAlive != imapN || rep.SMTPOpen != smtpN || rep.SMTPAlive != smtpN {
				t.Errorf("IMAP %d open, %d alive; SMTP %d open, %d alive; want %d and %d (errors %v)",
					rep.IMAPOpen, rep.IMAPAlive, rep.SMTPOpen, rep.SMTPAlive, imapN, smtpN, rep.Errors)
			}
			if len(rep.Errors) != 0 {
				t.Errorf("errors %v, want none", rep.Errors)
			}
			if rep.IMAPState != tt.wantState {
				t.Errorf("IMAP state %q, want %q", rep.IMAPState, tt.wantState)
			}
			if rep.SMTPSecurity != "STARTTLS+AUTH" {
				t.Errorf("SMTP security %q, want STARTTLS+AUTH", rep.SMTPSecurity)
			}
			if rep.IMAPSetup.Count != imapN || rep.SMTPSetup.Count != smtpN {
				t.Errorf("set-up latencies: %d IMAP, %d SMTP; want %d and %d", rep.IMAPSetup.Count, rep.SMTPSetup.Count, imapN, smtpN)
			}
			if rep.Before == nil || rep.During == nil {
				t.Fatalf("memory before %+v, during %+v (measure error %q)", rep.Before, rep.During, rep.MeasureError)
			}
			// The relay's own gauges: nothing before, every session during.
			checkGauge := func(name string, got *int, want int) {
				t.Helper()
				if got == nil || *got != want {
					t.Errorf("%s = %v, want %d", name, got, want)
				}
			}
			checkGauge("server IMAP sessions before", rep.Before.ServerIMAPSessions, 0)
			checkGauge("server SMTP sessions before", rep.Before.ServerSMTPSessions, 0)
			checkGauge("server IMAP sessions during", rep.During.ServerIMAPSessions, imapN)
			checkGauge("server SMTP sessions during", rep.During.ServerSMTPSessions, smtpN)
			if rep.During.RSS <= 0 || rep.During.HeapInuse <= 0 || rep.During.Goroutines <= 0 {
				t.Errorf("memory during: %+v, want RSS, heap and goroutines", rep.During)
			}

			var text strings.Builder
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"5 of 5 sessions open", "3 of 3 sessions open", "the relay counts 5 IMAP and 3 SMTP sessions"} {
				if !strings.Contains(text.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, text.String())
				}
			}
		})
	}
}

// TestIdleRefusals checks that the sessions are really authenticated: a
// wrong password opens nothing, and the relay's per-account cap on IMAP
// sessions (which counts logged-in sessions only) refuses the one past it.
func TestIdleRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay")
	}
	info := startRelay(t)
	const perAccount = 20 // limits.max_imap_sessions_per_account, default
	tests := []struct {
		name               string
		imapN, smtpN       int
		imapPass, smtpPass string
		wantIMAP, wantSMTP int
		wantErr            string // in the one error class
		wantErrs           int
	}{
		{name: "IMAP wrong password", imapN: 2, imapPass: "wrong", wantErr: "IMAP: LOGIN", wantErrs: 2},
		{name: "SMTP wrong password", smtpN: 2, smtpPass: "wrong", wantErr: "SMTP: AUTH", wantErrs: 2},
		{name: "one past max_imap_sessions_per_account", imapN: perAccount + 1, wantIMAP: perAccount,
			wantErr: "IMAP: LOGIN", wantErrs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := idleOptions(t, info, tt.imapN, tt.smtpN)
			if tt.imapPass != "" {
				o.IMAP.Password = tt.imapPass
			}
			if tt.smtpPass != "" {
				o.SMTP.Password = tt.smtpPass
			}
			rep, err := loadgen.RunIdle(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if rep.IMAPOpen != tt.wantIMAP || rep.SMTPOpen != tt.wantSMTP {
				t.Errorf("%d IMAP and %d SMTP sessions open, want %d and %d (errors %v)",
					rep.IMAPOpen, rep.SMTPOpen, tt.wantIMAP, tt.wantSMTP, rep.Errors)
			}
			if len(rep.Errors) != 1 {
				t.Fatalf("errors %v, want one class", rep.Errors)
			}
			for k, v := range rep.Errors {
				if !strings.HasPrefix(k, tt.wantErr) || v != tt.wantErrs {
					t.Errorf("error %q × %d, want %q… × %d", k, v, tt.wantErr, tt.wantErrs)
				}
			}
		})
	}
}

// TestIdleOptionsRefused checks the options RunIdle refuses before
// connecting anywhere.
func TestIdleOptionsRefused(t *testing.T) {
	tests := []struct {
		name string
		o    loadgen.IdleOptions
	}{
		{"nothing to open", loadgen.IdleOptions{}},
		{"negative count", loadgen.IdleOptions{IMAPSessions: -1, SMTPSessions: 1, SMTP: loadgen.SMTPOptions{Addr: "127.0.0.1:1"}}},
		{"no IMAP address", loadgen.IdleOptions{IMAPSessions: 1}},
		{"no SMTP address", loadgen.IdleOptions{SMTPSessions: 1}},
		{"implicit TLS without TLS", loadgen.IdleOptions{SMTPSessions: 1, SMTP: loadgen.SMTPOptions{Addr: "127.0.0.1:1", ImplicitTLS: true}}},
		{"negative hold", loadgen.IdleOptions{SMTPSessions: 1, SMTP: loadgen.SMTPOptions{Addr: "127.0.0.1:1"}, Hold: -time.Second}},
	}
	for _, tt := range tests {
		if rep, err := loadgen.RunIdle(context.Background(), tt.o); err == nil {
			t.Errorf("%s: RunIdle = %+v, want an error", tt.name, rep)
		}
	}
}

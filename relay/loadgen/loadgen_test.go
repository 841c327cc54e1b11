package loadgen_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mssrelay/configs"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/loadgen"
	"mssrelay/signing"
)

// startRelay runs a real relay in-process on random loopback ports, set up
// as the embedded default is (generated PKI, demo accounts), and returns
// the demo info pointed at the bound ports. The relay stops at cleanup.
func startRelay(t testing.TB) *demo.Info {
	t.Helper()
	info, _ := startRelayServer(t)
	return info
}

// startRelayServer is startRelay that also returns the relay (for its
// metrics).
func startRelayServer(t testing.TB) (*demo.Info, *relay.Relay) {
	t.Helper()
	dir := t.TempDir()
	info, _, err := demo.Ensure(dir, demo.Ports{
		Submission: "127.0.0.1:0", SubmissionTLS: "127.0.0.1:0",
		IMAPTLS: "127.0.0.1:0", IMAPSTARTTLS: "127.0.0.1:0",
	})
	if err != nil {
		t.Fatalf("demo.Ensure: %v", err)
	}
	cfg, err := configs.Load(filepath.Join(dir, demo.ConfigFile))
	if err != nil {
		t.Fatalf("loading config: %v", err)
	}
	r, err := relay.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	if err := r.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	addrs := r.Addrs()
	info.Submission = addrs[relay.SMTPSubmission]
	info.SubmissionTLS = addrs[relay.SMTPSubmissionTLS]
	info.IMAPTLS = addrs[relay.IMAPTLS]
	info.IMAPSTARTTLS = addrs[relay.IMAPSTARTTLS]

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("relay did not stop within 30 s")
		}
	})
	return info, r
}

// demoSigners issues an RSA-2048 and a P-256 certificate for the demo
// prescriber from the demo's own PKI, as `mssrelay bench` does.
func demoSigners(t testing.TB, info *demo.Info, keys string) []loadgen.Signer {
	t.Helper()
	pki, err := signing.LoadDevPKI(filepath.Dir(info.Path(info.RootCA)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := loadgen.IssueSigners(pki, info.Prescriber.Address, demo.PrescriberRPPS, "MARTIN Jeanne", keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func smtpOptions(t testing.TB, info *demo.Info) loadgen.SMTPOptions {
	t.Helper()
	tlsCfg, err := info.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	return loadgen.SMTPOptions{Addr: info.Submission, TLS: tlsCfg,
		User: info.Prescriber.Address, Password: info.Prescriber.Password, Timeout: 30 * time.Second}
}

// assertAllAccepted fails unless every message of the batch got 250.
func assertAllAccepted(t *testing.T, name string, b *loadgen.Batch, r *loadgen.Report) {
	t.Helper()
	if r.Accepted != len(b.Messages) || len(r.Refused) != 0 || len(r.Errors) != 0 || r.NotSent != 0 {
		t.Errorf("%s: accepted %d of %d; refused %v (%v); errors %v; not sent %d",
			name, r.Accepted, len(b.Messages), r.Refused, r.RefusalText, r.Errors, r.NotSent)
	}
	if r.Data.Count != r.Accepted || r.Transaction.Count != r.Accepted {
		t.Errorf("%s: %d DATA and %d transaction latencies for %d accepted", name, r.Data.Count, r.Transaction.Count, r.Accepted)
	}
}

// TestSmokeAgainstRelay drives a real relay with both connection modes and
// the IMAP phase: every signed prescription (half RSA-2048, half P-256,
// 10–30 KiB with PDF and XDM) must be accepted and read back.
func TestSmokeAgainstRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay and sends 400 messages")
	}
	const n, c = 200, 4
	info := startRelay(t)
	signers := demoSigners(t, info, loadgen.KeysBoth)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	modes := []struct {
		name    string
		perConn int
	}{
		{"reused", 0},
		{"one connection per message", 1},
	}
	total := 0
	for _, m := range modes {
		b, err := loadgen.Prepare(loadgen.Config{N: n, From: info.Prescriber.Address, To: info.Pharmacy.Address, Signers: signers})
		if err != nil {
			t.Fatal(err)
		}
		if b.Min < 10<<10 || b.Max > 30<<10 {
			t.Errorf("message sizes %d–%d bytes, want 10–30 KiB", b.Min, b.Max)
		}
		o := smtpOptions(t, info)
		o.Concurrency, o.PerConn = c, m.perConn
		r, err := loadgen.RunSMTP(ctx, b, o)
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		assertAllAccepted(t, m.name, b, r)
		if r.Pipelined != n {
			t.Errorf("%s: %d of %d transactions pipelined; the relay offers PIPELINING", m.name, r.Pipelined, n)
		}
		var text strings.Builder
		if err := r.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s:\n%s", m.name, text.String())
		total += r.Accepted
		for _, s := range signers {
			if got := r.BySigner[s.Name].Accepted; got != n/2 {
				t.Errorf("%s: %d messages signed with %s accepted, want %d", m.name, got, s.Name, n/2)
			}
		}
		wantConns := c
		if m.perConn == 1 {
			wantConns = n
		}
		if r.Connections != wantConns {
			t.Errorf("%s: %d connections, want %d", m.name, r.Connections, wantConns)
		}
	}

	tlsCfg, err := info.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	ir, err := loadgen.RunIMAP(ctx, loadgen.IMAPOptions{Addr: info.IMAPTLS, TLS: tlsCfg,
		User: info.Pharmacy.Address, Password: info.Pharmacy.Password, Concurrency: c})
	if err != nil {
		t.Fatal(err)
	}
	if ir.Exists != total || ir.Fetched != total || len(ir.Errors) != 0 {
		t.Errorf("IMAP: %d messages in INBOX, %d fetched, errors %v; want %d and none", ir.Exists, ir.Fetched, ir.Errors, total)
	}
	if ir.Bytes < int64(total)*10<<10 {
		t.Errorf("IMAP: fetched %d bytes for %d messages of 10 KiB or more", ir.Bytes, total)
	}
}

// TestOpenLoopAgainstRelay checks the open loop's bookkeeping (every
// message gets a response time measured from when it was due), over the
// implicit-TLS submission port.
func TestOpenLoopAgainstRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay")
	}
	info := startRelay(t)
	b, err := loadgen.Prepare(loadgen.Config{N: 40, From: info.Prescriber.Address, To: info.Pharmacy.Address,
		Signers: demoSigners(t, info, loadgen.KeysP256), Size: loadgen.SizeFHIR})
	if err != nil {
		t.Fatal(err)
	}
	o := smtpOptions(t, info)
	o.Addr, o.ImplicitTLS = info.SubmissionTLS, true
	o.Concurrency, o.Rate = 4, 400
	r, err := loadgen.RunSMTP(context.Background(), b, o)
	if err != nil {
		t.Fatal(err)
	}
	assertAllAccepted(t, "open loop", b, r)
	if r.Security != "implicit TLS+AUTH" {
		t.Errorf("security %q, want implicit TLS+AUTH", r.Security)
	}
	if r.Response == nil || r.Response.Count != r.Accepted {
		t.Fatalf("open loop: response latencies %+v for %d accepted", r.Response, r.Accepted)
	}
	// A response includes the transaction it waited for.
	if r.Response.Max < r.Transaction.Max {
		t.Errorf("open loop: max response %v shorter than max transaction %v", r.Response.Max, r.Transaction.Max)
	}
}

// TestResendIsNotRefused replays a whole batch: identical resends are
// answered 250 and not filed twice, so a second run with the same run id
// is all accepted and the mailbox does not grow.
func TestResendIsNotRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay")
	}
	info := startRelay(t)
	b, err := loadgen.Prepare(loadgen.Config{N: 10, From: info.Prescriber.Address, To: info.Pharmacy.Address,
		Signers: demoSigners(t, info, loadgen.KeysP256), Size: loadgen.SizeFHIR, RunID: "fixed"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for round := range 2 {
		r, err := loadgen.RunSMTP(ctx, b, smtpOptions(t, info))
		if err != nil {
			t.Fatal(err)
		}
		assertAllAccepted(t, "round "+string(rune('1'+round)), b, r)
	}
	tlsCfg, err := info.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	ir, err := loadgen.RunIMAP(ctx, loadgen.IMAPOptions{Addr: info.IMAPTLS, TLS: tlsCfg,
		User: info.Pharmacy.Address, Password: info.Pharmacy.Password, Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	if ir.Exists != 10 || ir.Fetched != 10 {
		t.Errorf("after a resend: %d in INBOX, %d fetched; want 10", ir.Exists, ir.Fetched)
	}
}

package relay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
)

// harness runs a real relay in-process on random loopback ports, set up
// exactly as the embedded default is (generated PKI, demo accounts).
type harness struct {
	t     testing.TB
	dir   string
	info  *demo.Info
	cfg   *configs.Config
	relay *relay.Relay
	addrs map[string]string
	stop  func()

	adjust func(*configs.Config)
	// log, when set, receives the relay's logs instead of the default
	// (discarded, or the test log with -v).
	log *slog.Logger
}

var loopbackPorts = demo.Ports{
	Submission: "127.0.0.1:0", SubmissionTLS: "127.0.0.1:0",
	IMAPTLS: "127.0.0.1:0", IMAPSTARTTLS: "127.0.0.1:0",
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	return newHarnessWith(t, nil)
}

// newHarnessWith lets a test adjust the loaded configuration before the
// relay starts (limits, timeouts).
func newHarnessWith(t testing.TB, adjust func(*configs.Config)) *harness {
	t.Helper()
	dir := t.TempDir()
	info, _, err := demo.Ensure(dir, loopbackPorts)
	if err != nil {
		t.Fatalf("demo.Ensure: %v", err)
	}
	h := &harness{t: t, dir: dir, info: info, adjust: adjust}
	h.start()
	t.Cleanup(h.shutdown)
	return h
}

// start (re)starts the relay on the harness's data directory.
func (h *harness) start() {
	h.t.Helper()
	cfg, err := configs.Load(filepath.Join(h.dir, demo.ConfigFile))
	if err != nil {
		h.t.Fatalf("loading config: %v", err)
	}
	// Every test connects from 127.0.0.1, some of them hundreds of times
	// in a few seconds: lift the per-address connection rate (default
	// 300 a minute) unless the test sets its own.
	cfg.Limits.MaxConnectionRatePerIP = 100000
	if h.adjust != nil {
		h.adjust(cfg)
	}
	h.cfg = cfg
	log := h.log
	switch {
	case log != nil:
	case testing.Verbose():
		log = slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	default:
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r, err := relay.New(cfg, log)
	if err != nil {
		h.t.Fatalf("relay.New: %v", err)
	}
	if err := r.Listen(); err != nil {
		h.t.Fatalf("Listen: %v", err)
	}
	h.relay = r
	h.addrs = r.Addrs()
	// The demo info names the configured ports (":0"); point it at the
	// real ones so its helpers connect to this relay.
	h.info.Submission = h.addrs[relay.SMTPSubmission]
	h.info.SubmissionTLS = h.addrs[relay.SMTPSubmissionTLS]
	h.info.IMAPTLS = h.addrs[relay.IMAPTLS]
	h.info.IMAPSTARTTLS = h.addrs[relay.IMAPSTARTTLS]

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	h.stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			h.t.Errorf("relay did not stop within 30 s")
		}
	}
}

func (h *harness) shutdown() {
	if h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

func (h *harness) restart() {
	h.shutdown()
	h.start()
}

func (h *harness) clientTLS() *tls.Config {
	h.t.Helper()
	c, err := h.info.ClientTLS()
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// prescriber returns an authenticated submission connection.
func (h *harness) prescriber() *submit.Conn {
	h.t.Helper()
	opts, err := h.info.SubmitOptions()
	if err != nil {
		h.t.Fatal(err)
	}
	c, err := submit.Dial(opts)
	if err != nil {
		h.t.Fatalf("dial submission: %v", err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

func (h *harness) signer() *signing.KeyPair {
	h.t.Helper()
	kp, err := h.info.Signer()
	if err != nil {
		h.t.Fatal(err)
	}
	return kp
}

// prescription composes a fresh, valid, signed prescription for the pharmacy.
func (h *harness) prescription() (msg []byte, number string) {
	h.t.Helper()
	now := time.Now()
	rx := demo.SamplePrescription(now)
	msg, err := demo.Compose(h.signer(), h.info.Prescriber.Address, h.info.Pharmacy.Address, "Ordonnance", rx.Content(), now)
	if err != nil {
		h.t.Fatal(err)
	}
	return msg, rx.Number
}

// imap logs in as u over implicit TLS.
func (h *harness) imap(u demo.User, opts *imapclient.Options) *imapclient.Client {
	h.t.Helper()
	if opts == nil {
		opts = &imapclient.Options{}
	}
	opts.TLSConfig = h.clientTLS()
	c, err := imapclient.DialTLS(h.addrs[relay.IMAPTLS], opts)
	if err != nil {
		h.t.Fatalf("dial imap: %v", err)
	}
	h.t.Cleanup(func() { c.Close() })
	if err := c.Login(u.Address, u.Password).Wait(); err != nil {
		h.t.Fatalf("imap login %s: %v", u.Address, err)
	}
	return c
}

// fetchAll returns every message of mailbox with UID and whole body.
func fetchAll(t *testing.T, c *imapclient.Client, mailbox string) []*imapclient.FetchMessageBuffer {
	t.Helper()
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("select %s: %v", mailbox, err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{
		UID: true, Flags: true, RFC822Size: true, Envelope: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	}).Collect()
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	return msgs
}

// smtpCode extracts the reply code of a refusal.
func smtpCode(err error) (int, smtp.EnhancedCode) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, se.EnhancedCode
	}
	return 0, smtp.EnhancedCode{}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

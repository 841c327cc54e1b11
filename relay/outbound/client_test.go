package outbound

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"mssrelay/signing"
)

// ---------------------------------------------------------------------------
// Fixtures: a development PKI, certificates, a Dialer.

type fixture struct {
	roots  *x509.CertPool
	server tls.Certificate // 127.0.0.1, localhost, mx.example.test
	client tls.Certificate // our relay's client certificate
}

func newPKI(t *testing.T) *signing.DevPKI {
	t.Helper()
	pki, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	return pki
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	pki := newPKI(t)
	f := &fixture{roots: x509.NewCertPool()}
	f.roots.AddCert(pki.Root.Cert)
	f.server = issueServer(t, pki, "127.0.0.1", "localhost", "mx.example.test")
	f.client = issueServer(t, pki, "relay.example.test")
	return f
}

// issueServer issues a certificate with both server and client auth (what
// operators use for mutual TLS) as a tls.Certificate with its chain.
func issueServer(t *testing.T, pki *signing.DevPKI, hosts ...string) tls.Certificate {
	t.Helper()
	kp, err := pki.IssueServer(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key, Leaf: kp.Cert}
	for _, ic := range kp.Chain {
		c.Certificate = append(c.Certificate, ic.Raw)
	}
	return c
}

// serverTLS is a peer operator's configuration: our PKI, client
// certificate required and verified.
func (f *fixture) serverTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{f.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    f.roots,
		MinVersion:   tls.VersionTLS12,
	}
}

func (f *fixture) dialer() *Dialer {
	return &Dialer{
		Hostname: "relay.example.test",
		TLS: &tls.Config{
			RootCAs:      f.roots,
			Certificates: []tls.Certificate{f.client},
		},
		// Generous bounds so a bug fails the test instead of hanging it;
		// nothing below asserts a duration.
		ConnectTimeout: 10 * time.Second,
		CommandTimeout: 10 * time.Second,
		DataTimeout:    10 * time.Second,
	}
}

// ---------------------------------------------------------------------------
// An in-process go-smtp server recording what it receives.

type mailSeen struct {
	from    string
	body    string // BODY= parameter
	utf8    bool
	tls     bool
	version uint16
	peerCN  string // CN of the client certificate
	helo    string
}

type recorder struct {
	mu    sync.Mutex
	conns int
	mails []mailSeen
	rcpts []string
	data  [][]byte
}

func (r *recorder) snapshot() (conns int, mails []mailSeen, rcpts []string, data [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns, append([]mailSeen(nil), r.mails...), append([]string(nil), r.rcpts...), append([][]byte(nil), r.data...)
}

type smtpOpts struct {
	tls      *tls.Config // nil: STARTTLS not offered
	mailErr  *smtp.SMTPError
	rcptErr  *smtp.SMTPError
	dataErr  *smtp.SMTPError
	maxBytes int64
	utf8     bool
	onData   func() // called when DATA starts, before the body is read
}

type smtpServer struct {
	addr string
	rec  *recorder
}

// countingListener counts accepted connections without wrapping them
// (go-smtp detects TLS by a *tls.Conn type assertion).
type countingListener struct {
	net.Listener
	rec *recorder
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.rec.mu.Lock()
		l.rec.conns++
		l.rec.mu.Unlock()
	}
	return c, err
}

func startSMTP(t *testing.T, o smtpOpts) *smtpServer {
	t.Helper()
	rec := &recorder{}
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{o: o, rec: rec, conn: c}, nil
	})
	s := smtp.NewServer(be)
	s.Domain = "mx.example.test"
	s.TLSConfig = o.tls
	s.MaxMessageBytes = o.maxBytes
	s.EnableSMTPUTF8 = o.utf8
	s.ReadTimeout = 30 * time.Second
	s.WriteTimeout = 30 * time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(countingListener{Listener: l, rec: rec}) }()
	t.Cleanup(func() { _ = s.Close() })
	return &smtpServer{addr: l.Addr().String(), rec: rec}
}

type session struct {
	o    smtpOpts
	rec  *recorder
	conn *smtp.Conn
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	m := mailSeen{from: from, helo: s.conn.Hostname()}
	if opts != nil {
		m.body = string(opts.Body)
		m.utf8 = opts.UTF8
	}
	if cs, ok := s.conn.TLSConnectionState(); ok {
		m.tls, m.version = true, cs.Version
		if len(cs.PeerCertificates) > 0 {
			m.peerCN = cs.PeerCertificates[0].Subject.CommonName
		}
	}
	s.rec.mu.Lock()
	s.rec.mails = append(s.rec.mails, m)
	s.rec.mu.Unlock()
	if s.o.mailErr != nil {
		return s.o.mailErr // bare *smtp.SMTPError: see LIBRARY-NOTES
	}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rec.mu.Lock()
	s.rec.rcpts = append(s.rec.rcpts, to)
	s.rec.mu.Unlock()
	if s.o.rcptErr != nil {
		return s.o.rcptErr
	}
	return nil
}

func (s *session) Data(r io.Reader) error {
	if s.o.onData != nil {
		s.o.onData()
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.rec.mu.Lock()
	s.rec.data = append(s.rec.data, b)
	s.rec.mu.Unlock()
	if s.o.dataErr != nil {
		return s.o.dataErr
	}
	return nil
}

func (s *session) Reset()        {}
func (s *session) Logout() error { return nil }

// ---------------------------------------------------------------------------
// Raw TCP peers: a closed port, a server that never greets, a scripted one.

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// silentServer accepts connections and never writes; accepted receives one
// value per connection.
func silentServer(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 16)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String(), ch
}

// script drives fakeServer: a peer whose every reply the test chooses,
// for what go-smtp's server cannot be made to say.
type script struct {
	greeting string            // first reply, e.g. "220 fake ESMTP" (lines joined by CRLF)
	caps     []string          // EHLO keywords after the first line
	tls      *tls.Config       // used when STARTTLS is answered with 220
	replies  map[string]string // verb → reply; "EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "DOT" (after the final dot)
	inject   string            // bytes sent right after the 220 to STARTTLS, in clear text
	ehloTLS  string            // reply to EHLO once TLS is up, when set
}

type fakeServer struct {
	addr  string
	mu    sync.Mutex
	verbs []string
}

func (f *fakeServer) saw(verb string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.verbs {
		if v == verb {
			return true
		}
	}
	return false
}

func startFake(t *testing.T, s script) *fakeServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: l.Addr().String()}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.serve(c, s)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return f
}

func (f *fakeServer) serve(conn net.Conn, s script) {
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	send := func(reply string) bool {
		_, err := io.WriteString(conn, reply+"\r\n")
		return err == nil
	}
	reply := func(verb, def string) string {
		if r, ok := s.replies[verb]; ok {
			return r
		}
		return def
	}
	if !send(s.greeting) {
		return
	}
	caps := s.caps
	secure := false
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		verb := strings.ToUpper(fields[0])
		f.mu.Lock()
		f.verbs = append(f.verbs, verb)
		f.mu.Unlock()
		switch verb {
		case "EHLO":
			r, ok := s.replies["EHLO"]
			if secure && s.ehloTLS != "" {
				r, ok = s.ehloTLS, true
			}
			if !ok {
				lines := append([]string{"mx.example.test"}, caps...)
				for i := range lines {
					sep := "-"
					if i == len(lines)-1 {
						sep = " "
					}
					lines[i] = "250" + sep + lines[i]
				}
				r = strings.Join(lines, "\r\n")
			}
			if !send(r) {
				return
			}
		case "STARTTLS":
			r := reply("STARTTLS", "220 2.0.0 Ready to start TLS")
			if !send(r + s.inject) {
				return
			}
			if !strings.HasPrefix(r, "220") {
				continue
			}
			tc := tls.Server(conn, s.tls)
			if tc.Handshake() != nil {
				return
			}
			conn, br, secure = tc, bufio.NewReader(tc), true
			var after []string
			for _, c := range caps {
				if c != "STARTTLS" {
					after = append(after, c)
				}
			}
			caps = after
		case "DATA":
			r := reply("DATA", "354 Go ahead")
			if !send(r) {
				return
			}
			if !strings.HasPrefix(r, "354") {
				continue
			}
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			if !send(reply("DOT", "250 2.0.0 Queued as FAKE1")) {
				return
			}
		case "QUIT":
			send("221 2.0.0 Bye")
			return
		default:
			if !send(reply(verb, "250 2.0.0 OK")) {
				return
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Messages.

// signedMessage is shaped like a detached S/MIME prescription, with the
// traps of dot-stuffing: lines that start with ".", a line that is only ".",
// a long base64 body, and a last line that is ".".
func signedMessage(t *testing.T) []byte {
	t.Helper()
	blob := make([]byte, 60<<10)
	if _, err := rand.Read(blob); err != nil {
		t.Fatal(err)
	}
	enc := base64.StdEncoding.EncodeToString(blob)
	var b strings.Builder
	b.WriteString("From: dr.martin@hopital.mssante.fr\r\n")
	b.WriteString("To: 180017512345678@patient.mssante.fr\r\n")
	b.WriteString("Subject: Ordonnance\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b1\"\r\n")
	b.WriteString("\r\n")
	b.WriteString("--b1\r\n")
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	b.WriteString(".\r\n")
	b.WriteString(".leading dot\r\n")
	b.WriteString("..two dots\r\n")
	b.WriteString(" . space then dot\r\n")
	b.WriteString("\r\n.\r\n\r\n")
	b.WriteString("--b1\r\n")
	b.WriteString("Content-Type: application/pkcs7-signature; name=smime.p7s\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteString("\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	b.WriteString("--b1--\r\n")
	b.WriteString(".\r\n")
	return []byte(b.String())
}

const (
	sender    = "dr.martin@hopital.mssante.fr"
	recipient = "180017512345678@patient.mssante.fr"
)

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *outbound.Error", err, err)
	}
	return e
}

// ---------------------------------------------------------------------------
// Success.

func TestSendDeliversBytesUnchanged(t *testing.T) {
	f := newFixture(t)
	signed := signedMessage(t)
	tests := []struct {
		name     string
		from, to string
		raw      []byte
		want     []byte // what the server must receive; nil: raw
		utf8     bool   // server offers SMTPUTF8
		wantBody string // BODY= parameter seen by the server
		wantUTF8 bool
	}{
		{name: "signed message with dot lines", from: sender, to: recipient, raw: signed},
		{name: "null reverse-path", from: "", to: recipient, raw: []byte("Subject: DSN\r\n\r\nbody\r\n")},
		{name: "no final CRLF gets one", from: sender, to: recipient, raw: []byte("Subject: x\r\n\r\nlast line"), want: []byte("Subject: x\r\n\r\nlast line\r\n")},
		{name: "8-bit body declares 8BITMIME", from: sender, to: recipient, raw: []byte("Subject: x\r\n\r\nOrdonnance renouvelée\r\n"), wantBody: "8BITMIME"},
		{name: "UTF-8 address uses SMTPUTF8", from: sender, to: "rené@patient.mssante.fr", raw: []byte("Subject: x\r\n\r\nb\r\n"), utf8: true, wantUTF8: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startSMTP(t, smtpOpts{tls: f.serverTLS(), utf8: tc.utf8})
			res, err := f.dialer().Send(context.Background(), []string{srv.addr}, tc.from, tc.to, tc.raw)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if res.Code != 250 || res.Host != srv.addr || res.Enhanced != "2.0.0" {
				t.Errorf("result = %+v, want 250 2.0.0 from %s", res, srv.addr)
			}
			_, mails, rcpts, data := srv.rec.snapshot()
			if len(mails) != 1 || len(rcpts) != 1 || len(data) != 1 {
				t.Fatalf("server saw %d MAIL, %d RCPT, %d DATA; want 1 each", len(mails), len(rcpts), len(data))
			}
			m := mails[0]
			if m.from != tc.from || rcpts[0] != tc.to {
				t.Errorf("envelope = <%s> → <%s>, want <%s> → <%s>", m.from, rcpts[0], tc.from, tc.to)
			}
			if !m.tls || m.version < tls.VersionTLS12 {
				t.Errorf("MAIL arrived with tls=%v version=%x, want TLS ≥ 1.2", m.tls, m.version)
			}
			if m.peerCN != "relay.example.test" {
				t.Errorf("server saw client certificate %q, want relay.example.test (mutual TLS)", m.peerCN)
			}
			if m.helo != "relay.example.test" {
				t.Errorf("EHLO name after TLS = %q", m.helo)
			}
			if m.body != tc.wantBody || m.utf8 != tc.wantUTF8 {
				t.Errorf("MAIL parameters BODY=%q SMTPUTF8=%v, want %q %v", m.body, m.utf8, tc.wantBody, tc.wantUTF8)
			}
			want := tc.want
			if want == nil {
				want = tc.raw
			}
			if !bytes.Equal(data[0], want) {
				t.Errorf("server received %d bytes, differing from the %d sent (first difference at %d)", len(data[0]), len(want), firstDiff(data[0], want))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestSendVerifiesHostName(t *testing.T) {
	f := newFixture(t)
	srv := startSMTP(t, smtpOpts{tls: f.serverTLS()})
	d := f.dialer()
	// Dial every name to the test server: only the certificate decides.
	d.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.addr)
	}
	raw := []byte("Subject: x\r\n\r\nb\r\n")
	if _, err := d.Send(context.Background(), []string{"mx.example.test.:25"}, sender, recipient, raw); err != nil {
		t.Fatalf("name in the certificate (trailing dot): %v", err)
	}
	_, err := d.Send(context.Background(), []string{"mx.other.test:25"}, sender, recipient, raw)
	e := asError(t, err)
	var he x509.HostnameError
	if e.Stage != StageTLS || e.Permanent || !errors.As(err, &he) {
		t.Errorf("name not in the certificate: %+v, want stage tls with x509.HostnameError", e)
	}
}

// ---------------------------------------------------------------------------
// Refusals by a go-smtp peer.

func TestSendRefused(t *testing.T) {
	f := newFixture(t)
	other := newPKI(t)
	foreignServer := issueServer(t, other, "127.0.0.1")
	foreignClient := issueServer(t, other, "relay.example.test")
	tls11 := f.serverTLS()
	tls11.MinVersion, tls11.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	foreignTLS := f.serverTLS()
	foreignTLS.Certificates = []tls.Certificate{foreignServer}

	tests := []struct {
		name      string
		srv       smtpOpts
		dialer    func(*Dialer)
		stage     string
		code      int
		enhanced  string
		message   string
		permanent bool
		is        error // errors.Is target, when set
		noMail    bool  // the server must not have seen MAIL
	}{
		{name: "no STARTTLS", srv: smtpOpts{}, stage: StageSTARTTLS, is: ErrNoSTARTTLS, noMail: true},
		{name: "server certificate from another PKI", srv: smtpOpts{tls: foreignTLS}, stage: StageTLS, noMail: true},
		{name: "no client certificate", srv: smtpOpts{tls: f.serverTLS()}, dialer: func(d *Dialer) { d.TLS.Certificates = nil }, stage: StageTLS, noMail: true},
		{name: "client certificate from another PKI", srv: smtpOpts{tls: f.serverTLS()}, dialer: func(d *Dialer) { d.TLS.Certificates = []tls.Certificate{foreignClient} }, stage: StageTLS, noMail: true},
		{name: "TLS 1.1 server, caller allows TLS 1.0", srv: smtpOpts{tls: tls11}, dialer: func(d *Dialer) { d.TLS.MinVersion = tls.VersionTLS10 }, stage: StageTLS, noMail: true},
		{name: "TLS 1.2 maximum on the client side", srv: smtpOpts{tls: f.serverTLS()}, dialer: func(d *Dialer) { d.TLS.MaxVersion = tls.VersionTLS12 }, stage: "", noMail: false},
		{name: "450 at RCPT", srv: smtpOpts{tls: f.serverTLS(), rcptErr: &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "Mailbox busy"}}, stage: StageRcpt, code: 450, enhanced: "4.2.1", message: "Mailbox busy"},
		{name: "550 5.1.1 at RCPT", srv: smtpOpts{tls: f.serverTLS(), rcptErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such patient mailbox"}}, stage: StageRcpt, code: 550, enhanced: "5.1.1", message: "No such patient mailbox", permanent: true},
		{name: "reply text sanitized", srv: smtpOpts{tls: f.serverTLS(), rcptErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no\x1b[2J\tsuch\x00 user\u202e"}}, stage: StageRcpt, code: 550, enhanced: "5.1.1", message: "no [2J such user", permanent: true},
		{name: "553 at MAIL", srv: smtpOpts{tls: f.serverTLS(), mailErr: &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender not allowed"}}, stage: StageMail, code: 553, enhanced: "5.7.1", message: "Sender not allowed", permanent: true},
		{name: "SIZE over the server limit", srv: smtpOpts{tls: f.serverTLS(), maxBytes: 10}, stage: StageMail, code: 552, enhanced: "5.3.4", permanent: true},
		{name: "451 at DATA", srv: smtpOpts{tls: f.serverTLS(), dataErr: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Try later"}}, stage: StageData, code: 451, enhanced: "4.3.0", message: "Try later"},
		{name: "554 at DATA", srv: smtpOpts{tls: f.serverTLS(), dataErr: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Signature invalid"}}, stage: StageData, code: 554, enhanced: "5.6.0", message: "Signature invalid", permanent: true},
	}
	raw := []byte("Subject: x\r\n\r\nbody\r\n")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startSMTP(t, tc.srv)
			d := f.dialer()
			if tc.dialer != nil {
				tc.dialer(d)
			}
			_, err := d.Send(context.Background(), []string{srv.addr}, sender, recipient, raw)
			_, mails, _, _ := srv.rec.snapshot()
			if tc.noMail && len(mails) != 0 {
				t.Errorf("server saw MAIL FROM %+v; none may be sent before TLS", mails)
			}
			if tc.stage == "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				return
			}
			e := asError(t, err)
			if e.Stage != tc.stage || e.Code != tc.code || e.Permanent != tc.permanent || e.Host != srv.addr {
				t.Errorf("got stage=%q code=%d permanent=%v host=%s, want %q %d %v %s (%v)", e.Stage, e.Code, e.Permanent, e.Host, tc.stage, tc.code, tc.permanent, srv.addr, err)
			}
			if e.Enhanced != tc.enhanced {
				t.Errorf("Enhanced = %q, want %q", e.Enhanced, tc.enhanced)
			}
			if tc.message != "" && e.Message != tc.message {
				t.Errorf("Message = %q, want %q", e.Message, tc.message)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if IsPermanent(err) != tc.permanent {
				t.Errorf("IsPermanent = %v, want %v", IsPermanent(err), tc.permanent)
			}
			if tc.code == 0 && e.Err == nil {
				t.Errorf("error without reply code has no cause: %+v", e)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Refusals and oddities from a scripted peer.

func TestSendScriptedPeer(t *testing.T) {
	f := newFixture(t)
	caps := []string{"STARTTLS", "8BITMIME", "SIZE"}
	plain := []byte("Subject: x\r\n\r\nbody\r\n")
	tests := []struct {
		name      string
		s         script
		to        string
		raw       []byte
		ok        bool
		stages    []string // acceptable stages (first is the expected one)
		code      int
		enhanced  string
		message   string
		permanent bool
		is        error
		errHas    string // substring of the error text
		noMail    bool
	}{
		{name: "421 greeting", s: script{greeting: "421 4.3.2 Shutting down"}, stages: []string{StageGreeting}, code: 421, enhanced: "4.3.2", noMail: true},
		{name: "554 greeting", s: script{greeting: "554 No SMTP service here"}, stages: []string{StageGreeting}, code: 554, message: "No SMTP service here", noMail: true},
		{name: "EHLO refused", s: script{greeting: "220 fake", replies: map[string]string{"EHLO": "502 5.5.1 Command not implemented"}}, stages: []string{StageEHLO}, code: 502, enhanced: "5.5.1", noMail: true},
		{name: "STARTTLS 454", s: script{greeting: "220 fake", caps: caps, replies: map[string]string{"STARTTLS": "454 4.7.0 TLS not available"}}, stages: []string{StageSTARTTLS}, code: 454, enhanced: "4.7.0", noMail: true},
		{name: "STARTTLS 5xx is not permanent", s: script{greeting: "220 fake", caps: caps, replies: map[string]string{"STARTTLS": "554 5.7.0 No"}}, stages: []string{StageSTARTTLS}, code: 554, enhanced: "5.7.0", noMail: true},
		// The injected line is in the same write as the 220: it normally
		// sits in our buffer (stage starttls); if it arrives late it breaks
		// the handshake instead (stage tls). Either way nothing is sent.
		{name: "clear-text injection after STARTTLS", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), inject: "\r\n250 2.0.0 injected"}, stages: []string{StageSTARTTLS, StageTLS}, noMail: true},
		{name: "8-bit message, no 8BITMIME", s: script{greeting: "220 fake", caps: []string{"STARTTLS"}, tls: f.serverTLS()}, raw: []byte("Subject: x\r\n\r\nrenouvelée\r\n"), stages: []string{StageMail}, is: ErrNo8BITMIME, noMail: true},
		{name: "UTF-8 address, no SMTPUTF8", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS()}, to: "rené@patient.mssante.fr", stages: []string{StageMail}, is: ErrNoSMTPUTF8, noMail: true},
		{name: "251 at RCPT is success", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), replies: map[string]string{"RCPT": "251 2.1.5 Will forward"}}, ok: true},
		{name: "EHLO refused after TLS", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), ehloTLS: "550 5.7.1 Go away"}, stages: []string{StageEHLO}, code: 550, enhanced: "5.7.1", noMail: true},
		{name: "malformed reply", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), replies: map[string]string{"MAIL": "hello\x1b there"}}, stages: []string{StageMail}, errHas: "malformed reply"},
		{name: "reply code out of range", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), replies: map[string]string{"MAIL": "999 what"}}, stages: []string{StageMail}, errHas: "out of range"},
		{name: "endless reply", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), replies: map[string]string{"MAIL": "250-" + strings.Repeat("x", 40<<10) + "\r\n250 ok"}}, stages: []string{StageMail}, errHas: "longer than"},
		{name: "multi-line 550 with enhanced code on each line", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), replies: map[string]string{"RCPT": "550-5.1.1 Unknown patient\r\n550 5.1.1 see https://mx.example.test/help"}}, stages: []string{StageRcpt}, code: 550, enhanced: "5.1.1", message: "Unknown patient see https://mx.example.test/help", permanent: true},
		{name: "enhanced class not matching the reply", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), replies: map[string]string{"RCPT": "550 4.1.1 odd"}}, stages: []string{StageRcpt}, code: 550, message: "4.1.1 odd", permanent: true},
		{name: "DATA command 554", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), replies: map[string]string{"DATA": "554 5.5.1 No valid recipients"}}, stages: []string{StageData}, code: 554, enhanced: "5.5.1", permanent: true},
		{name: "452 after the dot", s: script{greeting: "220 fake", caps: caps, tls: f.serverTLS(), replies: map[string]string{"DOT": "452 4.3.1 Insufficient storage"}}, stages: []string{StageData}, code: 452, enhanced: "4.3.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startFake(t, tc.s)
			to, raw := tc.to, tc.raw
			if to == "" {
				to = recipient
			}
			if raw == nil {
				raw = plain
			}
			res, err := f.dialer().Send(context.Background(), []string{srv.addr}, sender, to, raw)
			if tc.noMail && srv.saw("MAIL") {
				t.Errorf("peer saw MAIL; verbs: %v", srv.verbs)
			}
			if tc.ok {
				if err != nil || res == nil || res.Code != 250 {
					t.Fatalf("Send = %+v, %v; want success", res, err)
				}
				return
			}
			e := asError(t, err)
			stageOK := false
			for _, s := range tc.stages {
				stageOK = stageOK || e.Stage == s
			}
			if !stageOK || e.Code != tc.code || e.Permanent != tc.permanent {
				t.Errorf("got stage=%q code=%d permanent=%v, want %v %d %v (%v)", e.Stage, e.Code, e.Permanent, tc.stages, tc.code, tc.permanent, err)
			}
			if e.Enhanced != tc.enhanced {
				t.Errorf("Enhanced = %q, want %q", e.Enhanced, tc.enhanced)
			}
			if tc.message != "" && e.Message != tc.message {
				t.Errorf("Message = %q, want %q", e.Message, tc.message)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if tc.errHas != "" && !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("error %q does not mention %q", err, tc.errHas)
			}
			if s := err.Error(); strings.ContainsFunc(s, unicode.IsControl) {
				t.Errorf("error text has control characters: %q", s)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Several hosts.

func TestSendFailover(t *testing.T) {
	f := newFixture(t)
	raw := signedMessage(t)
	tests := []struct {
		name  string
		first func(t *testing.T) (addr string, sawMail func() bool)
	}{
		{name: "connection refused", first: func(t *testing.T) (string, func() bool) {
			return closedAddr(t), func() bool { return false }
		}},
		{name: "421 greeting", first: func(t *testing.T) (string, func() bool) {
			s := startFake(t, script{greeting: "421 4.3.2 Busy"})
			return s.addr, func() bool { return s.saw("MAIL") }
		}},
		{name: "never greets", first: func(t *testing.T) (string, func() bool) {
			addr, _ := silentServer(t)
			return addr, func() bool { return false }
		}},
		{name: "no STARTTLS", first: func(t *testing.T) (string, func() bool) {
			s := startSMTP(t, smtpOpts{})
			return s.addr, func() bool { _, m, _, _ := s.rec.snapshot(); return len(m) > 0 }
		}},
		{name: "untrusted certificate", first: func(t *testing.T) (string, func() bool) {
			cfg := f.serverTLS()
			cfg.Certificates = []tls.Certificate{issueServer(t, newPKI(t), "127.0.0.1")}
			s := startSMTP(t, smtpOpts{tls: cfg})
			return s.addr, func() bool { _, m, _, _ := s.rec.snapshot(); return len(m) > 0 }
		}},
		{name: "450 at RCPT", first: func(t *testing.T) (string, func() bool) {
			s := startSMTP(t, smtpOpts{tls: f.serverTLS(), rcptErr: &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "busy"}})
			return s.addr, func() bool { return false }
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first, sawMail := tc.first(t)
			second := startSMTP(t, smtpOpts{tls: f.serverTLS()})
			d := f.dialer()
			// For the peer that never greets; loose enough for the second
			// host to greet in time on a loaded machine.
			d.ConnectTimeout = time.Second
			res, err := d.Send(context.Background(), []string{first, second.addr}, sender, recipient, raw)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			if res.Host != second.addr {
				t.Errorf("delivered by %s, want the second host %s", res.Host, second.addr)
			}
			if _, _, _, data := second.rec.snapshot(); len(data) != 1 || !bytes.Equal(data[0], raw) {
				t.Errorf("second host received %d messages, want the message once, unchanged", len(data))
			}
			if sawMail() {
				t.Error("first host saw MAIL although it failed before TLS")
			}
		})
	}
}

func TestSendPermanentStops(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		o    smtpOpts
	}{
		{"550 at RCPT", smtpOpts{rcptErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}}},
		{"554 at DATA", smtpOpts{dataErr: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "bad content"}}},
		{"550 at MAIL", smtpOpts{mailErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.tls = f.serverTLS()
			first := startSMTP(t, tc.o)
			second := startSMTP(t, smtpOpts{tls: f.serverTLS()})
			_, err := f.dialer().Send(context.Background(), []string{first.addr, second.addr}, sender, recipient, []byte("Subject: x\r\n\r\nb\r\n"))
			e := asError(t, err)
			if !e.Permanent || e.Host != first.addr {
				t.Errorf("error %+v, want permanent from %s", e, first.addr)
			}
			if conns, _, _, _ := second.rec.snapshot(); conns != 0 {
				t.Errorf("second host got %d connections after a permanent refusal", conns)
			}
		})
	}
}

func TestSendAllHostsFailReturnsLastReply(t *testing.T) {
	f := newFixture(t)
	busy := startSMTP(t, smtpOpts{tls: f.serverTLS(), rcptErr: &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}})
	noTLS := startSMTP(t, smtpOpts{})
	hosts := []string{closedAddr(t), busy.addr, noTLS.addr, closedAddr(t)}
	_, err := f.dialer().Send(context.Background(), hosts, sender, recipient, []byte("Subject: x\r\n\r\nb\r\n"))
	e := asError(t, err)
	if e.Host != busy.addr || e.Code != 452 || e.Permanent {
		t.Errorf("error %+v, want the 452 of %s, transient", e, busy.addr)
	}

	// No host replied at all: the last error.
	last := closedAddr(t)
	_, err = f.dialer().Send(context.Background(), []string{closedAddr(t), last}, sender, recipient, []byte("Subject: x\r\n\r\nb\r\n"))
	e = asError(t, err)
	if e.Host != last || e.Stage != StageConnect || e.Permanent || e.Err == nil {
		t.Errorf("error %+v, want a transient connect error from %s", e, last)
	}
}

// ---------------------------------------------------------------------------
// Time and cancellation. No durations are asserted: only that the call
// returns, and with which error.

func TestSendGreetingTimeout(t *testing.T) {
	f := newFixture(t)
	addr, _ := silentServer(t)
	d := f.dialer()
	d.ConnectTimeout = 300 * time.Millisecond
	_, err := d.Send(context.Background(), []string{addr}, sender, recipient, []byte("Subject: x\r\n\r\nb\r\n"))
	e := asError(t, err)
	if e.Stage != StageGreeting || e.Permanent || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("error %+v (%v), want a greeting timeout", e, err)
	}
}

func TestSendCancelled(t *testing.T) {
	f := newFixture(t)
	raw := []byte("Subject: x\r\n\r\nb\r\n")

	t.Run("before the call", func(t *testing.T) {
		srv := startSMTP(t, smtpOpts{tls: f.serverTLS()})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := f.dialer().Send(ctx, []string{srv.addr}, sender, recipient, raw)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
		if conns, _, _, _ := srv.rec.snapshot(); conns != 0 {
			t.Errorf("server got %d connections", conns)
		}
	})

	t.Run("waiting for the greeting", func(t *testing.T) {
		addr, accepted := silentServer(t)
		second := startSMTP(t, smtpOpts{tls: f.serverTLS()})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			<-accepted
			cancel()
		}()
		d := f.dialer()
		d.ConnectTimeout = time.Minute // only the cancellation can end the wait
		_, err := d.Send(ctx, []string{addr, second.addr}, sender, recipient, raw)
		// The cancellation may also catch the dial just as it completes.
		e := asError(t, err)
		if (e.Stage != StageGreeting && e.Stage != StageConnect) || !errors.Is(err, context.Canceled) {
			t.Errorf("error %+v (%v), want context.Canceled at the greeting", e, err)
		}
		if conns, _, _, _ := second.rec.snapshot(); conns != 0 {
			t.Error("a cancelled Send went on to the next host")
		}
	})

	t.Run("during DATA", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// The server cancels, then holds its reply until Send returned, so
		// only the cancellation can end the call.
		release := make(chan struct{})
		srv := startSMTP(t, smtpOpts{tls: f.serverTLS(), onData: func() { cancel(); <-release }})
		_, err := f.dialer().Send(ctx, []string{srv.addr}, sender, recipient, raw)
		close(release)
		e := asError(t, err)
		if e.Stage != StageData || e.Permanent || !errors.Is(err, context.Canceled) {
			t.Errorf("error %+v (%v), want context.Canceled during DATA", e, err)
		}
	})
}

// ---------------------------------------------------------------------------
// Requests refused before any connection.

func TestSendInvalidRequest(t *testing.T) {
	f := newFixture(t)
	good := []byte("Subject: x\r\n\r\nb\r\n")
	tests := []struct {
		name     string
		dialer   func(*Dialer)
		hosts    []string // nil: the test server
		from, to string
		raw      []byte
	}{
		{name: "nil TLS config", dialer: func(d *Dialer) { d.TLS = nil }},
		{name: "InsecureSkipVerify", dialer: func(d *Dialer) { d.TLS.InsecureSkipVerify = true }},
		{name: "MaxVersion TLS 1.1", dialer: func(d *Dialer) { d.TLS.MaxVersion = tls.VersionTLS11 }},
		{name: "no EHLO name", dialer: func(d *Dialer) { d.Hostname = "" }},
		{name: "EHLO name with CRLF", dialer: func(d *Dialer) { d.Hostname = "relay\r\nMAIL FROM:<x@y>" }},
		{name: "no hosts", hosts: []string{}},
		{name: "host without port", hosts: []string{"mx.example.test"}},
		{name: "empty recipient", to: "-"},
		{name: "recipient with CRLF", to: "a@b\r\nRCPT TO:<c@d>"},
		{name: "recipient with bracket", to: "a@b>"},
		{name: "recipient without domain", to: "patient"},
		{name: "recipient with two @", to: "a@b@c"},
		{name: "sender with space", from: "a b@c"},
		{name: "sender too long", from: strings.Repeat("a", 250) + "@b.fr"},
		{name: "invalid UTF-8 recipient", to: "a\xff@b"},
		{name: "empty message", raw: []byte{}},
		{name: "bare LF", raw: []byte("Subject: x\n\nb\r\n")},
		{name: "bare CR", raw: []byte("Subject: x\r\n\r\nb\rc\r\n")},
		{name: "trailing CR", raw: []byte("Subject: x\r\n\r\nb\r")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startSMTP(t, smtpOpts{tls: f.serverTLS()})
			d := f.dialer()
			if tc.dialer != nil {
				tc.dialer(d)
			}
			hosts := tc.hosts
			if hosts == nil {
				hosts = []string{srv.addr}
			}
			from, to, raw := sender, recipient, good
			if tc.from != "" {
				from = tc.from
			}
			switch tc.to {
			case "":
			case "-":
				to = ""
			default:
				to = tc.to
			}
			if tc.raw != nil {
				raw = tc.raw
			}
			_, err := d.Send(context.Background(), hosts, from, to, raw)
			if !errors.Is(err, ErrInvalid) || !IsPermanent(err) {
				t.Errorf("error %v, want ErrInvalid (permanent)", err)
			}
			if err != nil && strings.ContainsFunc(err.Error(), unicode.IsControl) {
				t.Errorf("error text has control characters: %q", err)
			}
			if conns, _, _, _ := srv.rec.snapshot(); conns != 0 {
				t.Errorf("server got %d connections for an invalid request", conns)
			}
		})
	}
}

// TestDialerDoesNotModifyConfig: the caller's tls.Config is shared by
// concurrent sends and must not be changed.
func TestDialerDoesNotModifyConfig(t *testing.T) {
	f := newFixture(t)
	srv := startSMTP(t, smtpOpts{tls: f.serverTLS()})
	d := f.dialer()
	d.TLS.MinVersion = tls.VersionTLS10
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = d.Send(context.Background(), []string{srv.addr}, sender, recipient, []byte("Subject: x\r\n\r\nb\r\n"))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("send %d: %v", i, err)
		}
	}
	if d.TLS.ServerName != "" || d.TLS.MinVersion != tls.VersionTLS10 {
		t.Errorf("caller's config changed: ServerName=%q MinVersion=%x", d.TLS.ServerName, d.TLS.MinVersion)
	}
	if _, _, _, data := srv.rec.snapshot(); len(data) != len(errs) {
		t.Errorf("server received %d messages, want %d", len(data), len(errs))
	}
}

// ---------------------------------------------------------------------------
// Helpers for untrusted reply text.

func TestErrorText(t *testing.T) {
	tests := []struct {
		e    *Error
		want string
	}{
		{&Error{Host: "mx:25", Stage: StageRcpt, Code: 550, Enhanced: "5.1.1", Message: "no such user", Permanent: true}, "smtp mx:25 rcpt: 550 5.1.1 no such user"},
		{&Error{Host: "mx:25", Stage: StageConnect, Err: errors.New("connection refused")}, "smtp mx:25 connect: connection refused"},
		{&Error{Host: "mx:25", Stage: StageData, Code: 421, Err: errors.New("EOF")}, "smtp mx:25 data: 421; EOF"},
		{&Error{Host: "mx:25", Stage: StageTLS, Err: errors.New("x509: name \"a\nb\x1b\"")}, "smtp mx:25 tls: x509: name \"a b \""},
	}
	for _, tc := range tests {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	cause := errors.New("cause")
	if !errors.Is(&Error{Err: cause}, cause) {
		t.Error("Unwrap does not expose the cause")
	}
}

func TestSplitEnhanced(t *testing.T) {
	tests := []struct {
		code         int
		msg          string
		wantEnhanced string
		wantText     string
	}{
		{550, "5.1.1 No such user", "5.1.1", "No such user"},
		{250, "2.0.0 Ok: queued as 12345", "2.0.0", "Ok: queued as 12345"},
		{550, "5.1.1 first\n5.1.1 second", "5.1.1", "first\nsecond"},
		{550, "5.1.1", "5.1.1", ""},
		{550, "4.1.1 wrong class", "", "4.1.1 wrong class"},
		{550, "5.1 too short", "", "5.1 too short"},
		{550, "5.1.1.1 too long", "", "5.1.1.1 too long"},
		{550, "5.1234.1 subject too long", "", "5.1234.1 subject too long"},
		{550, "5.a.1 letters", "", "5.a.1 letters"},
		{550, "5..1 empty", "", "5..1 empty"},
		{250, "mx.example.test Hello", "", "mx.example.test Hello"},
		{550, "5.1.10x not a code", "", "5.1.10x not a code"},
		{550, "5.1.1 a\n5.1.10 b", "5.1.1", "a\n5.1.10 b"},
	}
	for _, tc := range tests {
		enh, text := splitEnhanced(tc.code, tc.msg)
		if enh != tc.wantEnhanced || text != tc.wantText {
			t.Errorf("splitEnhanced(%d, %q) = %q, %q; want %q, %q", tc.code, tc.msg, enh, text, tc.wantEnhanced, tc.wantText)
		}
	}
}

func TestSanitize(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	tests := []struct {
		in, want string
	}{
		{"plain", "plain"},
		{"  lead and trail  ", "lead and trail"},
		{"a\r\nb\tc\x00d\x1b[0m", "a b c d [0m"},
		{"bidi\u202eoverride\u200b", "bidioverride"},
		{"bad\xffutf8", "bad\uFFFDutf8"},
		{long, strings.Repeat("é", 148) + "..."},
	}
	for _, tc := range tests {
		if got := sanitize(tc.in, maxMessageLen); got != tc.want {
			t.Errorf("sanitize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzReplyText: whatever a peer sends, the text we keep is one valid,
// printable, capped line, and an enhanced code is only ever a valid one.
func FuzzReplyText(f *testing.F) {
	for _, s := range []string{"5.1.1 No such user", "2.0.0 ok\n2.0.0 more", "\x1b[2J", "5.1.1\xff", "4.2.2 \u202e", strings.Repeat("x", 500)} {
		f.Add(550, s)
	}
	f.Fuzz(func(t *testing.T, code int, msg string) {
		enh, text := splitEnhanced(code, msg)
		if enh != "" && !validEnhanced(enh, code) {
			t.Fatalf("invalid enhanced code %q accepted", enh)
		}
		if enh == "" && text != msg {
			t.Fatalf("text changed without an enhanced code: %q → %q", msg, text)
		}
		s := sanitize(text, maxMessageLen)
		if len(s) > maxMessageLen || !utf8.ValidString(s) {
			t.Fatalf("sanitize returned %d bytes, valid=%v", len(s), utf8.ValidString(s))
		}
		for _, r := range s {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || (unicode.IsSpace(r) && r != ' ') {
				t.Fatalf("sanitize kept %U in %q", r, s)
			}
		}
	})
}

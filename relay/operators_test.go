package relay_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
	"mssrelay/store"
)

// Operator B's domain; operator A is the harness (demo.Domain).
const domainB = "operateur-b.test"

// freeAddr reserves a loopback port for a listener the other operator's
// route must name before it starts.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeLines(t *testing.T, dir, name string, lines ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// operatorB is a second mssrelay, another operator sharing the health PKI:
// a prescriber and a pharmacy of its own, a relay listener, and A on its
// whitelist and routes.
type operatorB struct {
	relay      *relay.Relay
	cfg        *configs.Config
	prescriber demo.User
	pharmacy   demo.User
	rxKey      *signing.KeyPair
	addrs      map[string]string
}

// twoOperators starts operator A (the harness, with a relay listener and B
// on its whitelist) and operator B, each routing the other's domain to
// the other's relay listener.
func twoOperators(t *testing.T) (*harness, *operatorB) {
	t.Helper()
	relayA, relayB := freeAddr(t), freeAddr(t)
	wlDir := t.TempDir()
	var pki *signing.DevPKI
	var clientA [2]string
	h := newHarnessWith(t, func(cfg *configs.Config) {
		if pki == nil {
			var err error
			if pki, err = signing.LoadDevPKI(filepath.Join(cfg.Server.DataDir, "pki")); err != nil {
				t.Fatal(err)
			}
			kp, err := pki.IssueServer("mx." + demo.Domain)
			if err != nil {
				t.Fatal(err)
			}
			clientA = [2]string{filepath.Join(wlDir, "a.pem"), filepath.Join(wlDir, "a-key.pem")}
			if err := kp.WriteFiles(clientA[0], clientA[1]); err != nil {
				t.Fatal(err)
			}
		}
		cfg.SMTP.Relay = []string{relayA}
		cfg.Operators.Whitelist = writeLines(t, wlDir, "a-operators.txt", "# operators A exchanges with", domainB, demo.Domain)
		cfg.Outbound.Routes = []configs.Route{{Domain: domainB, Hosts: []string{relayB}}}
		cfg.Outbound.ClientCert, cfg.Outbound.ClientKey = clientA[0], clientA[1]
		cfg.Outbound.RetryMin.Duration, cfg.Outbound.RetryMax.Duration = 50*time.Millisecond, 200*time.Millisecond
	})

	// B: its own data, certificate and accounts; the same PKI.
	dirB := t.TempDir()
	serverB, err := pki.IssueServer("mx."+domainB, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := serverB.WriteFiles(filepath.Join(dirB, "server.pem"), filepath.Join(dirB, "server-key.pem")); err != nil {
		t.Fatal(err)
	}
	b := &operatorB{
		prescriber: demo.User{Address: "dr.durand@" + domainB, Role: configs.RolePrescriber, RPPS: "10101209876"},
		pharmacy:   demo.User{Address: "pharmacie@" + domainB, Role: configs.RoleExecutant},
	}
	if b.rxKey, err = pki.IssuePerson(b.prescriber.Address, b.prescriber.RPPS, "DURAND Paul"); err != nil {
		t.Fatal(err)
	}
	var accounts []configs.Account
	for _, u := range []*demo.User{&b.prescriber, &b.pharmacy} {
		u.Password = "b-secret-" + string(u.Role)
		hash, err := configs.HashPassword(u.Password)
		if err != nil {
			t.Fatal(err)
		}
		accounts = append(accounts, configs.Account{Address: u.Address, Role: u.Role, PasswordHash: hash, RPPS: u.RPPS})
	}
	text, err := configs.RenderDemo(configs.DemoParams{
		Hostname: "mx." + domainB, MailDomain: domainB, DataDir: dirB,
		Cert: filepath.Join(dirB, "server.pem"), Key: filepath.Join(dirB, "server-key.pem"),
		Anchors: h.cfg.Trust.Anchors, Intermediates: h.cfg.Trust.Intermediates, CRLs: h.cfg.Trust.CRLs,
		Submission: "127.0.0.1:0", IMAPTLS: "127.0.0.1:0",
		Accounts: accounts,
	})
	if err != nil {
		t.Fatal(err)
	}
	text = bytes.Replace(text, []byte("[smtp]\n"), []byte("[smtp]\nrelay = [\""+relayB+"\"]\n"), 1)
	wlB := writeLines(t, wlDir, "b-operators.txt", demo.Domain, domainB)
	text = append(text, []byte("\n[operators]\nwhitelist = \""+wlB+"\"\n\n[outbound]\nretry_min = \"1s\"\nretry_max = \"2s\"\n\n[[outbound.route]]\ndomain = \""+demo.Domain+"\"\nhosts = [\""+relayA+"\"]\n")...)
	cfgFile := filepath.Join(dirB, "mssrelay.toml")
	if err := os.WriteFile(cfgFile, text, 0o600); err != nil {
		t.Fatal(err)
	}
	if b.cfg, err = configs.Load(cfgFile); err != nil {
		t.Fatalf("operator B's config: %v", err)
	}
	if b.relay, err = relay.New(b.cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	if err := b.relay.Listen(); err != nil {
		t.Fatal(err)
	}
	b.addrs = b.relay.Addrs()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.relay.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h, b
}

// waitEntries waits until account has n messages in store st's INBOX and
// returns their bytes.
func waitEntries(t *testing.T, st *store.Store, account string, n int) [][]byte {
	t.Helper()
	var out [][]byte
	waitFor(t, account+"'s INBOX", func() bool {
		_, ents, err := st.Entries(account, store.Inbox)
		if err != nil || len(ents) < n {
			return false
		}
		out = out[:0]
		for _, e := range ents {
			raw, err := st.Bytes(e.RecordID)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, raw)
		}
		return true
	})
	return out
}

// TestOperatorsExchange is issue 7's "done when": two mssrelay instances,
// two operators, exchange prescriptions both ways over mutual TLS; each
// verifies and files what the other sends, byte-identical in the signed
// part.
func TestOperatorsExchange(t *testing.T) {
	h, b := twoOperators(t)

	// A's prescriber to B's pharmacy.
	sample := demo.SamplePrescription(time.Now())
	msgAB := h.rxMessage(sample, b.pharmacy.Address, "")
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{b.pharmacy.Address}, msgAB); err != nil {
		t.Fatal(err)
	}
	got := waitEntries(t, b.relay.Store(), b.pharmacy.Address, 1)
	if !bytes.HasSuffix(got[0], msgAB) || !bytes.Contains(got[0], []byte("with ESMTPS")) || !bytes.Contains(got[0], []byte("operator "+demo.Domain)) {
		t.Fatalf("B filed:\n%.600s", got[0])
	}
	sp, err := mime.Split(got[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.relay.Trust().Verify(signing.Request{PKCS7: sp.PKCS7, Content: sp.Content, From: h.info.Prescriber.Address}); err != nil {
		t.Errorf("signature of what B filed: %v", err)
	}
	waitFor(t, "A's history", func() bool { return strings.HasSuffix(h.history(sample.Number), "relayed") })

	// B's prescriber to A's pharmacy: B's client certificate, A's relay
	// listener, A's verification.
	now := time.Now()
	sampleB := demo.SamplePrescription(now)
	sampleB.Number = demo.NewNumber(now) + "B"
	sampleB.RPPS, sampleB.Prescriber = b.prescriber.RPPS, "Dr Paul DURAND"
	content := sampleB.Content()
	sig, err := signing.SignDetached(b.rxKey, content)
	if err != nil {
		t.Fatal(err)
	}
	msgBA := mime.BuildDetached(submit.Message(b.prescriber.Address, h.info.Pharmacy.Address, "Ordonnance", "b1@"+domainB, now), content, sig)
	opts, err := h.info.SubmitOptions()
	if err != nil {
		t.Fatal(err)
	}
	opts.Addr, opts.User, opts.Password = b.addrs[relay.SMTPSubmission], b.prescriber.Address, b.prescriber.Password
	opts.TLS = &tls.Config{RootCAs: opts.TLS.RootCAs, ServerName: "127.0.0.1"}
	c, err := submit.Dial(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(b.prescriber.Address, []string{h.info.Pharmacy.Address}, msgBA); err != nil {
		t.Fatal(err)
	}
	got = waitEntries(t, h.relay.Store(), h.info.Pharmacy.Address, 1)
	if !bytes.HasSuffix(got[0], msgBA) {
		t.Fatal("A did not file B's prescription as sent")
	}
	rec, err := h.relay.Store().RecordByNumber(sampleB.Number)
	if err != nil || rec.Sender != b.prescriber.Address || rec.IDNPS != "8"+b.prescriber.RPPS {
		t.Fatalf("A's record of B's prescription: %+v %v", rec, err)
	}
}

// TestOperatorRelayRefusals: on the relay listener, no TLS, no client
// certificate, a certificate for a domain not on the whitelist, a sender
// domain not on it, and a recipient that is not local are each refused
// with their reply; nothing is filed.
func TestOperatorRelayRefusals(t *testing.T) {
	h, b := twoOperators(t)
	pki, err := signing.LoadDevPKI(filepath.Join(h.dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	certFor := func(host string) []tls.Certificate {
		kp, err := pki.IssueServer(host)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
		for _, ic := range kp.Chain {
			c.Certificate = append(c.Certificate, ic.Raw)
		}
		return []tls.Certificate{c}
	}
	roots := h.clientTLS().RootCAs
	other, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	otherKP, err := other.IssueServer("mx." + demo.Domain)
	if err != nil {
		t.Fatal(err)
	}
	foreign := []tls.Certificate{{Certificate: [][]byte{otherKP.Cert.Raw, otherKP.Chain[0].Raw}, PrivateKey: otherKP.Key}}
	for _, tc := range []struct {
		name     string
		noTLS    bool
		certs    []tls.Certificate
		from, to string
		code     int
		enh      smtp.EnhancedCode
	}{
		{"no STARTTLS", true, nil, "dr.martin@" + demo.Domain, b.pharmacy.Address, 530, smtp.EnhancedCode{5, 7, 0}},
		{"no client certificate", false, nil, "dr.martin@" + demo.Domain, b.pharmacy.Address, 550, smtp.EnhancedCode{5, 7, 1}},
		// A certificate given must verify: the handshake itself fails.
		{"certificate of another PKI", false, foreign, "", "", 0, smtp.EnhancedCode{}},
		{"operator not on the whitelist", false, certFor("mx.intrus.test"), "dr.x@intrus.test", b.pharmacy.Address, 550, smtp.EnhancedCode{5, 7, 1}},
		{"sender domain not on the whitelist", false, certFor("mx." + demo.Domain), "dr.x@intrus.test", b.pharmacy.Address, 550, smtp.EnhancedCode{5, 7, 1}},
		{"recipient not local", false, certFor("mx." + demo.Domain), "dr.martin@" + demo.Domain, "someone@" + demo.Domain, 550, smtp.EnhancedCode{5, 7, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *smtp.Client
			var err error
			if tc.noTLS {
				c, err = smtp.Dial(b.addrs[relay.SMTPRelay])
			} else {
				c, err = smtp.DialStartTLS(b.addrs[relay.SMTPRelay], &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: tc.certs})
			}
			if tc.code == 0 {
				// TLS 1.3: the client's side of the handshake ends before
				// the server checks its certificate; the alert comes with
				// the next read.
				if err == nil {
					err = c.Mail("dr.martin@"+demo.Domain, nil)
					c.Close()
				}
				if code, _ := smtpCode(err); err == nil || code != 0 {
					t.Fatalf("a certificate of another PKI was not refused in the handshake: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if ok, _ := c.Extension("AUTH"); ok {
				t.Error("AUTH offered on the operators' listener")
			}
			err = c.Mail(tc.from, nil)
			if err == nil {
				err = c.Rcpt(tc.to, nil)
			}
			if code, enh := smtpCode(err); code != tc.code || enh != tc.enh {
				t.Fatalf("got %v, want %d %v", err, tc.code, tc.enh)
			}
		})
	}
	if _, ents, _ := b.relay.Store().Entries(b.pharmacy.Address, store.Inbox); len(ents) != 0 {
		t.Errorf("%d messages filed", len(ents))
	}
}

// TestOperatorRevokedPeer: a whitelisted operator whose client certificate
// the CRL revokes is refused at MAIL; the chain alone is not enough.
func TestOperatorRevokedPeer(t *testing.T) {
	h, b := twoOperators(t)
	pki, err := signing.LoadDevPKI(filepath.Join(h.dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.IssueServer("mx2." + demo.Domain)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	crl, err := pki.IssueCRL(pki.Intermediate, []*x509.Certificate{kp.Cert}, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.info.Path(h.info.CRLs[1]), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.relay.Trust().Reload(); err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
	for _, ic := range kp.Chain {
		cert.Certificate = append(cert.Certificate, ic.Raw)
	}
	c, err := smtp.DialStartTLS(b.addrs[relay.SMTPRelay], &tls.Config{RootCAs: h.clientTLS().RootCAs, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Mail(h.info.Prescriber.Address, nil)
	if code, enh := smtpCode(err); code != 550 || enh != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("MAIL with a revoked certificate: %v", err)
	}
}

// TestOperatorReports: another operator's report (null reverse-path) is
// filed for its one recipient; mail from <> that is not a report, and a
// second recipient of a report, are refused.
func TestOperatorReports(t *testing.T) {
	h, b := twoOperators(t)
	pki, err := signing.LoadDevPKI(filepath.Join(h.dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.IssueServer("mx3." + demo.Domain)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
	for _, ic := range kp.Chain {
		cert.Certificate = append(cert.Certificate, ic.Raw)
	}
	dial := func(t *testing.T) *smtp.Client {
		c, err := smtp.DialStartTLS(b.addrs[relay.SMTPRelay], &tls.Config{RootCAs: h.clientTLS().RootCAs, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	report := "From: <postmaster@" + demo.Domain + ">\r\nTo: <" + b.pharmacy.Address + ">\r\nSubject: Delivery Status Notification\r\n" +
		"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nundelivered\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx3." + demo.Domain +
		"\r\n\r\nFinal-Recipient: rfc822; x@" + demo.Domain + "\r\nAction: failed\r\nStatus: 5.1.1\r\n--b--\r\n"
	plain := "From: <postmaster@" + demo.Domain + ">\r\nTo: <" + b.pharmacy.Address + ">\r\nSubject: hello\r\n\r\nnot a report\r\n"
	for _, tc := range []struct {
		name string
		rcpt []string
		msg  string
		code int
		enh  smtp.EnhancedCode
	}{
		{"a report", []string{b.pharmacy.Address}, report, 0, smtp.EnhancedCode{}},
		{"not a report", []string{b.pharmacy.Address}, plain, 550, smtp.EnhancedCode{5, 7, 1}},
		{"two recipients", []string{b.pharmacy.Address, b.prescriber.Address}, report, 452, smtp.EnhancedCode{4, 5, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t)
			if err := c.Mail("", nil); err != nil {
				t.Fatal(err)
			}
			var err error
			for _, r := range tc.rcpt {
				if err = c.Rcpt(r, nil); err != nil {
					break
				}
			}
			if err == nil {
				var w io.WriteCloser
				if w, err = c.Data(); err == nil {
					if _, err = io.WriteString(w, tc.msg); err == nil {
						err = w.Close()
					}
				}
			}
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("report refused: %v", err)
				}
				return
			}
			if code, enh := smtpCode(err); code != tc.code || enh != tc.enh {
				t.Fatalf("got %v, want %d %v", err, tc.code, tc.enh)
			}
		})
	}
	got := waitEntries(t, b.relay.Store(), b.pharmacy.Address, 1)
	if len(got) != 1 || !bytes.Contains(got[0], []byte("report-type=delivery-status")) || !bytes.Contains(got[0], []byte("with ESMTPS")) {
		t.Fatalf("filed %d messages: %.300q", len(got), got)
	}
}

// TestOperatorSignerRefusals: mail from another operator has no account
// to vouch for its sender, so the signing certificate itself must name a
// health professional (rx_signer_not_professional) and the prescription
// that professional's IDNPS (rx_signer_mismatch). Each is refused after
// DATA with 554 5.7.1 and its own text; a valid prescription over the same
// connection setup is filed, so the refusals are these checks'.
func TestOperatorSignerRefusals(t *testing.T) {
	h, b := twoOperators(t)
	pki, err := signing.LoadDevPKI(filepath.Join(h.dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.IssueServer("mx4." + demo.Domain)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
	for _, ic := range kp.Chain {
		cert.Certificate = append(cert.Certificate, ic.Raw)
	}
	from := h.info.Prescriber.Address
	// The same address, the same trusted PKI, but no IDNPS in the
	// subject: an e-mail certificate, not a professional's.
	noIDNPS, err := pki.IssuePerson(from, "", "MARTIN Jeanne")
	if err != nil {
		t.Fatal(err)
	}
	compose := func(k *signing.KeyPair, mut func(*mime.Sample)) []byte {
		now := time.Now()
		sample := demo.SamplePrescription(now)
		if mut != nil {
			mut(&sample)
		}
		content := sample.Content()
		sig, err := signing.SignDetached(k, content)
		if err != nil {
			t.Fatal(err)
		}
		return mime.BuildDetached(submit.Message(from, b.pharmacy.Address, "Ordonnance", sample.Number+"@"+demo.Domain, now), content, sig)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		code int // 0: filed
		text string
	}{
		{"signed by the prescriber", compose(h.signer(), nil), 0, ""},
		{"certificate without IDNPS", compose(noIDNPS, nil), 554, "names no health professional"},
		{"prescription names another prescriber than the signer", compose(h.signer(), func(s *mime.Sample) { s.RPPS = "10101209999" }), 554, "is not the signer's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := smtp.DialStartTLS(b.addrs[relay.SMTPRelay], &tls.Config{RootCAs: h.clientTLS().RootCAs, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Mail(from, nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt(b.pharmacy.Address, nil); err != nil {
				t.Fatal(err)
			}
			w, err := c.Data()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(tc.msg); err != nil {
				t.Fatal(err)
			}
			err = w.Close()
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if code, enh := smtpCode(err); code != tc.code || enh != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want %d 5.7.1 …%s…", err, tc.code, tc.text)
			}
		})
	}
	if _, ents, err := b.relay.Store().Entries(b.pharmacy.Address, store.Inbox); err != nil || len(ents) != 1 {
		t.Errorf("B filed %d messages (%v), want only the valid one", len(ents), err)
	}
}

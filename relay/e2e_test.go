package relay_test

import (
	"bytes"
	"crypto/tls"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mssrelay/mime"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
)

// TestPrescriptionEndToEnd follows one prescription from SMTP DATA to an
// IMAP FETCH and re-verifies what the pharmacy received.
func TestPrescriptionEndToEnd(t *testing.T) {
	h := newHarness(t)
	msg, number := h.prescription()

	reply, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg)
	if err != nil {
		t.Fatalf("submission refused: %v", err)
	}
	if !strings.Contains(reply, "filed") {
		t.Errorf("reply %q does not say the prescription was filed", reply)
	}

	msgs := fetchAll(t, h.imap(h.info.Pharmacy, nil), "INBOX")
	if len(msgs) != 1 {
		t.Fatalf("pharmacy INBOX holds %d messages, want 1", len(msgs))
	}
	got := msgs[0].FindBodySection(&imap.FetchItemBodySection{Peek: true})
	// The relay adds trace fields above the message and never alters it.
	if !bytes.HasSuffix(got, msg) {
		t.Fatalf("fetched bytes do not end with the submitted message")
	}
	if !bytes.HasPrefix(got, []byte("Return-Path: <"+h.info.Prescriber.Address+">\r\nReceived: ")) {
		t.Errorf("fetched message lacks trace header fields: %q", got[:min(len(got), 120)])
	}
	if msgs[0].RFC822Size != int64(len(got)) {
		t.Errorf("RFC822.SIZE %d, body %d bytes", msgs[0].RFC822Size, len(got))
	}
	if msgs[0].Envelope == nil || msgs[0].Envelope.Subject != "Ordonnance" {
		t.Errorf("ENVELOPE subject = %+v", msgs[0].Envelope)
	}

	// Verify the fetched copy from scratch, as an executant's software would.
	signed, err := mime.Split(got)
	if err != nil {
		t.Fatalf("split fetched message: %v", err)
	}
	res, err := h.relay.Trust().Verify(signing.Request{PKCS7: signed.PKCS7, Content: signed.Content, From: h.info.Prescriber.Address})
	if err != nil {
		t.Fatalf("fetched signature does not verify: %v", err)
	}
	if res.Signer.IDNPS != "8"+demo.PrescriberRPPS {
		t.Errorf("signer IDNPS %q", res.Signer.IDNPS)
	}
	rx, err := mime.ExtractPrescription(res.Content)
	if err != nil {
		t.Fatal(err)
	}
	if rx.Number != number || rx.PatientINS != demo.PatientINS {
		t.Errorf("prescription %s for %s, want %s for %s", rx.Number, rx.PatientINS, number, demo.PatientINS)
	}

	// Each account sees only what was addressed to it.
	if other := fetchAll(t, h.imap(h.info.Pharmacy2, nil), "INBOX"); len(other) != 0 {
		t.Errorf("second pharmacy sees %d messages addressed to the first", len(other))
	}
}

// TestResendIsFiledOnce: a client that lost our 250 resends; the relay
// answers 250 again and files nothing new.
func TestResendIsFiledOnce(t *testing.T) {
	h := newHarness(t)
	msg, _ := h.prescription()
	c := h.prescriber()
	if _, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		t.Fatal(err)
	}
	reply, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg)
	if err != nil {
		t.Fatalf("identical resend refused: %v", err)
	}
	if !strings.Contains(reply, "not filed twice") {
		t.Errorf("resend reply %q", reply)
	}
	if n := len(fetchAll(t, h.imap(h.info.Pharmacy, nil), "INBOX")); n != 1 {
		t.Errorf("INBOX holds %d messages after a resend, want 1", n)
	}
}

// TestRefusals drives every refusal of the submission path over a real
// connection and checks the exact reply.
func TestRefusals(t *testing.T) {
	h := newHarness(t)
	kp := h.signer()
	now := time.Now()
	from, to := h.info.Prescriber.Address, h.info.Pharmacy.Address

	compose := func(mut func(*mime.Sample)) []byte {
		rx := demo.SamplePrescription(now)
		if mut != nil {
			mut(&rx)
		}
		m, err := demo.Compose(kp, from, to, "Ordonnance", rx.Content(), now)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	other, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssuePerson(from, demo.PrescriberRPPS, "MARTIN Jeanne")
	if err != nil {
		t.Fatal(err)
	}
	// Issued by the relay's own PKI, so the signature is trusted and only
	// the address differs from the From: field.
	pki, err := signing.LoadDevPKI(filepath.Dir(h.info.Path(h.info.RootCA)))
	if err != nil {
		t.Fatal(err)
	}
	wrongMail, err := pki.IssuePerson("someone.else@"+demo.Domain, demo.PrescriberRPPS, "ELSE Some")
	if err != nil {
		t.Fatal(err)
	}
	signedBy := func(k *signing.KeyPair) []byte {
		rx := demo.SamplePrescription(now)
		m, err := demo.Compose(k, from, to, "Ordonnance", rx.Content(), now)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// A replay: same number as an accepted prescription, other content.
	first := demo.SamplePrescription(now)
	accepted, err := demo.Compose(kp, from, to, "Ordonnance", first.Content(), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.prescriber().Send(from, []string{to}, accepted); err != nil {
		t.Fatal(err)
	}
	forged := first
	forged.Items = []mime.Item{{Kind: "MedicationRequest", Text: "Morphine 10 mg", Dosage: "1 par heure"}}

	tampered := compose(nil)
	tampered = bytes.Replace(tampered, []byte("Amoxicilline"), []byte("Amoxicillinf"), 1)

	// The same sender reusing a Message-ID for another prescription.
	acceptedID, _ := mime.HeaderField(accepted, "Message-ID")
	fresh := compose(nil)
	freshID, _ := mime.HeaderField(fresh, "Message-ID")
	reusedID := bytes.Replace(fresh, []byte(freshID), []byte(acceptedID), 1)

	unsigned := append(submitHeader(from, to), []byte("Content-Type: text/plain\r\n\r\nHello\r\n")...)
	badFrom := bytes.Replace(compose(nil), []byte("From: "+from), []byte("From: intruder@"+demo.Domain), 1)

	cases := []struct {
		name string
		msg  []byte
		code int
		enh  smtp.EnhancedCode
		text string // a part of the reply text ("": not checked)
	}{
		{"not signed", unsigned, 554, smtp.EnhancedCode{5, 7, 0}, ""},
		{"tampered content", tampered, 554, smtp.EnhancedCode{5, 7, 7}, "does not match the signed message digest"},
		{"From is not the account", badFrom, 550, smtp.EnhancedCode{5, 7, 1}, ""},
		{"untrusted root", signedBy(foreign), 554, smtp.EnhancedCode{5, 7, 1}, "not issued by a trusted authority"},
		{"certificate e-mail differs", signedBy(wrongMail), 554, smtp.EnhancedCode{5, 7, 1},
			"the signing certificate is for someone.else@" + demo.Domain + ", not for the From: address " + from},
		{"replay with other content", compose(func(s *mime.Sample) { *s = forged }), 554, smtp.EnhancedCode{5, 7, 1}, ""},
		{"Message-ID reused with other content", reusedID, 554, smtp.EnhancedCode{5, 7, 1}, ""},
		{"prescription without items", compose(func(s *mime.Sample) { s.Items = nil }), 554, smtp.EnhancedCode{5, 6, 0}, ""},
		{"invalid INS", compose(func(s *mime.Sample) { s.PatientINS = "184127512345641" }), 554, smtp.EnhancedCode{5, 6, 0}, ""},
		{"prescriber identifier not the account's", compose(func(s *mime.Sample) { s.RPPS = "10101209999" }), 554, smtp.EnhancedCode{5, 7, 1}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.prescriber().Send(from, []string{to}, tc.msg)
			code, enh := smtpCode(err)
			if code != tc.code || enh != tc.enh {
				t.Fatalf("got %v, want %d %v", err, tc.code, tc.enh)
			}
			if tc.text != "" && !strings.Contains(err.Error(), tc.text) {
				t.Errorf("reply %q does not say %q", err, tc.text)
			}
		})
	}
	// Nothing refused reached the mailbox: only the first prescription.
	if n := len(fetchAll(t, h.imap(h.info.Pharmacy, nil), "INBOX")); n != 1 {
		t.Errorf("INBOX holds %d messages, want only the accepted one", n)
	}
}

func submitHeader(from, to string) []byte {
	return submit.Message(from, to, "test", "x@"+demo.Domain, time.Now())
}

// TestEnvelopeRefusals covers what is refused before DATA.
func TestEnvelopeRefusals(t *testing.T) {
	h := newHarness(t)
	tlsCfg := h.clientTLS()

	t.Run("AUTH before STARTTLS", func(t *testing.T) {
		c, err := smtp.Dial(h.addrs[relay.SMTPSubmission])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = c.Auth(sasl.NewPlainClient("", h.info.Prescriber.Address, h.info.Prescriber.Password))
		if err == nil {
			t.Fatal("AUTH over plaintext accepted")
		}
	})
	t.Run("MAIL before AUTH", func(t *testing.T) {
		c, err := smtp.DialStartTLS(h.addrs[relay.SMTPSubmission], tlsCfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		code, enh := smtpCode(c.Mail(h.info.Prescriber.Address, nil))
		if code != 530 || enh != (smtp.EnhancedCode{5, 7, 0}) {
			t.Fatalf("got %d %v, want 530 5.7.0", code, enh)
		}
	})

	dial := func(u demo.User) (*submit.Conn, error) {
		return submit.Dial(submit.Options{Addr: h.addrs[relay.SMTPSubmission], TLS: tlsCfg, User: u.Address, Password: u.Password})
	}
	t.Run("wrong password", func(t *testing.T) {
		u := h.info.Prescriber
		u.Password += "x"
		_, err := dial(u)
		if code, enh := smtpCode(err); code != 535 || enh != (smtp.EnhancedCode{5, 7, 8}) {
			t.Fatalf("got %v, want 535 5.7.8", err)
		}
	})
	t.Run("unknown account", func(t *testing.T) {
		_, err := dial(demo.User{Address: "nobody@" + demo.Domain, Password: "whatever-password"})
		if code, _ := smtpCode(err); code != 535 {
			t.Fatalf("got %v, want 535", err)
		}
	})

	msg, _ := h.prescription()
	cases := []struct {
		name     string
		user     demo.User
		from, to string
		code     int
		enh      smtp.EnhancedCode
	}{
		{"MAIL FROM another address", h.info.Prescriber, h.info.Pharmacy.Address, h.info.Pharmacy.Address, 550, smtp.EnhancedCode{5, 7, 1}},
		{"unknown recipient", h.info.Prescriber, h.info.Prescriber.Address, "nobody@" + demo.Domain, 550, smtp.EnhancedCode{5, 1, 1}},
		{"remote recipient", h.info.Prescriber, h.info.Prescriber.Address, "someone@example.org", 550, smtp.EnhancedCode{5, 1, 1}},
		{"executant cannot submit prescriptions", h.info.Pharmacy, h.info.Pharmacy.Address, h.info.Prescriber.Address, 550, smtp.EnhancedCode{5, 7, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial(tc.user)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Send(tc.from, []string{tc.to}, msg)
			if code, enh := smtpCode(err); code != tc.code || enh != tc.enh {
				t.Fatalf("got %v, want %d %v", err, tc.code, tc.enh)
			}
		})
	}

	t.Run("too large", func(t *testing.T) {
		c, err := dial(h.info.Prescriber)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		big := append(append([]byte(nil), msg...), bytes.Repeat([]byte("A"), int(h.cfg.Limits.MaxMessageBytes))...)
		_, err = c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, big)
		if code, enh := smtpCode(err); code != 552 || enh != (smtp.EnhancedCode{5, 3, 4}) {
			t.Fatalf("got %v, want 552 5.3.4", err)
		}
	})
}

// TestImplicitTLSSubmissionAndIMAPSTARTTLS exercises the two other listeners.
func TestImplicitTLSSubmissionAndIMAPSTARTTLS(t *testing.T) {
	h := newHarness(t)
	msg, _ := h.prescription()
	c, err := submit.Dial(submit.Options{Addr: h.addrs[relay.SMTPSubmissionTLS], ImplicitTLS: true, TLS: h.clientTLS(),
		User: h.info.Prescriber.Address, Password: h.info.Prescriber.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		t.Fatal(err)
	}

	// Plain IMAP refuses LOGIN until STARTTLS (RFC 3501 §6.2.3 LOGINDISABLED).
	plain, err := imapclient.DialInsecure(h.addrs[relay.IMAPSTARTTLS], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.Login(h.info.Pharmacy.Address, h.info.Pharmacy.Password).Wait(); err == nil {
		t.Fatal("IMAP LOGIN accepted without TLS")
	}

	st, err := imapclient.DialStartTLS(h.addrs[relay.IMAPSTARTTLS], &imapclient.Options{TLSConfig: h.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Login(h.info.Pharmacy.Address, h.info.Pharmacy.Password).Wait(); err != nil {
		t.Fatalf("LOGIN after STARTTLS: %v", err)
	}
	if n := len(fetchAll(t, st, "INBOX")); n != 1 {
		t.Errorf("INBOX holds %d, want 1", n)
	}
}

// TestTLSPolicy: TLS 1.1 and TLS 1.2 with CBC-only suites are refused on
// every TLS listener; TLS 1.2 with ECDHE + AES-GCM is accepted.
func TestTLSPolicy(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name   string
		adjust func(*tls.Config)
		ok     bool
	}{
		{"TLS 1.1", func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }, false},
		{"TLS 1.2 CBC only", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA}
		}, false},
		{"TLS 1.2 ECDHE AES-GCM", func(c *tls.Config) {
			c.MaxVersion = tls.VersionTLS12
			c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
		}, true},
		{"TLS 1.3", func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }, true},
	}
	for _, kind := range []string{relay.SMTPSubmissionTLS, relay.IMAPTLS} {
		for _, tc := range cases {
			cfg := h.clientTLS()
			tc.adjust(cfg)
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addrs[kind], cfg)
			if err == nil {
				conn.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("%s, %s: handshake error %v, want accepted=%v", kind, tc.name, err, tc.ok)
			}
		}
	}
}

// TestIdleSeesNewPrescription: an idling executant's client hears of a new
// prescription as soon as it is filed.
func TestIdleSeesNewPrescription(t *testing.T) {
	h := newHarness(t)
	exists := make(chan uint32, 4)
	c := h.imap(h.info.Pharmacy, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		},
	}})
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := h.prescription()
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-exists:
		if n != 1 {
			t.Errorf("EXISTS %d, want 1", n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no EXISTS while idling")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestMailboxStatePersists: UIDs, UIDVALIDITY and flags survive a restart.
func TestMailboxStatePersists(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < 3; i++ {
		msg, _ := h.prescription()
		if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
			t.Fatal(err)
		}
	}
	c := h.imap(h.info.Pharmacy, nil)
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged, "$Dispensed"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	before := fetchAll(t, c, "INBOX")
	c.Logout().Wait()

	h.restart()
	c2 := h.imap(h.info.Pharmacy, nil)
	sel2, err := c2.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel2.UIDValidity != sel.UIDValidity || sel2.UIDNext != sel.UIDNext {
		t.Errorf("after restart UIDVALIDITY %d UIDNEXT %d, before %d %d", sel2.UIDValidity, sel2.UIDNext, sel.UIDValidity, sel.UIDNext)
	}
	after := fetchAll(t, c2, "INBOX")
	if len(after) != len(before) {
		t.Fatalf("%d messages after restart, %d before", len(after), len(before))
	}
	for i := range before {
		if after[i].UID != before[i].UID || !sameFlagSet(after[i].Flags, before[i].Flags) {
			t.Errorf("message %d: UID %d flags %v, before UID %d flags %v", i+1, after[i].UID, after[i].Flags, before[i].UID, before[i].Flags)
		}
	}
	if !hasFlag(after[1].Flags, "$Dispensed") {
		t.Errorf("keyword $Dispensed lost: %v", after[1].Flags)
	}
}

func sameFlagSet(a, b []imap.Flag) bool {
	if len(a) != len(b) {
		return false
	}
	for _, f := range a {
		if !hasFlag(b, f) {
			return false
		}
	}
	return true
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, x := range flags {
		if strings.EqualFold(string(x), string(f)) {
			return true
		}
	}
	return false
}

// TestIMAPReadOnlyAndSearch: EXAMINE is truly read-only and SEARCH finds
// by flag and header; STORE, EXPUNGE and \Seen-setting FETCH work on SELECT.
func TestIMAPReadOnlyAndSearch(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < 2; i++ {
		msg, _ := h.prescription()
		if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
			t.Fatal(err)
		}
	}
	c := h.imap(h.info.Pharmacy, nil)
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err == nil {
		t.Error("STORE accepted after EXAMINE")
	}
	// BODY[] (not PEEK) must not set \Seen under EXAMINE.
	if _, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect(); err != nil {
		t.Fatal(err)
	}

	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	unseen, err := c.Search(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := unseen.AllSeqNums(); len(got) != 2 {
		t.Fatalf("UNSEEN after EXAMINE fetch = %v, want both", got)
	}
	if _, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect(); err != nil {
		t.Fatal(err)
	}
	seen, err := c.Search(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := seen.AllSeqNums(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("SEEN = %v, want [1]", got)
	}
	byFrom, err := c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "From", Value: "dr.martin"}}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := byFrom.AllSeqNums(); len(got) != 2 {
		t.Errorf("SEARCH FROM = %v, want 2 hits", got)
	}

	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(fetchAll(t, c, "INBOX")); n != 1 {
		t.Errorf("%d messages after EXPUNGE, want 1", n)
	}
	// The legal record stays even though the mailbox entry is gone.
	if _, err := h.relay.Store().Record(1); err != nil {
		t.Errorf("record 1 gone after expunge: %v", err)
	}
}

// TestOpenSSLSignedPrescription: a message signed by the OpenSSL command
// line (a signer we did not write) is accepted, in both S/MIME forms, and
// what the pharmacy fetches verifies with `openssl cms -verify`.
func TestOpenSSLSignedPrescription(t *testing.T) {
	requireOpenSSL(t)
	h := newHarness(t)
	for _, form := range []string{"detached", "opaque"} {
		t.Run(form, func(t *testing.T) {
			rx := demo.SamplePrescription(time.Now())
			msg := opensslSign(t, h.info, h.info.Prescriber.Address, h.info.Pharmacy.Address, rx.Content(), form == "opaque")
			if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
				t.Fatalf("OpenSSL-signed %s message refused: %v", form, err)
			}
		})
	}
	msgs := fetchAll(t, h.imap(h.info.Pharmacy, nil), "INBOX")
	if len(msgs) != 2 {
		t.Fatalf("INBOX holds %d, want 2", len(msgs))
	}
	for _, m := range msgs {
		opensslVerify(t, h.info, m.FindBodySection(&imap.FetchItemBodySection{Peek: true}))
	}
}

// TestTLSResumption: clients that reconnect for every message resume their
// TLS session (RFC 8446 §2.2 PSK, session tickets with keys that crypto/tls
// rotates itself) instead of paying a full handshake.
func TestTLSResumption(t *testing.T) {
	h := newHarness(t)
	for _, kind := range []string{relay.SMTPSubmissionTLS, relay.IMAPTLS} {
		cfg := h.clientTLS()
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		for i := 0; i < 2; i++ {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addrs[kind], cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Reading the greeting also reads the TLS 1.3 session ticket
			// the server sends after the handshake.
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Read(make([]byte, 512)); err != nil {
				t.Fatal(err)
			}
			resumed := conn.ConnectionState().DidResume
			conn.Close()
			if i == 1 && !resumed {
				t.Errorf("%s: second connection did not resume the TLS session", kind)
			}
		}
	}
}

// TestRelaySignsNotifications: the relay's organisation certificate (from
// [signer]) signs notification entities that verify with our verifier and
// with OpenSSL, as a patient's or prescriber's software would check them.
func TestRelaySignsNotifications(t *testing.T) {
	h := newHarness(t)
	addr := h.relay.NotificationAddress()
	if addr != "postmaster@"+demo.Domain {
		t.Fatalf("notification address %q", addr)
	}
	entity := []byte("Content-Type: text/plain; charset=utf-8\r\n\r\nLa prescription a été délivrée.\r\n")
	msg, err := h.relay.SignNotification(submit.Message(addr, h.info.Prescriber.Address, "Notification", "n1@"+demo.Domain, time.Now()), entity)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := mime.Split(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signed.Content, entity) {
		t.Error("signed content differs from the entity")
	}
	if _, err := h.relay.Trust().Verify(signing.Request{PKCS7: signed.PKCS7, Content: signed.Content, From: addr}); err != nil {
		t.Fatalf("notification does not verify: %v", err)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		opensslVerify(t, h.info, msg)
	}
}

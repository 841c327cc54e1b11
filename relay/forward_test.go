package relay_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
	"mssrelay/store"
)

// patientOperator is a TLS SMTP server standing in for the patients'
// operator: its own PKI for its server certificate, and our client
// certificate required and verified against the relay's trust anchors
// (mutual TLS between operators).
type patientOperator struct {
	addr     string
	rootFile string // its PKI's root, for outbound.cas
	mu       sync.Mutex
	got      []received
}

type received struct {
	from, to string
	peerCN   string
	data     []byte
}

func (p *patientOperator) messages() []received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]received(nil), p.got...)
}

// withPatientOperator returns a harness adjustment that starts the
// patients' operator and routes the patients' domain to it.
func withPatientOperator(t *testing.T, op **patientOperator) func(*configs.Config) {
	return func(cfg *configs.Config) {
		if *op == nil {
			*op = startPatientOperator(t, cfg)
		}
		cfg.Outbound.Routes = []configs.Route{{Domain: cfg.Patients.Domain, Hosts: []string{(*op).addr}}}
		cfg.Outbound.CAs = append(cfg.Outbound.CAs, (*op).rootFile)
		cfg.Outbound.RetryMin.Duration = 50 * time.Millisecond
		cfg.Outbound.RetryMax.Duration = 200 * time.Millisecond
	}
}

func startPatientOperator(t *testing.T, cfg *configs.Config) *patientOperator {
	t.Helper()
	pki, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.IssueServer("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.Save(dir); err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	for _, f := range append(append([]string(nil), cfg.Trust.Anchors...), cfg.Trust.Intermediates...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		clientCAs.AppendCertsFromPEM(b)
	}
	cert := tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
	for _, c := range kp.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	op := &patientOperator{rootFile: filepath.Join(dir, signing.DevRootCertFile)}
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &opSession{op: op, conn: c}, nil })
	s := smtp.NewServer(be)
	s.Domain = "mx.patient.test"
	s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: clientCAs, MinVersion: tls.VersionTLS12}
	s.MaxLineLength = 0
	s.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { s.Close() })
	op.addr = l.Addr().String()
	return op
}

type opSession struct {
	op       *patientOperator
	conn     *smtp.Conn
	from, to string
}

func (s *opSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *opSession) Rcpt(to string, _ *smtp.RcptOptions) error   { s.to = to; return nil }
func (s *opSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	cn := ""
	if cs, ok := s.conn.TLSConnectionState(); ok && len(cs.PeerCertificates) > 0 {
		cn = cs.PeerCertificates[0].Subject.CommonName
	}
	s.op.mu.Lock()
	s.op.got = append(s.op.got, received{from: s.from, to: s.to, peerCN: cn, data: b})
	s.op.mu.Unlock()
	return nil
}
func (s *opSession) Reset()        {}
func (s *opSession) Logout() error { return nil }

// rxMessage composes a signed prescription from the demo prescriber with
// extra outer header fields.
func (h *harness) rxMessage(sample mime.Sample, to string, extra string) []byte {
	h.t.Helper()
	now := time.Now()
	content := sample.Content()
	sig, err := signing.SignDetached(h.signer(), content)
	if err != nil {
		h.t.Fatal(err)
	}
	header := submit.Message(h.info.Prescriber.Address, to, "Ordonnance", fmt.Sprintf("%d.%s@%s", now.UnixNano(), sample.Number, demo.Domain), now)
	return mime.BuildDetached(append(header, extra...), content, sig)
}

// waitFor polls cond; the bound turns a hang into a failure, it asserts no
// duration.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// notifications reads the prescriber's INBOX over IMAP and returns the
// relay's notifications, each verified as signed by the relay.
func (h *harness) notifications(t *testing.T) []*mime.Report {
	t.Helper()
	c := h.imap(h.info.Prescriber, nil)
	defer c.Logout()
	var out []*mime.Report
	for _, m := range fetchAll(t, c, "INBOX") {
		raw := m.FindBodySection(&imap.FetchItemBodySection{})
		sp, err := mime.Split(raw)
		if err != nil {
			t.Fatalf("notification is not S/MIME: %v", err)
		}
		if _, err := h.relay.Trust().Verify(signing.Request{PKCS7: sp.PKCS7, Content: sp.Content, From: h.relay.NotificationAddress()}); err != nil {
			t.Fatalf("notification signature: %v", err)
		}
		r, err := mime.ParseReport(sp.Content)
		if err != nil {
			t.Fatalf("ParseReport: %v", err)
		}
		out = append(out, r)
	}
	return out
}

func (h *harness) storedCount(account string) int {
	_, ents, err := h.relay.Store().Entries(account, store.Inbox)
	if err != nil {
		h.t.Fatal(err)
	}
	return len(ents)
}

func (h *harness) history(number string) string {
	h.t.Helper()
	rec, err := h.relay.Store().RecordByNumber(number)
	if err != nil {
		h.t.Fatal(err)
	}
	evs, err := h.relay.Store().RecordEvents(rec.ID)
	if err != nil {
		h.t.Fatal(err)
	}
	var b []string
	for _, e := range evs {
		b = append(b, e.Kind)
	}
	return strings.Join(b, " ")
}

// TestForwardToPatient is the issue's "done when": a messaging-only
// prescription reaches the patients' operator over mutual TLS, its signed
// part byte-identical and still verifying (with OpenSSL too); the
// prescriber's MDN request is answered with a signed MDN.
func TestForwardToPatient(t *testing.T) {
	var op *patientOperator
	h := newHarnessWith(t, withPatientOperator(t, &op))
	sample := demo.SamplePrescription(time.Now())
	sample.Delivery, sample.MSSINS = mime.DeliveryMessagingOnly, "O"
	msg := h.rxMessage(sample, h.info.Pharmacy.Address, "Disposition-Notification-To: <"+h.info.Prescriber.Address+">\r\n")
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the copy at the patients' operator", func() bool { return len(op.messages()) == 1 })
	got := op.messages()[0]
	if got.to != sample.PatientINS+"@"+configs.DefaultPatientDomain || got.from != h.info.Prescriber.Address || got.peerCN == "" {
		t.Errorf("envelope %s → %s, client certificate %q", got.from, got.to, got.peerCN)
	}
	if !bytes.HasSuffix(got.data, msg) {
		t.Fatal("the forwarded copy does not end with the message as submitted")
	}
	sp, err := mime.Split(got.data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.relay.Trust().Verify(signing.Request{PKCS7: sp.PKCS7, Content: sp.Content, From: h.info.Prescriber.Address, RPPS: demo.PrescriberRPPS, Now: time.Now()}); err != nil {
		t.Errorf("the forwarded copy's signature: %v", err)
	}
	if _, err := os.Stat("/usr/bin/openssl"); err == nil || os.Getenv("CI") != "" {
		requireOpenSSL(t)
		opensslVerify(t, h.info, got.data)
	}
	waitFor(t, "the MDN", func() bool { return h.storedCount(h.info.Prescriber.Address) == 1 })
	reps := h.notifications(t)
	if len(reps) != 1 || reps[0].Type != mime.ReportDisposition || reps[0].Number != sample.Number || reps[0].Status != mime.StatusProcessed {
		t.Fatalf("notifications: %+v", reps)
	}
	if hist := h.history(sample.Number); hist != "filed delivered forward.queued forwarded notified" && hist != "filed delivered forward.queued notified forwarded" {
		t.Errorf("history %q", hist)
	}
	// The pharmacy reads it: the history says so, once.
	for range 2 {
		c := h.imap(h.info.Pharmacy, nil)
		fetchAll(t, c, "INBOX")
		c.Logout()
	}
	waitFor(t, "the fetch in the history", func() bool { return strings.HasSuffix(h.history(sample.Number), " fetched") })
	if hist := h.history(sample.Number); strings.Count(hist, "fetched") != 1 {
		t.Errorf("history %q", hist)
	}
}

// TestNotForwarded: each reason not to forward is recorded and the
// prescriber gets a signed DSN saying a paper copy is needed; nothing
// reaches the patients' operator.
func TestNotForwarded(t *testing.T) {
	var op *patientOperator
	h := newHarnessWith(t, withPatientOperator(t, &op))
	otherINS := mime.SampleINS(77)
	for i, tc := range []struct {
		name   string
		adjust func(*mime.Sample)
		rcpt   string // a patient address written to directly, or ""
		reason string
	}{
		{"identity not qualified", func(s *mime.Sample) { s.Delivery, s.MSSINS = mime.DeliveryMessagingOnly, "N" }, "", "not qualified"},
		{"no X-MSS-INS", func(s *mime.Sample) { s.Delivery = mime.DeliveryMessagingOnly }, "", "not qualified"},
		{"hidden from the patient", func(s *mime.Sample) {
			s.Delivery, s.MSSINS, s.HiddenFromPatient = mime.DeliveryMessagingOnly, "O", true
		}, "", "not visible"},
		{"addressed to another INS", func(s *mime.Sample) { s.MSSINS = "O" }, otherINS + "@" + configs.DefaultPatientDomain, "INS is not"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sample := demo.SamplePrescription(time.Now())
			tc.adjust(&sample)
			rcpts := []string{h.info.Pharmacy.Address}
			if tc.rcpt != "" {
				rcpts = append(rcpts, tc.rcpt)
			}
			msg := h.rxMessage(sample, h.info.Pharmacy.Address, "")
			if _, err := h.prescriber().Send(h.info.Prescriber.Address, rcpts, msg); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the DSN", func() bool { return h.storedCount(h.info.Prescriber.Address) == i+1 })
			reps := h.notifications(t)
			r := reps[len(reps)-1]
			if r.Type != mime.ReportDeliveryStatus || r.Status != mime.StatusFailed || r.Number != sample.Number ||
				!strings.Contains(r.HumanText, tc.reason) || !strings.Contains(r.HumanText, "papier") {
				t.Errorf("DSN: %+v", r)
			}
			if hist := h.history(sample.Number); !strings.Contains(hist, "not.forwarded") || strings.Contains(hist, "forward.queued") {
				t.Errorf("history %q", hist)
			}
		})
	}
	if n := len(op.messages()); n != 0 {
		t.Errorf("%d copies reached the patients' operator", n)
	}
}

// TestPatientAddressedDirectly: a prescriber may write to the patient's
// address; a malformed patient address is refused at RCPT.
func TestPatientAddressedDirectly(t *testing.T) {
	var op *patientOperator
	h := newHarnessWith(t, withPatientOperator(t, &op))
	sample := demo.SamplePrescription(time.Now())
	sample.MSSINS = "O" // delivery "paper" as signed: forwarded because addressed
	patient := sample.PatientINS + "@" + configs.DefaultPatientDomain
	c := h.prescriber()
	if _, err := c.Send(h.info.Prescriber.Address, []string{"123@" + configs.DefaultPatientDomain}, h.rxMessage(sample, patient, "")); err == nil {
		t.Fatal("a patient address without a valid INS was accepted")
	} else if code, enh := smtpCode(err); code != 550 || enh != (smtp.EnhancedCode{5, 1, 1}) {
		t.Fatalf("bad patient address: %v", err)
	}
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{patient}, h.rxMessage(sample, patient, "")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the copy", func() bool { return len(op.messages()) == 1 })
	if got := op.messages()[0]; got.to != patient {
		t.Errorf("delivered to %s", got.to)
	}
}

// TestDispensedNotifiesPrescriber: $Dispensed set over IMAP executes the
// prescription and the prescriber receives a signed execution notice,
// unless the patient objected.
func TestDispensedNotifiesPrescriber(t *testing.T) {
	h := newHarness(t)
	for i, opposed := range []bool{false, true} {
		sample := demo.SamplePrescription(time.Now())
		sample.Opposition = opposed
		if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, h.rxMessage(sample, h.info.Pharmacy.Address, "")); err != nil {
			t.Fatal(err)
		}
		c := h.imap(h.info.Pharmacy, nil)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		uid := imap.UID(i + 1)
		if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Dispensed"}}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		c.Logout()
		if !opposed {
			waitFor(t, "the execution notice", func() bool { return h.storedCount(h.info.Prescriber.Address) == 1 })
			reps := h.notifications(t)
			if r := reps[0]; r.Status != mime.StatusExecuted || r.Number != sample.Number || r.Fields["executed-by"] != h.info.Pharmacy.Address {
				t.Errorf("execution notice: %+v", r)
			}
			continue
		}
		hist := h.history(sample.Number)
		if !strings.Contains(hist, "executed") || !strings.Contains(hist, "notified") {
			t.Errorf("history of an objected execution %q", hist)
		}
		if jobs, _ := h.relay.Store().Jobs(); len(jobs) != 0 || h.storedCount(h.info.Prescriber.Address) != 1 {
			t.Errorf("an objected execution was notified: %+v", jobs)
		}
	}
}

// TestMDNOnlyWhenAsked: an MDN answers Disposition-Notification-To only
// when it names the Return-Path, and never an automatic message.
func TestMDNOnlyWhenAsked(t *testing.T) {
	h := newHarness(t)
	dr := h.info.Prescriber.Address
	for _, tc := range []struct {
		name  string
		extra string
		mdn   bool
	}{
		{"asked", "Disposition-Notification-To: <" + dr + ">\r\n", true},
		{"not asked", "", false},
		{"asked for a third party", "Disposition-Notification-To: <someone@elsewhere.test>\r\n", false},
		{"automatic message", "Disposition-Notification-To: <" + dr + ">\r\nAuto-Submitted: auto-generated\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sample := demo.SamplePrescription(time.Now())
			if _, err := h.prescriber().Send(dr, []string{h.info.Pharmacy.Address}, h.rxMessage(sample, h.info.Pharmacy.Address, tc.extra)); err != nil {
				t.Fatal(err)
			}
			rec, err := h.relay.Store().RecordByNumber(sample.Number)
			if err != nil {
				t.Fatal(err)
			}
			jobs, _ := h.relay.Store().Jobs()
			queued := slices.ContainsFunc(jobs, func(j store.Job) bool { return j.RecordID == rec.ID && j.Kind == store.JobMDN })
			if queued || tc.mdn {
				waitFor(t, "the MDN's delivery", func() bool { return strings.Contains(h.history(sample.Number), "notified") })
			}
			if got := strings.Contains(h.history(sample.Number), "notified"); got != tc.mdn {
				t.Errorf("MDN sent: %v, want %v (history %q)", got, tc.mdn, h.history(sample.Number))
			}
		})
	}
}

// TestPatientAddressCap: a message may name at most five patients'
// addresses; the sixth is refused with 452 4.5.3 (RFC 5321 §4.5.3.1.8).
func TestPatientAddressCap(t *testing.T) {
	h := newHarness(t)
	c, err := smtp.DialStartTLS(h.info.Submission, h.clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", h.info.Prescriber.Address, h.info.Prescriber.Password)); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(h.info.Prescriber.Address, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		err := c.Rcpt(mime.SampleINS(100+i)+"@"+configs.DefaultPatientDomain, nil)
		if i < 5 && err != nil {
			t.Fatalf("patient %d refused: %v", i+1, err)
		}
		if i == 5 {
			if code, enh := smtpCode(err); code != 452 || enh != (smtp.EnhancedCode{4, 5, 3}) {
				t.Fatalf("sixth patient: %v, want 452 4.5.3", err)
			}
		}
	}
}

// TestDeliveryChoice: X-Ordonnance-Delivery is read from the signed entity
// and recorded with the filing (Record.Delivery): "messaging-only" queues
// the patient's copy, "paper" does not. The same field in the outer,
// unsigned header (anyone on the path could add it) is ignored: nothing
// recorded, nothing forwarded, and it never overrides the signed value.
func TestDeliveryChoice(t *testing.T) {
	var op *patientOperator
	h := newHarnessWith(t, withPatientOperator(t, &op))
	const outerMessagingOnly = "X-Ordonnance-Delivery: " + mime.DeliveryMessagingOnly + "\r\n"
	var forwarded []byte
	for _, tc := range []struct {
		name          string
		signed, outer string
		want          string // Record.Delivery
		forward       bool
	}{
		{"signed messaging-only", mime.DeliveryMessagingOnly, "", mime.DeliveryMessagingOnly, true},
		{"signed paper", mime.DeliveryPaper, "", mime.DeliveryPaper, false},
		{"outer header only", "", outerMessagingOnly, "", false},
		{"outer header contradicts the signed value", mime.DeliveryPaper, outerMessagingOnly, mime.DeliveryPaper, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sample := demo.SamplePrescription(time.Now())
			// A qualified identity: only the delivery choice decides.
			sample.Delivery, sample.MSSINS = tc.signed, "O"
			msg := h.rxMessage(sample, h.info.Pharmacy.Address, tc.outer)
			if tc.outer != "" {
				if v, _ := mime.HeaderField(msg, "X-Ordonnance-Delivery"); v != mime.DeliveryMessagingOnly {
					t.Fatalf("outer X-Ordonnance-Delivery %q", v)
				}
			}
			if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
				t.Fatal(err)
			}
			rec, err := h.relay.Store().RecordByNumber(sample.Number)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Delivery != tc.want {
				t.Errorf("Record.Delivery %q, want %q", rec.Delivery, tc.want)
			}
			// The copy's job is filed in the same transaction as the
			// record: its absence now is final.
			if hist := h.history(sample.Number); strings.Contains(hist, "forward.queued") != tc.forward {
				t.Errorf("history %q, forward queued: want %v", hist, tc.forward)
			}
			if tc.forward {
				forwarded = msg
			}
		})
	}
	waitFor(t, "the messaging-only copy", func() bool { return len(op.messages()) >= 1 })
	if got := op.messages(); len(got) != 1 || forwarded == nil || !bytes.HasSuffix(got[0].data, forwarded) {
		t.Errorf("%d copies reached the patients' operator, want only the signed messaging-only one", len(got))
	}
}

package relay_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay"
	"mssrelay/relay/claim"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
	"mssrelay/store"
)

// claimHarness is a relay whose failed claims are held back only 1 ms, so
// that refusal paths run through the delay without slowing the tests.
func claimHarness(t *testing.T, adjust func(*configs.Config)) *harness {
	return newHarnessWith(t, func(c *configs.Config) {
		c.Claim.FailureDelay.Duration = time.Millisecond
		if adjust != nil {
			adjust(c)
		}
	})
}

// sendRx files a prescription for the first pharmacy; extraHeader goes
// into the signed entity's header.
func (h *harness) sendRx(extraHeader string) (msg []byte, number string) {
	h.t.Helper()
	now := time.Now()
	rx := demo.SamplePrescription(now)
	content := append([]byte(extraHeader), rx.Content()...)
	msg, err := demo.Compose(h.signer(), h.info.Prescriber.Address, h.info.Pharmacy.Address, "Ordonnance", content, now)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		h.t.Fatalf("prescription refused: %v", err)
	}
	return msg, rx.Number
}

// claim sends one claim as u over a fresh authenticated connection and
// returns the reply text or the refusal.
func (h *harness) claim(u demo.User, number, ins string) (string, error) {
	h.t.Helper()
	c, err := submit.Dial(submit.Options{Addr: h.info.Submission, TLS: h.clientTLS(), User: u.Address, Password: u.Password})
	if err != nil {
		h.t.Fatalf("dial as %s: %v", u.Address, err)
	}
	defer c.Close()
	addr := h.cfg.Server.ClaimAddress
	return c.Send(u.Address, []string{addr}, claim.Message(u.Address, addr, number, ins, "c"+number+"@"+demo.Domain, time.Now()))
}

func claimReply(err error) (int, smtp.EnhancedCode, string) {
	if se, ok := err.(*smtp.SMTPError); ok {
		return se.Code, se.EnhancedCode, se.Message
	}
	return 0, smtp.EnhancedCode{}, ""
}

func wholeBody(m *imapclient.FetchMessageBuffer) []byte {
	return m.FindBodySection(&imap.FetchItemBodySection{Peek: true})
}

// TestClaimEndToEnd: a prescription sent to one pharmacy is claimed by
// another from its number and the INS; an idling client of the second
// pharmacy hears of it at once; what it fetches is the very message filed,
// signature intact; the record is not copied; a repeated claim files
// nothing.
func TestClaimEndToEnd(t *testing.T) {
	h := claimHarness(t, nil)
	if h.cfg.Server.ClaimAddress != "claim@"+demo.Domain {
		t.Fatalf("claim address %q", h.cfg.Server.ClaimAddress)
	}
	msg, number := h.sendRx("")

	exists := make(chan uint32, 4)
	idler := h.imap(h.info.Pharmacy2, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		},
	}})
	if _, err := idler.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := idler.Idle()
	if err != nil {
		t.Fatal(err)
	}

	reply, err := h.claim(h.info.Pharmacy2, number, demo.PatientINS)
	if err != nil {
		t.Fatalf("claim refused: %v", err)
	}
	if !strings.Contains(reply, "filed in your INBOX (UID 1)") {
		t.Errorf("reply %q", reply)
	}
	select {
	case n := <-exists:
		if n != 1 {
			t.Errorf("EXISTS %d, want 1", n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the idling client got no EXISTS after the claim")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}

	got := fetchAll(t, h.imap(h.info.Pharmacy2, nil), "INBOX")
	orig := fetchAll(t, h.imap(h.info.Pharmacy, nil), "INBOX")
	if len(got) != 1 || len(orig) != 1 {
		t.Fatalf("INBOX holds %d (claimant) and %d (recipient), want 1 and 1", len(got), len(orig))
	}
	raw := wholeBody(got[0])
	if !bytes.Equal(raw, wholeBody(orig[0])) || !bytes.HasSuffix(raw, msg) {
		t.Fatal("the claimed copy is not byte for byte the message filed")
	}
	if got[0].Envelope == nil || got[0].Envelope.Subject != "Ordonnance" {
		t.Errorf("ENVELOPE %+v", got[0].Envelope)
	}
	signed, err := mime.Split(raw)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.relay.Trust().Verify(signing.Request{PKCS7: signed.PKCS7, Content: signed.Content, From: h.info.Prescriber.Address})
	if err != nil {
		t.Fatalf("claimed copy does not verify: %v", err)
	}
	if rx, err := mime.ExtractPrescription(res.Content); err != nil || rx.Number != number {
		t.Fatalf("claimed prescription %+v, %v", rx, err)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		opensslVerify(t, h.info, raw)
	}

	// Repeated: 250 again, the same UID, nothing filed twice.
	reply, err = h.claim(h.info.Pharmacy2, number, demo.PatientINS)
	if err != nil || !strings.Contains(reply, "already in your INBOX (UID 1), not filed twice") {
		t.Fatalf("repeated claim: %q, %v", reply, err)
	}
	if again := fetchAll(t, h.imap(h.info.Pharmacy2, nil), "INBOX"); len(again) != 1 || again[0].UID != got[0].UID {
		t.Errorf("after a repeated claim INBOX holds %d message(s)", len(again))
	}
	// The recipient claiming what it was sent: 250, nothing new.
	if reply, err := h.claim(h.info.Pharmacy, number, demo.PatientINS); err != nil || !strings.Contains(reply, "already in your INBOX") {
		t.Errorf("recipient's claim: %q, %v", reply, err)
	}

	// One legal record; the claim is in the claims index; the claim
	// message itself was not stored anywhere.
	st := h.relay.Store()
	rec, err := st.RecordByNumber(number)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Stats().Filings; n != 1 {
		t.Errorf("%d records filed, want 1", n)
	}
	claims, err := st.Claims(rec.ID)
	if err != nil || len(claims) != 1 || claims[0].Account != h.info.Pharmacy2.Address || claims[0].UID != uint32(got[0].UID) {
		t.Errorf("claims index %+v, %v", claims, err)
	}
	for _, u := range []demo.User{h.info.Pharmacy, h.info.Pharmacy2} {
		if sent := fetchAll(t, h.imap(u, nil), "Sent"); len(sent) != 0 {
			t.Errorf("%s has %d message(s) in Sent", u.Address, len(sent))
		}
	}
}

// TestClaimRefusals drives every refusal over real connections; an
// unknown number and a wrong INS get exactly the same reply.
func TestClaimRefusals(t *testing.T) {
	h := claimHarness(t, nil)
	_, plain := h.sendRx("")
	_, reserved := h.sendRx("X-Ordonnance-Restrict: " + h.info.Pharmacy.Address + "\r\n")
	_, executed := h.sendRx("")

	// The first pharmacy dispenses `executed` and marks it so.
	ic := h.imap(h.info.Pharmacy, nil)
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.UIDSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Dispensed"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}

	otherINS := "2840375123456"
	k, err := mime.ComputeINSKey(otherINS)
	if err != nil {
		t.Fatal(err)
	}
	otherINS += k
	noMatch := "No prescription matches this number and INS"
	cases := []struct {
		name        string
		user        demo.User
		number, ins string
		code        int
		enh         smtp.EnhancedCode
		msg         string
	}{
		{"wrong INS", h.info.Pharmacy2, plain, otherINS, 550, smtp.EnhancedCode{5, 7, 1}, noMatch},
		{"unknown number", h.info.Pharmacy2, "RX-20261127-ffffffffff", demo.PatientINS, 550, smtp.EnhancedCode{5, 7, 1}, noMatch},
		{"INS with a bad key", h.info.Pharmacy2, plain, demo.PatientINS[:13] + "00", 554, smtp.EnhancedCode{5, 6, 0}, "key does not match"},
		{"reserved for another pharmacy", h.info.Pharmacy2, reserved, demo.PatientINS, 550, smtp.EnhancedCode{5, 7, 1}, "reserved by its prescriber"},
		{"already executed", h.info.Pharmacy2, executed, demo.PatientINS, 550, smtp.EnhancedCode{5, 7, 1}, "already been executed"},
		{"prescriber", h.info.Prescriber, plain, demo.PatientINS, 550, smtp.EnhancedCode{5, 7, 1}, "Only executant accounts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.claim(tc.user, tc.number, tc.ins)
			code, enh, msg := claimReply(err)
			if code != tc.code || enh != tc.enh || !strings.Contains(msg, tc.msg) {
				t.Fatalf("got %v; want %d %v …%s…", err, tc.code, tc.enh, tc.msg)
			}
			if tc.msg == noMatch && msg != noMatch {
				t.Fatalf("reply %q differs from the other no-match reply %q", msg, noMatch)
			}
		})
	}

	t.Run("not logged in", func(t *testing.T) {
		c, err := smtp.DialStartTLS(h.addrs[relay.SMTPSubmission], h.clientTLS())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if code, enh, _ := claimReply(c.Mail("184127512345640@patient.mssante.fr", nil)); code != 530 || enh != (smtp.EnhancedCode{5, 7, 0}) {
			t.Fatalf("MAIL without AUTH: %d %v", code, enh)
		}
	})
	t.Run("patient address as sender", func(t *testing.T) {
		o, err := h.info.SubmitOptionsAs(h.info.Pharmacy2)
		if err != nil {
			t.Fatal(err)
		}
		o.Addr = h.info.Submission
		c, err := submit.Dial(o)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		patient := demo.PatientINS + "@patient.mssante.fr"
		_, err = c.Send(patient, []string{h.cfg.Server.ClaimAddress}, claim.Message(patient, h.cfg.Server.ClaimAddress, plain, demo.PatientINS, "p@x", time.Now()))
		if code, enh, _ := claimReply(err); code != 550 || enh != (smtp.EnhancedCode{5, 7, 1}) {
			t.Fatalf("got %v, want 550 5.7.1", err)
		}
	})
	t.Run("executant still cannot submit", func(t *testing.T) {
		msg, _ := h.prescription()
		o, _ := h.info.SubmitOptionsAs(h.info.Pharmacy2)
		o.Addr = h.info.Submission
		c, err := submit.Dial(o)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Send(h.info.Pharmacy2.Address, []string{h.info.Pharmacy.Address}, msg)
		if code, enh, msg := claimReply(err); code != 550 || enh != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(msg, "prescriber accounts") {
			t.Fatalf("got %v, want 550 5.7.1", err)
		}
	})

	// Nothing refused reached the claimant.
	if n := len(fetchAll(t, h.imap(h.info.Pharmacy2, nil), "INBOX")); n != 0 {
		t.Errorf("claimant's INBOX holds %d after refusals only", n)
	}

	// Renewable prescriptions: with an allowance of two, the executed one
	// can be claimed once more.
	h.adjust = func(c *configs.Config) {
		c.Claim.FailureDelay.Duration = time.Millisecond
		c.Claim.ExecutionsAllowed = 2
	}
	h.restart()
	if _, err := h.claim(h.info.Pharmacy2, executed, demo.PatientINS); err != nil {
		t.Errorf("executed once, allowance 2: %v", err)
	}
}

// TestClaimRateLimit: past claim.max_per_hour an account's claims are
// refused (temporarily), even a correct one; other accounts go on.
func TestClaimRateLimit(t *testing.T) {
	h := claimHarness(t, func(c *configs.Config) { c.Claim.MaxPerHour = 3 })
	_, number := h.sendRx("")
	for i := 0; i < 3; i++ {
		if _, err := h.claim(h.info.Pharmacy2, "RX-UNKNOWN-"+string(rune('a'+i)), demo.PatientINS); err == nil {
			t.Fatal("claim of an unknown number accepted")
		}
	}
	_, err := h.claim(h.info.Pharmacy2, number, demo.PatientINS)
	if code, enh, msg := claimReply(err); code != 451 || enh != (smtp.EnhancedCode{4, 7, 1}) || !strings.Contains(msg, "Too many claims") {
		t.Fatalf("fourth claim in the hour: %v, want 451 4.7.1", err)
	}
	if n := len(fetchAll(t, h.imap(h.info.Pharmacy2, nil), "INBOX")); n != 0 {
		t.Errorf("rate-limited claim filed %d message(s)", n)
	}
	if _, err := h.claim(h.info.Pharmacy, number, demo.PatientINS); err != nil {
		t.Errorf("another account is limited too: %v", err)
	}
}

// TestClaimAudit: every claim is in the audit trail, with who, from where,
// the number and the outcome, and never the INS.
func TestClaimAudit(t *testing.T) {
	h := claimHarness(t, func(c *configs.Config) { c.Claim.MaxPerHour = 4 })
	_, number := h.sendRx("")
	if _, err := h.claim(h.info.Pharmacy2, number, demo.PatientINS); err != nil {
		t.Fatal(err)
	}
	h.claim(h.info.Pharmacy2, number, demo.PatientINS)      // repeated
	h.claim(h.info.Pharmacy2, "RX-NOPE-1", demo.PatientINS) // unknown number
	h.claim(h.info.Prescriber, number, demo.PatientINS)     // wrong role (refused at RCPT, not counted)
	h.claim(h.info.Pharmacy2, number, demo.PatientINS[:14]) // malformed
	h.claim(h.info.Pharmacy2, number, demo.PatientINS)      // the fifth in the hour: over the limit
	h.shutdown()

	st, err := store.Open(filepath.Join(h.dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.RecordByNumber(number)
	if err != nil {
		t.Fatal(err)
	}
	var claims []store.AuditRecord
	if _, err := st.AuditVerify(func(r store.AuditRecord) {
		all := strings.Join([]string{r.Kind, r.Actor, r.Remote, r.Subject, r.Outcome, r.Detail}, " ")
		if strings.Contains(all, demo.PatientINS[:13]) {
			t.Errorf("INS in audit record %d: %s", r.Seq, all)
		}
		if r.Kind == store.AuditSMTPClaim {
			claims = append(claims, r)
		}
	}); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	want := []struct{ actor, subject, outcome string }{
		{h.info.Pharmacy2.Address, "record=" + itoa(rec.ID) + " rx=" + number + " mbox=INBOX uid=1", "250"},
		{h.info.Pharmacy2.Address, "record=" + itoa(rec.ID) + " rx=" + number + " mbox=INBOX uid=1", "250"},
		{h.info.Pharmacy2.Address, "rx=RX-NOPE-1", "550 5.7.1 no_match"},
		{h.info.Prescriber.Address, "rx=-", "550 5.7.1 role"},
		{h.info.Pharmacy2.Address, "rx=-", "554 5.6.0 syntax"},
		{h.info.Pharmacy2.Address, "rx=-", "451 4.7.1 rate_limited"},
	}
	if len(claims) != len(want) {
		for _, c := range claims {
			t.Logf("%+v", c.AuditEvent)
		}
		t.Fatalf("%d smtp.claim records, want %d", len(claims), len(want))
	}
	for i, w := range want {
		c := claims[i]
		if c.Actor != w.actor || c.Subject != w.subject || c.Outcome != w.outcome || !strings.HasPrefix(c.Remote, "127.0.0.1:") {
			t.Errorf("claim record %d: %+v\nwant actor %s subject %q outcome %q", i, c.AuditEvent, w.actor, w.subject, w.outcome)
		}
	}
	if claims[1].Detail != "already in INBOX, not filed twice" || claims[2].Detail != "unknown number" {
		t.Errorf("details %q, %q", claims[1].Detail, claims[2].Detail)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

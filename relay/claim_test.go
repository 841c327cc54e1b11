package relay_test

import (
	"bytes"
	"crypto/tls"
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
// the number, the outcome and the operator's detail (which of unknown
// number or wrong INS it was), and never the INS.
func TestClaimAudit(t *testing.T) {
	h := claimHarness(t, func(c *configs.Config) { c.Claim.MaxPerHour = 7 })
	_, number := h.sendRx("")
	_, reserved := h.sendRx("X-Ordonnance-Restrict: " + h.info.Pharmacy.Address + "\r\n")
	_, executed := h.sendRx("")
	ic := h.imap(h.info.Pharmacy, nil)
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.UIDSetNum(3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Dispensed"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	wrongINS := mime.SampleINS(77)
	if wrongINS == demo.PatientINS || !mime.ValidINS(wrongINS) {
		t.Fatalf("sample INS %s", wrongINS)
	}
	if _, err := h.claim(h.info.Pharmacy2, number, demo.PatientINS); err != nil {
		t.Fatal(err)
	}
	h.claim(h.info.Pharmacy2, number, demo.PatientINS)      // repeated
	h.claim(h.info.Pharmacy2, "RX-NOPE-1", demo.PatientINS) // unknown number
	h.claim(h.info.Pharmacy2, number, wrongINS)             // wrong INS
	h.claim(h.info.Prescriber, number, demo.PatientINS)     // wrong role (refused at RCPT, not counted)
	h.claim(h.info.Pharmacy2, number, demo.PatientINS[:14]) // malformed
	h.claim(h.info.Pharmacy2, reserved, demo.PatientINS)    // restricted to the first pharmacy
	h.claim(h.info.Pharmacy2, executed, demo.PatientINS)    // dispensed by the first pharmacy
	h.claim(h.info.Pharmacy2, number, demo.PatientINS)      // the eighth in the hour: over the limit
	h.shutdown()

	st, err := store.Open(filepath.Join(h.dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ids := map[string]string{}
	for _, n := range []string{number, reserved, executed} {
		rec, err := st.RecordByNumber(n)
		if err != nil {
			t.Fatal(err)
		}
		ids[n] = itoa(rec.ID)
	}
	var claims []store.AuditRecord
	if _, err := st.AuditVerify(func(r store.AuditRecord) {
		all := strings.Join([]string{r.Kind, r.Actor, r.Remote, r.Subject, r.Outcome, r.Detail}, " ")
		if strings.Contains(all, demo.PatientINS[:13]) || strings.Contains(all, wrongINS[:13]) {
			t.Errorf("INS in audit record %d: %s", r.Seq, all)
		}
		if r.Kind == store.AuditSMTPClaim {
			claims = append(claims, r)
		}
	}); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	p2, dr := h.info.Pharmacy2.Address, h.info.Prescriber.Address
	filed := "record=" + ids[number] + " rx=" + number + " mbox=INBOX uid=1"
	want := []struct{ actor, subject, outcome, detail string }{
		{p2, filed, "250", "filed in INBOX"},
		{p2, filed, "250", "already in INBOX, not filed twice"},
		{p2, "rx=RX-NOPE-1", "550 5.7.1 no_match", "unknown number"},
		// The same reply as an unknown number; the record is not named.
		{p2, "rx=" + number, "550 5.7.1 no_match", "INS mismatch"},
		{dr, "rx=-", "550 5.7.1 role", "role prescriber"},
		{p2, "rx=-", "554 5.6.0 syntax", ""},
		{p2, "record=" + ids[reserved] + " rx=" + reserved, "550 5.7.1 restricted", "This prescription is reserved by its prescriber for other executants"},
		{p2, "record=" + ids[executed] + " rx=" + executed, "550 5.7.1 executed", "1 execution(s), 1 allowed"},
		{p2, "rx=-", "451 4.7.1 rate_limited", ""},
	}
	if len(claims) != len(want) {
		for _, c := range claims {
			t.Logf("%+v", c.AuditEvent)
		}
		t.Fatalf("%d smtp.claim records, want %d", len(claims), len(want))
	}
	for i, w := range want {
		c := claims[i]
		if c.Actor != w.actor || c.Subject != w.subject || c.Outcome != w.outcome || !strings.HasPrefix(c.Remote, "127.0.0.1:") ||
			(w.detail != "" && c.Detail != w.detail) {
			t.Errorf("claim record %d: %+v\nwant actor %s subject %q outcome %q detail %q", i, c.AuditEvent, w.actor, w.subject, w.outcome, w.detail)
		}
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// operatorCert issues a client certificate for host from the harness's
// development PKI: another operator's server, as the relay listener
// expects it (mutual TLS).
func operatorCert(t *testing.T, h *harness, host string) tls.Certificate {
	t.Helper()
	pki, err := signing.LoadDevPKI(filepath.Join(h.dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.IssueServer(host)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
	for _, ic := range kp.Chain {
		c.Certificate = append(c.Certificate, ic.Raw)
	}
	return c
}

// TestClaimNotFromOperators: a patient cannot claim. A patient has no
// account on the relay; its mail reaches the relay only through its own
// operator, on the operators' listener (port 25, mutual TLS), where the
// claim address is no mailbox: RCPT TO it gets 550 5.7.1 and nothing is
// filed. Another operator's professional, and a report (null
// reverse-path), are refused alike.
func TestClaimNotFromOperators(t *testing.T) {
	wlDir := t.TempDir()
	h := claimHarness(t, func(c *configs.Config) {
		c.SMTP.Relay = []string{freeAddr(t)}
		c.Operators.Whitelist = writeLines(t, wlDir, "operators.txt", "# the patients' operator and another operator",
			configs.DefaultPatientDomain, domainB)
	})
	_, number := h.sendRx("")
	claimAddr := h.cfg.Server.ClaimAddress
	patients := operatorCert(t, h, "mx."+configs.DefaultPatientDomain)
	operatorB := operatorCert(t, h, "mx."+domainB)
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		from string
	}{
		{"a patient, through the patients' operator", patients, demo.PatientINS + "@" + configs.DefaultPatientDomain},
		{"another operator's pharmacy", operatorB, "pharmacie@" + domainB},
		{"a report of another operator", operatorB, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tlsc := h.clientTLS().Clone()
			tlsc.Certificates = []tls.Certificate{tc.cert}
			c, err := smtp.DialStartTLS(h.addrs[relay.SMTPRelay], tlsc)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The operator and the sender pass: the refusal below is the
			// claim address's, not the whitelist's.
			if err := c.Mail(tc.from, nil); err != nil {
				t.Fatalf("MAIL FROM:<%s> refused: %v", tc.from, err)
			}
			if err := c.Rcpt(h.info.Pharmacy.Address, nil); err != nil {
				t.Fatalf("a local account refused to a whitelisted operator: %v", err)
			}
			if err := c.Reset(); err != nil {
				t.Fatal(err)
			}
			if err := c.Mail(tc.from, nil); err != nil {
				t.Fatal(err)
			}
			err = c.Rcpt(claimAddr, nil)
			if code, enh := smtpCode(err); code != 550 || enh != (smtp.EnhancedCode{5, 7, 1}) {
				t.Fatalf("RCPT TO:<%s> from %q: %v, want 550 5.7.1", claimAddr, tc.from, err)
			}
			// DATA regardless: no recipient, nothing to claim or file.
			if w, err := c.Data(); err == nil {
				_, _ = w.Write(claim.Message(tc.from, claimAddr, number, demo.PatientINS, "p@"+configs.DefaultPatientDomain, time.Now()))
				if err := w.Close(); err == nil {
					t.Fatal("a claim over the operators' listener was accepted")
				}
			}
		})
	}
	st := h.relay.Store()
	rec, err := st.RecordByNumber(number)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := st.RecordEntries(rec.ID)
	if err != nil || len(entries) != 1 || entries[0].Account != h.info.Pharmacy.Address {
		t.Errorf("entries of the record %+v, %v; want the pharmacy's only", entries, err)
	}
	if claims, err := st.Claims(rec.ID); err != nil || len(claims) != 0 {
		t.Errorf("claims index %+v, %v", claims, err)
	}
	if n := st.Stats().Filings; n != 1 {
		t.Errorf("%d records, want the one prescription", n)
	}
	if _, err := st.Mailbox(claimAddr, store.Inbox); err == nil {
		t.Errorf("the claim address has a mailbox")
	}
}

// TestClaimAfterMove: the claimant moves its claimed copy to Archive over
// IMAP (MOVE, RFC 6851) and marks it dispensed; claiming again is
// answered 250 with where the copy is, files nothing, and is not refused
// as executed by its own execution.
func TestClaimAfterMove(t *testing.T) {
	h := claimHarness(t, nil)
	_, number := h.sendRx("")
	if _, err := h.claim(h.info.Pharmacy2, number, demo.PatientINS); err != nil {
		t.Fatal(err)
	}
	c := h.imap(h.info.Pharmacy2, nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if ok := c.Caps().Has(imap.CapMove); !ok {
		t.Fatal("the relay does not advertise MOVE")
	}
	if _, err := c.Move(imap.UIDSetNum(1), "Archive").Wait(); err != nil {
		t.Fatal(err)
	}
	archived := fetchAll(t, c, "Archive")
	if len(archived) != 1 {
		t.Fatalf("Archive holds %d after MOVE", len(archived))
	}
	uid := archived[0].UID
	if _, err := c.Select("Archive", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Dispensed"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}

	reply, err := h.claim(h.info.Pharmacy2, number, demo.PatientINS)
	want := "Prescription " + number + " is already in your mailbox Archive (UID " + strconv.FormatUint(uint64(uid), 10) + "), not filed twice"
	if err != nil || !strings.Contains(reply, want) {
		t.Fatalf("claim after MOVE: %q, %v; want 250 …%s", reply, err, want)
	}
	if n := len(fetchAll(t, c, "INBOX")); n != 0 {
		t.Errorf("INBOX holds %d after the repeated claim, want 0", n)
	}
	if n := len(fetchAll(t, c, "Archive")); n != 1 {
		t.Errorf("Archive holds %d, want 1", n)
	}
	st := h.relay.Store()
	rec, err := st.RecordByNumber(number)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := st.RecordEntries(rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, e := range entries {
		if e.Account == h.info.Pharmacy2.Address {
			held++
		}
	}
	if held != 1 {
		t.Errorf("the claimant holds the record %d times: %+v", held, entries)
	}
	if n := strings.Count(h.history(number), "claimed"); n != 1 {
		t.Errorf("history %q: %d claims filed, want 1", h.history(number), n)
	}
}

// TestClaimedCopyExecution: the execution flow applies to claimed copies.
// The claimant sets $Dispensed on its claimed copy over IMAP: the record's
// history has "claimed" then "executed", both by the claimant, and the
// prescriber gets a signed execution notice naming the claimant; unless
// the patient objected, in which case no notice is sent.
func TestClaimedCopyExecution(t *testing.T) {
	h := claimHarness(t, nil)
	claimant := h.info.Pharmacy2
	for _, opposed := range []bool{false, true} {
		sample := demo.SamplePrescription(time.Now())
		sample.Opposition = opposed
		if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, h.rxMessage(sample, h.info.Pharmacy.Address, "")); err != nil {
			t.Fatal(err)
		}
		reply, err := h.claim(claimant, sample.Number, sample.PatientINS)
		if err != nil || !strings.Contains(reply, "filed in your INBOX") {
			t.Fatalf("claim: %q, %v", reply, err)
		}
		c := h.imap(claimant, nil)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		msgs := fetchAll(t, c, "INBOX")
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		uid := msgs[len(msgs)-1].UID
		if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Dispensed"}}, nil).Close(); err != nil {
			t.Fatal(err)
		}
		c.Logout()

		rec, err := h.relay.Store().RecordByNumber(sample.Number)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := h.relay.Store().RecordEvents(rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		claimedAt, executedAt := -1, -1
		for i, e := range evs {
			switch {
			case e.Kind == store.RxClaimed && e.Actor == claimant.Address && claimedAt < 0:
				claimedAt = i
			case e.Kind == store.RxExecuted && e.Actor == claimant.Address && executedAt < 0:
				executedAt = i
			}
		}
		if claimedAt < 0 || executedAt < claimedAt {
			t.Errorf("opposed=%v: history %q: want claimed then executed by %s", opposed, h.history(sample.Number), claimant.Address)
		}
		if !opposed {
			waitFor(t, "the execution notice", func() bool { return h.storedCount(h.info.Prescriber.Address) == 1 })
			reps := h.notifications(t)
			if r := reps[0]; r.Status != mime.StatusExecuted || r.Number != sample.Number || r.Fields["executed-by"] != claimant.Address {
				t.Errorf("execution notice: %+v", r)
			}
			continue
		}
		if hist := h.history(sample.Number); !strings.Contains(hist, "notified") {
			t.Errorf("history of an objected execution %q", hist)
		}
		if jobs, _ := h.relay.Store().Jobs(); len(jobs) != 0 || h.storedCount(h.info.Prescriber.Address) != 1 {
			t.Errorf("an objected execution was notified: %+v", jobs)
		}
	}
}

// TestClaimSMTPLimits: over SMTP, a claim message over 64 KiB gets 552
// 5.3.4 and a claim into a full mailbox 452 4.2.2; neither files
// anything, and once the claimant makes room the same claim goes through.
func TestClaimSMTPLimits(t *testing.T) {
	h := claimHarness(t, func(c *configs.Config) { setQuota(t, c, pharmacy2Addr, 1) })
	claimant := h.info.Pharmacy2
	_, number := h.sendRx("")
	addr := h.cfg.Server.ClaimAddress

	// Too large: the claim line, then padding past the limit.
	c := h.claimConn(claimant)
	big := claim.Message(claimant.Address, addr, number, demo.PatientINS, "big@"+demo.Domain, time.Now())
	big = append(big, bytes.Repeat([]byte(strings.Repeat("x", 76)+"\r\n"), claim.MaxMessageBytes/78+1)...)
	_, err := c.Send(claimant.Address, []string{addr}, big)
	if code, enh, msg := claimReply(err); code != 552 || enh != (smtp.EnhancedCode{5, 3, 4}) || !strings.Contains(msg, "at most 65536 bytes") {
		t.Fatalf("claim of %d bytes: %v, want 552 5.3.4", len(big), err)
	}
	if n := h.storedCount(claimant.Address); n != 0 {
		t.Errorf("a too large claim filed %d message(s)", n)
	}

	// Over quota: the claimant's one message is another prescription.
	own := demo.SamplePrescription(time.Now())
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{claimant.Address}, h.rxMessage(own, claimant.Address, "")); err != nil {
		t.Fatal(err)
	}
	_, err = h.claim(claimant, number, demo.PatientINS)
	if code, enh, msg := claimReply(err); code != 452 || enh != (smtp.EnhancedCode{4, 2, 2}) || !strings.Contains(msg, "mailbox is full") {
		t.Fatalf("claim into a full mailbox: %v, want 452 4.2.2", err)
	}
	if n := h.storedCount(claimant.Address); n != 1 {
		t.Errorf("over quota: INBOX holds %d, want the 1 it had", n)
	}

	// Room made (EXPUNGE): the same claim is filed.
	ic := h.imap(claimant, nil)
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	if reply, err := h.claim(claimant, number, demo.PatientINS); err != nil || !strings.Contains(reply, "filed in your INBOX") {
		t.Errorf("claim after making room: %q, %v", reply, err)
	}
}

// TestClaimDelayHeld: a failed claim's reply is held back
// claim.failure_delay, twice as long after a second failure. Only lower
// bounds are asserted (the reply cannot come before the delay), never an
// upper one.
func TestClaimDelayHeld(t *testing.T) {
	const delay = 300 * time.Millisecond
	h := claimHarness(t, func(c *configs.Config) { c.Claim.FailureDelay.Duration = delay })
	c := h.claimConn(h.info.Pharmacy2)
	addr := h.cfg.Server.ClaimAddress
	for i, want := range []time.Duration{delay, 2 * delay} {
		msg := claim.Message(h.info.Pharmacy2.Address, addr, "RX-GUESS-"+strconv.Itoa(i), demo.PatientINS, "g@"+demo.Domain, time.Now())
		start := time.Now()
		_, err := c.Send(h.info.Pharmacy2.Address, []string{addr}, msg)
		elapsed := time.Since(start)
		if code, _, _ := claimReply(err); code != 550 {
			t.Fatalf("failure %d: %v, want 550", i+1, err)
		}
		if elapsed < want {
			t.Errorf("failure %d answered after %v, before its delay of %v", i+1, elapsed, want)
		}
	}
}

// claimConn is an authenticated submission connection as u, closed with
// the test: several claims may follow on one connection.
func (h *harness) claimConn(u demo.User) *submit.Conn {
	h.t.Helper()
	c, err := submit.Dial(submit.Options{Addr: h.info.Submission, TLS: h.clientTLS(), User: u.Address, Password: u.Password})
	if err != nil {
		h.t.Fatalf("dial as %s: %v", u.Address, err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

package relay_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"mssrelay/mime"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/store"
)

// TestAuditTrail: what happens over SMTP and IMAP lands in the hash-chained
// audit trail — acceptance, resend, refusal with its reason, logins, fetch,
// flag change, expunge — with identifiers and never the patient's INS.
func TestAuditTrail(t *testing.T) {
	h := newHarness(t)
	msg, number := h.prescription()
	c := h.prescriber()
	if _, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		t.Fatal(err)
	}
	// Replay attempts: the same number with other content, and the same
	// sender's Message-ID on another prescription. Each is refused and
	// audited as a replay, under the number it carried.
	conflict := demo.SamplePrescription(time.Now())
	conflict.Number = number
	conflict.Items = []mime.Item{{Kind: "MedicationRequest", Text: "Morphine 10 mg", Dosage: "1 par heure"}}
	other := demo.SamplePrescription(time.Now())
	reusedID := h.rxMessage(other, h.info.Pharmacy.Address, "")
	newID, _ := mime.HeaderField(reusedID, "Message-ID")
	oldID, _ := mime.HeaderField(msg, "Message-ID")
	reusedID = bytes.Replace(reusedID, []byte(newID), []byte(oldID), 1)
	for _, replay := range [][]byte{h.rxMessage(conflict, h.info.Pharmacy.Address, ""), reusedID} {
		_, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, replay)
		if code, enh := smtpCode(err); code != 554 || enh != (smtp.EnhancedCode{5, 7, 1}) {
			t.Fatalf("replay: %v, want 554 5.7.1", err)
		}
	}
	unsigned := append(submitHeader(h.info.Prescriber.Address, h.info.Pharmacy.Address), []byte("Content-Type: text/plain\r\n\r\nHello\r\n")...)
	if _, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, unsigned); err == nil {
		t.Fatal("unsigned message accepted")
	}
	if _, err := c.Send(h.info.Prescriber.Address, []string{"nobody@" + demo.Domain}, msg); err == nil {
		t.Fatal("unknown recipient accepted")
	}
	if _, err := submit.Dial(submit.Options{Addr: h.info.Submission, TLS: h.clientTLS(), User: h.info.Pharmacy.Address, Password: "wrong"}); err == nil {
		t.Fatal("wrong password accepted")
	}

	ic := h.imap(h.info.Pharmacy, &imapclient.Options{})
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{"$Dispensed", imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := ic.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	ic.Logout().Wait()
	h.shutdown() // flushes the audit queue and closes the store

	st, err := store.Open(filepath.Join(h.dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var recs []store.AuditRecord
	n, err := st.AuditVerify(func(r store.AuditRecord) { recs = append(recs, r) })
	if err != nil {
		t.Fatalf("audit chain broken: %v", err)
	}
	if n == 0 {
		t.Fatal("no audit records")
	}
	find := func(kind, contains string) *store.AuditRecord {
		for i := range recs {
			r := &recs[i]
			if r.Kind == kind && strings.Contains(r.Subject+" "+r.Outcome+" "+r.Detail, contains) {
				return r
			}
		}
		return nil
	}
	for _, want := range []struct{ kind, contains string }{
		{store.AuditSMTPAccept, "rx=" + number},
		{store.AuditSMTPDuplicate, "rx=" + number},
		{store.AuditSMTPRefuse, "554 5.7.0 not_signed"},
		{store.AuditSMTPRefuse, "554 5.7.1 replay"},
		{store.AuditSMTPRefuse, "550 5.1.1"},
		{store.AuditAuthOK, "proto=smtp"},
		{store.AuditAuthFail, "535 5.7.8"},
		{store.AuditAuthOK, "proto=imap"},
		{store.AuditIMAPFetch, "mbox=INBOX uids=1"},
		{store.AuditIMAPFlags, "$Dispensed"},
		{store.AuditIMAPExpunge, "uids=1"},
	} {
		r := find(want.kind, want.contains)
		if r == nil {
			t.Errorf("no %s record containing %q", want.kind, want.contains)
			continue
		}
		if r.Remote == "" || r.Actor == "" {
			t.Errorf("%s record lacks who or from where: %+v", want.kind, r)
		}
	}
	if r := find(store.AuditSMTPAccept, "rx="+number); r != nil && r.Actor != h.info.Prescriber.Address {
		t.Errorf("acceptance actor %q", r.Actor)
	}
	// Both replay attempts, each under its number, with exactly the
	// outcome "554 5.7.1 replay" (the reason label of relay/intake).
	for _, rx := range []string{number, other.Number} {
		r := find(store.AuditSMTPRefuse, "rx="+rx+" ")
		if r == nil || r.Outcome != "554 5.7.1 replay" || r.Actor != h.info.Prescriber.Address {
			t.Errorf("replay of %s audited as %+v", rx, r)
		}
	}
	for _, r := range recs {
		all := strings.Join([]string{r.Kind, r.Actor, r.Remote, r.Subject, r.Outcome, r.Detail}, " ")
		if strings.Contains(all, demo.PatientINS) || strings.Contains(all, "Amoxicilline") {
			t.Errorf("clinical data in audit record %d: %s", r.Seq, all)
		}
	}
}

package main

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
	"mssrelay/store"
)

// rxFixture is a demo data directory with one signed prescription filed
// from the demo prescriber to the demo pharmacy, for a patient who chose
// messaging-only delivery, with a copy for the patient in the outbound
// queue. st is open; the test closes it before running a command (bbolt
// allows one process, and one open per process).
type rxFixture struct {
	dir     string
	info    *demo.Info
	number  string
	ins     string
	patient string // the patient's secure address, <INS>@patient domain
	record  uint64
	forward uint64 // the queued copy's job id
	st      *store.Store
}

func newRxFixture(t *testing.T) *rxFixture {
	t.Helper()
	dir := t.TempDir()
	info, _, err := demo.Ensure(dir, demo.DefaultPorts())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := info.Signer()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rx := demo.SamplePrescription(now)
	rx.Delivery = "messaging-only"
	msg, err := demo.Compose(kp, info.Prescriber.Address, info.Pharmacy.Address, "Ordonnance", rx.Content(), now)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := &rxFixture{dir: dir, info: info, number: rx.Number, ins: rx.PatientINS,
		patient: rx.PatientINS + "@" + configs.DefaultPatientDomain, st: st}
	filed, err := st.File(context.Background(), &store.Filing{
		Raw: msg, Received: now, Sender: info.Prescriber.Address, Recipients: []string{info.Pharmacy.Address},
		Number: rx.Number, Digest: sha256.Sum256(msg), Signer: info.Prescriber.Address, IDNPS: "8" + demo.PrescriberRPPS,
		PatientINS: rx.PatientINS, Delivery: rx.Delivery,
		Jobs:   []store.Job{{Kind: store.JobForward, From: info.Prescriber.Address, To: f.patient, Status: "messaging-only"}},
		Events: []store.RxEvent{{Kind: store.RxForwardQueued, Actor: f.patient}},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.record = filed.ID
	jobs, err := st.Jobs()
	if err != nil || len(jobs) != 1 {
		t.Fatalf("jobs after filing: %v %v", jobs, err)
	}
	f.forward = jobs[0].ID
	return f
}

// close closes the fixture's store so that a command can open it.
func (f *rxFixture) close(t *testing.T) {
	t.Helper()
	if err := f.st.Close(); err != nil {
		t.Fatal(err)
	}
}

// reopen opens the store again after a command, to check what it wrote.
func (f *rxFixture) reopen(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(f.dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func wantLines(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// TestRxShowHistory: rx show adds the record's history and a status
// (execution, the patient's copy, notifications, mailbox entries) after
// what it printed before, which stays as it was.
func TestRxShowHistory(t *testing.T) {
	f := newRxFixture(t)
	pharmacy := f.info.Pharmacy.Address
	_, entries, err := f.st.Entries(pharmacy, store.Inbox)
	if err != nil || len(entries) != 1 {
		t.Fatalf("pharmacy INBOX: %v %v", entries, err)
	}
	if _, err := f.st.UpdateFlags(pharmacy, store.Inbox, []uint32{entries[0].UID}, store.FlagsAdd, []string{`\Seen`, store.KeywordDispensed}); err != nil {
		t.Fatal(err)
	}
	f.close(t)

	code, out, errOut := runCmd(t, "", "rx", "show", "-data", f.dir, f.number)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantLines(t, out,
		// What rx show printed before (other tests grep these).
		"prescription "+f.number, "messaging-only", "delivered   INBOX of "+pharmacy,
		// The history, one event a line.
		"history\n", " filed ", " delivered ", " forward.queued ", " executed ",
		// The status.
		"status\n",
		"  executed    yes, by "+pharmacy+", ",
		"  forward     pending to "+f.patient+": job ",
		", 0 attempts, next now",
		// The execution notice the flag change queued for the prescriber.
		"  notify      executed to "+f.info.Prescriber.Address+" pending: job ",
		"  mailbox     "+pharmacy+" INBOX UID 1, flags $Dispensed \\Seen",
	)
	if i, j := strings.Index(out, "delivered   INBOX of"), strings.Index(out, "history\n"); i < 0 || j < i {
		t.Errorf("the history is not after the existing lines:\n%s", out)
	}
	// The patient's address is an identifier the administrator needs; the
	// prescription's content stays out without -content.
	if strings.Contains(out, "Amoxicilline") {
		t.Errorf("clinical content shown without -content:\n%s", out)
	}
}

// TestRxShowForwardOutcomes: the status follows the queue's outcome: a
// copy delivered, or failed (paper copy needed); none asked for a paper
// prescription.
func TestRxShowForwardOutcomes(t *testing.T) {
	cases := []struct {
		name  string
		event store.RxEvent
		want  string
	}{
		{"delivered", store.RxEvent{Kind: store.RxForwarded, Detail: "250 2.0.0 ok"}, "  forward     delivered to "},
		{"failed", store.RxEvent{Kind: store.RxForwardFailed, Detail: "550 5.1.1 no such mailbox"}, "  forward     FAILED for "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newRxFixture(t)
			c.event.Actor = f.patient
			if err := f.st.JobDone(f.forward, store.QueueUpdate{Events: []store.RecordEvent{{RecordID: f.record, RxEvent: c.event}}}); err != nil {
				t.Fatal(err)
			}
			f.close(t)
			code, out, errOut := runCmd(t, "", "rx", "show", "-data", f.dir, f.number)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			wantLines(t, out, c.want+f.patient, "  executed    no\n")
			if strings.Contains(out, "pending to") {
				t.Errorf("a finished job is shown pending:\n%s", out)
			}
		})
	}
}

// TestRxShowContentForms: -content prints the prescription whichever way
// it was signed; for an opaque signature (application/pkcs7-mime) the
// signed entity is read from inside the SignedData.
func TestRxShowContentForms(t *testing.T) {
	for _, opaque := range []bool{false, true} {
		name := map[bool]string{false: "detached", true: "opaque"}[opaque]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			info, _, err := demo.Ensure(dir, demo.DefaultPorts())
			if err != nil {
				t.Fatal(err)
			}
			kp, err := info.Signer()
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			rx := demo.SamplePrescription(now)
			content := rx.Content()
			header := submit.Message(info.Prescriber.Address, info.Pharmacy.Address, "Ordonnance", rx.Number+"@"+demo.Domain, now)
			var msg []byte
			if opaque {
				p7, err := signing.SignOpaque(kp, content)
				if err != nil {
					t.Fatal(err)
				}
				msg = mime.BuildOpaque(header, p7)
			} else {
				sig, err := signing.SignDetached(kp, content)
				if err != nil {
					t.Fatal(err)
				}
				msg = mime.BuildDetached(header, content, sig)
			}
			if s, err := mime.Split(msg); err != nil || (s.Form == mime.Opaque) != opaque {
				t.Fatalf("composed %s message: %+v %v", name, s, err)
			}
			fileDirectly(t, dir, info, rx, msg, content, now)

			code, out, errOut := runCmd(t, "", "rx", "show", "-data", dir, "-content", rx.Number)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			wantLines(t, out,
				"  patient INS "+rx.PatientINS+"\n",
				"  item        MedicationRequest: "+rx.Items[0].Text+" — "+rx.Items[0].Dosage+"\n",
				"  item        MedicationRequest: "+rx.Items[1].Text+" — "+rx.Items[1].Dosage+"\n",
			)
			if strings.Contains(out, "opaque signature") {
				t.Errorf("placeholder instead of the content:\n%s", out)
			}
			code, out, _ = runCmd(t, "", "rx", "show", "-data", dir, rx.Number)
			if code != 0 || strings.Contains(out, rx.PatientINS) || strings.Contains(out, rx.Items[0].Text) {
				t.Errorf("without -content: exit %d\n%s", code, out)
			}
		})
	}
}

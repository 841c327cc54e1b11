package relay_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"mssrelay/mime"
	"mssrelay/relay/claim"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
)

// syncBuffer is a log sink shared by the relay's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newLoggedHarness is newHarness with the relay's slog output captured as
// JSON at level, the way `log.format = "json"` writes it.
func newLoggedHarness(t *testing.T, level slog.Level) (*harness, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	info, _, err := demo.Ensure(dir, loopbackPorts)
	if err != nil {
		t.Fatalf("demo.Ensure: %v", err)
	}
	logs := &syncBuffer{}
	h := &harness{t: t, dir: dir, info: info,
		log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}))}
	h.start()
	t.Cleanup(h.shutdown)
	return h, logs
}

// TestLoggingNoHealthDataAtInfo: at info level the relay's logs carry
// the structured fields an operator needs (account, remote address,
// record id, refusal reason) and never the health data the project
// promises to keep out of them (docs/deployment.md §7: "no prescription
// content or patient identifier at info level"; ARCHITECTURE.md: no INS,
// no names): not the patient's INS, name, medications or dosages — through
// a filing, refusals whose detail is about that very content, an IMAP
// fetch of it, and claims that carry the INS in their subject.
func TestLoggingNoHealthDataAtInfo(t *testing.T) {
	h, logs := newLoggedHarness(t, slog.LevelInfo)
	now := time.Now()
	rx := demo.SamplePrescription(now)
	msg, err := demo.Compose(h.signer(), h.info.Prescriber.Address, h.info.Pharmacy.Address, "Ordonnance", rx.Content(), now)
	if err != nil {
		t.Fatal(err)
	}

	// What must never reach an info log, all of it present in the
	// messages below.
	badINS := rx.PatientINS[:13] + "00" // not the valid key: refused
	key, err := mime.ComputeINSKey("2840375123456")
	if err != nil {
		t.Fatal(err)
	}
	wrongINS := "2840375123456" + key // a claim's wrong guess: someone's INS all the same
	secrets := []string{rx.PatientINS, badINS, wrongINS, rx.Patient}
	for _, it := range rx.Items {
		secrets = append(secrets, it.Text, it.Dosage)
	}

	// A filing.
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		t.Fatalf("filing: %v", err)
	}

	// Refusals whose detail is about the content.
	tampered := bytes.Replace(msg, []byte("DUPONT Marie"), []byte("DUPONT Maria"), 1)
	if bytes.Equal(tampered, msg) {
		t.Fatal("the sample's text part no longer names the patient: fix the tampering")
	}
	badRx := demo.SamplePrescription(now)
	badRx.PatientINS = badINS
	badMsg, err := demo.Compose(h.signer(), h.info.Prescriber.Address, h.info.Pharmacy.Address, "Ordonnance", badRx.Content(), now)
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string][]byte{"tampered": tampered, "invalid INS": badMsg} {
		_, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, m)
		if code, _ := smtpCode(err); code/100 != 5 {
			t.Fatalf("%s: reply %v, want a 5xx refusal", name, err)
		}
	}

	// An IMAP fetch of the prescription: the INS really flows through.
	c := h.imap(h.info.Pharmacy, nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	whole := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, Envelope: true, BodySection: []*imap.FetchItemBodySection{whole}}).Collect()
	if err != nil || len(msgs) != 1 || !bytes.HasSuffix(msgs[0].FindBodySection(whole), msg) {
		t.Fatalf("fetch: %d messages, %v", len(msgs), err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("logout: %v", err)
	}

	// Claims carry the INS in their Subject (relay/claim): a wrong one,
	// refused, then the right one.
	addr := h.cfg.Server.ClaimAddress
	claimant := h.info.Pharmacy2
	opts, err := h.info.SubmitOptionsAs(claimant)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ins  string
		code int
	}{{wrongINS, 550}, {rx.PatientINS, 250}} {
		s, err := submit.Dial(opts)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Send(claimant.Address, []string{addr}, claim.Message(claimant.Address, addr, rx.Number, tc.ins, "c"+tc.ins+"@"+demo.Domain, now))
		s.Close()
		if code, _ := smtpCode(err); (tc.code == 250) != (err == nil) || (err != nil && code != tc.code) {
			t.Fatalf("claim with INS %s…: %v, want %d", tc.ins[:5], err, tc.code)
		}
	}

	h.shutdown() // every session ended and logged

	var records []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("health data %q in an info log line: %s", s, line)
			}
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		records = append(records, rec)
	}

	// The fields an operator reads, on the events of the story above.
	want := []struct {
		msg    string
		fields map[string]string // field → value ("" = present, non-empty)
		count  int
	}{
		{"message filed", map[string]string{"account": h.info.Prescriber.Address, "remote": "", "session": "", "record": ""}, 1},
		{"message refused", map[string]string{"account": h.info.Prescriber.Address, "remote": "", "reason": "", "code": ""}, 2},
		{"imap login ok", map[string]string{"account": h.info.Pharmacy.Address, "remote": "", "proto": "imap"}, 1},
		{"claim refused", map[string]string{"account": claimant.Address, "reason": "no_match", "code": "550"}, 1},
		{"claim filed", map[string]string{"account": claimant.Address, "record": ""}, 1},
	}
	for _, w := range want {
		n := 0
		for _, rec := range records {
			if rec["msg"] != w.msg {
				continue
			}
			n++
			for k, v := range w.fields {
				got, ok := rec[k]
				if s := jsonString(got); !ok || s == "" || s == "0" || (v != "" && s != v) {
					t.Errorf("%q: field %s = %v, want %q (record %v)", w.msg, k, got, v, rec)
				}
			}
		}
		if n != w.count {
			t.Errorf("%d %q records, want %d; logs:\n%s", n, w.msg, w.count, logs.String())
		}
	}
}

func jsonString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

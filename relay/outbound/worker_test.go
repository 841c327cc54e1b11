package outbound

import (
	"bytes"
	"context"
	"crypto/sha256"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mssrelay/mime"
	"mssrelay/signing"
	"mssrelay/store"
)

const (
	prescriber = "dr@local.test"
	patient    = "184127512345640@patient.test"
)

// queueFixture is a store with one filed prescription whose copy for the
// patient is queued, a worker on a fake clock, and peers to deliver to.
type queueFixture struct {
	t      *testing.T
	f      *fixture
	st     *store.Store
	w      *Worker
	record uint64
	raw    []byte // as filed, trace headers included
	org    *signing.KeyPair

	mu     sync.Mutex
	now    time.Time
	routes map[string][]string
}

func newQueueFixture(t *testing.T, s Settings) *queueFixture {
	t.Helper()
	q := &queueFixture{t: t, f: newFixture(t), now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC), routes: map[string][]string{}}
	st, err := store.Open(filepath.Join(t.TempDir(), "q.db"), store.Options{Now: q.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q.st = st
	if err := st.EnsureAccount(prescriber); err != nil {
		t.Fatal(err)
	}
	pki := newPKI(t)
	if q.org, err = pki.IssueOrganisation("postmaster@local.test", "Relay"); err != nil {
		t.Fatal(err)
	}
	signed := signedMessage(t)
	q.raw = append([]byte("Return-Path: <"+prescriber+">\r\nReceived: from client by relay.local.test;\r\n\tSun, 1 Mar 2026 09:00:00 +0000\r\n"), signed...)
	res, err := st.File(context.Background(), &store.Filing{
		Raw: q.raw, Received: q.now, Sender: prescriber, Number: "RX-1", MessageID: "<rx1@local.test>",
		Digest: sha256.Sum256(signed), PatientINS: "184127512345640",
		Jobs: []store.Job{{Kind: store.JobForward, From: prescriber, To: patient, Status: "signed"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	q.record = res.ID
	if s.RetryMin == 0 {
		s.RetryMin, s.RetryMax = time.Minute, time.Hour
	}
	if s.MaxAge == 0 {
		s.MaxAge = 48 * time.Hour
	}
	s.Workers, s.PerDestination = 2, 1
	q.w, err = NewWorker(Options{
		Store: st, Dialer: q.f.dialer(), Settings: s,
		Routes: func(d string) ([]string, bool) {
			q.mu.Lock()
			defer q.mu.Unlock()
			h, ok := q.routes[d]
			return h, ok
		},
		Local:     func(a string) bool { return a == prescriber },
		IsPatient: func(a string) bool { return strings.HasSuffix(a, "@patient.test") },
		Hostname:  "relay.local.test",
		From:      "postmaster@local.test",
		Sign: func(header, entity []byte) ([]byte, error) {
			sig, err := signing.SignNotification(q.org, entity)
			if err != nil {
				return nil, err
			}
			return mime.BuildDetached(header, entity, sig), nil
		},
		Now:  q.clock,
		Rand: func() float64 { return 0.5 },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return q
}

func (q *queueFixture) clock() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.now
}

func (q *queueFixture) advance(d time.Duration) {
	q.mu.Lock()
	q.now = q.now.Add(d)
	q.mu.Unlock()
	q.w.Kick()
}

func (q *queueFixture) route(hosts ...string) {
	q.mu.Lock()
	q.routes["patient.test"] = hosts
	q.mu.Unlock()
	q.w.Kick()
}

// waitFor polls cond; the bound only turns a hang into a failure.
func (q *queueFixture) waitFor(what string, cond func() bool) {
	q.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			q.t.Fatalf("timed out waiting for %s; queue: %+v", what, q.jobs())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (q *queueFixture) jobs() []store.Job {
	j, err := q.st.Jobs()
	if err != nil {
		q.t.Fatal(err)
	}
	return j
}

func (q *queueFixture) forwardJob() *store.Job {
	for _, j := range q.jobs() {
		if j.Kind == store.JobForward {
			return &j
		}
	}
	return nil
}

func (q *queueFixture) history() string {
	evs, err := q.st.RecordEvents(q.record)
	if err != nil {
		q.t.Fatal(err)
	}
	var b []string
	for _, e := range evs {
		b = append(b, e.Kind)
	}
	return strings.Join(b, " ")
}

// reports returns the notifications filed in the prescriber's INBOX,
// each checked to verify as signed by the relay and parsed.
func (q *queueFixture) reports() []*mime.Report {
	q.t.Helper()
	_, ents, err := q.st.Entries(prescriber, store.Inbox)
	if err != nil {
		q.t.Fatal(err)
	}
	var out []*mime.Report
	for _, e := range ents {
		raw, err := q.st.Bytes(e.RecordID)
		if err != nil {
			q.t.Fatal(err)
		}
		sp, err := mime.Split(raw)
		if err != nil {
			q.t.Fatalf("notification does not split as S/MIME: %v", err)
		}
		if !bytes.Contains(sp.Header, []byte("Auto-Submitted: auto-replied")) {
			q.t.Errorf("notification header lacks Auto-Submitted:\n%s", sp.Header)
		}
		r, err := mime.ParseReport(sp.Content)
		if err != nil {
			q.t.Fatalf("ParseReport: %v\n%s", err, sp.Content)
		}
		out = append(out, r)
	}
	return out
}

// TestWorkerForwards: the copy arrives over mutual TLS with the signed
// bytes unchanged, our Received on top and the Return-Path gone.
func TestWorkerForwards(t *testing.T) {
	q := newQueueFixture(t, Settings{})
	peer := startSMTP(t, smtpOpts{tls: q.f.serverTLS()})
	q.route(peer.addr)
	q.waitFor("the forward to finish", func() bool { return len(q.jobs()) == 0 })
	_, mails, rcpts, data := peer.rec.snapshot()
	if len(data) != 1 || len(rcpts) != 1 || rcpts[0] != patient || mails[0].from != prescriber || !mails[0].tls || mails[0].peerCN == "" {
		t.Fatalf("peer saw mails %+v rcpts %v, %d messages", mails, rcpts, len(data))
	}
	got := data[0]
	if !bytes.HasPrefix(got, []byte("Received: by relay.local.test (mssrelay) id J1\r\n\tfor <"+patient+">;")) {
		t.Errorf("forwarded copy starts %q", got[:min(len(got), 120)])
	}
	if bytes.Contains(got, []byte("Return-Path:")) {
		t.Error("the Return-Path of final delivery was relayed")
	}
	if !bytes.HasSuffix(got, q.raw[bytes.Index(q.raw, []byte("Received:")):]) {
		t.Error("the filed message is not carried unchanged")
	}
	// (relay/forward_test.go verifies the signature of a real copy.)
	if h := q.history(); h != "filed forwarded" {
		t.Errorf("history %q", h)
	}
}

// TestWorkerRetriesThenDelivers: a 4xx is retried at the backoff time,
// not before; the attempt is on disk before it is made.
func TestWorkerRetriesThenDelivers(t *testing.T) {
	q := newQueueFixture(t, Settings{})
	busy := startSMTP(t, smtpOpts{tls: q.f.serverTLS(), rcptErr: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "busy"}})
	q.route(busy.addr)
	q.waitFor("a failed attempt", func() bool { j := q.forwardJob(); return j != nil && j.LastError != "" })
	j := q.forwardJob()
	if j.Attempts != 1 || !strings.Contains(j.LastError, "451 4.3.0") || !j.NextAttempt.After(q.clock()) {
		t.Fatalf("after a 451: %+v", j)
	}
	// Backoff(1, 1m, 1h, 0.5) = 45s: nothing happens before.
	good := startSMTP(t, smtpOpts{tls: q.f.serverTLS()})
	q.route(good.addr)
	q.advance(30 * time.Second)
	if j := q.forwardJob(); j == nil || j.Attempts != 1 {
		t.Fatalf("retried before its time: %+v", j)
	}
	q.advance(30 * time.Second)
	q.waitFor("the retry to deliver", func() bool { return len(q.jobs()) == 0 })
	if _, _, _, data := good.rec.snapshot(); len(data) != 1 {
		t.Fatalf("good peer got %d messages", len(data))
	}
	if h := q.history(); h != "filed forwarded" {
		t.Errorf("history %q", h)
	}
	if r := q.reports(); len(r) != 0 {
		t.Errorf("a DSN for a delivered copy: %+v", r)
	}
}

// TestWorkerBounces: a 5xx fails the copy at once and the prescriber gets
// a signed DSN saying a paper copy is needed; a missing route and a peer
// down are retried.
func TestWorkerBounces(t *testing.T) {
	q := newQueueFixture(t, Settings{})
	q.advance(0) // no route yet: retried, not failed
	q.waitFor("a no-route attempt", func() bool { j := q.forwardJob(); return j != nil && j.LastError != "" })
	if j := q.forwardJob(); !strings.Contains(j.LastError, "no route") {
		t.Fatalf("no route: %+v", j)
	}
	peer := startSMTP(t, smtpOpts{tls: q.f.serverTLS(), rcptErr: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such patient"}})
	q.route(peer.addr)
	q.advance(time.Hour)
	q.waitFor("the DSN to be filed", func() bool { return len(q.jobs()) == 0 && len(q.reports()) == 1 })
	r := q.reports()[0]
	if r.Type != mime.ReportDeliveryStatus || r.Status != mime.StatusFailed || r.Number != "RX-1" ||
		len(r.Recipients) != 1 || r.Recipients[0]["status"] != "5.1.1" || !strings.Contains(r.Recipients[0]["diagnostic-code"], "550") {
		t.Errorf("DSN: %+v", r)
	}
	if !strings.Contains(r.HumanText, "papier") || !strings.Contains(r.HumanText, "paper") {
		t.Errorf("DSN text does not say a paper copy is needed:\n%s", r.HumanText)
	}
	if h := q.history(); h != "filed forward.failed notified" {
		t.Errorf("history %q", h)
	}
}

// TestWorkerDelayThenMaxAge: past the delay warning the prescriber gets a
// "delayed" DSN, once; past the maximum age the copy fails with a final
// DSN.
func TestWorkerDelayThenMaxAge(t *testing.T) {
	q := newQueueFixture(t, Settings{DelayWarning: 4 * time.Hour, MaxAge: 48 * time.Hour})
	down := closedAddr(t)
	q.route(down)
	q.waitFor("a first attempt", func() bool { j := q.forwardJob(); return j != nil && j.Attempts == 1 })
	q.advance(5 * time.Hour)
	q.waitFor("the delayed DSN", func() bool { return len(q.reports()) == 1 })
	if j := q.forwardJob(); j == nil || !j.Delayed || j.Attempts != 2 {
		t.Fatalf("after the delay warning: %+v", j)
	}
	r := q.reports()[0]
	if r.Status != mime.StatusDelayed || r.Recipients[0]["action"] != "delayed" || !strings.HasPrefix(r.Recipients[0]["status"], "4.") {
		t.Errorf("delayed DSN: %+v", r)
	}
	q.advance(2 * time.Hour) // another failure: no second delayed DSN
	q.waitFor("a third attempt", func() bool { j := q.forwardJob(); return j != nil && j.Attempts == 3 })
	q.advance(48 * time.Hour)
	q.waitFor("the final DSN", func() bool { return q.forwardJob() == nil && len(q.reports()) == 2 })
	final := q.reports()[1]
	if final.Status != mime.StatusFailed || final.Recipients[0]["status"] != "5.4.7" {
		t.Errorf("final DSN: %+v", final)
	}
	if h := q.history(); h != "filed forward.delayed notified forward.failed notified" {
		t.Errorf("history %q", h)
	}
}

// TestWorkerNotifications: MDN and execution notices are rendered once,
// signed, and filed in the prescriber's mailbox exactly once.
func TestWorkerNotifications(t *testing.T) {
	q := newQueueFixture(t, Settings{})
	if _, err := q.st.Enqueue(context.Background(), store.QueueUpdate{Jobs: []store.Job{
		{Kind: store.JobMDN, RecordID: q.record, To: prescriber, Actor: "pharma@local.test"},
		{Kind: store.JobExecuted, RecordID: q.record, To: prescriber, Actor: "pharma@local.test"},
	}}); err != nil {
		t.Fatal(err)
	}
	q.waitFor("two notifications", func() bool { return len(q.reports()) == 2 })
	byStatus := map[string]*mime.Report{}
	for _, r := range q.reports() {
		byStatus[r.Status] = r
	}
	if r := byStatus[mime.StatusProcessed]; r == nil || r.Type != mime.ReportDisposition || !strings.Contains(r.Fields["disposition"], "processed") {
		t.Errorf("MDN: %+v", r)
	}
	if r := byStatus[mime.StatusExecuted]; r == nil || r.Fields["executed-by"] != "pharma@local.test" || r.Number != "RX-1" {
		t.Errorf("execution notice: %+v", r)
	}
}

// TestWorkerResumesAfterRestart: a worker stopped in the middle leaves the
// job queued with its recorded attempt; a new worker on the same store
// delivers it.
func TestWorkerResumesAfterRestart(t *testing.T) {
	q := newQueueFixture(t, Settings{})
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	slow := startSMTP(t, smtpOpts{tls: q.f.serverTLS(), onData: func() { <-stall }})
	q.route(slow.addr)
	q.waitFor("an attempt in flight", func() bool { j := q.forwardJob(); return j != nil && j.Attempts == 1 })
	// A second worker on the same store stands for the restarted daemon.
	good := startSMTP(t, smtpOpts{tls: q.f.serverTLS()})
	q.route(good.addr)
	w2, err := NewWorker(q.w.o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w2.Run(ctx)
	q.advance(2 * time.Minute)
	w2.Kick()
	q.waitFor("the restarted worker to deliver", func() bool { _, _, _, d := good.rec.snapshot(); return len(d) == 1 })
}

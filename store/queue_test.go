package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func kinds(evs []RxEvent) string {
	var b []string
	for _, e := range evs {
		b = append(b, e.Kind+":"+e.Actor)
	}
	return strings.Join(b, " ")
}

// TestFileQueuesJobsAndHistory: jobs and history commit with the filing; a
// resend queues nothing new; the queue survives a reopen.
func TestFileQueuesJobsAndHistory(t *testing.T) {
	s, path := openTemp(t)
	f := testFiling(1, "pharma@example.org")
	f.Jobs = []Job{{Kind: JobForward, From: "dr@example.org", To: "180017512345610@patient.example", Status: "signed"}}
	f.Events = []RxEvent{{Kind: RxForwardQueued, Actor: "180017512345610@patient.example"}}
	res := mustFile(t, s, f)
	select {
	case <-s.QueueChanged():
	default:
		t.Error("QueueChanged not signalled after a filing with jobs")
	}
	if _, err := s.File(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, path)
	jobs, err := s.Jobs()
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].RecordID != res.ID || jobs[0].Kind != JobForward || jobs[0].Created.IsZero() || !jobs[0].NextAttempt.Equal(jobs[0].Created) {
		t.Fatalf("jobs after filing twice and reopening: %+v", jobs)
	}
	evs, err := s.RecordEvents(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := "filed:dr@example.org delivered:pharma@example.org forward.queued:180017512345610@patient.example"
	if got := kinds(evs); got != want {
		t.Errorf("history %q, want %q", got, want)
	}
}

// TestQueueLifecycle: due order, the attempt written before it is made, a
// failure rescheduled, a local delivery exactly once, retry and done.
func TestQueueLifecycle(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	rec := mustFile(t, s, testFiling(1))
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	ids, err := s.Enqueue(ctx, QueueUpdate{Jobs: []Job{
		{Kind: JobDSN, RecordID: rec.ID, To: "dr@example.org", NextAttempt: t0.Add(time.Minute), Raw: []byte("Subject: late\r\n\r\nx\r\n"), Code: "4.4.7"},
		{Kind: JobForward, RecordID: rec.ID, From: "dr@example.org", To: "p@patient.example", NextAttempt: t0},
	}})
	if err != nil || len(ids) != 2 {
		t.Fatalf("Enqueue: %v %v", ids, err)
	}
	due, next, err := s.DueJobs(t0, 10)
	if err != nil || len(due) != 1 || due[0].ID != ids[1] || !next.Equal(t0.Add(time.Minute)) {
		t.Fatalf("DueJobs(t0) = %+v, next %v, %v", due, next, err)
	}
	if j, err := s.Job(ids[0]); err != nil || j.Code != "4.4.7" || j.RawSize == 0 {
		t.Fatalf("Job: %+v %v", j, err)
	}
	due, _, _ = s.DueJobs(t0.Add(time.Hour), 10)
	if len(due) != 2 || due[0].ID != ids[1] || due[1].ID != ids[0] || due[1].Raw != nil || due[1].RawSize == 0 {
		t.Fatalf("DueJobs(later) = %+v", due)
	}

	// The attempt is on disk before it is made: a crash now finds the
	// job due only at the retry time.
	retry := t0.Add(10 * time.Minute)
	j, err := s.StartAttempt(ids[1], retry, []byte("rendered"))
	if err != nil || j.Attempts != 1 || string(j.Raw) != "rendered" {
		t.Fatalf("StartAttempt: %+v %v", j, err)
	}
	s = reopen(t, s, path)
	if due, _, _ := s.DueJobs(t0.Add(5*time.Minute), 10); len(due) != 1 || due[0].ID != ids[0] {
		t.Fatalf("after a crash mid-attempt, due = %+v; the forward must wait for its retry time", due)
	}
	if err := s.JobFailed(ids[1], retry.Add(time.Hour), "451 4.3.0 try\nlater", true, QueueUpdate{
		Events: []RecordEvent{{RecordID: rec.ID, RxEvent: RxEvent{Kind: RxForwardDelayed, Actor: "p@patient.example"}}},
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Job(ids[1])
	if err != nil || !got.Delayed || got.LastError != "451 4.3.0 try later" || !got.NextAttempt.Equal(retry.Add(time.Hour)) || string(got.Raw) != "rendered" {
		t.Fatalf("after JobFailed: %+v %v", got, err)
	}
	if j, err := s.RetryJob(ids[1]); err != nil || j.NextAttempt.After(time.Now()) {
		t.Fatalf("RetryJob: %+v %v", j, err)
	}

	d, err := s.DeliverJobLocal(ids[0], "dr@example.org", nil, QueueUpdate{
		Events: []RecordEvent{{RecordID: rec.ID, RxEvent: RxEvent{Kind: RxNotified, Actor: "dr@example.org", Detail: "dsn"}}},
		Audit:  []AuditEvent{{Kind: AuditNotify, Subject: "job=1"}},
	})
	if err != nil || d.Mailbox != Inbox {
		t.Fatalf("DeliverJobLocal: %+v %v", d, err)
	}
	if _, err := s.DeliverJobLocal(ids[0], "dr@example.org", nil, QueueUpdate{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second DeliverJobLocal: %v, want ErrNotFound", err)
	}
	_, ents, err := s.Entries("dr@example.org", Inbox)
	if err != nil || len(ents) != 1 {
		t.Fatalf("prescriber INBOX: %v %v", ents, err)
	}
	if j, _ := s.Job(ids[0]); j != nil {
		t.Error("delivered job still queued")
	}
	if raw, _ := s.Bytes(ents[0].RecordID); string(raw) != "Subject: late\r\n\r\nx\r\n" {
		t.Errorf("delivered bytes %q", raw)
	}
	if err := s.JobDone(ids[1], QueueUpdate{}); err != nil {
		t.Fatal(err)
	}
	if err := s.JobDone(ids[1], QueueUpdate{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second JobDone: %v", err)
	}
	if jobs, _ := s.Jobs(); len(jobs) != 0 {
		t.Fatalf("queue not empty: %+v", jobs)
	}
	if due, next, _ := s.DueJobs(t0.Add(100*time.Hour), 10); len(due) != 0 || !next.IsZero() {
		t.Fatalf("due index not emptied: %+v %v", due, next)
	}
	if n, err := s.AuditVerify(nil); err != nil || n == 0 {
		t.Fatalf("audit: %d %v", n, err)
	}
}

// TestQueueRefusals: bad jobs are refused before any write.
func TestQueueRefusals(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		job  Job
		want error
	}{
		{"unknown kind", Job{Kind: "spam", To: "a@example.org"}, ErrInvalid},
		{"no recipient", Job{Kind: JobDSN}, ErrInvalid},
		{"control characters", Job{Kind: JobDSN, To: "a\r\n@example.org"}, ErrInvalid},
		{"bad sender", Job{Kind: JobDSN, To: "a@example.org", From: "x\x00"}, ErrInvalid},
		{"huge message", Job{Kind: JobDSN, To: "a@example.org", Raw: make([]byte, MaxJobRawBytes+1)}, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Enqueue(ctx, QueueUpdate{Jobs: []Job{tc.job}}); !errors.Is(err, tc.want) {
				t.Fatalf("Enqueue: %v, want %v", err, tc.want)
			}
			f := testFiling(7)
			f.Jobs = []Job{tc.job}
			if _, err := s.File(ctx, f); !errors.Is(err, tc.want) {
				t.Fatalf("File: %v, want %v", err, tc.want)
			}
		})
	}
	if jobs, _ := s.Jobs(); len(jobs) != 0 {
		t.Fatalf("refused jobs were written: %+v", jobs)
	}
	if _, err := s.StartAttempt(99, time.Now(), nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("StartAttempt on a missing job: %v", err)
	}
	if _, err := s.RetryJob(99); !errors.Is(err, ErrNotFound) {
		t.Errorf("RetryJob on a missing job: %v", err)
	}
	ids, _ := s.Enqueue(ctx, QueueUpdate{Jobs: []Job{{Kind: JobMDN, To: "a@example.org"}}})
	if _, err := s.DeliverJobLocal(ids[0], "a@example.org", nil, QueueUpdate{}); !errors.Is(err, ErrJobNoMessage) {
		t.Errorf("DeliverJobLocal without a message: %v", err)
	}
}

// TestDispensedExecutes: $Dispensed on a prescription records the
// execution and queues one notice to the prescriber; another executant's
// $Dispensed is history only; an objection suppresses the notice.
func TestDispensedExecutes(t *testing.T) {
	s, _ := openTemp(t)
	rec := mustFile(t, s, testFiling(1, "pharma@example.org", "nurse@example.org"))
	if _, err := s.UpdateFlags("pharma@example.org", Inbox, []uint32{1}, FlagsAdd, []string{"$dispensed"}); err != nil {
		t.Fatal(err)
	}
	ex, err := s.RecordExecution(rec.ID)
	if err != nil || ex == nil || ex.Account != "pharma@example.org" {
		t.Fatalf("execution: %+v %v", ex, err)
	}
	jobs, _ := s.Jobs()
	if len(jobs) != 1 || jobs[0].Kind != JobExecuted || jobs[0].To != "dr@example.org" || jobs[0].Actor != "pharma@example.org" || jobs[0].RecordID != rec.ID {
		t.Fatalf("jobs: %+v", jobs)
	}
	// Setting it again changes nothing; another executant adds history.
	if _, err := s.UpdateFlags("pharma@example.org", Inbox, []uint32{1}, FlagsAdd, []string{"$Dispensed"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateFlags("nurse@example.org", Inbox, []uint32{1}, FlagsAdd, []string{"$Dispensed"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateFlags("nurse@example.org", Inbox, []uint32{1}, FlagsRemove, []string{"$Dispensed"}); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := s.Jobs(); len(jobs) != 1 {
		t.Fatalf("a second execution queued another notice: %+v", jobs)
	}
	evs, _ := s.RecordEvents(rec.ID)
	want := "filed:dr@example.org delivered:pharma@example.org delivered:nurse@example.org executed:pharma@example.org executed:nurse@example.org executed:nurse@example.org"
	if got := kinds(evs); got != want {
		t.Errorf("history %q, want %q", got, want)
	}
	if ex, _ := s.RecordExecution(rec.ID); ex.Account != "pharma@example.org" {
		t.Errorf("first execution changed: %+v", ex)
	}

	f := testFiling(2, "pharma@example.org")
	f.Opposition = true
	opp := mustFile(t, s, f)
	if r, _ := s.Record(opp.ID); !r.Opposition {
		t.Fatal("opposition not stored")
	}
	if _, err := s.UpdateFlags("pharma@example.org", Inbox, []uint32{2}, FlagsAdd, []string{"$Dispensed"}); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := s.Jobs(); len(jobs) != 1 {
		t.Fatalf("an objected execution was notified: %+v", jobs)
	}
	if ex, _ := s.RecordExecution(opp.ID); ex == nil {
		t.Error("objected execution not recorded")
	}
	// An appended message is no prescription: no execution.
	d, err := s.Append("pharma@example.org", Inbox, []byte("Subject: x\r\n\r\ny\r\n"), nil, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateFlags("pharma@example.org", Inbox, []uint32{d.UID}, FlagsAdd, []string{"$Dispensed"}); err != nil {
		t.Fatal(err)
	}
	_, ents, _ := s.Entries("pharma@example.org", Inbox)
	if ex, _ := s.RecordExecution(ents[len(ents)-1].RecordID); ex != nil {
		t.Errorf("appended message executed: %+v", ex)
	}
}

// TestMarkFetched: the first fetch per account is history, later ones
// write nothing.
func TestMarkFetched(t *testing.T) {
	s, _ := openTemp(t)
	rec := mustFile(t, s, testFiling(1, "pharma@example.org"))
	for range 3 {
		if err := s.MarkFetched("pharma@example.org", []uint64{rec.ID, 999}); err != nil {
			t.Fatal(err)
		}
	}
	before := s.Stats().Commits
	if err := s.MarkFetched("pharma@example.org", []uint64{rec.ID}); err != nil {
		t.Fatal(err)
	}
	if s.Stats().Commits != before {
		t.Error("a repeated fetch committed a transaction")
	}
	if err := s.MarkFetched("other@example.org", []uint64{rec.ID}); err != nil {
		t.Fatal(err)
	}
	evs, _ := s.RecordEvents(rec.ID)
	want := "filed:dr@example.org delivered:pharma@example.org fetched:pharma@example.org fetched:other@example.org"
	if got := kinds(evs); got != want {
		t.Errorf("history %q, want %q", got, want)
	}
}

// TestPurgeRemovesHistory: retention takes the history with the record.
func TestPurgeRemovesHistory(t *testing.T) {
	s, _ := openTemp(t)
	rec := mustFile(t, s, testFiling(1, "pharma@example.org"))
	if _, err := s.UpdateFlags("pharma@example.org", Inbox, []uint32{1}, FlagsAdd, []string{"$Dispensed"}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkFetched("pharma@example.org", []uint64{rec.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Purge(context.Background(), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), 100); err != nil {
		t.Fatal(err)
	}
	if evs, err := s.RecordEvents(rec.ID); err != nil || len(evs) != 0 {
		t.Errorf("history after purge: %v %v", evs, err)
	}
	if ex, err := s.RecordExecution(rec.ID); err != nil || ex != nil {
		t.Errorf("execution after purge: %v %v", ex, err)
	}
}

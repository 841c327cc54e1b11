package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"mssrelay/store"
)

// queueCmd runs `mssrelay queue ARGS -data DIR` with the clock at now.
func queueCmd(t *testing.T, dir string, now time.Time, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	args = append(append([]string{}, args...), "-data", dir)
	err := cmdQueue(context.Background(), args, &out, func() time.Time { return now })
	return out.String(), err
}

// auditOf returns the audit records of kind.
func auditOf(t *testing.T, st *store.Store, kind string) []store.AuditRecord {
	t.Helper()
	var out []store.AuditRecord
	if err := st.AuditSince(time.Time{}, func(r store.AuditRecord) error {
		if r.Kind == kind {
			out = append(out, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// failOnce records one failed attempt of job id: next attempt in an hour.
func failOnce(t *testing.T, st *store.Store, id uint64, raw []byte, reason string) *store.Job {
	t.Helper()
	j, err := st.StartAttempt(id, time.Now().Add(time.Hour), raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.JobFailed(id, j.NextAttempt, reason, false, store.QueueUpdate{}); err != nil {
		t.Fatal(err)
	}
	return j
}

func TestQueueList(t *testing.T) {
	f := newRxFixture(t)
	longErr := "421 4.7.0 " + strings.Repeat("try again later ", 10)
	failOnce(t, f.st, f.forward, nil, longErr)
	ids, err := f.st.Enqueue(context.Background(), store.QueueUpdate{Jobs: []store.Job{{
		Kind: store.JobMDN, RecordID: f.record, To: f.info.Prescriber.Address, Actor: f.info.Pharmacy.Address,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := f.st.Job(f.forward)
	if err != nil {
		t.Fatal(err)
	}
	f.close(t)

	now := fwd.Created.Add(2 * time.Hour)
	out, err := queueCmd(t, f.dir, now, "list")
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out,
		"ID  KIND", "ATTEMPTS  NEXT", "LAST ERROR",
		fmt.Sprintf("%d   forward  %s", f.forward, f.patient),
		"2h00m", "  1         ", // one attempt so far
		"421 4.7.0 try again later", "…", // cut
		fmt.Sprintf("%d   mdn      %s", ids[0], f.info.Prescriber.Address),
		"  0         now  ", // the MDN is due (its NextAttempt is before now)
		fmt.Sprintf("2 jobs (1 forward, 1 mdn), oldest 2h00m (job %d)", f.forward),
	)
	if strings.Contains(out, longErr) {
		t.Errorf("the last error is not cut:\n%s", out)
	}
	// The forward's retry is an hour after its attempt; the attempt was
	// made at about its creation, so from 2h later it is due.
	if out, _ := queueCmd(t, f.dir, fwd.Created, "list"); !strings.Contains(out, "in 59m") && !strings.Contains(out, "in 1h00m") {
		t.Errorf("next attempt not shown relative to now:\n%s", out)
	}
}

func TestQueueListEmpty(t *testing.T) {
	f := newRxFixture(t)
	if err := f.st.JobDone(f.forward, store.QueueUpdate{}); err != nil {
		t.Fatal(err)
	}
	f.close(t)
	out, err := queueCmd(t, f.dir, time.Now(), "list")
	if err != nil || out != "queue is empty\n" {
		t.Errorf("empty queue: %q %v", out, err)
	}
}

func TestQueueShow(t *testing.T) {
	f := newRxFixture(t)
	f.close(t)
	id := fmt.Sprint(f.forward)
	out, err := queueCmd(t, f.dir, time.Now(), "show", id)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out,
		"job "+id+"\n",
		"  kind          forward\n",
		fmt.Sprintf("  record        %d (prescription %s)\n", f.record, f.number),
		"  from          "+f.info.Prescriber.Address+"\n",
		"  to            "+f.patient+"\n",
		"  attempts      0\n",
		"  last attempt  never\n",
		"  status        messaging-only\n",
		"  message       not rendered yet",
	)
	// No rendered message yet: -raw says so and fails.
	if _, err := queueCmd(t, f.dir, time.Now(), "show", "-raw", id); err == nil || !strings.Contains(err.Error(), "no rendered message") {
		t.Errorf("-raw without a message: %v", err)
	}

	// After an attempt rendered it, -raw prints exactly its bytes (and
	// nothing else, so that it can be redirected to a file).
	st := f.reopen(t)
	raw := []byte("From: a@example.org\r\nTo: b@example.org\r\n\r\nbody\r\n")
	failOnce(t, st, f.forward, raw, "connection refused")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	out, err = queueCmd(t, f.dir, time.Now(), "show", id, "-raw")
	if err != nil || out != string(raw) {
		t.Errorf("-raw: %q %v, want the message", out, err)
	}
	out, err = queueCmd(t, f.dir, time.Now(), "show", id)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, "  attempts      1\n", "  last error    connection refused\n",
		fmt.Sprintf("  message       %d bytes rendered", len(raw)))
	if strings.Contains(out, "body") {
		t.Errorf("show prints the message without -raw:\n%s", out)
	}
}

func TestQueueRetry(t *testing.T) {
	f := newRxFixture(t)
	failOnce(t, f.st, f.forward, nil, "timeout")
	ids, err := f.st.Enqueue(context.Background(), store.QueueUpdate{Jobs: []store.Job{{
		Kind: store.JobDSN, RecordID: f.record, To: f.info.Prescriber.Address, NextAttempt: time.Now().Add(24 * time.Hour),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	f.close(t)

	before := time.Now()
	out, err := queueCmd(t, f.dir, time.Now(), "retry", fmt.Sprint(f.forward))
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, fmt.Sprintf("job %d (forward, record %d, 1 attempt so far) is due now", f.forward, f.record), "1 job due now")
	st := f.reopen(t)
	due, _, err := st.DueJobs(time.Now(), 10)
	if err != nil || len(due) != 1 || due[0].ID != f.forward {
		t.Fatalf("due after retry: %+v %v, want job %d only", due, err, f.forward)
	}
	if due[0].NextAttempt.Before(before.Add(-time.Second)) {
		t.Errorf("next attempt %v is not the retry's time", due[0].NextAttempt)
	}
	recs := auditOf(t, st, "admin.queue.retry")
	if len(recs) != 1 || !strings.Contains(recs[0].Subject, fmt.Sprintf("job=%d ", f.forward)) || recs[0].Outcome != "ok" {
		t.Errorf("audit of the retry: %+v", recs)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	out, err = queueCmd(t, f.dir, time.Now(), "retry", "all")
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, fmt.Sprintf("job %d (dsn", ids[0]), "2 jobs due now")
	st = f.reopen(t)
	if due, _, err := st.DueJobs(time.Now(), 10); err != nil || len(due) != 2 {
		t.Errorf("due after retry all: %d jobs %v, want 2", len(due), err)
	}
	if recs := auditOf(t, st, "admin.queue.retry"); len(recs) != 3 {
		t.Errorf("%d retry audit records, want 3 (one per job)", len(recs))
	}
}

// TestQueueDropForward: dropping a patient's copy removes it, records the
// failure in the history and queues a DSN telling the prescriber a paper
// copy is needed, all at once; the audit record names no patient.
func TestQueueDropForward(t *testing.T) {
	f := newRxFixture(t)
	f.close(t)
	// The flag after the id works as well as before it.
	out, err := queueCmd(t, f.dir, time.Now(), "drop", fmt.Sprint(f.forward), "-reason", "patient mailbox closed")
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, fmt.Sprintf("job %d (forward, record %d, to %s) dropped: patient mailbox closed", f.forward, f.record, f.patient),
		"a delivery status notification to "+f.info.Prescriber.Address+" is queued")

	st := f.reopen(t)
	if _, err := st.Job(f.forward); err == nil {
		t.Error("the dropped job is still queued")
	}
	jobs, err := st.Jobs()
	if err != nil || len(jobs) != 1 {
		t.Fatalf("queue after drop: %+v %v, want the DSN", jobs, err)
	}
	dsn := jobs[0]
	if dsn.Kind != store.JobDSN || dsn.RecordID != f.record || dsn.To != f.info.Prescriber.Address || dsn.From != "" ||
		dsn.Actor != f.patient || dsn.Status != "failed" || dsn.Code != "5.0.0" || !strings.Contains(dsn.Reason, "paper copy") {
		t.Errorf("DSN job: %+v", dsn)
	}
	evs, err := st.RecordEvents(f.record)
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	if last.Kind != store.RxForwardFailed || last.Actor != f.patient || last.Detail != "dropped by the administrator: patient mailbox closed" {
		t.Errorf("last history event: %+v", last)
	}
	recs := auditOf(t, st, "admin.queue.drop")
	if len(recs) != 1 || recs[0].Subject != fmt.Sprintf("job=%d record=%d kind=forward", f.forward, f.record) || recs[0].Detail != "patient mailbox closed" {
		t.Fatalf("audit of the drop: %+v", recs)
	}
	if r := recs[0]; strings.Contains(r.Subject+r.Detail+r.Actor+r.Outcome, f.ins) {
		t.Errorf("the audit record carries the patient's INS: %+v", r)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// rx show now says the copy failed and the prescriber's DSN waits.
	code, out, errOut := runCmd(t, "", "rx", "show", "-data", f.dir, f.number)
	if code != 0 {
		t.Fatalf("rx show: exit %d %s", code, errOut)
	}
	wantLines(t, out, "  forward     FAILED for "+f.patient, "  notify      dsn to "+f.info.Prescriber.Address+" pending")
}

// TestQueueDropNotification: dropping a notification records it in the
// history and queues nothing (no notification about a notification).
func TestQueueDropNotification(t *testing.T) {
	f := newRxFixture(t)
	ids, err := f.st.Enqueue(context.Background(), store.QueueUpdate{Jobs: []store.Job{{
		Kind: store.JobExecuted, RecordID: f.record, To: f.info.Prescriber.Address, Actor: f.info.Pharmacy.Address,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	f.close(t)
	out, err := queueCmd(t, f.dir, time.Now(), "drop", fmt.Sprint(ids[0])) // no -reason
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, fmt.Sprintf("job %d (executed, record %d, to %s) dropped: no reason given", ids[0], f.record, f.info.Prescriber.Address))
	if strings.Contains(out, "notification to") {
		t.Errorf("dropping a notification announces another:\n%s", out)
	}
	st := f.reopen(t)
	jobs, err := st.Jobs()
	if err != nil || len(jobs) != 1 || jobs[0].ID != f.forward {
		t.Errorf("queue after dropping the notice: %+v %v, want only the forward", jobs, err)
	}
	evs, err := st.RecordEvents(f.record)
	if err != nil {
		t.Fatal(err)
	}
	if last := evs[len(evs)-1]; last.Kind != store.RxNotifyFailed || last.Actor != f.info.Prescriber.Address ||
		last.Detail != "executed dropped by the administrator: no reason given" {
		t.Errorf("last history event: %+v", last)
	}
	if recs := auditOf(t, st, "admin.queue.drop"); len(recs) != 1 {
		t.Errorf("%d drop audit records, want 1", len(recs))
	}
}

// TestQueueRefusals: mistakes on the command line exit 2 (an unknown flag
// exits 1, as in every command: the flag package reports it), unknown jobs 1,
// and nothing is changed.
func TestQueueRefusals(t *testing.T) {
	f := newRxFixture(t)
	f.close(t)
	d := []string{"-data", f.dir}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"queue"}, 2, "expected: queue list"},
		{[]string{"queue", "frobnicate"}, 2, `unknown queue subcommand "frobnicate"`},
		{append([]string{"queue", "list", "extra"}, d...), 2, `unexpected argument "extra"`},
		{append([]string{"queue", "show"}, d...), 2, "expected exactly one job id"},
		{append([]string{"queue", "show", "1", "2"}, d...), 2, "expected exactly one job id"},
		{append([]string{"queue", "show", "abc"}, d...), 2, `bad job id "abc"`},
		{append([]string{"queue", "show", "0"}, d...), 2, `bad job id "0"`},
		{append([]string{"queue", "show", "-5"}, d...), 1, "flag provided but not defined"},
		{append([]string{"queue", "show", "99"}, d...), 1, "no job 99 in the outbound queue"},
		{append([]string{"queue", "retry"}, d...), 2, "expected exactly one job id, or all"},
		{append([]string{"queue", "retry", "everything"}, d...), 2, `bad job id "everything"`},
		{append([]string{"queue", "retry", "99"}, d...), 1, "no job 99"},
		{append([]string{"queue", "drop"}, d...), 2, "expected exactly one job id"},
		{append([]string{"queue", "drop", "x1"}, d...), 2, `bad job id "x1"`},
		{append([]string{"queue", "drop", "99", "-reason", "test"}, d...), 1, "no job 99"},
		{append([]string{"queue", "drop", "-nope", "1"}, d...), 1, "flag provided but not defined: -nope"},
		{[]string{"queue", "list", "-data", f.dir + "/missing"}, 1, ""},
	}
	for _, c := range cases {
		code, out, errOut := runCmd(t, "", c.args...)
		if code != c.code || !strings.Contains(out+errOut, c.want) {
			t.Errorf("%v: exit %d %q %q; want exit %d with %q", c.args, code, out, errOut, c.code, c.want)
		}
	}
	st := f.reopen(t)
	if jobs, err := st.Jobs(); err != nil || len(jobs) != 1 || jobs[0].Attempts != 0 {
		t.Errorf("a refused command changed the queue: %+v %v", jobs, err)
	}
	if n := len(auditOf(t, st, "admin.queue.drop")) + len(auditOf(t, st, "admin.queue.retry")); n != 0 {
		t.Errorf("refused commands left %d audit records", n)
	}
}

func TestParseInterleaved(t *testing.T) {
	cases := []struct {
		args   []string
		pos    string
		reason string
	}{
		{[]string{"7"}, "7", ""},
		{[]string{"-reason", "r", "7"}, "7", "r"},
		{[]string{"7", "-reason", "r"}, "7", "r"},
		{[]string{"7", "-reason=r", "8"}, "7 8", "r"},
		{[]string{"--", "-reason"}, "-reason", ""},
		{[]string{"7", "--", "-8"}, "7 -8", ""},
	}
	for _, c := range cases {
		fs := newFlags("t", &bytes.Buffer{}, "t")
		reason := fs.String("reason", "", "")
		pos, err := parseInterleaved(fs, c.args)
		if err != nil || strings.Join(pos, " ") != c.pos || *reason != c.reason {
			t.Errorf("%q: %q reason %q err %v; want %q reason %q", c.args, pos, *reason, err, c.pos, c.reason)
		}
	}
}

func TestShortDuration(t *testing.T) {
	cases := map[time.Duration]string{
		-time.Second: "0s", 45 * time.Second: "45s", 12*time.Minute + 59*time.Second: "12m",
		3*time.Hour + 5*time.Minute: "3h05m", 52 * time.Hour: "2d04h",
	}
	for d, want := range cases {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

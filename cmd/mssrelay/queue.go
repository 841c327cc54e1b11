package main

// `mssrelay queue list|show|retry|drop`: the outbound queue (copies of
// prescriptions for patients who chose messaging-only delivery, and
// notifications for prescribers), read and changed offline like the other
// admin commands: bbolt allows one process, so the relay must be stopped.
// The relay picks up what retry and drop changed when it starts again.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"mssrelay/store"
)

const queueUsage = "expected: queue list | queue show ID | queue retry ID|all | queue drop ID [-reason TEXT]"

// lastErrorWidth is where queue list cuts a job's last error (queue show
// prints it whole).
const lastErrorWidth = 60

// cmdQueue dispatches the queue subcommands; now is the clock used for
// ages and next-attempt times.
func cmdQueue(ctx context.Context, args []string, stdout io.Writer, now func() time.Time) error {
	if len(args) == 0 {
		return usageError{queueUsage}
	}
	switch args[0] {
	case "list":
		return cmdQueueList(args[1:], stdout, now)
	case "show":
		return cmdQueueShow(args[1:], stdout, now)
	case "retry":
		return cmdQueueRetry(ctx, args[1:], stdout)
	case "drop":
		return cmdQueueDrop(args[1:], stdout)
	}
	return usageError{fmt.Sprintf("unknown queue subcommand %q; %s", args[0], queueUsage)}
}

// parseInterleaved parses flags placed before, between or after the
// positional arguments (`queue drop 12 -reason "…"` reads naturally; the
// flag package stops at the first positional argument) and returns the
// positional ones. "--" ends the flags.
func parseInterleaved(fs *flagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseJobID reads a job id as queue list prints it.
func parseJobID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usageError{fmt.Sprintf("bad job id %q: want the number queue list shows", s)}
	}
	return id, nil
}

// queueJob reads one job, turning ErrNotFound into a message for the
// administrator.
func queueJob(st *store.Store, id uint64) (*store.Job, error) {
	j, err := st.Job(id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("no job %d in the outbound queue (delivered, failed or dropped; queue list shows the jobs waiting)", id)
	}
	return j, err
}

func cmdQueueList(args []string, stdout io.Writer, now func() time.Time) error {
	fs, load := configFlags("queue list", stdout,
		"queue list [-config FILE | -data DIR]\n\n"+
			"Lists the jobs of the outbound queue: copies of prescriptions for patients\n"+
			"(forward) and notifications for prescribers (dsn, mdn, executed), with their\n"+
			"age, attempts, next attempt and last error. No clinical content (relay stopped).")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", pos[0])}
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	st, err := openReadOnly(cfg) // list and show never write
	if err != nil {
		return err
	}
	defer st.Close()
	jobs, err := st.Jobs()
	if err != nil {
		return err
	}
	if len(jobs) == 0 {
		fmt.Fprintln(stdout, "queue is empty")
		return nil
	}
	t := now()
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tTO\tAGE\tATTEMPTS\tNEXT\tLAST ERROR")
	oldest := jobs[0]
	kinds := map[string]int{}
	for _, j := range jobs {
		if j.Created.Before(oldest.Created) {
			oldest = j
		}
		kinds[j.Kind]++
		lastErr := "-"
		if j.LastError != "" {
			lastErr = cutText(printable(j.LastError), lastErrorWidth)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", j.ID, printable(j.Kind), printable(j.To),
			sinceText(t, j.Created), j.Attempts, nextAttempt(t, j.NextAttempt), lastErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d job%s (%s), oldest %s (job %d)\n", len(jobs), pluralS(len(jobs)), kindCounts(kinds), sinceText(t, oldest.Created), oldest.ID)
	return nil
}

func cmdQueueShow(args []string, stdout io.Writer, now func() time.Time) error {
	fs, load := configFlags("queue show", stdout,
		"queue show [-config FILE | -data DIR] [-raw] ID\n\n"+
			"Prints every field of one job of the outbound queue and the prescription\n"+
			"number of the record it is about. With -raw, prints only the rendered\n"+
			"message instead (for `> job.eml`): for a forward that is the patient's\n"+
			"copy of the prescription, clinical content included (relay stopped).")
	raw := fs.Bool("raw", false, "print the rendered message's bytes instead (clinical content for a forward)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"expected exactly one job id"}
	}
	id, err := parseJobID(pos[0])
	if err != nil {
		return err
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	st, err := openReadOnly(cfg) // list and show never write
	if err != nil {
		return err
	}
	defer st.Close()
	j, err := queueJob(st, id)
	if err != nil {
		return err
	}
	if *raw {
		if len(j.Raw) == 0 {
			return fmt.Errorf("job %d has no rendered message yet: it is rendered at its first attempt", id)
		}
		_, err := stdout.Write(j.Raw)
		return err
	}
	t := now()
	number, err := recordNumber(st, j.RecordID)
	if err != nil {
		return err
	}
	from := j.From
	if from == "" {
		from = "<> (null reverse-path: a notification, RFC 5321 4.5.5)"
	}
	fmt.Fprintf(stdout, "job %d\n", j.ID)
	field := func(name, value string) {
		if value == "" {
			value = "-"
		}
		fmt.Fprintf(stdout, "  %-13s %s\n", name, value)
	}
	field("kind", printable(j.Kind))
	field("record", fmt.Sprintf("%d (%s)", j.RecordID, number))
	field("from", printable(from))
	field("to", printable(j.To))
	field("actor", printable(j.Actor))
	field("created", fmt.Sprintf("%s (%s ago)", utcText(j.Created), sinceText(t, j.Created)))
	field("next attempt", fmt.Sprintf("%s (%s)", utcText(j.NextAttempt), nextAttempt(t, j.NextAttempt)))
	field("attempts", strconv.Itoa(j.Attempts))
	if !j.LastAttempt.IsZero() {
		field("last attempt", fmt.Sprintf("%s (%s ago)", utcText(j.LastAttempt), sinceText(t, j.LastAttempt)))
	} else {
		field("last attempt", "never")
	}
	field("last error", printable(j.LastError))
	field("delayed", yesNo(j.Delayed))
	field("status", printable(j.Status))
	field("reason", printable(j.Reason))
	field("diagnostic", printable(j.Diagnostic))
	field("code", printable(j.Code))
	if j.RawSize > 0 {
		field("message", fmt.Sprintf("%d byte%s rendered (queue show -raw %d prints them)", j.RawSize, pluralS(j.RawSize), j.ID))
	} else {
		field("message", "not rendered yet (at the first attempt)")
	}
	return nil
}

// recordNumber describes the record a job is about by its prescription
// number.
func recordNumber(st *store.Store, id uint64) (string, error) {
	rec, err := st.Record(id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "record missing: purged by retention?", nil
	case err != nil:
		return "", err
	case rec.Number == "":
		return "no prescription number", nil
	}
	return "prescription " + printable(rec.Number), nil
}

func cmdQueueRetry(ctx context.Context, args []string, stdout io.Writer) error {
	fs, load := configFlags("queue retry", stdout,
		"queue retry [-config FILE | -data DIR] ID|all\n\n"+
			"Makes a job (or every job) due now, e.g. once a peer is reachable again;\n"+
			"its age still counts toward outbound.max_age. The relay makes the attempt\n"+
			"when it starts. Recorded in the audit trail (relay stopped).")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"expected exactly one job id, or all"}
	}
	var ids []uint64
	all := pos[0] == "all"
	if !all {
		id, err := parseJobID(pos[0])
		if err != nil {
			return err
		}
		ids = []uint64{id}
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	if all {
		jobs, err := st.Jobs()
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			fmt.Fprintln(stdout, "queue is empty: nothing to retry")
			return nil
		}
		for _, j := range jobs {
			ids = append(ids, j.ID)
		}
	} else if _, err := queueJob(st, ids[0]); err != nil {
		return err
	}
	var audit []store.AuditEvent
	for _, id := range ids {
		j, err := st.RetryJob(id)
		if errors.Is(err, store.ErrNotFound) && all {
			continue // cannot happen while we hold the store; harmless if it does
		}
		if err != nil {
			return fmt.Errorf("retry job %d: %w", id, err)
		}
		audit = append(audit, store.AuditEvent{Kind: store.AuditAdminPrefix + "queue.retry",
			Subject: fmt.Sprintf("job=%d record=%d kind=%s", j.ID, j.RecordID, j.Kind), Outcome: "ok",
			Detail: fmt.Sprintf("made due now after %d attempts", j.Attempts)})
		fmt.Fprintf(stdout, "job %d (%s, record %d, %d attempt%s so far) is due now\n", j.ID, printable(j.Kind), j.RecordID, j.Attempts, pluralS(j.Attempts))
	}
	if err := st.Audit(ctx, audit...); err != nil {
		return fmt.Errorf("recording the retry in the audit trail: %w", err)
	}
	fmt.Fprintf(stdout, "%d job%s due now: the relay attempts %s when it starts\n", len(audit), pluralS(len(audit)), itOrThem(len(audit)))
	return nil
}

// dropDSNCode is the RFC 3463 status of a copy the administrator dropped:
// 5.0.0, "other undefined status", permanent: no more specific code says
// "removed by the operator".
const dropDSNCode = "5.0.0"

func cmdQueueDrop(args []string, stdout io.Writer) error {
	fs, load := configFlags("queue drop", stdout,
		"queue drop [-config FILE | -data DIR] ID [-reason TEXT]\n\n"+
			"Removes a job from the outbound queue for good. Dropping a patient's copy\n"+
			"(forward) records the failure in the prescription's history and queues a\n"+
			"delivery status notification (RFC 3464) to the prescriber, who must then\n"+
			"give the patient a paper copy. Dropping a notification records that it was\n"+
			"not delivered. Recorded in the audit trail, with the reason (relay stopped).")
	reason := fs.String("reason", "", "why (kept in the history and the audit trail; not sent to the prescriber)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"expected exactly one job id"}
	}
	id, err := parseJobID(pos[0])
	if err != nil {
		return err
	}
	why := strings.TrimSpace(*reason)
	if why == "" {
		why = "no reason given"
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	j, err := queueJob(st, id)
	if err != nil {
		return err
	}
	u := dropUpdate(j, why)
	if j.Kind == store.JobForward && j.From == "" {
		// A forward carries the prescriber as its envelope sender; should
		// it not, the record's sender is the prescriber.
		rec, err := st.Record(j.RecordID)
		if err != nil {
			return fmt.Errorf("job %d: the prescriber to notify: %w", id, err)
		}
		u.Jobs[0].To = rec.Sender
	}
	if err := st.JobDone(id, u); err != nil {
		return fmt.Errorf("drop job %d: %w", id, err)
	}
	fmt.Fprintf(stdout, "job %d (%s, record %d, to %s) dropped: %s\n", j.ID, printable(j.Kind), j.RecordID, printable(j.To), printable(why))
	if len(u.Jobs) > 0 {
		fmt.Fprintf(stdout, "a delivery status notification to %s is queued: the patient needs a paper copy\n", printable(u.Jobs[0].To))
	}
	return nil
}

// dropUpdate is what dropping j writes with its removal, in one
// transaction: the history event, the audit record and, for a patient's
// copy, the notification that tells the prescriber a paper copy is needed
// (MISSION: a patient who chose messaging-only must still get the
// prescription). A notification travels with the null reverse-path and is
// never answered by another one (RFC 5321 §4.5.5), so dropping one only
// records it.
func dropUpdate(j *store.Job, why string) store.QueueUpdate {
	subject := fmt.Sprintf("job=%d record=%d kind=%s", j.ID, j.RecordID, j.Kind)
	u := store.QueueUpdate{
		// The job's recipient stays out of the audit record: for a
		// forward it holds the patient's INS (store.AuditEvent: no INS).
		Audit: []store.AuditEvent{{Kind: store.AuditAdminPrefix + "queue.drop", Subject: subject, Outcome: "ok", Detail: why}},
	}
	if j.Kind != store.JobForward {
		u.Events = []store.RecordEvent{{RecordID: j.RecordID, RxEvent: store.RxEvent{
			Kind: store.RxNotifyFailed, Actor: j.To, Detail: j.Kind + " dropped by the administrator: " + why}}}
		return u
	}
	u.Events = []store.RecordEvent{{RecordID: j.RecordID, RxEvent: store.RxEvent{
		Kind: store.RxForwardFailed, Actor: j.To, Detail: "dropped by the administrator: " + why}}}
	u.Jobs = []store.Job{{
		Kind: store.JobDSN, RecordID: j.RecordID, To: j.From, Actor: j.To,
		Status: "failed", Code: dropDSNCode,
		Reason:     "the administrator removed the copy for the patient from the queue: the patient needs a paper copy",
		Diagnostic: "removed from the outbound queue by the relay's administrator",
	}}
	return u
}

// sinceText is how long ago t was, for a person: 45s, 12m, 3h05m, 2d04h.
func sinceText(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return shortDuration(now.Sub(t))
}

// nextAttempt is when a job runs next, relative to now.
func nextAttempt(now, t time.Time) string {
	if !t.After(now) {
		return "now"
	}
	return "in " + shortDuration(t.Sub(now))
}

func shortDuration(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

func utcText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// cutText shortens s to n runes, marking the cut.
func cutText(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// kindCounts is "2 forward, 1 dsn", kinds in name order.
func kindCounts(kinds map[string]int) string {
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%d %s", kinds[k], printable(k))
	}
	return strings.Join(parts, ", ")
}

func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func itOrThem(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

package outbound

// The queue worker: takes due jobs from the store's outbound queue and
// delivers them, copies for patients to their operator over SMTP with
// mutual TLS, notifications to the prescriber's mailbox here (or over SMTP
// when the prescriber is elsewhere).
//
// Each attempt follows the same steps (store/queue.go explains why):
//  1. render the message when the job has none yet (notifications), so
//     that every retry sends the same bytes under the same Message-ID;
//  2. write the attempt (StartAttempt: attempts+1, next attempt at the
//     backoff time) before making it;
//  3. deliver;
//  4. write the outcome with its consequences in one transaction: JobDone
//     with the history (and, for a copy that failed for good, the DSN to
//     the prescriber), or JobFailed with the next attempt time (and, once
//     the delay warning age is passed, a "delayed" DSN).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"mssrelay/mime"
	"mssrelay/store"
)

// Settings is the retry policy (configs.Outbound).
type Settings struct {
	MaxAge         time.Duration // a job older than this fails (DSN for a copy)
	DelayWarning   time.Duration // a "delayed" DSN once a copy is this old; 0: never
	RetryMin       time.Duration // first retry delay
	RetryMax       time.Duration // backoff cap
	Workers        int           // deliveries at once
	PerDestination int           // deliveries at once to one domain
	MXLookup       bool          // domains without a route use DNS MX
}

// Metrics receives delivery outcomes (relay/metrics.Metrics); nil: none.
type Metrics interface {
	OutboundAttempt(kind, outcome string)
	OutboundLatency(d time.Duration)
}

// Options configure a Worker.
type Options struct {
	Store    *store.Store
	Dialer   *Dialer
	Settings Settings
	// Routes returns the hosts for a domain (reloadable); ok=false when
	// there is no route.
	Routes func(domain string) (hosts []string, ok bool)
	// Local reports whether an address is an account of this relay: its
	// notifications are filed here, never sent over SMTP.
	Local func(addr string) bool
	// Hostname names the relay in Received, Message-ID and reports.
	Hostname string
	// From is the From: of notifications.
	From string
	// Sign turns a notification (top header, entity) into the message
	// sent; nil sends header and entity unsigned.
	Sign func(header, entity []byte) ([]byte, error)
	// Meta computes the IMAP cache of a notification filed locally.
	Meta func(raw []byte) []byte
	// IsPatient reports whether an address is a patient's: a DSN for it
	// says that the patient needs a paper copy. nil: none is.
	IsPatient func(addr string) bool
	Now       func() time.Time // default time.Now
	Rand      func() float64   // jitter; default math/rand
	Log       *slog.Logger
	Metrics   Metrics
	// LookupMX is the resolver used when Settings.MXLookup is set
	// (default net.DefaultResolver.LookupMX).
	LookupMX func(ctx context.Context, domain string) ([]*net.MX, error)
}

// Worker delivers the outbound queue. Run it once.
type Worker struct {
	o    Options
	kick chan struct{}
}

// NewWorker checks o and returns a worker.
func NewWorker(o Options) (*Worker, error) {
	if o.Store == nil || o.Dialer == nil || o.Routes == nil || o.Local == nil {
		return nil, fmt.Errorf("%w: worker needs a store, a dialer, routes and a local test", ErrInvalid)
	}
	if o.Hostname == "" || o.From == "" {
		return nil, fmt.Errorf("%w: worker needs a hostname and a notification address", ErrInvalid)
	}
	s := &o.Settings
	if s.Workers < 1 {
		s.Workers = 1
	}
	if s.PerDestination < 1 {
		s.PerDestination = 1
	}
	if s.RetryMin <= 0 {
		s.RetryMin = time.Minute
	}
	if s.RetryMax < s.RetryMin {
		s.RetryMax = s.RetryMin
	}
	if s.MaxAge <= 0 {
		s.MaxAge = 48 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.LookupMX == nil {
		o.LookupMX = net.DefaultResolver.LookupMX
	}
	return &Worker{o: o, kick: make(chan struct{}, 1)}, nil
}

// Kick makes the worker look at the queue now (after a clock change in
// tests, or an admin retry).
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// idleWait bounds how long the worker sleeps without looking at the
// queue, so that a missed signal costs at most this much delay.
const idleWait = time.Minute

type finished struct {
	id   uint64
	dest string
}

// Run delivers due jobs until ctx is done, then waits for the deliveries
// in flight: they see ctx cancelled and stop; their attempt is on disk
// already, so they run again at its retry time after a restart.
func (w *Worker) Run(ctx context.Context) {
	var (
		wg       sync.WaitGroup
		inflight = map[uint64]bool{}
		perDest  = map[string]int{}
		done     = make(chan finished, w.o.Settings.Workers)
	)
	defer wg.Wait()
	for {
		now := w.o.Now()
		due, next, err := w.o.Store.DueJobs(now, 4*w.o.Settings.Workers+len(inflight))
		if err != nil {
			w.o.Log.Error("reading the outbound queue", "err", err)
			next = now.Add(5 * time.Second)
		}
		for _, j := range due {
			dest := destination(j.To)
			if inflight[j.ID] || len(inflight) >= w.o.Settings.Workers || perDest[dest] >= w.o.Settings.PerDestination {
				continue
			}
			inflight[j.ID] = true
			perDest[dest]++
			wg.Add(1)
			go func(j store.Job) {
				defer wg.Done()
				w.process(ctx, j)
				done <- finished{j.ID, dest}
			}(j)
		}
		wait := idleWait
		if !next.IsZero() {
			wait = min(max(next.Sub(now), 10*time.Millisecond), idleWait)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			// done holds Workers values: the deliveries in flight
			// finish without a reader (Run's deferred Wait).
			timer.Stop()
			return
		case f := <-done:
			delete(inflight, f.id)
			perDest[f.dest]--
		case <-w.o.Store.QueueChanged():
		case <-w.kick:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// destination is the concurrency key of a recipient: its domain.
func destination(addr string) string {
	_, d, _ := strings.Cut(addr, "@")
	return strings.ToLower(d)
}

// process makes one attempt at job j (listed without Raw).
func (w *Worker) process(ctx context.Context, j store.Job) {
	now := w.o.Now()
	log := w.o.Log.With("job", j.ID, "kind", j.Kind, "record", j.RecordID, "domain", destination(j.To))
	var (
		msg []byte // what to send
		raw []byte // a notification rendered now, saved with the attempt
		err error
	)
	switch {
	case isCopy(j.Kind):
		msg, err = w.forwardMessage(&j, now)
	case j.RawSize == 0:
		raw, err = w.render(&j, now)
	}
	if err != nil {
		// Nothing that retrying can fix: the record is gone or a field
		// cannot be written into a notification.
		log.Error("cannot build the message, giving up", "err", err)
		w.giveUp(log, &j, now, "5.3.0", "x-mssrelay; "+err.Error())
		return
	}
	if age := now.Sub(j.Created); age >= w.o.Settings.MaxAge {
		diag := j.LastError
		if diag == "" {
			diag = "x-mssrelay; not delivered within " + w.o.Settings.MaxAge.String()
		}
		w.giveUp(log, &j, now, "5.4.7", diag)
		return
	}
	retryAt := now.Add(Backoff(j.Attempts+1, w.o.Settings.RetryMin, w.o.Settings.RetryMax, w.o.Rand))
	// Never retry past the maximum age: the give-up happens on time.
	retryAt = minTime(retryAt, j.Created.Add(w.o.Settings.MaxAge))
	job, err := w.o.Store.StartAttempt(j.ID, retryAt, raw)
	if errors.Is(err, store.ErrNotFound) {
		return // dropped meanwhile
	}
	if err != nil {
		log.Error("recording the attempt", "err", err)
		return
	}
	if !isCopy(job.Kind) {
		msg = job.Raw
	}

	start := time.Now()
	if !isCopy(job.Kind) && w.o.Local(job.To) {
		w.deliverLocal(log, job, msg, start)
		return
	}
	res, err := w.send(ctx, job, msg)
	if ctx.Err() != nil {
		return // shutting down: the recorded attempt stands
	}
	if err == nil {
		w.o.metrics().OutboundLatency(time.Since(start))
		w.delivered(log, job, fmt.Sprintf("%d %s %s", res.Code, res.Enhanced, res.Host))
		return
	}
	code, diag := statusOf(err)
	if IsPermanent(err) {
		w.giveUp(log, job, now, code, diag)
		return
	}
	w.retry(log, job, now, retryAt, err, diag)
}

// isCopy reports whether a job carries a filed record's bytes (to a
// patient, to another operator) rather than a notification.
func isCopy(kind string) bool { return kind == store.JobForward || kind == store.JobRelay }

func (w *Worker) isPatient(addr string) bool { return w.o.IsPatient != nil && w.o.IsPatient(addr) }

func (o *Options) metrics() Metrics {
	if o.Metrics == nil {
		return noMetrics{}
	}
	return o.Metrics
}

type noMetrics struct{}

func (noMetrics) OutboundAttempt(string, string)  {}
func (noMetrics) OutboundLatency(d time.Duration) {}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// send delivers over SMTP along the domain's route (or its MX hosts).
func (w *Worker) send(ctx context.Context, job *store.Job, msg []byte) (*Result, error) {
	domain := destination(job.To)
	hosts, ok := w.o.Routes(domain)
	if !ok && w.o.Settings.MXLookup {
		mx, err := w.o.LookupMX(ctx, domain)
		if err != nil {
			return nil, &Error{Stage: StageConnect, Message: "MX lookup: " + sanitize(err.Error(), 200), Err: err}
		}
		sort.SliceStable(mx, func(a, b int) bool { return mx[a].Pref < mx[b].Pref })
		for _, m := range mx {
			if h := strings.TrimSuffix(m.Host, "."); h != "" {
				hosts = append(hosts, net.JoinHostPort(h, "25"))
			}
		}
		ok = len(hosts) > 0
	}
	if !ok {
		// Not permanent: the administrator can add the route and reload.
		return nil, &Error{Stage: StageConnect, Message: "no route to " + domain + " ([[outbound.route]])", Err: errNoRoute}
	}
	return w.o.Dialer.Send(ctx, hosts, job.From, job.To, msg)
}

var errNoRoute = errors.New("no route")

// statusOf turns a delivery error into the RFC 3463 status and the
// diagnostic of a DSN.
func statusOf(err error) (code, diag string) {
	var e *Error
	if !errors.As(err, &e) {
		return "4.0.0", "x-mssrelay; " + sanitize(err.Error(), 300)
	}
	code = e.Enhanced
	if code == "" {
		switch {
		case e.Code >= 500:
			code = "5.0.0"
		case e.Code >= 400:
			code = "4.0.0"
		case e.Stage == StageTLS || e.Stage == StageSTARTTLS:
			code = "4.7.5" // RFC 3463 X.7.5: cryptographic failure
		default:
			code = "4.4.1" // RFC 3463 X.4.1: no answer from host
		}
	}
	if e.Code > 0 {
		diag = fmt.Sprintf("smtp; %d %s %s", e.Code, e.Enhanced, e.Message)
	} else {
		diag = "x-mssrelay; " + sanitize(e.Error(), 300)
	}
	return code, strings.Join(strings.Fields(diag), " ")
}

// failedCode gives a 5.x.x status for a DSN whose action is "failed".
func failedCode(code string) string {
	if strings.HasPrefix(code, "5.") {
		return code
	}
	if rest, ok := strings.CutPrefix(code, "4."); ok {
		return "5." + rest
	}
	return "5.0.0"
}

// delayedCode gives a 4.x.x status for a "delayed" DSN.
func delayedCode(code string) string {
	if strings.HasPrefix(code, "4.") {
		return code
	}
	return "4.4.7" // RFC 3463 X.4.7: delivery time expired (so far)
}

func recordEvent(j *store.Job, kind, detail string) store.RecordEvent {
	return store.RecordEvent{RecordID: j.RecordID, RxEvent: store.RxEvent{Kind: kind, Actor: j.To, Detail: detail}}
}

func (w *Worker) auditEvent(j *store.Job, outcome, detail string) store.AuditEvent {
	kind := store.AuditNotify
	if isCopy(j.Kind) {
		kind = store.AuditForward
	}
	// The destination's domain only: a patient's address holds the INS,
	// which the audit trail never records (store.AuditEvent).
	return store.AuditEvent{Kind: kind, Actor: "-",
		Subject: fmt.Sprintf("record=%d job=%d kind=%s dest=%s attempt=%d", j.RecordID, j.ID, j.Kind, destination(j.To), j.Attempts),
		Outcome: outcome, Detail: detail}
}

// delivered records a successful remote delivery.
func (w *Worker) delivered(log *slog.Logger, j *store.Job, reply string) {
	kind := store.RxNotified
	switch j.Kind {
	case store.JobForward:
		kind = store.RxForwarded
	case store.JobRelay:
		kind = store.RxRelayed
	}
	err := w.o.Store.JobDone(j.ID, store.QueueUpdate{
		Events: []store.RecordEvent{recordEvent(j, kind, j.Kind+": "+reply)},
		Audit:  []store.AuditEvent{w.auditEvent(j, "delivered", reply)},
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// The peer has it; the job stays and is sent again at its retry
		// time (at-least-once, same Message-ID).
		log.Error("recording a delivery", "err", err)
		return
	}
	w.o.metrics().OutboundAttempt(j.Kind, "delivered")
	log.Info("delivered", "attempts", j.Attempts)
}

// deliverLocal files a notification into a local account's INBOX.
func (w *Worker) deliverLocal(log *slog.Logger, j *store.Job, msg []byte, start time.Time) {
	var meta []byte
	if w.o.Meta != nil {
		meta = w.o.Meta(msg)
	}
	d, err := w.o.Store.DeliverJobLocal(j.ID, j.To, meta, store.QueueUpdate{
		Events: []store.RecordEvent{recordEvent(j, store.RxNotified, j.Kind+": filed in INBOX")},
		Audit:  []store.AuditEvent{w.auditEvent(j, "delivered", "local INBOX")},
	})
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	if err != nil {
		// Stays queued; the attempt recorded its retry time.
		log.Error("filing a notification locally", "err", err)
		w.o.metrics().OutboundAttempt(j.Kind, "retry")
		return
	}
	w.o.metrics().OutboundAttempt(j.Kind, "delivered")
	w.o.metrics().OutboundLatency(time.Since(start))
	log.Info("notification filed", "uid", d.UID)
}

// retry records a transient failure; a copy for a patient still
// undelivered past the delay warning age also gets its "delayed" DSN,
// once.
func (w *Worker) retry(log *slog.Logger, j *store.Job, now, retryAt time.Time, err error, diag string) {
	var u store.QueueUpdate
	warn := isCopy(j.Kind) && !j.Delayed && w.o.Settings.DelayWarning > 0 &&
		now.Sub(j.Created) >= w.o.Settings.DelayWarning
	if warn {
		code, _ := statusOf(err)
		u.Jobs = []store.Job{{Kind: store.JobDSN, RecordID: j.RecordID, To: j.From, Actor: j.To,
			Status: mime.StatusDelayed, Code: delayedCode(code), Diagnostic: diag,
			Reason: "not yet delivered to the recipient's operator; the relay keeps trying until " +
				j.Created.Add(w.o.Settings.MaxAge).UTC().Format(time.RFC3339)}}
		u.Events = []store.RecordEvent{recordEvent(j, store.RxForwardDelayed, diag)}
	}
	u.Audit = []store.AuditEvent{w.auditEvent(j, "retry", diag)}
	if err := w.o.Store.JobFailed(j.ID, retryAt, diag, warn, u); err != nil && !errors.Is(err, store.ErrNotFound) {
		log.Error("recording a failed attempt", "err", err)
	}
	w.o.metrics().OutboundAttempt(j.Kind, "retry")
	log.Warn("delivery failed, will retry", "attempts", j.Attempts, "retry_at", retryAt.UTC().Format(time.RFC3339), "err", diag)
}

// giveUp ends a job that cannot be delivered. For a copy to a patient, the
// prescriber gets a DSN saying a paper copy is needed, in the same
// transaction; a notification that fails is recorded and logged (a DSN
// about a DSN would loop: RFC 3464 §1).
func (w *Worker) giveUp(log *slog.Logger, j *store.Job, now time.Time, code, diag string) {
	u := store.QueueUpdate{Audit: []store.AuditEvent{w.auditEvent(j, "failed "+code, diag)}}
	if isCopy(j.Kind) {
		kind, reason := store.RxForwardFailed, "the copy for the patient could not be delivered"
		if j.Kind == store.JobRelay {
			kind, reason = store.RxRelayFailed, "the message could not be delivered to the recipient's operator"
		}
		u.Events = []store.RecordEvent{recordEvent(j, kind, code+" "+diag)}
		if j.From != "" {
			u.Jobs = []store.Job{{Kind: store.JobDSN, RecordID: j.RecordID, To: j.From, Actor: j.To,
				Status: mime.StatusFailed, Code: failedCode(code), Diagnostic: diag, Reason: reason}}
		}
	} else {
		u.Events = []store.RecordEvent{recordEvent(j, store.RxNotifyFailed, j.Kind+": "+code+" "+diag)}
	}
	if err := w.o.Store.JobDone(j.ID, u); err != nil && !errors.Is(err, store.ErrNotFound) {
		log.Error("recording a failed job", "err", err)
		return
	}
	w.o.metrics().OutboundAttempt(j.Kind, "failed")
	log.Warn("delivery failed for good", "attempts", j.Attempts, "age", now.Sub(j.Created).Round(time.Second).String(), "status", code)
}

// forwardMessage is the copy sent to the patient: the record's bytes as
// filed, signed part untouched, with the Return-Path of final delivery
// taken off (RFC 5321 §4.4: a relay does not send it) and our Received
// line on top. A message without Message-ID gets a stable one, so that
// the receiver can drop the duplicates at-least-once delivery may cause.
func (w *Worker) forwardMessage(j *store.Job, now time.Time) ([]byte, error) {
	raw, err := w.o.Store.Bytes(j.RecordID)
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", j.RecordID, err)
	}
	raw = stripReturnPath(raw)
	var b bytes.Buffer
	fmt.Fprintf(&b, "Received: by %s (mssrelay) id J%d\r\n\tfor <%s>; %s\r\n", w.o.Hostname, j.ID, j.To, now.UTC().Format(time.RFC1123Z))
	if _, ok := mime.HeaderField(raw, "Message-Id"); !ok {
		fmt.Fprintf(&b, "Message-ID: <mssrelay.rx%d@%s>\r\n", j.RecordID, w.o.Hostname)
	}
	b.Write(raw)
	return b.Bytes(), nil
}

// stripReturnPath removes a leading Return-Path field (with its folded
// lines).
func stripReturnPath(raw []byte) []byte {
	if len(raw) < 12 || !strings.EqualFold(string(raw[:12]), "Return-Path:") {
		return raw
	}
	pos := 0
	for {
		i := bytes.Index(raw[pos:], []byte("\r\n"))
		if i < 0 {
			return raw
		}
		pos += i + 2
		if pos >= len(raw) || (raw[pos] != ' ' && raw[pos] != '\t') {
			return raw[pos:]
		}
	}
}

// render builds a notification: the DSN, MDN or execution notice for
// job j, signed by the relay when a signer is configured.
func (w *Worker) render(j *store.Job, now time.Time) ([]byte, error) {
	rec, err := w.o.Store.Record(j.RecordID)
	if err != nil {
		return nil, err
	}
	msgID := fmt.Sprintf("<mssrelay.%s.%d.%d@%s>", j.Kind, j.RecordID, j.ID, w.o.Hostname)
	var header, entity []byte
	switch j.Kind {
	case store.JobDSN:
		raw, err := w.o.Store.Bytes(j.RecordID)
		if err != nil {
			return nil, err
		}
		r := mime.DSNRecipient{FinalRecipient: j.Actor, Action: j.Status, DiagnosticCode: j.Diagnostic}
		switch j.Status {
		case mime.StatusDelayed:
			r.Status = delayedCode(j.Code)
			r.WillRetryUntil = rec.Received.Add(w.o.Settings.MaxAge)
		default:
			r.Action, r.Status = mime.StatusFailed, failedCode(j.Code)
		}
		if j.Diagnostic != "" {
			r.LastAttempt = now
		}
		header, entity, err = mime.BuildDSN(&mime.DSN{
			ReportingMTA: w.o.Hostname, From: w.o.From, To: j.To, MessageID: msgID,
			Date: now, Arrival: rec.Received, OriginalMessageID: rec.MessageID, Number: rec.Number,
			Recipients: []mime.DSNRecipient{r}, OriginalHeader: headerOf(stripReturnPath(raw)),
			PaperCopyNeeded: r.Action == mime.StatusFailed && w.isPatient(j.Actor), Reason: j.Reason,
		})
		if err != nil {
			return nil, err
		}
	case store.JobMDN:
		header, entity, err = mime.BuildMDN(&mime.MDN{
			ReportingUA: w.o.Hostname + "; mssrelay", From: w.o.From, To: j.To, MessageID: msgID, Date: now,
			FinalRecipient: j.Actor, OriginalMessageID: rec.MessageID, Number: rec.Number,
		})
		if err != nil {
			return nil, err
		}
	case store.JobExecuted:
		when := now
		if ex, err := w.o.Store.RecordExecution(j.RecordID); err == nil && ex != nil {
			when = ex.Time
		}
		header, entity, err = mime.BuildExecutionNotice(&mime.Execution{
			From: w.o.From, To: j.To, MessageID: msgID, Date: now, Number: rec.Number,
			OriginalMessageID: rec.MessageID, ExecutedBy: j.Actor, ExecutedAt: when,
		})
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("job kind %q has no message to render", j.Kind)
	}
	if w.o.Sign == nil {
		return append(header, entity...), nil
	}
	return w.o.Sign(header, entity)
}

// headerOf returns the header block of a message (without the blank line).
func headerOf(raw []byte) []byte {
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		return raw[:i+2]
	}
	return raw
}

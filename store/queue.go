package store

// The outbound queue: copies for patients and notifications for
// prescribers, waiting to be delivered (relay/outbound does the delivering).
//
//	queue      job id (uint64 BE) → encoded Job
//	queue_due  next attempt (int64 BE, Unix ns) ‖ job id → empty
//
// Jobs are created in the transaction that makes them necessary (the
// filing that asks for a forward, the flag change that executes a
// prescription, the failure that calls for a DSN), so a job exists exactly
// when its cause does. A delivery attempt is written before it is made
// (StartAttempt moves the next attempt time into the future first): a crash
// in the middle of a delivery resumes at the planned retry time instead of
// at once, so a crash loop cannot become a retry storm. The price is
// at-least-once delivery: a crash after the peer's 250 and before JobDone
// sends the message again, under the same Message-ID.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"
)

var (
	bucketQueue    = []byte("queue")
	bucketQueueDue = []byte("queue_due")
)

// Kinds of Job.
const (
	JobForward  = "forward"  // the record's bytes to a patient's secure address
	JobRelay    = "relay"    // the record's bytes to a recipient at another operator
	JobDSN      = "dsn"      // RFC 3464 delivery status notification to the prescriber
	JobMDN      = "mdn"      // RFC 8098 disposition notification (processed) to the prescriber
	JobExecuted = "executed" // execution notice to the prescriber
)

// MaxJobRawBytes bounds a rendered notification.
const MaxJobRawBytes = 1 << 20

// Job is one message waiting in the outbound queue, for one recipient.
type Job struct {
	ID          uint64
	Kind        string    // JobForward, JobDSN, JobMDN or JobExecuted
	RecordID    uint64    // the prescription it is about
	From        string    // envelope sender; "" is the null reverse-path (notifications, RFC 5321 §4.5.5)
	To          string    // the one recipient
	Actor       string    // who caused it: the executant (JobExecuted), the failed recipient (JobDSN)
	Created     time.Time // zero: the commit's clock reading
	NextAttempt time.Time // zero: at once
	Attempts    int
	LastAttempt time.Time
	LastError   string // why the last attempt failed, one line
	Delayed     bool   // a "delayed" DSN was already queued for this job
	Status      string // JobDSN: "failed" or "delayed"; JobForward: why it is forwarded
	Reason      string // JobDSN: the human reason
	Diagnostic  string // JobDSN: the peer's reply or our error, one line
	Code        string // JobDSN: the RFC 3463 status of the failed recipient ("5.7.1", "4.4.7")
	Raw         []byte // the rendered message; empty until the first attempt renders it
	RawSize     int    // len(Raw) (set also when listing without Raw)
}

// RecordEvent is a history event for a given record.
type RecordEvent struct {
	RecordID uint64
	RxEvent
}

// QueueUpdate is written in the same transaction as a queue change.
type QueueUpdate struct {
	Events []RecordEvent
	Audit  []AuditEvent
	Jobs   []Job // new jobs, e.g. the DSN that follows a failure
}

func (u *QueueUpdate) size() int64 {
	n := int64(64 * (len(u.Events) + len(u.Audit)))
	for _, j := range u.Jobs {
		n += int64(len(j.Raw) + 256)
	}
	return n
}

func encodeJob(j *Job) []byte {
	e := enc{b: make([]byte, 0, 128+len(j.To)+len(j.LastError)+len(j.Raw))}
	e.b = append(e.b, formatV1)
	e.str(j.Kind)
	e.uvarint(j.RecordID)
	e.str(j.From)
	e.str(j.To)
	e.str(j.Actor)
	e.time(j.Created)
	e.time(j.NextAttempt)
	e.uvarint(uint64(j.Attempts))
	e.time(j.LastAttempt)
	e.str(j.LastError)
	e.bool(j.Delayed)
	e.str(j.Status)
	e.str(j.Reason)
	e.str(j.Diagnostic)
	e.uvarint(uint64(len(j.Raw)))
	e.b = append(e.b, j.Raw...)
	e.str(j.Code)
	return e.b
}

func decodeJob(id uint64, v []byte, withRaw bool) (*Job, error) {
	d := dec{b: v}
	d.format("job")
	j := &Job{ID: id}
	j.Kind = d.str("job kind")
	j.RecordID = d.uvarint("job record")
	j.From = d.str("job from")
	j.To = d.str("job to")
	j.Actor = d.str("job actor")
	j.Created = d.time("job created")
	j.NextAttempt = d.time("job next attempt")
	j.Attempts = int(min(d.uvarint("job attempts"), math.MaxInt32))
	j.LastAttempt = d.time("job last attempt")
	j.LastError = d.str("job last error")
	j.Delayed = d.bool("job delayed")
	j.Status = d.str("job status")
	j.Reason = d.str("job reason")
	j.Diagnostic = d.str("job diagnostic")
	n := d.uvarint("job raw")
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("job raw")
	}
	if d.err != nil {
		return nil, fmt.Errorf("job %d: %w", id, d.err)
	}
	j.RawSize = int(n)
	if withRaw {
		j.Raw = bytes.Clone(d.b[:n])
	}
	d.b = d.b[n:]
	j.Code = d.str("job code")
	if d.err != nil {
		return nil, fmt.Errorf("job %d: %w", id, d.err)
	}
	return j, nil
}

func dueKey(t time.Time, id uint64) []byte {
	ns := int64(math.MaxInt64)
	if !t.IsZero() && t.Year() < 2262 {
		ns = max(t.UnixNano(), 0)
	}
	if t.IsZero() {
		ns = 0
	}
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(ns))
	return binary.BigEndian.AppendUint64(k, id)
}

func validJobKind(k string) bool {
	return k == JobForward || k == JobRelay || k == JobDSN || k == JobMDN || k == JobExecuted
}

// checkJob bounds a job before any transaction.
func checkJob(j *Job) error {
	if !validJobKind(j.Kind) {
		return fmt.Errorf("%w: job kind %q", ErrInvalid, j.Kind)
	}
	if err := checkAccount(j.To); err != nil {
		return fmt.Errorf("job recipient: %w", err)
	}
	if j.From != "" {
		if err := checkAccount(j.From); err != nil {
			return fmt.Errorf("job sender: %w", err)
		}
	}
	if len(j.Raw) > MaxJobRawBytes {
		return fmt.Errorf("%w: job message of %d bytes", ErrTooLarge, len(j.Raw))
	}
	return nil
}

// putJob writes j (new or updated) and its due index entry; old is the
// stored version when updating (nil when new).
func putJob(w *wtx, j, old *Job) error {
	q, err := w.tx.CreateBucketIfNotExists(bucketQueue)
	if err != nil {
		return fmt.Errorf("store: queue bucket: %w", err)
	}
	due, err := w.tx.CreateBucketIfNotExists(bucketQueueDue)
	if err != nil {
		return fmt.Errorf("store: queue index: %w", err)
	}
	if old != nil {
		if err := due.Delete(dueKey(old.NextAttempt, old.ID)); err != nil {
			return fmt.Errorf("store: queue index: %w", err)
		}
	}
	j.LastError = cleanAuditField(j.LastError)
	j.Diagnostic = cleanAuditField(j.Diagnostic)
	j.Reason = cleanAuditField(j.Reason)
	j.Code = cleanAuditField(j.Code)
	j.RawSize = len(j.Raw)
	if err := q.Put(be64(j.ID), encodeJob(j)); err != nil {
		return fmt.Errorf("store: write job %d: %w", j.ID, err)
	}
	if err := due.Put(dueKey(j.NextAttempt, j.ID), []byte{}); err != nil {
		return fmt.Errorf("store: queue index: %w", err)
	}
	w.queued = true
	return nil
}

// putJobs adds new jobs; the caller has called w.mark().
func putJobs(w *wtx, jobs []Job) ([]uint64, error) {
	ids := make([]uint64, 0, len(jobs))
	q, err := w.tx.CreateBucketIfNotExists(bucketQueue)
	if err != nil {
		return nil, fmt.Errorf("store: queue bucket: %w", err)
	}
	for _, j := range jobs {
		if err := checkJob(&j); err != nil {
			return nil, err
		}
		id, err := q.NextSequence()
		if err != nil {
			return nil, fmt.Errorf("store: job id: %w", err)
		}
		j.ID = id
		if j.Created.IsZero() {
			j.Created = w.now
		}
		if j.NextAttempt.IsZero() {
			j.NextAttempt = j.Created
		}
		j.Raw = bytes.Clone(j.Raw)
		if err := putJob(w, &j, nil); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func getJob(tx *bbolt.Tx, id uint64, withRaw bool) (*Job, error) {
	q := tx.Bucket(bucketQueue)
	var v []byte
	if q != nil {
		v = q.Get(be64(id))
	}
	if v == nil {
		return nil, fmt.Errorf("store: job %d: %w", id, ErrNotFound)
	}
	j, err := decodeJob(id, v, withRaw)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return j, nil
}

func deleteJob(w *wtx, j *Job) error {
	if err := w.tx.Bucket(bucketQueue).Delete(be64(j.ID)); err != nil {
		return fmt.Errorf("store: delete job %d: %w", j.ID, err)
	}
	if err := w.tx.Bucket(bucketQueueDue).Delete(dueKey(j.NextAttempt, j.ID)); err != nil {
		return fmt.Errorf("store: queue index: %w", err)
	}
	return nil
}

// applyUpdate writes u's history events, audit events and new jobs, and
// returns the new jobs' ids; the caller has called w.mark().
func applyUpdate(w *wtx, u *QueueUpdate, audit []AuditEvent) ([]uint64, error) {
	for _, ev := range u.Events {
		if err := addRxEvents(w, ev.RecordID, ev.RxEvent); err != nil {
			return nil, err
		}
	}
	ids, err := putJobs(w, u.Jobs)
	if err != nil {
		return nil, err
	}
	return ids, appendAudit(w, audit)
}

func checkUpdate(u *QueueUpdate) ([]AuditEvent, int64, error) {
	for i := range u.Jobs {
		if err := checkJob(&u.Jobs[i]); err != nil {
			return nil, 0, err
		}
	}
	audit, size, err := normAuditEvents(u.Audit)
	if err != nil {
		return nil, 0, fmt.Errorf("queue audit: %w", err)
	}
	return audit, size + u.size(), nil
}

// QueueChanged is signalled (without blocking, coalesced) after a commit
// that added or changed jobs: the outbound worker waits on it.
func (s *Store) QueueChanged() <-chan struct{} { return s.queueSig }

// Enqueue adds jobs (with history and audit) in one durable transaction and
// returns their ids.
func (s *Store) Enqueue(ctx context.Context, u QueueUpdate) ([]uint64, error) {
	audit, size, err := checkUpdate(&u)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: enqueue: %w", err)
	}
	var ids []uint64
	err = s.write(size, func(w *wtx) error {
		w.mark()
		var err error
		ids, err = applyUpdate(w, &u, audit)
		return err
	})
	return ids, err
}

// Jobs lists every job in id order, without Raw.
func (s *Store) Jobs() ([]Job, error) {
	var out []Job
	err := s.view(func(tx *bbolt.Tx) error {
		out = nil
		q := tx.Bucket(bucketQueue)
		if q == nil {
			return nil
		}
		return q.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("store: queue: %w: key of %d bytes", errCorrupt, len(k))
			}
			j, err := decodeJob(binary.BigEndian.Uint64(k), v, false)
			if err != nil {
				return fmt.Errorf("store: %w", err)
			}
			out = append(out, *j)
			return nil
		})
	})
	return out, err
}

// Job returns one job with its Raw.
func (s *Store) Job(id uint64) (*Job, error) {
	var out *Job
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		out, err = getJob(tx, id, true)
		return err
	})
	return out, err
}

// DueJobs returns up to limit jobs whose next attempt is at or before now,
// earliest first, without Raw, and the next attempt time of the first job
// not returned (zero when there is none).
func (s *Store) DueJobs(now time.Time, limit int) (due []Job, next time.Time, err error) {
	err = s.view(func(tx *bbolt.Tx) error {
		due, next = nil, time.Time{}
		idx := tx.Bucket(bucketQueueDue)
		if idx == nil {
			return nil
		}
		c := idx.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) != 16 {
				return fmt.Errorf("store: queue index: %w: key of %d bytes", errCorrupt, len(k))
			}
			j, err := getJob(tx, binary.BigEndian.Uint64(k[8:]), false)
			if err != nil {
				return err
			}
			if j.NextAttempt.After(now) || len(due) >= limit {
				next = j.NextAttempt
				return nil
			}
			due = append(due, *j)
		}
		return nil
	})
	return due, next, err
}

// StartAttempt records an attempt before it is made: Attempts+1,
// LastAttempt now, NextAttempt retryAt (when the job runs again should this
// attempt never report back), and raw as the job's message when the job has
// none yet. It returns the job as stored, with Raw. ErrNotFound when the
// job is gone (dropped, or finished by another worker).
func (s *Store) StartAttempt(id uint64, retryAt time.Time, raw []byte) (*Job, error) {
	if len(raw) > MaxJobRawBytes {
		return nil, fmt.Errorf("%w: job message of %d bytes", ErrTooLarge, len(raw))
	}
	var out *Job
	err := s.write(int64(len(raw)+256), func(w *wtx) error {
		out = nil
		old, err := getJob(w.tx, id, true)
		if err != nil {
			return err
		}
		j := *old
		w.mark()
		j.Attempts++
		j.LastAttempt = w.now
		j.NextAttempt = retryAt
		if len(j.Raw) == 0 && len(raw) > 0 {
			j.Raw = bytes.Clone(raw)
		}
		if err := putJob(w, &j, old); err != nil {
			return err
		}
		out = &j
		return nil
	})
	return out, err
}

// JobFailed records a failed attempt that will be retried at retryAt, with
// u (e.g. a "delayed" DSN; delayed marks the job as having sent one).
func (s *Store) JobFailed(id uint64, retryAt time.Time, reason string, delayed bool, u QueueUpdate) error {
	audit, size, err := checkUpdate(&u)
	if err != nil {
		return err
	}
	return s.write(size+256, func(w *wtx) error {
		old, err := getJob(w.tx, id, true)
		if err != nil {
			return err
		}
		j := *old
		w.mark()
		j.NextAttempt = retryAt
		j.LastError = reason
		j.Delayed = j.Delayed || delayed
		if err := putJob(w, &j, old); err != nil {
			return err
		}
		_, err = applyUpdate(w, &u, audit)
		return err
	})
}

// JobDone removes a job that is finished (delivered, failed for good or
// dropped) and writes u in the same transaction. ErrNotFound when the job
// is gone already: u is then not written.
func (s *Store) JobDone(id uint64, u QueueUpdate) error {
	audit, size, err := checkUpdate(&u)
	if err != nil {
		return err
	}
	return s.write(size, func(w *wtx) error {
		j, err := getJob(w.tx, id, false)
		if err != nil {
			return err
		}
		w.mark()
		if err := deleteJob(w, j); err != nil {
			return err
		}
		_, err = applyUpdate(w, &u, audit)
		return err
	})
}

// RetryJob makes a job due now (admin `queue retry`).
func (s *Store) RetryJob(id uint64) (*Job, error) {
	var out *Job
	err := s.write(64, func(w *wtx) error {
		old, err := getJob(w.tx, id, true)
		if err != nil {
			return err
		}
		j := *old
		w.mark()
		j.NextAttempt = w.now
		if err := putJob(w, &j, old); err != nil {
			return err
		}
		j.Raw = nil
		out = &j
		return nil
	})
	return out, err
}

// ErrJobNoMessage is returned by DeliverJobLocal for a job without Raw.
var ErrJobNoMessage = errors.New("store: job has no rendered message")

// DeliverJobLocal files a job's message (a notification) into account's
// INBOX and removes the job, with u, in one transaction: a local
// notification is delivered exactly once. The message becomes a record of
// its own, in no index, owned by no account; it does not count against the
// account's quota, since a prescriber must not miss that a patient needs a
// paper copy because the mailbox is full.
func (s *Store) DeliverJobLocal(id uint64, account string, meta []byte, u QueueUpdate) (*Delivered, error) {
	if err := checkAccount(account); err != nil {
		return nil, err
	}
	if len(meta) > MaxMetaBytes {
		return nil, fmt.Errorf("%w: meta of %d bytes", ErrTooLarge, len(meta))
	}
	audit, size, err := checkUpdate(&u)
	if err != nil {
		return nil, err
	}
	var out *Delivered
	err = s.write(size+int64(MaxJobRawBytes/16+len(meta)), func(w *wtx) error {
		out = nil
		j, err := getJob(w.tx, id, true)
		if err != nil {
			return err
		}
		if len(j.Raw) == 0 {
			return fmt.Errorf("job %d: %w", id, ErrJobNoMessage)
		}
		w.mark()
		rid, err := putRecord(w.tx, &Record{
			Received: w.now, Size: int64(len(j.Raw)), Sender: j.From, Recipients: []string{account},
		}, j.Raw, meta)
		if err != nil {
			return err
		}
		ab, err := ensureAccount(w, account, false)
		if err != nil {
			return err
		}
		bx, err := openBox(ab, Inbox)
		if err != nil {
			return err
		}
		uid, err := bx.addEntry(&entryVal{RecordID: rid, InternalDate: w.now, Size: int64(len(j.Raw))})
		if err != nil {
			return err
		}
		if err := bx.save(); err != nil {
			return err
		}
		w.changed(account, Inbox)
		if err := deleteJob(w, j); err != nil {
			return err
		}
		if _, err := applyUpdate(w, &u, audit); err != nil {
			return err
		}
		out = &Delivered{Account: account, Mailbox: Inbox, UIDValidity: bx.info.UIDValidity, UID: uid}
		return nil
	})
	return out, err
}

// QueueStats summarises the queue for metrics.
type QueueStats struct {
	Jobs   int
	Oldest time.Time // Created of the oldest job; zero when empty
	ByKind map[string]int
}

// QueueStats counts jobs.
func (s *Store) QueueStats() (QueueStats, error) {
	jobs, err := s.Jobs()
	st := QueueStats{ByKind: map[string]int{}}
	if err != nil {
		return st, err
	}
	st.Jobs = len(jobs)
	for _, j := range jobs {
		st.ByKind[j.Kind]++
		if st.Oldest.IsZero() || j.Created.Before(st.Oldest) {
			st.Oldest = j.Created
		}
	}
	return st, nil
}

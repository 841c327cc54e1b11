package store

// Group commit.
//
// bbolt has one writer and each commit costs two fdatasyncs, so one
// transaction per message caps ingestion at the disk's sync rate. Every write
// operation of this package therefore goes through write(), which queues the
// operation and lets one goroutine at a time (the leader) run everything
// queued in a single transaction:
//
//   - A caller that finds no commit running becomes the leader at once and
//     commits alone: a lone client pays one commit, never a timer.
//   - Callers arriving while a commit runs queue up (followers). When the
//     leader's commit returns it hands leadership to the first queued call,
//     whose goroutine commits the whole queue in the next transaction, and
//     wakes its own followers. Under load the batch size follows the arrival
//     rate during one commit.
//   - Each caller returns only after the transaction holding its writes has
//     committed (fsync'd), with its own result.
//
// Isolation of failures: an operation refuses (ErrReplay, ErrNotFound…)
// before writing anything, by checking first and calling wtx.mark() only
// when it starts writing. A refusal before mark() leaves the transaction as
// it was, so the batch goes on. An error after mark() (or a panic) may leave
// partial writes: the transaction is rolled back, that operation gets its
// error, and the others run again in a fresh transaction, as bbolt's own
// DB.Batch does. Operations may thus run more than once: they keep their
// results in variables they reset on each run and have no side effect but
// their writes; watchers are notified from the leader after the commit.

import (
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// Bounds on one batch, so that a burst of large APPENDs cannot build one
// huge transaction.
const (
	maxBatchCalls = 512
	maxBatchBytes = 64 << 20
)

// call is one write operation waiting for a commit.
type call struct {
	op    func(w *wtx) error
	size  int64 // approximate bytes the op writes
	err   error
	wrote bool // the op's last run wrote
	// wake receives exactly one value: true when this call's goroutine
	// must lead the next batch, false when its batch is finished.
	wake chan bool
}

// wtx is the write transaction as operations see it.
type wtx struct {
	tx  *bbolt.Tx
	now time.Time // one clock reading per transaction

	wrote     bool     // the running op has started writing
	queued    bool     // an op added or changed outbound jobs
	opChanges []Change // changes made by the running op
	changes   []Change // changes made by ops that succeeded
}

// mark records that the running operation starts writing: from here an
// error can no longer be a clean refusal.
func (w *wtx) mark() { w.wrote = true }

// changed records a mailbox change to announce after commit.
func (w *wtx) changed(account, mailbox string) {
	w.opChanges = append(w.opChanges, Change{Account: account, Mailbox: mailbox})
}

// write runs op in a shared transaction and returns once that transaction
// committed (or op failed). size is the approximate number of bytes op
// writes, used to bound batches.
func (s *Store) write(size int64, op func(w *wtx) error) error {
	c := &call{op: op, size: size, wake: make(chan bool, 1)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.pending = append(s.pending, c)
	if s.leading {
		s.mu.Unlock()
		if lead := <-c.wake; !lead {
			return c.err
		}
	} else {
		s.leading = true
		s.mu.Unlock()
	}
	s.lead()
	return c.err
}

// lead commits the queued calls (the caller's own call is the first) and
// passes leadership on.
func (s *Store) lead() {
	s.mu.Lock()
	n, bytes := 0, int64(0)
	for n < len(s.pending) && n < maxBatchCalls {
		if n > 0 && bytes+s.pending[n].size > maxBatchBytes {
			break
		}
		bytes += s.pending[n].size
		n++
	}
	batch := make([]*call, n)
	copy(batch, s.pending)
	s.pending = append([]*call(nil), s.pending[n:]...)
	s.mu.Unlock()

	s.runBatch(batch)

	s.mu.Lock()
	var next *call
	if len(s.pending) > 0 {
		next = s.pending[0]
	} else {
		s.leading = false
		s.idle.Broadcast()
	}
	s.mu.Unlock()
	if next != nil {
		next.wake <- true
	}
	for _, c := range batch[1:] {
		c.wake <- false
	}
}

func (s *Store) runBatch(batch []*call) {
	for todo := batch; len(todo) > 0; {
		todo = s.tryBatch(todo)
	}
}

// tryBatch runs todo in one transaction and commits it. When an op fails
// after writing, it rolls back and returns the calls to run again.
func (s *Store) tryBatch(todo []*call) (again []*call) {
	tx, err := s.db.Begin(true)
	if err != nil {
		for _, c := range todo {
			c.err = fmt.Errorf("store: begin transaction: %w", err)
		}
		return nil
	}
	w := &wtx{tx: tx, now: s.now()}
	done := make([]*call, 0, len(todo)) // calls whose effects are in tx
	dirty := false
	for i, c := range todo {
		w.wrote = false
		w.opChanges = w.opChanges[:0]
		c.err = runOp(c.op, w)
		c.wrote = w.wrote
		if c.err == nil {
			done = append(done, c)
			dirty = dirty || w.wrote
			w.changes = append(w.changes, w.opChanges...)
			continue
		}
		if !w.wrote {
			continue // clean refusal: final, nothing of it in tx
		}
		_ = tx.Rollback()
		// The calls before i see the same state again, so they redo the
		// same work; c's error stands.
		again = append(done, todo[i+1:]...)
		return again
	}
	if !dirty {
		// Nothing written (duplicates, no-op updates): every answer rests
		// on committed state, which is durable since this writer lock was
		// taken after the previous commit synced.
		_ = tx.Rollback()
		return nil
	}
	id := tx.ID()
	if err := tx.Commit(); err != nil {
		for _, c := range done {
			c.err = fmt.Errorf("store: commit: %w", err)
		}
		return nil
	}
	s.durableTx.Store(int64(id))
	s.commits.Add(1)
	for _, c := range done {
		if c.wrote {
			s.writes.Add(1)
		}
	}
	s.notify(w.changes)
	if w.queued {
		select {
		case s.queueSig <- struct{}{}:
		default: // a signal is already pending: the worker will look anyway
		}
	}
	return nil
}

// runOp runs op, turning a panic into an error so that one bad operation
// cannot take the leader (and every follower waiting on it) down.
func runOp(op func(*wtx) error, w *wtx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			w.wrote = true // unknown state: roll back
			err = fmt.Errorf("store: operation panicked: %v", r)
		}
	}()
	return op(w)
}

// durable reports whether a read transaction saw only fsync'd commits.
func (s *Store) durable(tx *bbolt.Tx) bool {
	return int64(tx.ID()) <= s.durableTx.Load()
}

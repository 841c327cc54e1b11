package relay

import (
	"context"
	"log/slog"
	"sync"

	"mssrelay/store"
)

// auditLog writes the audit events of sessions (logins, refusals, fetches,
// flag changes) without making the session wait for an fsync: events are
// queued and a single writer appends whatever has queued up in one
// group-committed call. When the relay is idle each event is committed at
// once; under load many share a commit. A full queue blocks the emitting
// session (backpressure) rather than dropping an event.
//
// What this trades: an event emitted in the last few milliseconds before a
// crash can be lost. Acceptances are not written here: they commit in the
// filing's own transaction (store.Filing.Audit), before the 250.
type auditLog struct {
	store   *store.Store
	log     *slog.Logger
	ch      chan store.AuditEvent
	done    chan struct{} // closed by close: stop after flushing
	stopped chan struct{} // closed by run when the last event is written
	once    sync.Once
}

const auditQueue = 4096

func newAuditLog(st *store.Store, log *slog.Logger) *auditLog {
	a := &auditLog{store: st, log: log, ch: make(chan store.AuditEvent, auditQueue),
		done: make(chan struct{}), stopped: make(chan struct{})}
	go a.run()
	return a
}

// Record queues one event. Safe after close: events are then dropped with
// a log line (only shutdown stragglers can be late).
func (a *auditLog) Record(ev store.AuditEvent) {
	select {
	case <-a.done:
		a.log.Warn("audit event after shutdown, not recorded", "kind", ev.Kind, "actor", ev.Actor)
	case a.ch <- ev:
	}
}

func (a *auditLog) run() {
	defer close(a.stopped)
	batch := make([]store.AuditEvent, 0, store.MaxAuditEvents)
	for {
		select {
		case ev := <-a.ch:
			batch = append(batch[:0], ev)
		case <-a.done:
			a.flush(batch[:0])
			return
		}
	drain:
		for len(batch) < store.MaxAuditEvents {
			select {
			case ev := <-a.ch:
				batch = append(batch, ev)
			default:
				break drain
			}
		}
		a.write(batch)
	}
}

// flush writes what is still queued at close.
func (a *auditLog) flush(batch []store.AuditEvent) {
	for {
		select {
		case ev := <-a.ch:
			batch = append(batch, ev)
			if len(batch) == store.MaxAuditEvents {
				a.write(batch)
				batch = batch[:0]
			}
		default:
			if len(batch) > 0 {
				a.write(batch)
			}
			return
		}
	}
}

func (a *auditLog) write(batch []store.AuditEvent) {
	if err := a.store.Audit(context.Background(), batch...); err != nil {
		// The events stay in the structured log: nothing else can be done
		// with them once the store refuses a write.
		for _, ev := range batch {
			a.log.Error("audit event not recorded", "err", err, "kind", ev.Kind, "actor", ev.Actor,
				"remote", ev.Remote, "subject", ev.Subject, "outcome", ev.Outcome)
		}
	}
}

// close stops the writer after flushing the queue; call it before the
// store closes and after the services have stopped emitting.
func (a *auditLog) close() {
	a.once.Do(func() { close(a.done) })
	<-a.stopped
}

package relay

import (
	"log/slog"
	"sync"

	"mssrelay/store"
)

// fetchMarks writes "fetched" into the history of the prescriptions an
// executant's client read (store.MarkFetched) off the IMAP session's path:
// a FETCH never waits for a commit. The first fetch per account and record
// writes; repeats cost a read. Under a burst beyond the buffer, marks are
// dropped (and logged): the history says when a client first read a
// prescription, the audit trail (imap.fetch) keeps every fetch regardless.
type fetchMarks struct {
	st   *store.Store
	log  *slog.Logger
	ch   chan fetchMark
	done chan struct{}

	// mu orders record against close: a session that outlived the
	// shutdown drain may still FETCH, and must not send on a closed
	// channel.
	mu     sync.RWMutex
	closed bool
}

type fetchMark struct {
	account string
	ids     []uint64
}

func newFetchMarks(st *store.Store, log *slog.Logger) *fetchMarks {
	f := &fetchMarks{st: st, log: log, ch: make(chan fetchMark, 1024), done: make(chan struct{})}
	go f.run()
	return f
}

func (f *fetchMarks) run() {
	defer close(f.done)
	for m := range f.ch {
		if err := f.st.MarkFetched(m.account, m.ids); err != nil {
			f.log.Error("recording fetches in the history", "account", m.account, "err", err)
		}
	}
}

// record queues a mark without blocking.
func (f *fetchMarks) record(account string, ids []uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return
	}
	select {
	case f.ch <- fetchMark{account, ids}:
	default:
		f.log.Warn("fetch history queue full, mark dropped", "account", account, "records", len(ids))
	}
}

// close writes what is queued and stops; later marks are dropped.
func (f *fetchMarks) close() {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		close(f.ch)
	}
	f.mu.Unlock()
	<-f.done
}

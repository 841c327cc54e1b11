package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// ErrEmptyMailbox is returned by RunIMAPSessions when the mailbox holds no
// message to fetch.
var ErrEmptyMailbox = errors.New("the mailbox is empty: submit at least one message first")

// IMAPSessionsOptions describe a run of short IMAP sessions, each on a new
// connection: what a mail client polling its mailbox does.
type IMAPSessionsOptions struct {
	// IMAP says where and as whom; its Concurrency is the number of
	// workers, each running one session after another.
	IMAP IMAPOptions
	// Sessions is the total number of sessions to run.
	Sessions int
	// NoResume disables TLS session resumption (RFC 8446 §2.2); by default
	// each worker keeps its own session cache, as one real client would.
	NoResume bool
	// Progress, when set, is called about once a second with the number
	// of sessions finished.
	Progress func(done, total int)
}

// IMAPSessionsReport is the outcome of RunIMAPSessions.
type IMAPSessionsReport struct {
	Target      string `json:"target"`
	Mailbox     string `json:"mailbox"`
	Concurrency int    `json:"concurrency"`
	Sessions    int    `json:"sessions"`
	// Completed sessions ran every step and fetched the whole message;
	// Failed ones stopped at a step named in Errors; NotRun were left when
	// the run was cancelled or timed out.
	Completed int            `json:"completed"`
	Failed    int            `json:"failed"`
	NotRun    int            `json:"not_run"`
	Errors    map[string]int `json:"errors"`
	// UID and Size identify the message every session fetches.
	UID  uint32 `json:"uid"`
	Size int64  `json:"message_bytes"`
	// Bytes counts the message bytes fetched in all.
	Bytes   int64 `json:"bytes"`
	Resumed int   `json:"tls_resumed"`
	// Session is the latency of one whole session: connect, TLS, LOGIN,
	// EXAMINE, UID FETCH, LOGOUT answered. Completed sessions only.
	Session  Latency       `json:"session"`
	Duration time.Duration `json:"-"`
	Seconds  float64       `json:"seconds"`
	Rate     float64       `json:"sessions_per_second"`
}

// RunIMAPSessions runs o.Sessions IMAP sessions with o.IMAP.Concurrency
// workers. Each session opens a new connection (implicit TLS, RFC 8314,
// when o.IMAP.TLS is set), logs in (RFC 3501 §6.2.3), examines the
// mailbox read-only (§6.3.2), fetches one message's whole body with UID
// FETCH BODY.PEEK[] (§6.4.8, §6.4.5: PEEK leaves \Seen alone, so the run
// changes nothing) and logs out (§6.1.3). The message is the mailbox's
// first, found before the clock starts; ErrEmptyMailbox if there is none.
//
// All sessions log in as one account: the relay's
// limits.max_imap_sessions_per_account must exceed the concurrency (a
// logged-out session may be released by the server a moment after its
// LOGOUT is answered), and its limits.max_connection_rate_per_ip must
// allow the connection rate.
func RunIMAPSessions(ctx context.Context, o IMAPSessionsOptions) (*IMAPSessionsReport, error) {
	switch {
	case o.IMAP.Addr == "":
		return nil, errors.New("imap sessions: no server address")
	case o.Sessions <= 0:
		return nil, errors.New("imap sessions: the number of sessions must be positive")
	}
	if o.IMAP.Mailbox == "" {
		o.IMAP.Mailbox = "INBOX"
	}
	if o.IMAP.Concurrency <= 0 {
		o.IMAP.Concurrency = 1
	}
	if o.IMAP.Timeout <= 0 {
		o.IMAP.Timeout = 30 * time.Second
	}
	uid, size, err := firstMessage(ctx, o.IMAP)
	if err != nil {
		return nil, fmt.Errorf("imap sessions: %w", err)
	}
	workers := min(o.IMAP.Concurrency, o.Sessions)
	r := &IMAPSessionsReport{Target: o.IMAP.Addr, Mailbox: o.IMAP.Mailbox, Concurrency: workers,
		Sessions: o.Sessions, Errors: map[string]int{}, UID: uint32(uid), Size: size}

	// Sessions are handed out by a shared counter so that a slow worker
	// does not leave the others idle at the end.
	var next, done atomic.Int64
	type result struct {
		latencies []time.Duration
		errors    map[string]int
		bytes     int64
		resumed   int
	}
	results := make([]result, workers)
	stopProgress := func() {}
	if o.Progress != nil {
		stopProgress = sessionsProgress(o.Progress, o.Sessions, &done)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[w]
			res.errors = map[string]int{}
			so := o.IMAP
			var resumed bool // of the worker's latest handshake
			if so.TLS != nil {
				so.TLS = so.TLS.Clone()
				// imapclient does not expose its connection: the
				// handshake reports whether it resumed.
				verify := so.TLS.VerifyConnection
				so.TLS.VerifyConnection = func(cs tls.ConnectionState) error {
					resumed = cs.DidResume
					if verify != nil {
						return verify(cs)
					}
					return nil
				}
				if o.NoResume {
					so.TLS.SessionTicketsDisabled = true
				} else {
					// One cache per worker: a worker is one client, which
					// resumes its own earlier session (RFC 8446 §2.2).
					so.TLS.ClientSessionCache = tls.NewLRUClientSessionCache(4)
				}
			}
			for ctx.Err() == nil && next.Add(1) <= int64(o.Sessions) {
				began := time.Now()
				resumed = false
				n, step, err := imapSession(ctx, so, uid, size)
				res.bytes += n
				if resumed {
					res.resumed++
				}
				if err != nil {
					if ctx.Err() != nil {
						// Cut short by the run's end, not the server's
						// doing: counted as not run.
						return
					}
					res.errors[errorClass(step, err)]++
				} else {
					res.latencies = append(res.latencies, time.Since(began))
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	r.Duration = time.Since(start)
	stopProgress()

	var latencies []time.Duration
	for _, res := range results {
		latencies = append(latencies, res.latencies...)
		r.Bytes += res.bytes
		r.Resumed += res.resumed
		for k, v := range res.errors {
			r.Errors[k] += v
			r.Failed += v
		}
	}
	r.Completed = len(latencies)
	r.NotRun = o.Sessions - r.Completed - r.Failed
	r.Session = summarise(latencies)
	r.Seconds = r.Duration.Seconds()
	if r.Seconds > 0 {
		r.Rate = float64(r.Completed) / r.Seconds
	}
	return r, nil
}

// firstMessage finds the UID and size (RFC822.SIZE) of the mailbox's first
// message, with one session of its own.
func firstMessage(ctx context.Context, o IMAPOptions) (imap.UID, int64, error) {
	ic, sel, _, err := imapLogin(ctx, o, true)
	if err != nil {
		return 0, 0, err
	}
	defer ic.close()
	if sel.NumMessages == 0 {
		return 0, 0, fmt.Errorf("%s of %s: %w", o.Mailbox, o.User, ErrEmptyMailbox)
	}
	bound := time.AfterFunc(o.Timeout, func() { ic.c.Close() })
	defer bound.Stop()
	msgs, err := ic.c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true, RFC822Size: true}).Collect()
	if err != nil {
		return 0, 0, fmt.Errorf("FETCH 1 (UID RFC822.SIZE): %w", err)
	}
	if len(msgs) != 1 || msgs[0].UID == 0 {
		return 0, 0, fmt.Errorf("FETCH 1 (UID RFC822.SIZE): %d messages in the answer, want 1 with its UID", len(msgs))
	}
	return msgs[0].UID, msgs[0].RFC822Size, nil
}

// imapSession runs one session on a new connection. It returns the bytes
// of the message read and, on failure, the step that failed, for the
// error's class.
func imapSession(ctx context.Context, o IMAPOptions, uid imap.UID, size int64) (n int64, step string, err error) {
	opts := &imapclient.Options{TLSConfig: o.TLS, Dialer: &net.Dialer{Timeout: o.Timeout}}
	var c *imapclient.Client
	switch {
	case o.TLS != nil && o.StartTLS:
		c, err = imapclient.DialStartTLS(o.Addr, opts)
	case o.TLS != nil:
		c, err = imapclient.DialTLS(o.Addr, opts)
	default:
		c, err = imapclient.DialInsecure(o.Addr, opts)
	}
	if err != nil {
		return 0, "connect", err
	}
	defer c.Close()
	// imapclient has no context: closing the client ends whatever command
	// waits, whether the run was cancelled or the session overran.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	bound := time.AfterFunc(o.Timeout, func() { c.Close() })
	defer bound.Stop()

	if err := c.Login(o.User, o.Password).Wait(); err != nil {
		return 0, "LOGIN", err
	}
	if _, err := c.Select(o.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		return 0, "EXAMINE", err
	}
	ic := &imapConn{c: c, stop: stop}
	got, n, err := ic.fetch(uid, uid)
	switch {
	case err != nil:
		return n, "FETCH", err
	case got != 1:
		return n, "FETCH", fmt.Errorf("UID %d: no body in the answer (expunged?)", uid)
	case n != size:
		return n, "FETCH", fmt.Errorf("UID %d: %d bytes read, RFC822.SIZE said %d", uid, n, size)
	}
	if err := c.Logout().Wait(); err != nil {
		return n, "LOGOUT", err
	}
	return n, "", nil
}

// sessionsProgress calls f every second until stopped.
func sessionsProgress(f func(done, total int), total int, done *atomic.Int64) (stop func()) {
	t := time.NewTicker(time.Second)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-t.C:
				f(int(done.Load()), total)
			case <-quit:
				return
			}
		}
	}()
	return func() {
		t.Stop()
		close(quit)
		wg.Wait()
	}
}

// WriteText prints the report for people.
func (r *IMAPSessionsReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }
	p("IMAP sessions %s: %d workers, each session a new connection: LOGIN, EXAMINE %s, UID FETCH %d BODY.PEEK[] (%.1f KiB), LOGOUT\n",
		r.Target, r.Concurrency, r.Mailbox, r.UID, float64(r.Size)/1024)
	p("  completed\t%d of %d in %.2f s: %.1f sessions/s\n", r.Completed, r.Sessions, r.Seconds, r.Rate)
	p("  failed\t%d\n", r.Failed)
	for _, k := range sortedKeys(r.Errors) {
		p("    %s\t%d\n", k, r.Errors[k])
	}
	if r.NotRun > 0 {
		p("  not run (cancelled or timed out)\t%d\n", r.NotRun)
	}
	p("  TLS sessions resumed\t%d\n", r.Resumed)
	if l := r.Session; l.Count > 0 {
		p("\n  latency (ms)\tp50\tp95\tp99\tmax\tmean\tcount\n")
		p("  session\t%s\t%s\t%s\t%s\t%s\t%d\n", fmtMs(l.P50), fmtMs(l.P95), fmtMs(l.P99), fmtMs(l.Max), fmtMs(l.Mean), l.Count)
	}
	return tw.Flush()
}

package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// IdleOptions say how many idle sessions to open against a relay, how long
// to hold them, and how to read the relay's memory meanwhile. An idle
// session is what a mail client leaves open all day: on IMAP, logged in
// with INBOX selected and (by default) in IDLE (RFC 2177); on SMTP,
// connected, TLS set up and authenticated, with nothing to send.
type IdleOptions struct {
	// IMAP says where and as whom to log in; Concurrency is not used.
	// Every session logs in as IMAP.User: the relay must allow that many
	// (limits.max_imap_sessions_per_account).
	IMAP         IMAPOptions
	IMAPSessions int
	// NoIDLE leaves IMAP sessions selected without IDLE; they then send
	// NOOP every KeepAlive, as a client that polls does.
	NoIDLE bool

	// SMTP says where and as whom (Concurrency, PerConn, Rate and
	// Progress are not used).
	SMTP         SMTPOptions
	SMTPSessions int

	// Dialers is how many sessions are being set up at once (default 16):
	// 1,000 simultaneous TLS handshakes would measure a connection storm,
	// not idle clients.
	Dialers int
	// Hold is how long every session stays open once all are set up,
	// before memory is read: the relay's garbage from the handshakes gets
	// collected and the figure settles. 0 reads at once.
	Hold time.Duration
	// KeepAlive is how often a held SMTP session (and an IMAP session
	// without IDLE) sends NOOP, to stay within the server's read timeout
	// (limits.read_timeout, 60 s by default; RFC 5321 §4.5.3.2.7 lets a
	// server drop a client silent for 5 minutes). Default 30 s. IMAP IDLE
	// needs none: the client re-issues IDLE every 28 minutes (RFC 2177
	// §3: before the 30-minute autologout of RFC 3501 §5.4).
	KeepAlive time.Duration

	// Measure, when set, reads the relay's memory: once before any
	// session is opened (the baseline) and once after Hold, while every
	// session is still open.
	Measure func(ctx context.Context) (*Memory, error)
	// Progress, when set, is called about every 2 s while sessions are
	// being opened, with how many are up so far.
	Progress func(imapOpen, smtpOpen int)
}

// IdleReport is the outcome of an idle run.
type IdleReport struct {
	IMAPTarget    string `json:"imap_target,omitempty"`
	IMAPUser      string `json:"imap_user,omitempty"`
	IMAPState     string `json:"imap_state,omitempty"` // what each IMAP session did, e.g. "LOGIN+SELECT INBOX+IDLE"
	IMAPRequested int    `json:"imap_requested"`
	// IMAPOpen counts sessions that logged in, selected the mailbox (and
	// got the server's continuation for IDLE); IMAPAlive those still
	// connected when memory was read.
	IMAPOpen  int `json:"imap_open"`
	IMAPAlive int `json:"imap_alive"`
	// IMAPMessages is what SELECT reported the mailbox held (the first
	// session's answer): proof the sessions were in the selected state.
	IMAPMessages  int     `json:"imap_mailbox_messages"`
	IMAPSetup     Latency `json:"imap_setup"` // connect + TLS + LOGIN + SELECT (+ IDLE), per session
	SMTPTarget    string  `json:"smtp_target,omitempty"`
	SMTPUser      string  `json:"smtp_user,omitempty"`
	SMTPSecurity  string  `json:"smtp_security,omitempty"`
	SMTPRequested int     `json:"smtp_requested"`
	// SMTPOpen counts sessions that completed EHLO, TLS and AUTH;
	// SMTPAlive those that answered NOOP after the hold.
	SMTPOpen  int     `json:"smtp_open"`
	SMTPAlive int     `json:"smtp_alive"`
	SMTPSetup Latency `json:"smtp_setup"`
	// KeepAlives counts NOOPs sent while holding.
	KeepAlives int `json:"keepalives"`
	// Errors counts sessions that could not be set up, or were lost while
	// held, by protocol, step and kind.
	Errors map[string]int `json:"errors"`

	OpenDuration time.Duration `json:"-"`
	OpenSeconds  float64       `json:"open_seconds"` // to set every session up
	HeldDuration time.Duration `json:"-"`
	HeldSeconds  float64       `json:"held_seconds"` // from the last set-up to the reading

	// Before is the relay's memory before any session was opened, During
	// with every session open. MeasureError says why During is missing.
	Before       *Memory `json:"memory_before,omitempty"`
	During       *Memory `json:"memory_during,omitempty"`
	MeasureError string  `json:"measure_error,omitempty"`
}

// Sessions is the number of sessions that were set up.
func (r *IdleReport) Sessions() int { return r.IMAPOpen + r.SMTPOpen }

// PerSession is the RSS growth divided by the sessions open, in bytes; 0
// without both readings.
func (r *IdleReport) PerSession() int64 {
	if r.Before == nil || r.During == nil || r.Sessions() == 0 {
		return 0
	}
	return (r.During.RSS - r.Before.RSS) / int64(r.Sessions())
}

// idleIMAP is one held IMAP session.
type idleIMAP struct {
	ic   *imapConn
	idle *imapclient.IdleCommand // nil with NoIDLE
}

// RunIdle opens the sessions, holds them, reads the memory and closes them
// all (LOGOUT, QUIT). It returns an error only when the run cannot start
// (no target, or the baseline reading fails); sessions that cannot be set
// up are counted in the report by reason. When ctx ends, every connection
// is closed.
func RunIdle(ctx context.Context, o IdleOptions) (*IdleReport, error) {
	switch {
	case o.IMAPSessions < 0 || o.SMTPSessions < 0:
		return nil, errors.New("idle run: session counts must be 0 or more")
	case o.IMAPSessions == 0 && o.SMTPSessions == 0:
		return nil, errors.New("idle run: no session to open")
	case o.IMAPSessions > 0 && o.IMAP.Addr == "":
		return nil, errors.New("idle run: no IMAP address")
	case o.SMTPSessions > 0 && o.SMTP.Addr == "":
		return nil, errors.New("idle run: no SMTP address")
	case o.SMTPSessions > 0 && o.SMTP.ImplicitTLS && o.SMTP.TLS == nil:
		return nil, errors.New("idle run: implicit TLS needs a TLS configuration")
	case o.Hold < 0:
		return nil, errors.New("idle run: the hold time must be 0 or more")
	}
	if o.Dialers <= 0 {
		o.Dialers = 16
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.IMAP.Mailbox == "" {
		o.IMAP.Mailbox = "INBOX"
	}
	if o.IMAP.Timeout <= 0 {
		o.IMAP.Timeout = 30 * time.Second
	}
	if o.SMTP.Timeout <= 0 {
		o.SMTP.Timeout = 30 * time.Second
	}
	if o.SMTP.TLS != nil {
		// One session cache for the run, as RunSMTP does: returning
		// clients resume, which is what a mail client does all day.
		o.SMTP.TLS = o.SMTP.TLS.Clone()
		if o.SMTP.NoResume {
			o.SMTP.TLS.SessionTicketsDisabled = true
			o.SMTP.TLS.ClientSessionCache = nil
		} else if o.SMTP.TLS.ClientSessionCache == nil {
			o.SMTP.TLS.ClientSessionCache = tls.NewLRUClientSessionCache(64)
		}
	}

	r := &IdleReport{IMAPRequested: o.IMAPSessions, SMTPRequested: o.SMTPSessions, Errors: map[string]int{}}
	if o.IMAPSessions > 0 {
		r.IMAPTarget, r.IMAPUser = o.IMAP.Addr, o.IMAP.User
		r.IMAPState = "LOGIN+SELECT " + o.IMAP.Mailbox
		if !o.NoIDLE {
			r.IMAPState += "+IDLE"
		}
	}
	if o.SMTPSessions > 0 {
		r.SMTPTarget, r.SMTPUser, r.SMTPSecurity = o.SMTP.Addr, o.SMTP.User, security(o.SMTP)
	}
	if o.Measure != nil {
		before, err := o.Measure(ctx)
		if err != nil {
			return nil, fmt.Errorf("idle run: reading the memory before opening sessions: %w", err)
		}
		r.Before = before
	}

	// Every connection watches ctx (imapLogin, dial): cancelling it closes
	// them all, whatever they are doing.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		mu         sync.Mutex // guards the slices and maps below, filled by the dialers
		imaps      []*idleIMAP
		smtps      []*client
		imapSetup  []time.Duration
		smtpSetup  []time.Duration
		imapOpened atomic.Int64
		smtpOpened atomic.Int64
	)
	countErr := func(class string) {
		mu.Lock()
		r.Errors[class]++
		mu.Unlock()
	}
	// Jobs: true opens an IMAP session, false an SMTP one, interleaved so
	// that both protocols are being set up from the start.
	jobs := make(chan bool, o.IMAPSessions+o.SMTPSessions)
	for i, j := 0, 0; i < o.IMAPSessions || j < o.SMTPSessions; {
		if i < o.IMAPSessions {
			jobs <- true
			i++
		}
		if j < o.SMTPSessions {
			jobs <- false
			j++
		}
	}
	close(jobs)

	start := time.Now()
	stopProgress := idleProgress(o.Progress, &imapOpened, &smtpOpened)
	var wg sync.WaitGroup
	for range min(o.Dialers, o.IMAPSessions+o.SMTPSessions) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for isIMAP := range jobs {
				if ctx.Err() != nil {
					return
				}
				if isIMAP {
					s, sel, d, err := openIdleIMAP(ctx, o.IMAP, !o.NoIDLE)
					if err != nil {
						countErr(errorClass("IMAP", err))
						continue
					}
					mu.Lock()
					if len(imaps) == 0 {
						r.IMAPMessages = int(sel)
					}
					imaps = append(imaps, s)
					imapSetup = append(imapSetup, d)
					mu.Unlock()
					imapOpened.Add(1)
					continue
				}
				began := time.Now()
				c, err := dial(ctx, &o.SMTP)
				if err != nil {
					countErr(errorClass("SMTP", err))
					continue
				}
				mu.Lock()
				smtps = append(smtps, c)
				smtpSetup = append(smtpSetup, time.Since(began))
				mu.Unlock()
				smtpOpened.Add(1)
			}
		}()
	}
	wg.Wait()
	stopProgress()
	r.OpenDuration = time.Since(start)
	r.OpenSeconds = r.OpenDuration.Seconds()
	r.IMAPOpen, r.SMTPOpen = len(imaps), len(smtps)
	r.IMAPSetup, r.SMTPSetup = summarise(imapSetup), summarise(smtpSetup)

	// Hold: keep-alives at each tick, until Hold has passed.
	held := time.Now()
	var pollers []*imapConn
	if o.NoIDLE {
		for _, s := range imaps {
			pollers = append(pollers, s.ic)
		}
	}
	lost := map[any]bool{} // sessions that failed a keep-alive
	if o.Hold > 0 && len(imaps)+len(smtps) > 0 {
		tick := time.NewTicker(o.KeepAlive)
		deadline := time.NewTimer(o.Hold)
	hold:
		for {
			select {
			case <-ctx.Done():
				break hold
			case <-deadline.C:
				break hold
			case <-tick.C:
				r.KeepAlives += keepAlive(smtps, pollers, lost, r.Errors, o.Dialers)
			}
		}
		tick.Stop()
		deadline.Stop()
	}
	r.HeldDuration = time.Since(held)
	r.HeldSeconds = r.HeldDuration.Seconds()
	if ctx.Err() != nil {
		// Interrupted: every connection is closing; there is nothing
		// left to measure.
		r.MeasureError = "interrupted before the sessions were measured: " + context.Cause(ctx).Error()
		closeAll(imaps, smtps, o.Dialers)
		return r, nil
	}

	// Which sessions survived: an IMAP client in IDLE cannot send a
	// command, but its reader closes the client when the server hangs up;
	// an SMTP session must answer one more NOOP.
	for _, s := range imaps {
		select {
		case <-s.ic.c.Closed():
			if !lost[s.ic] {
				r.Errors["IMAP: lost while held"]++
			}
		default:
			if !lost[s.ic] {
				r.IMAPAlive++
			}
		}
	}
	r.KeepAlives += keepAlive(smtps, nil, lost, r.Errors, o.Dialers)
	for _, c := range smtps {
		if !lost[c] {
			r.SMTPAlive++
		}
	}

	if o.Measure != nil {
		during, err := o.Measure(ctx)
		if err != nil {
			r.MeasureError = err.Error()
		} else {
			r.During = during
		}
	}

	closeAll(imaps, smtps, o.Dialers)
	return r, nil
}

// openIdleIMAP logs in, selects the mailbox read-write, as a mail client
// that shows the INBOX does, and enters IDLE when idle is set. It returns
// the number of messages SELECT reported.
func openIdleIMAP(ctx context.Context, o IMAPOptions, idle bool) (*idleIMAP, uint32, time.Duration, error) {
	began := time.Now()
	ic, sel, _, err := imapLogin(ctx, o, false)
	if err != nil {
		return nil, 0, 0, err
	}
	s := &idleIMAP{ic: ic}
	if idle {
		// Idle blocks until the server's continuation ("+ idling"); bound
		// it like the login, by closing the client.
		bound := time.AfterFunc(o.Timeout, func() { ic.c.Close() })
		s.idle, err = ic.c.Idle()
		if !bound.Stop() && err == nil {
			err = fmt.Errorf("no answer within %v", o.Timeout)
		}
		if err != nil {
			ic.close()
			return nil, 0, 0, fmt.Errorf("IDLE: %w", err)
		}
	}
	return s, sel.NumMessages, time.Since(began), nil
}

// keepAlive sends NOOP on every session not yet lost, dialers at a time,
// and marks those that fail as lost (counted in errs once). It returns
// the number of NOOPs sent.
func keepAlive(smtps []*client, imaps []*imapConn, lost map[any]bool, errs map[string]int, dialers int) int {
	type outcome struct {
		key   any
		class string
	}
	var (
		mu       sync.Mutex
		failures []outcome
		sent     atomic.Int64
		wg       sync.WaitGroup
		sem      = make(chan struct{}, dialers)
	)
	do := func(key any, noop func() error, proto string) {
		if lost[key] {
			return
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			sent.Add(1)
			if err := noop(); err != nil {
				mu.Lock()
				failures = append(failures, outcome{key, errorClass(proto+" NOOP", err)})
				mu.Unlock()
			}
		}()
	}
	for _, c := range smtps {
		do(c, c.noop, "SMTP")
	}
	for _, ic := range imaps {
		do(ic, func() error { return ic.c.Noop().Wait() }, "IMAP")
	}
	wg.Wait()
	for _, f := range failures {
		lost[f.key] = true
		errs[f.class]++
	}
	return int(sent.Load())
}

// closeAll ends every session politely (IDLE's DONE then LOGOUT, RFC 3501
// §6.1.3; QUIT, RFC 5321 §4.1.1.10), dialers at a time.
func closeAll(imaps []*idleIMAP, smtps []*client, dialers int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, dialers)
	run := func(f func()) {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f()
		}()
	}
	for _, s := range imaps {
		run(func() {
			if s.idle != nil {
				// DONE; the tagged OK follows. A session the server already
				// closed fails here, and LOGOUT below closes the socket.
				if s.idle.Close() == nil {
					_ = s.idle.Wait()
				}
			}
			s.ic.close()
		})
	}
	for _, c := range smtps {
		run(c.quit)
	}
	wg.Wait()
}

func idleProgress(f func(imapOpen, smtpOpen int), imapOpened, smtpOpened *atomic.Int64) (stop func()) {
	if f == nil {
		return func() {}
	}
	t := time.NewTicker(2 * time.Second)
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-t.C:
				f(int(imapOpened.Load()), int(smtpOpened.Load()))
			case <-quit:
				return
			}
		}
	}()
	return func() {
		t.Stop()
		close(quit)
		<-finished
	}
}

// WriteText prints the report for people: what was held, whether all of
// it, and the memory with every session open.
func (r *IdleReport) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	if r.IMAPRequested > 0 {
		p("IMAP  %s as %s: %d of %d sessions open (%s), %d still connected after %.0f s held\n",
			r.IMAPTarget, r.IMAPUser, r.IMAPOpen, r.IMAPRequested, r.IMAPState, r.IMAPAlive, r.HeldSeconds)
		if r.IMAPSetup.Count > 0 {
			p("      set-up p50 %s ms, p99 %s ms, max %s ms; mailbox holds %d messages\n",
				fmtMs(r.IMAPSetup.P50), fmtMs(r.IMAPSetup.P99), fmtMs(r.IMAPSetup.Max), r.IMAPMessages)
		}
	}
	if r.SMTPRequested > 0 {
		p("SMTP  %s as %s: %d of %d sessions open (%s, then idle), %d answered NOOP after %.0f s held\n",
			r.SMTPTarget, r.SMTPUser, r.SMTPOpen, r.SMTPRequested, r.SMTPSecurity, r.SMTPAlive, r.HeldSeconds)
		if r.SMTPSetup.Count > 0 {
			p("      set-up p50 %s ms, p99 %s ms, max %s ms\n",
				fmtMs(r.SMTPSetup.P50), fmtMs(r.SMTPSetup.P99), fmtMs(r.SMTPSetup.Max))
		}
	}
	p("opened in %.1f s; %d keep-alive NOOPs while held\n", r.OpenSeconds, r.KeepAlives)
	for _, k := range sortedKeys(r.Errors) {
		p("  error  %5d  %s\n", r.Errors[k], k)
	}
	if r.Before != nil {
		p("relay before: %s\n", describeMemory(r.Before))
	}
	if r.During != nil {
		p("relay with %d sessions open: %s\n", r.Sessions(), describeMemory(r.During))
		if r.Before != nil && r.Sessions() > 0 {
			p("growth: %+.1f MiB RSS, about %.1f KiB per session\n",
				mib(r.During.RSS-r.Before.RSS), float64(r.PerSession())/1024)
		}
	}
	if r.MeasureError != "" {
		p("memory not read with the sessions open: %s\n", r.MeasureError)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func describeMemory(m *Memory) string {
	s := fmt.Sprintf("RSS %.1f MiB", mib(m.RSS))
	if m.AnonRSS > 0 || m.FileRSS > 0 {
		s += fmt.Sprintf(" (anonymous %.1f, file-backed %.1f)", mib(m.AnonRSS), mib(m.FileRSS))
	}
	if m.PeakRSS > 0 {
		s += fmt.Sprintf(", peak %.1f MiB", mib(m.PeakRSS))
	}
	if m.HeapInuse > 0 {
		s += fmt.Sprintf(", Go heap in use %.1f MiB (objects %.1f MiB, garbage included), Go runtime total %.1f MiB",
			mib(m.HeapInuse), mib(m.HeapAlloc), mib(m.GoSys))
	}
	if m.Goroutines > 0 {
		s += fmt.Sprintf(", %d goroutines", m.Goroutines)
	}
	if m.ServerIMAPSessions != nil && m.ServerSMTPSessions != nil {
		s += fmt.Sprintf("; the relay counts %d IMAP and %d SMTP sessions", *m.ServerIMAPSessions, *m.ServerSMTPSessions)
	}
	return s + " [" + m.Source + "]"
}

package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// SMTPOptions say where and how to submit a batch.
type SMTPOptions struct {
	Addr string // host:port
	// TLS secures each connection: with STARTTLS (RFC 3207) unless
	// ImplicitTLS (RFC 8314). nil: plain SMTP, no TLS at all.
	TLS         *tls.Config
	ImplicitTLS bool
	// NoResume disables TLS session resumption. By default connections of
	// a run share a client session cache, as a real mail client does.
	NoResume bool
	// NoPipelining sends MAIL, RCPT and DATA one at a time, waiting for
	// each reply, even when the server offers PIPELINING (RFC 2920), as
	// simple clients (most practice software, scripts) do.
	NoPipelining bool
	// User and Password authenticate with AUTH PLAIN (RFC 4616) on every
	// connection; an empty User skips AUTH.
	User, Password string

	Concurrency int // clients sending at once; default 1
	// PerConn is how many messages a client sends on one connection before
	// it says QUIT and connects again: 0 keeps one connection per client
	// for the whole run, 1 pays connect + TLS + AUTH for every message.
	PerConn int
	// Rate, when positive, runs an open loop: message i is due at
	// start + i/Rate whatever the server does, the clients take due
	// messages in order, and the response time is measured from the due
	// time, so a server that stalls is charged for the messages that
	// waited (no coordinated omission). Zero runs a closed loop: each
	// client sends its next message as soon as the previous one is answered.
	Rate float64

	Timeout time.Duration // per SMTP command and per connection attempt; default 30 s
	// Progress, when set, is called about every ProgressEvery (default 2 s)
	// with the number of messages answered so far.
	Progress      func(done, total int)
	ProgressEvery time.Duration
}

// Report is the outcome of an SMTP run.
type Report struct {
	Target      string  `json:"target"`
	Security    string  `json:"security"` // e.g. "STARTTLS+AUTH"
	Concurrency int     `json:"concurrency"`
	PerConn     int     `json:"per_conn"`
	OfferedRate float64 `json:"offered_rate,omitempty"` // msgs/s, open loop only

	Messages int   `json:"messages"` // in the batch
	Bytes    int64 `json:"bytes"`    // of the whole batch
	MinSize  int   `json:"min_size"`
	MaxSize  int   `json:"max_size"`

	Accepted      int   `json:"accepted"`
	AcceptedBytes int64 `json:"accepted_bytes"`
	// Refused counts SMTP refusals by reply and enhanced code ("451 4.7.5"),
	// at whatever step they came (MAIL, RCPT, DATA or the final reply);
	// RefusalText keeps one reply text for each.
	Refused     map[string]int    `json:"refused"`
	RefusalText map[string]string `json:"refusal_text,omitempty"`
	// Errors counts failures without an SMTP reply (refused or reset
	// connections, timeouts, TLS failures) by step and kind.
	Errors  map[string]int `json:"errors"`
	NotSent int            `json:"not_sent"` // left when the context ended

	// Pipelined counts transactions sent with MAIL, RCPT and DATA in one
	// write (RFC 2920): the server offered PIPELINING and the run allowed it.
	Pipelined int `json:"pipelined"`

	Connections int `json:"connections"` // successful connection set-ups
	Resumed     int `json:"tls_resumed"` // of which TLS sessions resumed

	Duration   time.Duration `json:"-"`
	Seconds    float64       `json:"seconds"`
	Throughput float64       `json:"accepted_per_second"`
	MiBps      float64       `json:"accepted_mib_per_second"`

	// Connect is TCP connect + TLS + EHLO + AUTH, per connection.
	Connect Latency `json:"connect"`
	// Data runs from sending the DATA command to reading the final reply
	// (the relay's whole scan → verify → file path is in it); Transaction
	// adds the MAIL and RCPT round trips before it. Accepted messages only.
	Data        Latency `json:"data"`
	Transaction Latency `json:"transaction"`
	// Response is the open-loop latency: from the time the message was due
	// to its final reply, queueing behind busy clients included.
	Response *Latency `json:"response,omitempty"`
	// BySigner breaks accepted messages and DATA latency down by key type.
	BySigner map[string]SignerStats `json:"by_signer,omitempty"`
}

// SignerStats is one signer's share of a run.
type SignerStats struct {
	Accepted int     `json:"accepted"`
	Data     Latency `json:"data"`
}

// job is one message to send; due is zero in a closed loop.
type job struct {
	i   int
	due time.Time
}

// tally is what one client saw; tallies are merged when the run ends, so
// the hot path takes no lock.
type tally struct {
	accepted, attempted int
	acceptedBytes       int64
	refused             map[string]int
	refusalText         map[string]string
	errors              map[string]int
	connections         int
	resumed             int
	pipelined           int
	connect, data, txn  []time.Duration
	response            []time.Duration
	bySigner            map[string][]time.Duration
	last                time.Time
}

func newTally() *tally {
	return &tally{refused: map[string]int{}, refusalText: map[string]string{},
		errors: map[string]int{}, bySigner: map[string][]time.Duration{}}
}

// RunSMTP submits every message of b and reports. It returns an error only
// when the run cannot start; refusals and broken connections are counted
// in the report. When ctx ends, clients stop taking messages and the
// connections in flight are closed.
func RunSMTP(ctx context.Context, b *Batch, o SMTPOptions) (*Report, error) {
	if b == nil || len(b.Messages) == 0 {
		return nil, errors.New("smtp run: empty batch")
	}
	if o.Addr == "" {
		return nil, errors.New("smtp run: no server address")
	}
	if o.ImplicitTLS && o.TLS == nil {
		return nil, errors.New("smtp run: implicit TLS needs a TLS configuration")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.PerConn < 0 {
		return nil, errors.New("smtp run: messages per connection must be 0 or more")
	}
	if o.Rate < 0 {
		return nil, errors.New("smtp run: the offered rate must be positive")
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.TLS != nil {
		o.TLS = o.TLS.Clone()
		if o.NoResume {
			o.TLS.SessionTicketsDisabled = true
			o.TLS.ClientSessionCache = nil
		} else if o.TLS.ClientSessionCache == nil {
			o.TLS.ClientSessionCache = tls.NewLRUClientSessionCache(2 * o.Concurrency)
		}
	}
	n := len(b.Messages)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		done  atomic.Int64
		start = time.Now()
		next  func() (job, bool)
	)
	if o.Rate > 0 {
		jobs := make(chan job, n) // never blocks the scheduler
		go schedule(ctx, jobs, n, o.Rate, start)
		next = func() (job, bool) {
			select {
			case j, ok := <-jobs:
				return j, ok
			case <-ctx.Done():
				return job{}, false
			}
		}
	} else {
		var idx atomic.Int64
		next = func() (job, bool) {
			i := idx.Add(1) - 1
			if i >= int64(n) || ctx.Err() != nil {
				return job{}, false
			}
			return job{i: int(i)}, true
		}
	}

	tallies := make([]*tally, o.Concurrency)
	var wg sync.WaitGroup
	for w := range tallies {
		t := newTally()
		tallies[w] = t
		wg.Add(1)
		go func() {
			defer wg.Done()
			runClient(ctx, b, &o, next, t, &done)
		}()
	}
	stopProgress := progress(o, n, &done)
	wg.Wait()
	stopProgress()

	r := &Report{
		Target: o.Addr, Security: security(o), Concurrency: o.Concurrency, PerConn: o.PerConn,
		OfferedRate: o.Rate, Messages: n, Bytes: b.Bytes, MinSize: b.Min, MaxSize: b.Max,
		Refused: map[string]int{}, RefusalText: map[string]string{}, Errors: map[string]int{},
		BySigner: map[string]SignerStats{},
	}
	var (
		connect, data, txn, resp []time.Duration
		bySigner                 = map[string][]time.Duration{}
		end                      = start
		attempted                int
	)
	for _, t := range tallies {
		r.Accepted += t.accepted
		r.AcceptedBytes += t.acceptedBytes
		attempted += t.attempted
		r.Connections += t.connections
		r.Resumed += t.resumed
		r.Pipelined += t.pipelined
		for k, v := range t.refused {
			r.Refused[k] += v
			r.RefusalText[k] = t.refusalText[k]
		}
		for k, v := range t.errors {
			r.Errors[k] += v
		}
		connect = append(connect, t.connect...)
		data = append(data, t.data...)
		txn = append(txn, t.txn...)
		resp = append(resp, t.response...)
		for k, v := range t.bySigner {
			bySigner[k] = append(bySigner[k], v...)
		}
		if t.last.After(end) {
			end = t.last
		}
	}
	r.NotSent = n - attempted
	r.Duration = end.Sub(start)
	r.Seconds = r.Duration.Seconds()
	if r.Seconds > 0 {
		r.Throughput = float64(r.Accepted) / r.Seconds
		r.MiBps = mib(r.AcceptedBytes) / r.Seconds
	}
	r.Connect, r.Data, r.Transaction = summarise(connect), summarise(data), summarise(txn)
	if o.Rate > 0 {
		l := summarise(resp)
		r.Response = &l
	}
	for k, v := range bySigner {
		r.BySigner[k] = SignerStats{Accepted: len(v), Data: summarise(v)}
	}
	return r, nil
}

// Probe opens one connection as a run would (TCP, TLS, EHLO, AUTH) and
// says QUIT, so that a wrong address, certificate or password fails at
// once, before a batch is prepared. On mssrelay a successful probe also
// puts the password in the relay's login cache, so the run that follows
// measures the steady state (a returning client, no bcrypt per login).
func Probe(ctx context.Context, o SMTPOptions) error {
	if o.Addr == "" {
		return errors.New("probe: no server address")
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	c, err := dial(ctx, &o)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", o.Addr, err)
	}
	c.quit()
	return nil
}

// schedule releases message i at start + i/rate. It sleeps until the next
// message is due and then releases every message that is due, so a late
// wake-up (a busy machine) is caught up at once instead of shifting the
// whole schedule: the offered rate stays what was asked.
func schedule(ctx context.Context, jobs chan<- job, n int, rate float64, start time.Time) {
	defer close(jobs)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i := 0; i < n; {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		for now := time.Now(); i < n; i++ {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if due.After(now) {
				break
			}
			jobs <- job{i: i, due: due}
		}
	}
}

func progress(o SMTPOptions, total int, done *atomic.Int64) (stop func()) {
	if o.Progress == nil {
		return func() {}
	}
	every := o.ProgressEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-t.C:
				o.Progress(int(done.Load()), total)
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

func security(o SMTPOptions) string {
	s := "plain"
	switch {
	case o.TLS != nil && o.ImplicitTLS:
		s = "implicit TLS"
	case o.TLS != nil:
		s = "STARTTLS"
	}
	if o.User != "" {
		s += "+AUTH"
	}
	return s
}

// runClient is one client: it takes messages until there are none left,
// connecting again after PerConn messages or after a broken connection.
func runClient(ctx context.Context, b *Batch, o *SMTPOptions, next func() (job, bool), t *tally, done *atomic.Int64) {
	var (
		c    *client
		sent int
	)
	defer func() {
		if c != nil {
			c.quit()
		}
	}()
	for {
		j, ok := next()
		if !ok {
			return
		}
		t.attempted++
		if c != nil && o.PerConn > 0 && sent >= o.PerConn {
			c.quit()
			c = nil
		}
		if c == nil {
			var err error
			began := time.Now()
			if c, err = dial(ctx, o); err != nil {
				t.errors[errorClass("connect", err)]++
				t.last = time.Now()
				done.Add(1)
				continue
			}
			t.connect = append(t.connect, time.Since(began))
			t.connections++
			if c.resumed {
				t.resumed++
			}
			sent = 0
		}
		m := &b.Messages[j.i]
		broken := c.send(b.From, b.To, m, j.due, t)
		sent++
		done.Add(1)
		if broken {
			c.close()
			c = nil
		}
	}
}

// send runs one transaction (RFC 5321 §3.3: MAIL, RCPT, DATA) and records
// its outcome in t. It reports whether the connection is no longer usable.
func (c *client) send(from, to string, m *Message, due time.Time, t *tally) (broken bool) {
	began := time.Now()
	defer func() { t.last = time.Now() }()
	if m.wire == nil {
		m.wire = Stuff(m.Data) // a batch not made by Prepare
	}
	if c.pipeline {
		t.pipelined++
	}
	dataStart, step, sent, err := c.transaction(from, to, m.wire)
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			t.errors[errorClass(step, err)]++
			return true
		}
		k := ReplyKey(se)
		t.refused[k]++
		if _, ok := t.refusalText[k]; !ok {
			t.refusalText[k] = se.Message
		}
		// RFC 5321 §3.8: 421 means the server is closing the channel.
		if se.Code == 421 {
			return true
		}
		// A refusal before the message was sent leaves the connection
		// usable once the transaction is reset; after it, the server has
		// already ended the transaction.
		return !sent && c.reset() != nil
	}
	end := time.Now()
	t.accepted++
	t.acceptedBytes += int64(len(m.Data))
	t.data = append(t.data, end.Sub(dataStart))
	t.txn = append(t.txn, end.Sub(began))
	t.bySigner[m.Signer] = append(t.bySigner[m.Signer], end.Sub(dataStart))
	if !due.IsZero() {
		t.response = append(t.response, end.Sub(due))
	}
	return false
}

package loadgen

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// IMAPOptions say where and as whom to read the mailbox back.
type IMAPOptions struct {
	Addr string
	// TLS secures the connection: implicit TLS (RFC 8314, port 993) unless
	// StartTLS (RFC 3501 §6.2.1). nil: no TLS.
	TLS            *tls.Config
	StartTLS       bool
	User, Password string
	Mailbox        string // default INBOX
	Concurrency    int    // clients fetching at once; default 1
	Timeout        time.Duration
}

// IMAPReport is the outcome of an IMAP run.
type IMAPReport struct {
	Target      string `json:"target"`
	Mailbox     string `json:"mailbox"`
	Concurrency int    `json:"concurrency"`
	// Exists is the number of messages the mailbox held when selected;
	// Fetched those whose whole body was read.
	Exists   int            `json:"exists"`
	Fetched  int            `json:"fetched"`
	Bytes    int64          `json:"bytes"`
	Errors   map[string]int `json:"errors"`
	Login    Latency        `json:"login"` // connect + TLS + LOGIN + EXAMINE, per client
	Duration time.Duration  `json:"-"`
	Seconds  float64        `json:"seconds"`
	Rate     float64        `json:"messages_per_second"`
	MiBps    float64        `json:"mib_per_second"`
}

// RunIMAP reads every message of the mailbox with UID FETCH BODY.PEEK[]
// (RFC 3501 §6.4.5: PEEK leaves \Seen alone, so a run changes nothing),
// the UID range 1:UIDNEXT-1 cut into one contiguous slice per client. The
// clock starts once every client has logged in and selected the mailbox,
// so the rate is that of fetching, not of logging in.
func RunIMAP(ctx context.Context, o IMAPOptions) (*IMAPReport, error) {
	if o.Addr == "" {
		return nil, errors.New("imap run: no server address")
	}
	if o.Mailbox == "" {
		o.Mailbox = "INBOX"
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// One client first, to learn the mailbox's extent; it then fetches the
	// first slice like the others.
	first, sel, firstLogin, err := imapLogin(ctx, o, true)
	if err != nil {
		return nil, fmt.Errorf("imap run: %w", err)
	}
	r := &IMAPReport{Target: o.Addr, Mailbox: o.Mailbox, Concurrency: o.Concurrency,
		Exists: int(sel.NumMessages), Errors: map[string]int{}}
	if sel.NumMessages == 0 || sel.UIDNext <= 1 {
		first.close()
		return r, nil
	}
	last := uint32(sel.UIDNext) - 1
	clients := min(o.Concurrency, int(last))
	per := (last + uint32(clients) - 1) / uint32(clients)

	type result struct {
		fetched int
		bytes   int64
		err     error
		login   time.Duration
	}
	results := make([]result, clients)
	ready := make(chan struct{})
	var loggedIn, wg sync.WaitGroup
	for k := range clients {
		lo := 1 + uint32(k)*per
		hi := min(lo+per-1, last)
		loggedIn.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[k]
			c := first
			res.login = firstLogin
			if k > 0 {
				var err error
				c, _, res.login, err = imapLogin(ctx, o, true)
				if err != nil {
					res.err = fmt.Errorf("login: %w", err)
					loggedIn.Done()
					return
				}
			}
			defer c.close()
			loggedIn.Done()
			<-ready
			res.fetched, res.bytes, res.err = c.fetch(imap.UID(lo), imap.UID(hi))
		}()
	}
	loggedIn.Wait()
	start := time.Now()
	close(ready)
	wg.Wait()
	r.Duration = time.Since(start)

	var logins []time.Duration
	for _, res := range results {
		r.Fetched += res.fetched
		r.Bytes += res.bytes
		if res.login > 0 {
			logins = append(logins, res.login)
		}
		if res.err != nil {
			r.Errors[errorClass("FETCH", res.err)]++
		}
	}
	r.Login = summarise(logins)
	r.Seconds = r.Duration.Seconds()
	if r.Seconds > 0 {
		r.Rate = float64(r.Fetched) / r.Seconds
		r.MiBps = mib(r.Bytes) / r.Seconds
	}
	return r, nil
}

type imapConn struct {
	c    *imapclient.Client
	stop func() bool
}

// imapLogin connects, logs in and selects the mailbox: read-only (EXAMINE,
// RFC 3501 §6.3.2) when readOnly, else read-write (SELECT, §6.3.1).
func imapLogin(ctx context.Context, o IMAPOptions, readOnly bool) (*imapConn, *imap.SelectData, time.Duration, error) {
	began := time.Now()
	opts := &imapclient.Options{TLSConfig: o.TLS, Dialer: &net.Dialer{Timeout: o.Timeout}}
	var (
		c   *imapclient.Client
		err error
	)
	switch {
	case o.TLS != nil && o.StartTLS:
		c, err = imapclient.DialStartTLS(o.Addr, opts)
	case o.TLS != nil:
		c, err = imapclient.DialTLS(o.Addr, opts)
	default:
		c, err = imapclient.DialInsecure(o.Addr, opts)
	}
	if err != nil {
		return nil, nil, 0, fmt.Errorf("connecting to %s: %w", o.Addr, err)
	}
	// imapclient has no context: closing the client ends any command
	// waiting on it, whether the run was cancelled or a bound passed.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	ic := &imapConn{c: c, stop: stop}
	bound := time.AfterFunc(o.Timeout, func() { c.Close() })
	defer bound.Stop()
	if err := c.Login(o.User, o.Password).Wait(); err != nil {
		ic.close()
		return nil, nil, 0, fmt.Errorf("LOGIN as %s: %w", o.User, err)
	}
	sel, err := c.Select(o.Mailbox, &imap.SelectOptions{ReadOnly: readOnly}).Wait()
	if err != nil {
		ic.close()
		verb := "SELECT"
		if readOnly {
			verb = "EXAMINE"
		}
		return nil, nil, 0, fmt.Errorf("%s %s: %w", verb, o.Mailbox, err)
	}
	return ic, sel, time.Since(began), nil
}

// fetch reads the whole body of every message with a UID in lo:hi,
// counting bytes without keeping them.
func (ic *imapConn) fetch(lo, hi imap.UID) (n int, bytes int64, err error) {
	cmd := ic.c.Fetch(imap.UIDSet{{Start: lo, Stop: hi}}, &imap.FetchOptions{
		UID:         true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	})
	for {
		msg := cmd.Next()
		if msg == nil {
			break
		}
		for {
			item := msg.Next()
			if item == nil {
				break
			}
			bs, ok := item.(imapclient.FetchItemDataBodySection)
			if !ok || bs.Literal == nil {
				continue
			}
			k, err := io.Copy(io.Discard, bs.Literal)
			bytes += k
			if err != nil {
				_ = cmd.Close()
				return n, bytes, err
			}
			n++
		}
	}
	if err := cmd.Close(); err != nil {
		return n, bytes, err
	}
	return n, bytes, nil
}

func (ic *imapConn) close() {
	ic.stop()
	if err := ic.c.Logout().Wait(); err != nil {
		ic.c.Close()
		return
	}
	ic.c.Close()
}

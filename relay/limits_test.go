package relay_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/store"
)

// TestConnectionLimit: past limits.max_connections (or, from one address,
// limits.max_connections_per_ip) a listener answers "busy" and closes; a
// slot freed by a closing client is reused.
func TestConnectionLimit(t *testing.T) {
	t.Run("per listener", func(t *testing.T) {
		testConnectionLimit(t, func(c *configs.Config) { c.Limits.MaxConnections = 2 })
	})
	t.Run("per address", func(t *testing.T) {
		testConnectionLimit(t, func(c *configs.Config) { c.Limits.MaxConnectionsPerIP = 2 })
	})
}

func testConnectionLimit(t *testing.T, adjust func(*configs.Config)) {
	h := newHarnessWith(t, adjust)
	for _, tc := range []struct {
		kind, greeting, busy string
	}{
		{relay.SMTPSubmission, "220 ", "421 4.3.2"},
		{relay.IMAPSTARTTLS, "* OK", "* BYE"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			dial := func() (net.Conn, string) {
				c, err := net.DialTimeout("tcp", h.addrs[tc.kind], 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				return c, line
			}
			a, la := dial()
			b, lb := dial()
			if !strings.HasPrefix(la, tc.greeting) || !strings.HasPrefix(lb, tc.greeting) {
				t.Fatalf("greetings %q %q", la, lb)
			}
			c, lc := dial()
			c.Close()
			if !strings.HasPrefix(lc, tc.busy) {
				t.Fatalf("third connection got %q, want %q", lc, tc.busy)
			}
			a.Close()
			// The slot comes back once the server has seen the close.
			deadline := time.Now().Add(10 * time.Second)
			for {
				d, ld := dial()
				d.Close()
				if strings.HasPrefix(ld, tc.greeting) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("slot never freed: %q", ld)
				}
				time.Sleep(50 * time.Millisecond)
			}
			b.Close()
		})
	}
}

// TestLoginLockout: failed logins from one address, in either protocol,
// lock that address out of both; even the right password is then refused
// with a temporary reply.
func TestLoginLockout(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) {
		c.Auth.MaxFailures = 3
		c.Auth.FailureDelay.Duration = time.Millisecond
		c.Auth.Lockout.Duration = time.Hour
	})
	c, err := imapclient.DialTLS(h.addrs[relay.IMAPTLS], &imapclient.Options{TLSConfig: h.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		if err := c.Login(h.info.Pharmacy.Address, "wrong password").Wait(); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	err = c.Login(h.info.Pharmacy.Address, h.info.Pharmacy.Password).Wait()
	var ie *imap.Error
	if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeUnavailable {
		t.Fatalf("right password during lockout: %v, want NO [UNAVAILABLE]", err)
	}
	_, err = submit.Dial(submit.Options{Addr: h.addrs[relay.SMTPSubmission], TLS: h.clientTLS(),
		User: h.info.Prescriber.Address, Password: h.info.Prescriber.Password})
	if code, enh := smtpCode(err); code != 454 || enh != (smtp.EnhancedCode{4, 7, 0}) {
		t.Fatalf("SMTP AUTH during lockout: %v, want 454 4.7.0", err)
	}
}

// TestSessionRefusalCap: a client that keeps sending refused messages or
// probing unknown addresses on one connection is stopped: past the cap
// every new transaction gets 421 before any work is done.
func TestSessionRefusalCap(t *testing.T) {
	h := newHarness(t)
	c := h.prescriber()
	unsigned := append(submitHeader(h.info.Prescriber.Address, h.info.Pharmacy.Address), []byte("Content-Type: text/plain\r\n\r\nHello\r\n")...)
	for i := 0; i < 6; i++ {
		if _, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, unsigned); err == nil {
			t.Fatal("unsigned message accepted")
		}
	}
	for i := 0; i < 4; i++ {
		if _, err := c.Send(h.info.Prescriber.Address, []string{fmt.Sprintf("probe%d@%s", i, demo.Domain)}, unsigned); err == nil {
			t.Fatal("unknown recipient accepted")
		}
	}
	msg, _ := h.prescription()
	_, err := c.Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg)
	if code, enh := smtpCode(err); code != 421 || enh != (smtp.EnhancedCode{4, 7, 0}) {
		t.Fatalf("after 10 refusals: %v, want 421 4.7.0", err)
	}
	// A new session starts afresh.
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		t.Fatalf("new session refused: %v", err)
	}
}

// TestSlowClientCutOff: a client that trickles a command byte by byte is
// cut off instead of holding a session forever: go-smtp bounds each read
// by limits.read_timeout, answers what it got so far, and closes the
// connection after a few such errors (or with 421 4.4.2 when idle).
func TestSlowClientCutOff(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) { c.Limits.ReadTimeout.Duration = time.Second })
	conn, err := net.DialTimeout("tcp", h.addrs[relay.SMTPSubmission], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // greeting
		t.Fatal(err)
	}
	start := time.Now()
	for _, b := range []byte("EHLO slow.example\r\n") {
		if _, err := conn.Write([]byte{b}); err != nil {
			break // cut off
		}
		time.Sleep(200 * time.Millisecond)
		if time.Since(start) > 10*time.Second {
			break
		}
	}
	// The 10 s bound only keeps a broken server from hanging the test.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var lines []string
	for {
		var line string
		line, err = r.ReadString('\n')
		if line != "" {
			lines = append(lines, strings.TrimSpace(line))
		}
		if err != nil {
			break
		}
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the relay kept the slow session open; replies so far %q", lines)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "250") {
			t.Fatalf("the trickled EHLO was accepted: %q", lines)
		}
	}
	// The relay writes its closing reply and closes; a byte the test
	// trickles after that close makes the kernel reset the connection,
	// which can discard the reply before it is read. A reset is the
	// relay closing too.
	if len(lines) == 0 {
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
			t.Fatalf("session ended with %v and no reply", err)
		}
		return
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "421 ") && !strings.HasPrefix(last, "500 ") {
		t.Errorf("session ended with %q, want a 421 or 500 closing reply", last)
	}
}

// TestConnectionRateLimit: past limits.max_connection_rate_per_ip new
// connections a minute from one address, each listener answers "busy" on
// plaintext and closes TLS connections without a word, while the
// connections it accepted go on. Loopback is not exempt. (Buckets per
// client network, refill and memory bounds: TestRateLimiter* in
// limit_test.go, with a hand-moved clock.)
func TestConnectionRateLimit(t *testing.T) {
	for _, tc := range []struct {
		kind     string
		tls      bool
		greeting string // first line of an accepted connection
		busy     string // what a connection over the rate reads; "" for none
		noop, ok string // a command and the start of its success reply
	}{
		{relay.SMTPSubmission, false, "220 ", "421 4.3.2 Too many connections", "NOOP", "250 "},
		{relay.IMAPSTARTTLS, false, "* OK", "* BYE Too many connections", "a NOOP", "a OK"},
		{relay.SMTPSubmissionTLS, true, "220 ", "", "NOOP", "250 "},
		{relay.IMAPTLS, true, "* OK", "", "a NOOP", "a OK"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			// One connection a minute, one budget for all listeners: a
			// refill cannot come within the test.
			h := newHarnessWith(t, func(c *configs.Config) { c.Limits.MaxConnectionRatePerIP = 1 })
			dial := func() (net.Conn, string, error) {
				var c net.Conn
				var err error
				d := &net.Dialer{Timeout: 5 * time.Second}
				if tc.tls {
					c, err = tls.DialWithDialer(d, "tcp", h.addrs[tc.kind], h.clientTLS())
				} else {
					c, err = d.Dial("tcp", h.addrs[tc.kind])
				}
				if err != nil {
					return nil, "", err
				}
				// The bound only keeps a broken server from hanging the test.
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("the server neither answered nor closed: %v", err)
				}
				return c, line, err
			}
			first, line, err := dial()
			if err != nil || !strings.HasPrefix(line, tc.greeting) {
				t.Fatalf("first connection: %q, %v", line, err)
			}
			defer first.Close()
			second, line, err := dial()
			if second != nil {
				second.Close()
			}
			switch {
			case tc.busy != "" && !strings.HasPrefix(line, tc.busy):
				t.Fatalf("second connection within the minute got %q (%v), want %q", line, err, tc.busy)
			case tc.busy == "" && (err == nil || line != ""):
				t.Fatalf("second TLS connection within the minute got %q (%v), want it closed without a word", line, err)
			}
			// The accepted session is untouched by the refusal.
			if _, err := fmt.Fprintf(first, "%s\r\n", tc.noop); err != nil {
				t.Fatal(err)
			}
			line, err = bufio.NewReader(first).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, tc.ok) {
				t.Fatalf("NOOP on the accepted connection: %q, %v", line, err)
			}
		})
	}
}

// TestIMAPTooManyErrors: an IMAP session that gives 20 failed commands in
// a row, before or after logging in, is told "* BYE Too many errors"
// (RFC 3501 §7.1.5) and closed; a successful command starts the count
// again; the closing is audited as imap.refuse. A new session starts
// afresh. (SMTP: TestSessionRefusalCap.)
func TestIMAPTooManyErrors(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) {
		// Failed logins are answered after a delay that doubles; keep it
		// short, and keep the address lockout (which would refuse the
		// later subtests' logins) out of reach: the session cap comes
		// first.
		c.Auth.FailureDelay.Duration = time.Millisecond
		c.Auth.MaxFailures = 1000
	})
	const maxErrors = 20 // imapd.DefaultMaxErrors
	for _, tc := range []struct {
		name    string
		login   bool   // log in first
		failing string // a command answered NO
	}{
		{"failed logins", false, `LOGIN "nobody@mssante.test" "wrong"`},
		{"failing commands after login", true, `SELECT "No such folder"`},
		{"failing STATUS after login", true, `STATUS "Nope" (MESSAGES)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitLimit}, "tcp", h.addrs[relay.IMAPTLS], h.clientTLS())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// The bound only keeps a broken server from hanging the test.
			_ = conn.SetDeadline(time.Now().Add(waitLimit))
			r := bufio.NewReader(conn)
			if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
				t.Fatalf("greeting %q, %v", l, err)
			}
			// send writes a command and returns its tagged answer.
			send := func(tag, cmd string) string {
				t.Helper()
				if _, err := fmt.Fprintf(conn, "%s %s\r\n", tag, cmd); err != nil {
					t.Fatalf("%s: %v", cmd, err)
				}
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						t.Fatalf("%s %s: %v", tag, cmd, err)
					}
					if rest, ok := strings.CutPrefix(l, tag+" "); ok {
						return strings.TrimSpace(rest)
					}
					if strings.HasPrefix(l, "* BYE") {
						t.Fatalf("%s %s: BYE too early: %q", tag, cmd, l)
					}
				}
			}
			if tc.login {
				u := h.info.Pharmacy
				if st := send("L", fmt.Sprintf("LOGIN %q %q", u.Address, u.Password)); !strings.HasPrefix(st, "OK") {
					t.Fatalf("LOGIN: %s", st)
				}
				// One short of the limit, then a success: the count
				// starts again.
				for i := 1; i < maxErrors; i++ {
					if st := send(fmt.Sprintf("E%d", i), tc.failing); !strings.HasPrefix(st, "NO") {
						t.Fatalf("failing command %d answered %q, want NO", i, st)
					}
				}
				if st := send("S", `SELECT "INBOX"`); !strings.HasPrefix(st, "OK") {
					t.Fatalf("SELECT INBOX: %s", st)
				}
			}
			for i := 1; i < maxErrors; i++ {
				if st := send(fmt.Sprintf("F%d", i), tc.failing); !strings.HasPrefix(st, "NO") {
					t.Fatalf("failing command %d answered %q, want NO", i, st)
				}
			}
			// The last one: BYE (before or after its tagged NO), then EOF.
			if _, err := fmt.Fprintf(conn, "LAST %s\r\n", tc.failing); err != nil {
				t.Fatal(err)
			}
			var rest []string
			for {
				l, err := r.ReadString('\n')
				if l != "" {
					rest = append(rest, strings.TrimSpace(l))
				}
				if err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						t.Fatalf("session left open after %d errors; read %q", maxErrors, rest)
					}
					break
				}
			}
			if !slices.Contains(rest, "* BYE Too many errors") {
				t.Fatalf("after %d errors the server sent %q, want * BYE Too many errors", maxErrors, rest)
			}
		})
	}
	// A new session is not held to the old one's count.
	h.imap(h.info.Pharmacy, nil).Logout()

	h.shutdown() // flushes the audit queue and closes the store
	st, err := store.Open(filepath.Join(h.dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var refusals []store.AuditRecord
	if _, err := st.AuditVerify(func(r store.AuditRecord) {
		if r.Kind == "imap.refuse" {
			refusals = append(refusals, r)
		}
	}); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	if len(refusals) != 3 {
		t.Fatalf("%d imap.refuse records, want 3: %+v", len(refusals), refusals)
	}
	for i, r := range refusals {
		if r.Outcome != "BYE" || !strings.Contains(r.Detail, "20 failed commands in a row") || r.Remote == "" {
			t.Errorf("refusal %d: %+v", i, r)
		}
		if wantActor := map[bool]string{true: h.info.Pharmacy.Address, false: "-"}[i > 0]; r.Actor != wantActor {
			t.Errorf("refusal %d actor %q, want %q", i, r.Actor, wantActor)
		}
	}
}

// TestConnectionRateShared: the rate is one budget per client for all
// listeners, not one per port.
func TestConnectionRateShared(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) { c.Limits.MaxConnectionRatePerIP = 1 })
	first, err := net.Dial("tcp", h.addrs[relay.SMTPSubmission])
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_ = first.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(first).ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("first connection: %q, %v", line, err)
	}
	other, err := net.Dial("tcp", h.addrs[relay.IMAPSTARTTLS])
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_ = other.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, _ := bufio.NewReader(other).ReadString('\n'); !strings.HasPrefix(line, "* BYE Too many connections") {
		t.Fatalf("a connection to another listener within the minute got %q", line)
	}
}

// TestSMTPSessionLifetime: a session past limits.max_smtp_session is told
// 421 and closed even while it keeps sending commands (each NOOP resets
// the read timeout, not the lifetime).
func TestSMTPSessionLifetime(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) { c.Limits.MaxSMTPSession.Duration = 300 * time.Millisecond })
	conn, err := net.Dial("tcp", h.addrs[relay.SMTPSubmission])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The bound only keeps a broken server from hanging the test.
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	for n := 0; ; n++ {
		if _, err := fmt.Fprintf(conn, "NOOP\r\n"); err != nil {
			t.Fatalf("after %d NOOPs the write failed before any 421: %v", n, err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d NOOPs: %v (no 421)", n, err)
		}
		if strings.HasPrefix(line, "421 ") {
			break
		}
		if !strings.HasPrefix(line, "250 ") {
			t.Fatalf("NOOP answered %q", line)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("the connection stayed open after 421")
	}
}

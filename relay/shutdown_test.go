package relay_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mssrelay/configs"
	"mssrelay/relay"
	"mssrelay/store"
)

// heldSubmission is a submission stopped between two BDAT chunks (RFC
// 3030): Session.Data is running, so the transaction is in flight and holds
// the shutdown drain open. BDAT rather than DATA because go-smtp answers a
// chunk only once Session.Data consumed it: the 250 proves the transaction
// is in flight, with no race against the start of shutdown.
type heldSubmission struct {
	t      *testing.T
	conn   net.Conn
	tc     *textproto.Conn
	rest   []byte
	number string
}

func holdSubmission(t *testing.T, h *harness) *heldSubmission {
	t.Helper()
	conn, err := tls.Dial("tcp", h.addrs[relay.SMTPSubmissionTLS], h.clientTLS())
	if err != nil {
		t.Fatalf("dial submission: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	// A safety net against a hung test, not an assertion.
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	s := &heldSubmission{t: t, conn: conn, tc: textproto.NewConn(conn)}
	if _, _, err := s.tc.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	from, to := h.info.Prescriber.Address, h.info.Pharmacy.Address
	s.cmd(250, "EHLO test.example")
	s.cmd(235, "AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+from+"\x00"+h.info.Prescriber.Password)))
	s.cmd(250, "MAIL FROM:<%s>", from)
	s.cmd(250, "RCPT TO:<%s>", to)
	msg, number := h.prescription()
	half := len(msg) / 2
	if err := s.chunk(msg[:half], ""); err != nil {
		t.Fatalf("first BDAT chunk: %v", err)
	}
	s.rest, s.number = msg[half:], number
	return s
}

func (s *heldSubmission) cmd(want int, format string, args ...any) {
	s.t.Helper()
	if err := s.tc.PrintfLine(format, args...); err != nil {
		s.t.Fatalf("%s: %v", format, err)
	}
	if _, _, err := s.tc.ReadResponse(want); err != nil {
		s.t.Fatalf("%s: %v", format, err)
	}
}

// chunk sends one BDAT chunk and reads its reply, which must be 250.
func (s *heldSubmission) chunk(data []byte, last string) error {
	if _, err := fmt.Fprintf(s.tc.W, "BDAT %d%s\r\n", len(data), last); err != nil {
		return err
	}
	if _, err := s.tc.W.Write(data); err != nil {
		return err
	}
	if err := s.tc.W.Flush(); err != nil {
		return err
	}
	_, _, err := s.tc.ReadResponse(250)
	return err
}

// finish sends the last chunk and returns its reply's error (nil: 250).
func (s *heldSubmission) finish() error { return s.chunk(s.rest, " LAST") }

// stopAsync starts the relay's shutdown; the channel closes when Serve has
// returned (the harness fails the test if it does not within 30 s).
func stopAsync(h *harness) <-chan struct{} {
	stopped := make(chan struct{})
	go func() { h.shutdown(); close(stopped) }()
	return stopped
}

// waitStopping polls /readyz until shutdown has begun (the relay offers no
// hook to wait on); the bound is a safety net, not the assertion.
func waitStopping(t *testing.T, admin string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if code, _ := httpGet(t, admin, "/readyz"); code == http.StatusServiceUnavailable {
			return
		}
	}
	t.Fatal("/readyz never reported the shutdown")
}

// TestShutdownCutsOffPastTimeout: a transaction still in flight when
// limits.shutdown_timeout expires is cut off without a 250 (the client
// retries: nothing was filed), Serve returns, and the store is closed:
// its handle no longer reads and the file can be opened again.
func TestShutdownCutsOffPastTimeout(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) {
		c.Limits.ShutdownTimeout = configs.Duration{Duration: time.Second} // the validated minimum
	})
	held := holdSubmission(t, h)
	st := h.relay.Store()

	<-stopAsync(h) // returns only once Serve has returned

	// The drain gave up on the transaction: the connection was closed
	// with, at most, a 421 (RFC 5321 §3.8), never a 250.
	rest, err := io.ReadAll(held.conn)
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrUnexpectedEOF) && !isConnReset(err) {
		t.Fatalf("reading the cut-off session: %v", err)
	}
	if s := string(rest); s != "" && !strings.HasPrefix(s, "421 ") {
		t.Errorf("the cut-off session got %q, want nothing or a 421", s)
	}
	if err := held.finish(); err == nil {
		t.Fatal("the last chunk got a 250 after shutdown")
	}

	if _, err := st.RecordByNumber(held.number); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("the relay's store still answers after Serve returned (err %v): not closed", err)
	}
	reopened, err := store.Open(filepath.Join(h.dir, relay.DBFile), store.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("reopening the store after shutdown: %v", err)
	}
	defer reopened.Close()
	if _, err := reopened.RecordByNumber(held.number); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the cut-off prescription %s was filed (err %v): its sender got no 250", held.number, err)
	}
}

func isConnReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// TestShutdownRefusesNewConnections: from the start of the drain, no
// listener serves a new connection (they are closed, or an IMAP client is
// told BYE at once), while the transaction in flight still finishes with
// its 250 and is filed.
func TestShutdownRefusesNewConnections(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) {
		withAdmin(c)
		// Long enough that the drain ends only when the held transaction
		// does, whatever the machine's speed.
		c.Limits.ShutdownTimeout = configs.Duration{Duration: 10 * time.Minute}
	})
	held := holdSubmission(t, h)
	addrs := h.addrs
	stopped := stopAsync(h)
	waitStopping(t, addrs[relay.Admin])

	for _, kind := range []string{relay.SMTPSubmission, relay.SMTPSubmissionTLS, relay.IMAPTLS, relay.IMAPSTARTTLS} {
		// The listeners close an instant after /readyz turns: poll, with
		// a bound that is a safety net.
		var served string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			served = serves(h, addrs[kind], kind)
			if served == "" || time.Now().After(deadline) {
				break
			}
		}
		if served != "" {
			t.Errorf("%s still serves new connections during the drain: %s", kind, served)
		}
	}
	select {
	case <-stopped:
		t.Fatal("Serve returned with a transaction in flight")
	default:
	}

	if err := held.finish(); err != nil {
		t.Fatalf("the transaction in flight did not finish during the drain: %v", err)
	}
	<-stopped
	st, err := store.Open(filepath.Join(h.dir, relay.DBFile), store.Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("reopening the store after shutdown: %v", err)
	}
	defer st.Close()
	if _, err := st.RecordByNumber(held.number); err != nil {
		t.Errorf("the prescription that got its 250 during the drain is not filed: %v", err)
	}
}

// serves dials addr and reports what a new client is offered: "" when the
// connection is refused, closed, or told 421 / BYE; otherwise the greeting.
func serves(h *harness, addr, kind string) string {
	h.t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return ""
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := raw
	if kind == relay.SMTPSubmissionTLS || kind == relay.IMAPTLS {
		tc := tls.Client(raw, h.clientTLS())
		if err := tc.Handshake(); err != nil {
			return ""
		}
		conn = tc
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	switch {
	case err != nil && line == "":
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return "accepted but silent"
		}
		return ""
	case strings.HasPrefix(line, "421 "), strings.HasPrefix(line, "* BYE"):
		return ""
	}
	return fmt.Sprintf("greeting %q", strings.TrimSpace(line))
}

// TestShutdownSaysByeToIMAP: every IMAP session, whatever its state, is
// told BYE when the relay shuts down (RFC 3501 §7.1.5) and then closed.
func TestShutdownSaysByeToIMAP(t *testing.T) {
	h := newHarness(t)
	u := h.info.Pharmacy
	states := []struct {
		name     string
		kind     string
		commands []string // each answered by a tagged OK (IDLE: a continuation)
	}{
		{"greeted", relay.IMAPTLS, nil},
		{"greeted on the STARTTLS port", relay.IMAPSTARTTLS, nil},
		{"authenticated", relay.IMAPTLS, []string{fmt.Sprintf("LOGIN %q %q", u.Address, u.Password)}},
		{"selected", relay.IMAPTLS, []string{fmt.Sprintf("LOGIN %q %q", u.Address, u.Password), "SELECT INBOX"}},
		{"idling", relay.IMAPTLS, []string{fmt.Sprintf("LOGIN %q %q", u.Address, u.Password), "SELECT INBOX", "IDLE"}},
	}
	type session struct {
		name string
		r    *bufio.Reader
	}
	var sessions []session
	for _, s := range states {
		raw, err := net.Dial("tcp", h.addrs[s.kind])
		if err != nil {
			t.Fatalf("%s: dial: %v", s.name, err)
		}
		t.Cleanup(func() { raw.Close() })
		_ = raw.SetDeadline(time.Now().Add(2 * time.Minute)) // safety net
		conn := raw
		if s.kind == relay.IMAPTLS {
			conn = tls.Client(raw, h.clientTLS())
		}
		r := bufio.NewReader(conn)
		if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "* OK") {
			t.Fatalf("%s: greeting %q %v", s.name, line, err)
		}
		for i, c := range s.commands {
			tag := fmt.Sprintf("a%d", i)
			if _, err := fmt.Fprintf(conn, "%s %s\r\n", tag, c); err != nil {
				t.Fatalf("%s: %s: %v", s.name, c, err)
			}
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("%s: %s: %v", s.name, c, err)
				}
				if c == "IDLE" && strings.HasPrefix(line, "+") {
					break
				}
				if strings.HasPrefix(line, tag+" ") {
					if !strings.HasPrefix(line, tag+" OK") {
						t.Fatalf("%s: %s: %q", s.name, c, line)
					}
					break
				}
			}
		}
		sessions = append(sessions, session{s.name, r})
	}

	<-stopAsync(h)
	for _, s := range sessions {
		rest, err := io.ReadAll(s.r)
		if err != nil && !isConnReset(err) {
			t.Errorf("%s: reading to the end: %v", s.name, err)
		}
		if !strings.Contains(string(rest), "* BYE ") {
			t.Errorf("%s: closed without a BYE; got %q", s.name, rest)
		}
	}
}

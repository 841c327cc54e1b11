package smtp_test

// mssrelay patch tests: how replies are written to the connection. A
// multi-line reply leaves in one write; the replies to a pipelined
// MAIL, RCPT, DATA group leave together (RFC 2920 §3.2); a reply is never
// held back when the client may be waiting for it.

import (
	"bufio"
	"io"
	stdlog "log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// writeLog records what the server writes, one entry per Write call.
type writeLog struct {
	mu     sync.Mutex
	writes []string
}

func (w *writeLog) add(p []byte) {
	w.mu.Lock()
	w.writes = append(w.writes, string(p))
	w.mu.Unlock()
}

func (w *writeLog) since(i int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes[i:]...)
}

func (w *writeLog) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.writes)
}

type loggedConn struct {
	net.Conn
	log *writeLog
}

func (c loggedConn) Write(p []byte) (int, error) {
	c.log.add(p)
	return c.Conn.Write(p)
}

type loggedListener struct {
	net.Listener
	log *writeLog
}

func (l loggedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return loggedConn{c, l.log}, nil
}

func loggedServer(t *testing.T, configure ...func(*smtp.Server)) (*backend, net.Conn, *bufio.Reader, *writeLog) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := &writeLog{}
	be := new(backend)
	s := smtp.NewServer(be)
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	for _, f := range configure {
		f(s)
	}
	go s.Serve(loggedListener{l, log})
	t.Cleanup(func() { s.Close() })

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	readReply(t, r) // greeting
	return be, c, r, log
}

// readReply reads one possibly multi-line reply and returns its lines.
func readReply(t *testing.T, r *bufio.Reader) []string {
	t.Helper()
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a reply after %q: %v", lines, err)
		}
		lines = append(lines, strings.TrimRight(line, "\r\n"))
		if len(line) < 4 || line[3] != '-' {
			return lines
		}
	}
}

func TestMultiLineReplyOneWrite(t *testing.T) {
	_, c, r, log := loggedServer(t)
	before := log.count()
	io.WriteString(c, "EHLO localhost\r\n")
	lines := readReply(t, r)
	if len(lines) < 3 {
		t.Fatalf("EHLO reply %q: expected several lines", lines)
	}
	writes := log.since(before)
	if len(writes) != 1 {
		t.Fatalf("EHLO reply of %d lines written in %d writes %q, want 1", len(lines), len(writes), writes)
	}
}

func TestPipelinedGroupRepliesTogether(t *testing.T) {
	be, c, r, log := loggedServer(t)
	io.WriteString(c, "EHLO localhost\r\n")
	readReply(t, r)

	before := log.count()
	io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
	want := []string{"250 ", "250 ", "250 ", "354 "}
	for _, prefix := range want {
		if got := readReply(t, r); !strings.HasPrefix(got[0], prefix) {
			t.Fatalf("reply %q, want %q", got, prefix)
		}
	}
	writes := log.since(before)
	if len(writes) != 1 {
		t.Fatalf("replies to MAIL, RCPT, RCPT, DATA sent in %d writes %q, want 1", len(writes), writes)
	}

	io.WriteString(c, "Subject: grouped\r\n\r\n.leading\r\n.\r\n")
	if got := readReply(t, r); !strings.HasPrefix(got[0], "250 ") {
		t.Fatalf("end of data: %q", got)
	}
	if len(be.anonmsgs) != 1 || string(be.anonmsgs[0].Data) != "Subject: grouped\r\n\r\nleading\r\n" {
		t.Fatalf("messages %+v", be.anonmsgs)
	}
}

// The reply to MAIL is not held back when what follows it is not yet a
// whole line: the client may be waiting for the reply before finishing.
func TestPartialNextLineDoesNotHoldReply(t *testing.T) {
	_, c, r, _ := loggedServer(t)
	io.WriteString(c, "EHLO localhost\r\n")
	readReply(t, r)

	io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\nRCPT TO:<a@exa")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got := readReply(t, r); !strings.HasPrefix(got[0], "250 ") {
		t.Fatalf("MAIL: %q", got)
	}
	io.WriteString(c, "mple.org>\r\n")
	if got := readReply(t, r); !strings.HasPrefix(got[0], "250 ") {
		t.Fatalf("RCPT: %q", got)
	}
}

// A held-back reply leaves with the next reply, whatever that is: here a
// refusal, then the replies to RSET and QUIT.
func TestHeldReplyLeavesWithNext(t *testing.T) {
	_, c, r, _ := loggedServer(t)
	io.WriteString(c, "EHLO localhost\r\n")
	readReply(t, r)

	io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\nHELP\r\nRSET\r\nQUIT\r\n")
	for _, prefix := range []string{"250 ", "502 ", "250 ", "221 "} {
		if got := readReply(t, r); !strings.HasPrefix(got[0], prefix) {
			t.Fatalf("reply %q, want %q", got, prefix)
		}
	}
}

// readReplyOrHeld reads one reply like readReply, but reports a reply that
// does not arrive as held back: the server is by then waiting for input
// the client will only send once it has that reply. The deadline only
// bounds the failure; a passing run never waits for it.
func readReplyOrHeld(t *testing.T, c net.Conn, r *bufio.Reader, what string) []string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: no reply (%v): held back while the server waits for the client", what, err)
		}
		lines = append(lines, strings.TrimRight(line, "\r\n"))
		if len(line) < 4 || line[3] != '-' {
			return lines
		}
	}
}

// BDAT reads its chunk before it answers anything, so the replies held
// back for a pipelined MAIL and RCPT must leave before the server starts
// waiting for the chunk: RFC 2920 §3.2 (7), pending replies are sent
// whenever the input buffer is emptied. Here the client sends the chunk
// only once it has those replies (it may want to see RCPT accepted first).
func TestHeldRepliesLeaveBeforeBdatChunk(t *testing.T) {
	be, c, r, _ := loggedServer(t)
	io.WriteString(c, "EHLO localhost\r\n")
	readReply(t, r)

	// One write: the server reads the three lines at once.
	io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\nRCPT TO:<a@example.org>\r\nBDAT 8 LAST\r\n")
	for _, what := range []string{"MAIL", "RCPT"} {
		if got := readReplyOrHeld(t, c, r, what); !strings.HasPrefix(got[0], "250 ") {
			t.Fatalf("%s: %q", what, got)
		}
	}
	io.WriteString(c, "chunk\r\n.")
	if got := readReply(t, r); !strings.HasPrefix(got[0], "250 ") {
		t.Fatalf("BDAT LAST: %q", got)
	}
	if len(be.anonmsgs) != 1 || string(be.anonmsgs[0].Data) != "chunk\r\n." {
		t.Fatalf("messages %+v", be.anonmsgs)
	}
}

// AUTH runs its SASL exchange by reading lines itself: the reply held
// back for RSET must leave with the 334 challenge, before the server
// waits for the client's response.
func TestHeldReplyLeavesBeforeSASLExchange(t *testing.T) {
	_, c, r, _ := loggedServer(t)
	io.WriteString(c, "EHLO localhost\r\n")
	readReply(t, r)

	io.WriteString(c, "RSET\r\nAUTH PLAIN\r\n")
	for _, want := range []string{"250 ", "334 "} {
		if got := readReplyOrHeld(t, c, r, want); !strings.HasPrefix(got[0], want) {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	io.WriteString(c, "AHVzZXJuYW1lAHBhc3N3b3Jk\r\n")
	if got := readReply(t, r); !strings.HasPrefix(got[0], "235 ") {
		t.Fatalf("AUTH: %q", got)
	}
}

// A command that panics closes the connection: the reply held back for
// the RSET before it must still reach the client, ahead of the 421.
func TestHeldReplyLeavesBeforePanicClose(t *testing.T) {
	be, c, r, _ := loggedServer(t, func(s *smtp.Server) {
		s.ErrorLog = stdlog.New(io.Discard, "", 0) // the panic is expected
	})
	io.WriteString(c, "EHLO localhost\r\n")
	readReply(t, r)

	be.panicOnMail = true
	io.WriteString(c, "RSET\r\nMAIL FROM:<root@nsa.gov>\r\n")
	for _, want := range []string{"250 ", "421 "} {
		if got := readReplyOrHeld(t, c, r, want); !strings.HasPrefix(got[0], want) {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	if line, err := r.ReadString('\n'); err != io.EOF {
		t.Fatalf("after 421: %q, %v; want the connection closed", line, err)
	}
}

// mssrelay patch 3 (MSSRELAY.md): a client that goes away in the middle
// of a BDAT LAST chunk has not sent its message. go-smtp v0.25.1 let
// io.Copy take the end of the stream for the end of the chunk, handed the
// backend the first bytes as a complete message and answered 250 (to
// nobody). The DATA reader always got this right: an end of stream before
// <CRLF>.<CRLF> is io.ErrUnexpectedEOF.
func TestBdatChunkCutByEOFIsNotAMessage(t *testing.T) {
	be, c, r, _ := loggedServer(t)
	io.WriteString(c, "EHLO localhost\r\n")
	readReply(t, r)
	io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\n")
	readReply(t, r)
	io.WriteString(c, "RCPT TO:<a@example.org>\r\n")
	readReply(t, r)

	io.WriteString(c, "BDAT 100 LAST\r\nSubject: only the first")
	c.(*net.TCPConn).CloseWrite()
	// The server replies as it sees fit, then ends the session on EOF.
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading to the end of the session: %v", err)
	}
	if len(be.anonmsgs) != 0 {
		t.Fatalf("a chunk cut short by EOF was delivered as a message %q (server said %q)", be.anonmsgs[0].Data, rest)
	}
}

package smtp_test

// mssrelay patch tests: how replies are written to the connection. A
// multi-line reply leaves in one write; the replies to a pipelined
// MAIL, RCPT, DATA group leave together (RFC 2920 §3.2); a reply is never
// held back when the client may be waiting for it.

import (
	"bufio"
	"io"
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

func loggedServer(t *testing.T) (*backend, net.Conn, *bufio.Reader, *writeLog) {
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

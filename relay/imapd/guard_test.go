package imapd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mssrelay/store"
)

// TestIsFailure: what the guard counts against a session.
func TestIsFailure(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"success", nil, false},
		{"NO", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent}, true},
		{"BAD", &imap.Error{Type: imap.StatusResponseTypeBad}, true},
		{"failed login", imapserver.ErrAuthFailed, true},
		{"wrapped NO", fmt.Errorf("select: %w", &imap.Error{Type: imap.StatusResponseTypeNo}), true},
		{"server bug is not the client's", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug}, false},
		{"connection failed mid-command", io.ErrUnexpectedEOF, false},
		{"plain error", errors.New("boom"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := isFailure(tc.err); got != tc.want {
				t.Errorf("isFailure(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestLoginTimeout: a client that never logs in, however busy it keeps
// the connection with commands the library answers by itself, is told
// BYE and closed once Config.LoginTimeout has passed; the closing is
// audited as imap.refuse.
func TestLoginTimeout(t *testing.T) {
	var mu sync.Mutex
	var events []store.AuditEvent
	svc := New(Config{
		Log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		LoginTimeout: 200 * time.Millisecond,
		Audit: func(e store.AuditEvent) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, e)
		},
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Serve(l, false) }()
	defer func() {
		if err := svc.Shutdown(t.Context()); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	conn, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The bound only keeps a broken server from hanging the test.
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q, %v", l, err)
	}
	// Keep the session busy until the server ends it: NOOPs are answered
	// by go-imap without reaching the session.
	var lines []string
	for i := 0; ; i++ {
		if _, err := fmt.Fprintf(conn, "n%d NOOP\r\n", i); err != nil {
			break // closed by the server
		}
		l, err := r.ReadString('\n')
		if l != "" {
			lines = append(lines, strings.TrimSpace(l))
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("unauthenticated session never closed; read %d lines", len(lines))
			}
			break
		}
		if strings.HasPrefix(l, "* BYE") {
			// The server closes right after BYE. A NOOP of ours still
			// unread when it closed makes the kernel answer with a reset:
			// closed all the same.
			if _, err := io.ReadAll(r); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("after BYE: %v", err)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(lines) == 0 || lines[len(lines)-1] != "* BYE Login timeout, reconnect to log in" {
		t.Fatalf("session ended with %q, want * BYE Login timeout", lines[max(0, len(lines)-3):])
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 || events[0].Kind != auditIMAPRefuse || events[0].Outcome != "BYE" ||
		!strings.Contains(events[0].Detail, "no login within 200ms") || events[0].Remote == "" {
		t.Errorf("audit events %+v, want one imap.refuse BYE for the login timeout", events)
	}
}

package loadgen_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mssrelay/relay/loadgen"
)

// fakeBackend is a plain SMTP server whose replies a test chooses: RCPT to
// an address starting with "unknown" is refused 550 5.1.1, DATA holding
// "REFUSE-451" is refused 451 4.7.5, DATA holding "CLOSE-421" gets a 421
// (the server then closes the connection), everything else is accepted.
type fakeBackend struct {
	sessions atomic.Int64
	accepted atomic.Int64
	mu       sync.Mutex
	received [][]byte // accepted messages as the server read them
}

func (b *fakeBackend) NewSession(*smtp.Conn) (smtp.Session, error) {
	b.sessions.Add(1)
	return &fakeSession{b: b}, nil
}

type fakeSession struct{ b *fakeBackend }

func (s *fakeSession) Reset()        {}
func (s *fakeSession) Logout() error { return nil }
func (s *fakeSession) Mail(string, *smtp.MailOptions) error {
	return nil
}

func (s *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "unknown") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}
	return nil
}

func (s *fakeSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	switch {
	case bytes.Contains(b, []byte("REFUSE-451")):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 5}, Message: "try again later"}
	case bytes.Contains(b, []byte("CLOSE-421")):
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down"}
	}
	s.b.accepted.Add(1)
	s.b.mu.Lock()
	s.b.received = append(s.b.received, b)
	s.b.mu.Unlock()
	return nil
}

func startFake(t *testing.T) (*fakeBackend, string) {
	t.Helper()
	be := &fakeBackend{}
	srv := smtp.NewServer(be)
	srv.Domain = "fake.test"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return be, l.Addr().String()
}

// batch builds n plain messages; body(i) is each one's body.
func batch(to string, n int, body func(i int) string) *loadgen.Batch {
	b := &loadgen.Batch{From: "dr@fake.test", To: to}
	for i := range n {
		m := fmt.Sprintf("From: dr@fake.test\r\nTo: %s\r\nSubject: %d\r\n\r\n%s\r\n", to, i, body(i))
		b.Messages = append(b.Messages, loadgen.Message{Data: []byte(m), Number: fmt.Sprint(i), Signer: "plain"})
		b.Bytes += int64(len(m))
	}
	return b
}

// TestRefusalsAndErrorsAreCounted checks that every way a message can fail
// lands in the right bucket, and that a refusal does not cost the
// connection (RSET keeps it usable) while a 421 does.
func TestRefusalsAndErrorsAreCounted(t *testing.T) {
	_, fakeAddr := startFake(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close() // nothing listens there any more: connections are refused

	const n, c = 12, 2
	tests := []struct {
		name        string
		addr, to    string
		body        func(i int) string
		accepted    int
		refused     map[string]int
		errors      map[string]int
		connections int // connection set-ups
		// connectionsMax, when set, allows up to this many: whether the
		// client reconnects after a 421 depends on whether messages are
		// left for it, which the scheduling decides.
		connectionsMax int
		perConn        int
		wantDataLats   int
	}{
		{
			name: "all accepted", addr: fakeAddr, to: "rx@fake.test",
			body:     func(int) string { return "ok" },
			accepted: n, connections: c, wantDataLats: n,
		},
		{
			name: "one in three refused at DATA", addr: fakeAddr, to: "rx@fake.test",
			body: func(i int) string {
				if i%3 == 0 {
					return "REFUSE-451"
				}
				return "ok"
			},
			accepted: n - n/3, refused: map[string]int{"451 4.7.5": n / 3}, connections: c, wantDataLats: n - n/3,
		},
		{
			name: "every RCPT refused", addr: fakeAddr, to: "unknown@fake.test",
			body:    func(int) string { return "ok" },
			refused: map[string]int{"550 5.1.1": n}, connections: c,
		},
		{
			name: "421 closes the connection", addr: fakeAddr, to: "rx@fake.test",
			body: func(i int) string {
				if i == 0 {
					return "CLOSE-421"
				}
				return "ok"
			},
			accepted: n - 1, refused: map[string]int{"421 4.3.2": 1}, connections: c, connectionsMax: c + 1, wantDataLats: n - 1,
		},
		{
			name: "one connection per message", addr: fakeAddr, to: "rx@fake.test", perConn: 1,
			body:     func(int) string { return "ok" },
			accepted: n, connections: n, wantDataLats: n,
		},
		{
			name: "server down", addr: deadAddr, to: "rx@fake.test",
			body:   func(int) string { return "ok" },
			errors: map[string]int{"connect: connection refused": n},
		},
	}
	for _, tt := range tests {
		for _, pipelining := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/pipelining=%v", tt.name, pipelining), func(t *testing.T) {
				want := refusalWant{
					accepted: tt.accepted, refused: tt.refused, errors: tt.errors,
					connections: tt.connections, connectionsMax: tt.connectionsMax, dataLats: tt.wantDataLats,
				}
				if pipelining && tt.connections > 0 {
					want.pipelined = n // go-smtp's server offers PIPELINING
				}
				refusalCase(t, tt.addr, tt.to, n, c, tt.perConn, !pipelining, tt.body, want)
			})
		}
	}
}

type refusalWant struct {
	accepted                 int
	refused, errors          map[string]int
	connections              int
	connectionsMax, dataLats int
	pipelined                int
}

func refusalCase(t *testing.T, addr, to string, n, c, perConn int, noPipelining bool, body func(int) string, tt refusalWant) {
	t.Helper()
	b := batch(to, n, body)
	r, err := loadgen.RunSMTP(context.Background(), b, loadgen.SMTPOptions{
		Addr: addr, Concurrency: c, PerConn: perConn, Timeout: 10 * time.Second, NoPipelining: noPipelining})
	if err != nil {
		t.Fatal(err)
	}
	if r.Pipelined != tt.pipelined {
		t.Errorf("%d transactions pipelined, want %d", r.Pipelined, tt.pipelined)
	}
	if r.Accepted != tt.accepted {
		t.Errorf("accepted %d, want %d", r.Accepted, tt.accepted)
	}
	if !sameCounts(r.Refused, tt.refused) {
		t.Errorf("refused %v, want %v", r.Refused, tt.refused)
	}
	if !sameCounts(r.Errors, tt.errors) {
		t.Errorf("errors %v, want %v", r.Errors, tt.errors)
	}
	if hi := max(tt.connections, tt.connectionsMax); r.Connections < tt.connections || r.Connections > hi {
		t.Errorf("%d connections, want %d to %d", r.Connections, tt.connections, hi)
	}
	if r.Data.Count != tt.dataLats {
		t.Errorf("%d DATA latencies, want %d (accepted messages only)", r.Data.Count, tt.dataLats)
	}
	if r.Security != "plain" {
		t.Errorf("security %q, want plain", r.Security)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for k := range tt.refused {
		if !strings.Contains(text.String(), k) {
			t.Errorf("text report does not name refusal %q:\n%s", k, text.String())
		}
	}
}

// TestDotStuffing checks that what the server reads is exactly the message:
// lines starting with "." are stuffed on the wire and unstuffed by the
// server (RFC 5321 §4.5.2), a lone "." line does not end the message early,
// and a message without a final CRLF still ends properly.
func TestDotStuffing(t *testing.T) {
	be, addr := startFake(t)
	bodies := []string{
		"From: a@fake.test\r\n\r\n.hidden\r\n.\r\n..two\r\nend\r\n",
		"From: a@fake.test\r\n\r\nno final line break",
		"From: a@fake.test\r\n\r\n.",
	}
	b := &loadgen.Batch{From: "dr@fake.test", To: "rx@fake.test"}
	for i, m := range bodies {
		b.Messages = append(b.Messages, loadgen.Message{Data: []byte(m), Number: fmt.Sprint(i), Signer: "plain"})
	}
	r, err := loadgen.RunSMTP(context.Background(), b, loadgen.SMTPOptions{Addr: addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.Accepted != len(bodies) {
		t.Fatalf("accepted %d of %d: %+v %+v", r.Accepted, len(bodies), r.Refused, r.Errors)
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	for i, m := range bodies {
		want := m
		if !strings.HasSuffix(want, "\r\n") {
			want += "\r\n" // DATA cannot carry a message without a final line break
		}
		if got := string(be.received[i]); got != want {
			t.Errorf("message %d: server read %q, want %q", i, got, want)
		}
	}
}

func TestStuff(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{".a\r\n.\r\nb\r\n", "..a\r\n..\r\nb\r\n.\r\n"},
		{"a\n.b\n", "a\n..b\n.\r\n"}, // bare LF still starts a line
		{"x.y\r\n", "x.y\r\n.\r\n"},  // a dot inside a line stays
	} {
		if got := string(loadgen.Stuff([]byte(tt.in))); got != tt.want {
			t.Errorf("Stuff(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestCancelledRunStops checks that a run whose context ends reports the
// messages it never sent instead of hanging.
func TestCancelledRunStops(t *testing.T) {
	_, addr := startFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := loadgen.RunSMTP(ctx, batch("rx@fake.test", 5, func(int) string { return "ok" }),
		loadgen.SMTPOptions{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	if r.NotSent != 5 || r.Accepted != 0 {
		t.Errorf("cancelled run: not sent %d, accepted %d; want 5 and 0", r.NotSent, r.Accepted)
	}
}

func TestRunSMTPRejectsBadOptions(t *testing.T) {
	b := batch("rx@fake.test", 1, func(int) string { return "ok" })
	tests := []struct {
		name string
		b    *loadgen.Batch
		o    loadgen.SMTPOptions
	}{
		{"empty batch", &loadgen.Batch{}, loadgen.SMTPOptions{Addr: "127.0.0.1:1"}},
		{"no address", b, loadgen.SMTPOptions{}},
		{"implicit TLS without config", b, loadgen.SMTPOptions{Addr: "127.0.0.1:1", ImplicitTLS: true}},
		{"negative per-connection", b, loadgen.SMTPOptions{Addr: "127.0.0.1:1", PerConn: -1}},
		{"negative rate", b, loadgen.SMTPOptions{Addr: "127.0.0.1:1", Rate: -5}},
	}
	for _, tt := range tests {
		if _, err := loadgen.RunSMTP(context.Background(), tt.b, tt.o); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}

func TestPrepareRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  loadgen.Config
	}{
		{"no messages", loadgen.Config{From: "a@b", To: "c@d", Plain: true}},
		{"no sender", loadgen.Config{N: 1, To: "c@d", Plain: true}},
		{"no signer", loadgen.Config{N: 1, From: "a@b", To: "c@d"}},
		{"bad size", loadgen.Config{N: 1, From: "a@b", To: "c@d", Plain: true, Size: "huge"}},
	}
	for _, tt := range tests {
		if _, err := loadgen.Prepare(tt.cfg); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}

// TestPreparePlain checks the plain batch: distinct numbers, sizes in the
// advertised range, a multipart/signed shape.
func TestPreparePlain(t *testing.T) {
	b, err := loadgen.Prepare(loadgen.Config{N: 20, From: "dr@fake.test", To: "rx@fake.test", Plain: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range b.Messages {
		if seen[m.Number] {
			t.Errorf("number %s used twice", m.Number)
		}
		seen[m.Number] = true
		if !bytes.Contains(m.Data, []byte("multipart/signed")) || !bytes.Contains(m.Data, []byte(m.Number)) {
			t.Errorf("message %s is not a multipart/signed naming its number", m.Number)
		}
	}
	if b.Min < 10<<10 || b.Max > 30<<10 {
		t.Errorf("sizes %d–%d, want 10–30 KiB", b.Min, b.Max)
	}
	var sum int64
	for _, m := range b.Messages {
		sum += int64(len(m.Data))
	}
	if sum != b.Bytes {
		t.Errorf("Bytes %d, want %d", b.Bytes, sum)
	}
}

func TestReplyKey(t *testing.T) {
	tests := []struct {
		err  *smtp.SMTPError
		want string
	}{
		{&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 5}}, "451 4.7.5"},
		{&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}}, "554 5.7.1"},
		{&smtp.SMTPError{Code: 421, EnhancedCode: smtp.NoEnhancedCode}, "421"},
		{&smtp.SMTPError{Code: 550}, "550"},
	}
	for _, tt := range tests {
		if got := loadgen.ReplyKey(tt.err); got != tt.want {
			t.Errorf("ReplyKey(%d %v) = %q, want %q", tt.err.Code, tt.err.EnhancedCode, got, tt.want)
		}
	}
}

func sameCounts(got, want map[string]int) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// TestPipelined421ThenClose: a server that answers a pipelined MAIL with
// 421 and closes before the RCPT and DATA replies (RFC 5321 §3.8) is
// counted as that refusal, not as a broken connection.
func TestPipelined421ThenClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				fmt.Fprint(c, "220 fake.test ESMTP\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch {
					case strings.HasPrefix(line, "EHLO"):
						fmt.Fprint(c, "250-fake.test\r\n250 PIPELINING\r\n")
					case strings.HasPrefix(line, "MAIL"):
						fmt.Fprint(c, "421 4.3.2 closing\r\n")
						return
					case strings.HasPrefix(line, "QUIT"):
						fmt.Fprint(c, "221 bye\r\n")
						return
					}
				}
			}()
		}
	}()
	b := batch("rx@fake.test", 3, func(int) string { return "ok" })
	r, err := loadgen.RunSMTP(context.Background(), b, loadgen.SMTPOptions{Addr: l.Addr().String(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.Refused["421 4.3.2"] != 3 || len(r.Errors) != 0 {
		t.Fatalf("refused %v, errors %v; want three 421 refusals and no errors", r.Refused, r.Errors)
	}
	if r.Connections != 3 {
		t.Errorf("%d connections, want 3 (a 421 ends the connection)", r.Connections)
	}
}

package relay_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
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
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "421 ") && !strings.HasPrefix(last, "500 ") {
		t.Errorf("session ended with %q, want a 421 or 500 closing reply", last)
	}
}

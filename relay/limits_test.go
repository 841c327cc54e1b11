package relay_test

import (
	"bufio"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/relay"
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

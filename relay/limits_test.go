package relay_test

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"mssrelay/configs"
	"mssrelay/relay"
)

// TestConnectionLimit: past limits.max_connections a listener answers
// "busy" and closes; a slot freed by a closing client is reused.
func TestConnectionLimit(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) { c.Limits.MaxConnections = 2 })
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

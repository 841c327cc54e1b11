package relay

import (
	"bufio"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand: no assertion depends on how
// fast the machine runs.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 6, 10, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestRateLimiterBuckets: each client network has its own bucket of
// perMinute tokens; IPv6 addresses share their /64's.
func TestRateLimiterBuckets(t *testing.T) {
	const perMinute = 3
	tests := []struct {
		name  string
		first string // exhausts its bucket
		other string
		same  bool // other shares first's bucket
	}{
		{"two IPv4 addresses", "192.0.2.1", "192.0.2.2", false},
		{"IPv4 neighbours are not grouped", "192.0.2.1", "192.0.2.254", false},
		{"IPv6 in one /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true},
		{"IPv6 in another /64", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"IPv6 zone ignored", "fe80::1%eth0", "fe80::2%eth1", true},
		{"IPv4 and IPv6", "192.0.2.1", "::ffff:c000:201", false}, // mapped form, not unmapped by the limiter itself
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRateLimiter(perMinute, 100, newFakeClock().now)
			for i := range perMinute {
				if !r.allow(addr(tc.first)) {
					t.Fatalf("connection %d of %d refused", i+1, perMinute)
				}
			}
			if r.allow(addr(tc.first)) {
				t.Fatalf("connection %d allowed past a burst of %d", perMinute+1, perMinute)
			}
			if got := r.allow(addr(tc.other)); got == tc.same {
				t.Errorf("%s after %s's bucket emptied: allowed %v, want %v", tc.other, tc.first, got, !tc.same)
			}
		})
	}
}

// TestRateLimiterRefill: tokens come back at perMinute a minute, never
// more than the burst, and a refused attempt costs nothing.
func TestRateLimiterRefill(t *testing.T) {
	clock := newFakeClock()
	r := newRateLimiter(6, 100, clock.now) // one token every 10 s
	ip := addr("198.51.100.7")
	steps := []struct {
		advance time.Duration
		tries   int
		allowed int
	}{
		{0, 8, 6},                 // the burst, then refused
		{9 * time.Second, 1, 0},   // not a whole token yet
		{1 * time.Second, 2, 1},   // 10 s: one token
		{25 * time.Second, 3, 2},  // 2.5 tokens: two
		{time.Hour, 10, 6},        // capped at the burst
		{-time.Minute, 1, 0},      // a clock going back adds nothing
		{70 * time.Second, 20, 1}, // from the reading before: 10 s net
	}
	for i, s := range steps {
		clock.advance(s.advance)
		got := 0
		for range s.tries {
			if r.allow(ip) {
				got++
			}
		}
		if got != s.allowed {
			t.Fatalf("step %d (+%v): %d of %d allowed, want %d", i, s.advance, got, s.tries, s.allowed)
		}
	}
}

// TestRateLimiterMemory: buckets that refilled are forgotten, and past
// maxKeys networks the limiter lets new ones through untracked (fails
// open) instead of refusing everyone new.
func TestRateLimiterMemory(t *testing.T) {
	clock := newFakeClock()
	r := newRateLimiter(60, 3, clock.now) // a token a second
	for _, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		for range 60 {
			r.allow(addr(ip))
		}
	}
	if n := r.tracked(); n != 3 {
		t.Fatalf("%d networks tracked, want 3", n)
	}
	// Table full, nobody refilled: a fourth network passes, untracked, as
	// often as it likes; the tracked ones stay limited.
	for i := range 100 {
		if !r.allow(addr("203.0.113.9")) {
			t.Fatalf("untracked network refused at connection %d: the limiter must fail open", i+1)
		}
	}
	if n := r.tracked(); n != 3 {
		t.Fatalf("%d networks tracked after the overflow, want 3", n)
	}
	if r.allow(addr("192.0.2.1")) {
		t.Fatal("a tracked, empty bucket let a connection through")
	}
	// A minute later every bucket is full again: the periodic sweep
	// forgets them all, and the newcomer gets a bucket of its own.
	clock.advance(time.Minute)
	if !r.allow(addr("203.0.113.9")) {
		t.Fatal("newcomer refused after the sweep")
	}
	if n := r.tracked(); n != 1 {
		t.Fatalf("%d networks tracked after the sweep, want 1 (the newcomer)", n)
	}
}

// TestRateLimiterNil: no limiter, or an address that is not IP, is not
// limited.
func TestRateLimiterNil(t *testing.T) {
	var none *rateLimiter
	r := newRateLimiter(1, 10, newFakeClock().now)
	for i := range 3 {
		if !none.allow(addr("192.0.2.1")) {
			t.Fatal("nil limiter refused")
		}
		if !r.allow(netip.Addr{}) {
			t.Fatalf("non-IP address refused at connection %d", i+1)
		}
	}
	if n := r.tracked(); n != 0 {
		t.Errorf("non-IP addresses tracked: %d buckets", n)
	}
}

// TestLimitListenerRate drives a limitListener over loopback sockets with
// a hand-moved clock: past the rate a connection gets the busy reply (or,
// on a TLS listener, nothing) and the accepted ones are unaffected.
func TestLimitListenerRate(t *testing.T) {
	for _, busy := range []string{"421 4.3.2 Too many connections, try again later\r\n", ""} {
		name := "plaintext"
		if busy == "" {
			name = "TLS (closed without a word)"
		}
		t.Run(name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var busyBytes []byte
			if busy != "" {
				busyBytes = []byte(busy)
			}
			clock := newFakeClock()
			l := newLimitListener(inner, 0, 0, newRateLimiter(2, maxRateKeys, clock.now), busyBytes).(*limitListener)
			defer l.Close()
			// The server greets every connection it accepts.
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					_, _ = c.Write([]byte("220 hello\r\n"))
					go func() {
						// Hold the connection until the client closes it.
						_, _ = bufio.NewReader(c).ReadString('\n')
						c.Close()
					}()
				}
			}()
			first := func() string {
				c, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				// The bound only keeps a broken listener from hanging the test.
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				return line
			}
			for i, want := range []string{"220 hello\r\n", "220 hello\r\n", busy} {
				if got := first(); got != want {
					t.Fatalf("connection %d: %q, want %q", i+1, got, want)
				}
			}
			clock.advance(30 * time.Second) // one token back
			if got := first(); got != "220 hello\r\n" {
				t.Fatalf("after the refill: %q, want the greeting", got)
			}
			if got := first(); got != busy {
				t.Fatalf("past the rate again: %q, want %q", got, busy)
			}
		})
	}
}

package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// limitListener caps the connections a listener holds open at once, in all
// and per client address, and how fast one client network may open new
// ones. Past a cap a new connection is told so (on plaintext listeners, in
// the protocol's words) and closed at once, instead of waiting in the
// kernel's backlog with no answer: a client learns to retry, and neither a
// flood nor one greedy host can make the relay hold an unbounded number of
// sessions or spend its CPU on TLS handshakes for connections it then drops.
//
// Connections are not wrapped in anything the protocol libraries would see
// as a different type on TLS listeners (go-smtp detects TLS with a
// *tls.Conn assertion): tls.NewListener wraps this listener, so the
// *tls.Conn stays outermost.
type limitListener struct {
	net.Listener
	max, maxPerIP int
	rate          *rateLimiter // nil: no rate limit
	busy          []byte       // written to a refused connection; nil on TLS listeners

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
}

// newLimitListener applies the caps to l: max connections at once, maxPerIP
// from one address at once (0 or less: no cap), and the new-connection
// rate of rate (nil: none), which the relay shares between all its
// listeners so that a client gets one budget, not one per port.
func newLimitListener(l net.Listener, max, maxPerIP int, rate *rateLimiter, busy []byte) net.Listener {
	if max <= 0 && maxPerIP <= 0 && rate == nil {
		return l
	}
	return &limitListener{Listener: l, max: max, maxPerIP: maxPerIP, rate: rate, busy: busy, perIP: make(map[netip.Addr]int)}
}

// newConnRate is the relay's connection-rate limiter: perMinute new
// connections a minute per client network; nil when perMinute ≤ 0.
func newConnRate(perMinute int) *rateLimiter {
	if perMinute <= 0 {
		return nil
	}
	return newRateLimiter(perMinute, maxRateKeys, time.Now)
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		// The rate is checked first: every attempt counts against it, even
		// one the concurrency caps would refuse anyway, so that a client
		// retrying in a tight loop against a full listener is slowed too.
		if l.rate.allow(ip) && l.acquire(ip) {
			return &limitConn{Conn: c, release: func() { l.release(ip) }}, nil
		}
		if l.busy != nil {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write(l.busy)
		}
		c.Close()
	}
}

func (l *limitListener) acquire(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return false
	}
	if l.maxPerIP > 0 && ip.IsValid() && l.perIP[ip] >= l.maxPerIP {
		return false
	}
	l.total++
	if ip.IsValid() {
		l.perIP[ip]++
	}
	return true
}

func (l *limitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if ip.IsValid() {
		if l.perIP[ip]--; l.perIP[ip] <= 0 {
			delete(l.perIP, ip)
		}
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// limitConn gives its slot back exactly once, however often it is closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// maxRateKeys bounds the client networks a rateLimiter tracks at once.
// A bucket is a few dozen bytes: 100,000 of them are a few MiB per
// listener. Filling the table takes connections from 100,000 networks
// between two sweeps (a minute, then a second once it is full).
const maxRateKeys = 100_000

// ipv6RateBits is the prefix length IPv6 clients are grouped by. A /64 is
// the smallest network a site is given (RFC 6177 §2; one LAN, RFC 4291
// §2.5.1 interface identifiers): one host can use any of its 2^64
// addresses, so counting per address would not slow it at all.
const ipv6RateBits = 64

// rateLimiter is a token bucket per client network (an IPv4 address, an
// IPv6 /64): each holds up to burst tokens, refilled at perMinute a
// minute; a new connection takes one, and none left means refused. A
// client that stays under the rate never notices; one that opens
// connections in a loop (a password sprayer reconnecting after each
// lockout answer, a TLS handshake flood, a broken client) gets the busy
// reply until its bucket refills.
//
// Memory is bounded. A full bucket is what an absent one would be, so
// buckets that refilled are swept away (once per refill period, or at
// most once a second while the table is full), and the table never holds
// more than maxKeys networks. When it is full of networks that all
// connected within the last minute, a connection from yet another network
// is let through untracked: the limiter fails open. Failing closed would
// hand anyone who controls maxKeys networks (an IPv6 /47 has enough) a way
// to shut every new client out, which is the outcome the limit exists to
// prevent; failing open only loses the rate limit for those networks,
// while max_connections and max_connections_per_ip still bound what they
// can hold open.
//
// A nil *rateLimiter allows everything.
type rateLimiter struct {
	rate    float64       // tokens per second
	burst   float64       // bucket size
	refill  time.Duration // time for an empty bucket to fill: the sweep period
	maxKeys int
	now     func() time.Time // time.Now; tests inject a clock

	mu        sync.Mutex
	buckets   map[netip.Addr]bucket // keyed by rateKey
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time // when tokens was computed
}

// newRateLimiter allows perMinute connections a minute per client network,
// in bursts of up to perMinute.
func newRateLimiter(perMinute, maxKeys int, now func() time.Time) *rateLimiter {
	return &rateLimiter{
		rate:      float64(perMinute) / 60,
		burst:     float64(perMinute),
		refill:    time.Minute,
		maxKeys:   maxKeys,
		now:       now,
		buckets:   make(map[netip.Addr]bucket),
		lastSweep: now(),
	}
}

// rateKey is the network a client address is counted under.
func rateKey(ip netip.Addr) netip.Addr {
	if ip.Is6() {
		p, err := ip.Prefix(ipv6RateBits)
		if err == nil {
			return p.Addr()
		}
	}
	return ip
}

// allow takes a token for a connection from ip, and says whether there
// was one. Addresses that are not IP (a listener on a Unix socket) are not
// limited, as with the other caps.
func (r *rateLimiter) allow(ip netip.Addr) bool {
	if r == nil || !ip.IsValid() {
		return true
	}
	key := rateKey(ip)
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.lastSweep) >= r.refill {
		r.sweep(now)
	}
	b, ok := r.buckets[key]
	if !ok {
		if len(r.buckets) >= r.maxKeys {
			if now.Sub(r.lastSweep) >= time.Second {
				r.sweep(now)
			}
			if len(r.buckets) >= r.maxKeys {
				return true // fail open: see the type's comment
			}
		}
		b = bucket{tokens: r.burst, last: now}
	}
	b.tokens = r.level(b, now)
	if now.After(b.last) {
		b.last = now
	}
	if b.tokens < 1 {
		r.buckets[key] = b
		return false
	}
	b.tokens--
	r.buckets[key] = b
	return true
}

// level is b's token count at now.
func (r *rateLimiter) level(b bucket, now time.Time) float64 {
	if d := now.Sub(b.last); d > 0 {
		// A clock going backwards (d < 0) adds nothing, and b.last stays
		// at the latest reading: time is not counted twice.
		b.tokens += d.Seconds() * r.rate
	}
	return min(b.tokens, r.burst)
}

// sweep forgets the buckets that are full again. r.mu is held.
func (r *rateLimiter) sweep(now time.Time) {
	for k, b := range r.buckets {
		if r.level(b, now) >= r.burst {
			delete(r.buckets, k)
		}
	}
	r.lastSweep = now
}

// tracked is the number of client networks with a bucket (tests).
func (r *rateLimiter) tracked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}

package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// limitListener caps the connections a listener holds open at once, in all
// and per client address. Past a cap a new connection is told so (on
// plaintext listeners, in the protocol's words) and closed at once, instead
// of waiting in the kernel's backlog with no answer: a client learns to
// retry, and neither a flood nor one greedy host can make the relay hold an
// unbounded number of sessions.
//
// Connections are not wrapped in anything the protocol libraries would see
// as a different type on TLS listeners (go-smtp detects TLS with a
// *tls.Conn assertion): tls.NewListener wraps this listener, so the
// *tls.Conn stays outermost.
type limitListener struct {
	net.Listener
	max, maxPerIP int
	busy          []byte // written to a refused connection; nil on TLS listeners

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
}

func newLimitListener(l net.Listener, max, maxPerIP int, busy []byte) net.Listener {
	if max <= 0 && maxPerIP <= 0 {
		return l
	}
	return &limitListener{Listener: l, max: max, maxPerIP: maxPerIP, busy: busy, perIP: make(map[netip.Addr]int)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if l.acquire(ip) {
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

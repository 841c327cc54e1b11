package relay

import (
	"net"
	"sync"
	"time"
)

// limitListener caps the connections a listener holds open at once. Past
// the cap a new connection is told so (on plaintext listeners, in the
// protocol's words) and closed at once, instead of waiting in the kernel's
// backlog with no answer: a client learns to retry, and a flood cannot make
// the relay hold an unbounded number of sessions.
//
// Connections are not wrapped in anything the protocol libraries would see
// as a different type on TLS listeners (go-smtp detects TLS with a
// *tls.Conn assertion): tls.NewListener wraps this listener, so the
// *tls.Conn stays outermost.
type limitListener struct {
	net.Listener
	sem  chan struct{}
	busy []byte // written to a refused connection; nil on TLS listeners
}

func newLimitListener(l net.Listener, max int, busy []byte) net.Listener {
	if max <= 0 {
		return l
	}
	return &limitListener{Listener: l, sem: make(chan struct{}, max), busy: busy}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			if l.busy != nil {
				_ = c.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = c.Write(l.busy)
			}
			c.Close()
		}
	}
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

// Package smtpd is the SMTP submission service: STARTTLS (RFC 3207) and
// implicit TLS (RFC 8314) listeners, AUTH PLAIN (RFC 4954) after TLS only,
// and the hand-off of each DATA to the intake path.
package smtpd

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"mssrelay/relay/auth"
	"mssrelay/relay/intake"
	"mssrelay/relay/metrics"
	"mssrelay/store"
)

// Config is what the SMTP service needs.
type Config struct {
	Hostname        string
	TLS             *tls.Config
	Auth            *auth.Directory
	Intake          *intake.Intake
	Log             *slog.Logger
	MaxMessageBytes int64
	MaxRecipients   int
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	// Audit records logins and envelope refusals (nil: not audited).
	Audit func(store.AuditEvent)
	// Metrics records sessions, logins and DATA outcomes (nil: none).
	Metrics *metrics.Metrics
	// LocalDomain is server.mail_domain: an unknown address there is
	// refused, never relayed.
	LocalDomain string
	// Operators is the whitelist of other operators' domains (nil: no
	// exchange with other operators): their servers may deliver on
	// smtp.relay, and local prescribers' mail to their addresses is
	// relayed through the outbound queue.
	Operators interface{ Allows(domain string) bool }
	// PeerTLS is smtp.relay's TLS configuration: the server certificate,
	// and client certificates verified against the trust anchors.
	PeerTLS *tls.Config
	// CheckPeer checks a peer's verified certificate chain against the
	// CRLs (signing.Trust.CheckRevocation); nil: not checked.
	CheckPeer func(chain []*x509.Certificate) error
	// MaxSession bounds a session's length (0: none): every command
	// resets ReadTimeout, so a NOOP loop would otherwise hold a
	// connection forever.
	MaxSession time.Duration
}

// Service runs SMTP listeners sharing one backend.
type Service struct {
	cfg     Config
	servers []*smtp.Server

	mu       sync.Mutex
	sessions map[*session]struct{}
	draining bool
	// inflight counts DATA transactions between the end of the client's data
	// and our reply: shutdown waits for them so that a message being filed
	// either gets its 250 or was never committed.
	inflight sync.WaitGroup
	// scratch holds reusable *bytes.Buffer for reading DATA (readAll).
	scratch sync.Pool
}

// New returns a service; call Serve for each listener.
func New(cfg Config) *Service {
	return &Service{cfg: cfg, sessions: make(map[*session]struct{})}
}

// Serve runs one listener until Shutdown. implicitTLS wraps the listener in
// TLS (port 465); otherwise clients must use STARTTLS before AUTH (port 587).
func (s *Service) Serve(l net.Listener, implicitTLS bool) error {
	srv := s.newServer(s)
	l = s.withLifetime(l) // under TLS: go-smtp must see the *tls.Conn
	if implicitTLS {
		l = tls.NewListener(l, s.cfg.TLS)
	} else {
		srv.TLSConfig = s.cfg.TLS
	}
	return s.run(srv, l)
}

// newServer is a go-smtp server with the service's limits.
func (s *Service) newServer(be smtp.Backend) *smtp.Server {
	srv := smtp.NewServer(be)
	srv.Domain = s.cfg.Hostname
	srv.MaxMessageBytes = s.cfg.MaxMessageBytes
	srv.MaxRecipients = s.cfg.MaxRecipients
	// go-smtp applies MaxLineLength to DATA lines too; a long base64 line
	// must not kill a transaction. Size is bounded by MaxMessageBytes.
	srv.MaxLineLength = 0
	srv.ReadTimeout = s.cfg.ReadTimeout
	srv.WriteTimeout = s.cfg.WriteTimeout
	srv.AllowInsecureAuth = false
	srv.ErrorLog = slogAdapter{s.cfg.Log}
	return srv
}

// run serves l with srv until Shutdown.
func (s *Service) run(srv *smtp.Server, l net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		l.Close()
		return smtp.ErrServerClosed
	}
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	err := srv.Serve(l)
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and ends every session cleanly:
// a session waiting for a command is told 421 and closed; a transaction in
// DATA finishes (its 250 goes out) until ctx expires; then the rest are cut.
//
// Sessions are ended by moving their read deadline into the past rather
// than by closing the socket, because go-smtp writes the reply to DATA only
// after Session.Data returns: closing at that moment would file a message
// and lose its 250 (the client would resend; dedupe would keep it single,
// but the promise is that transactions in DATA finish). A past deadline
// makes the session's next read fail, and go-smtp then answers 421 itself.
// go-smtp sets a fresh deadline before each read, so the kick repeats until
// the session is gone.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	servers := s.servers
	s.mu.Unlock()

	for _, srv := range servers {
		// Shutdown closes the listeners and then waits for connections;
		// the waiting is done here, with a deadline.
		go srv.Shutdown(ctx) //nolint:errcheck // the drain below bounds it
	}

	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
drain:
	for {
		s.kick(func(ss *session) bool { return !ss.busy() })
		select {
		case <-done:
			break drain
		case <-ctx.Done():
			err = ctx.Err()
			break drain
		case <-tick.C:
		}
	}
	// Every transaction has its reply (or ran out of time): let the last
	// 250s reach their clients, then cut whatever is left.
	grace := time.NewTimer(2 * time.Second)
	defer grace.Stop()
	for s.kick(func(*session) bool { return true }) > 0 {
		select {
		case <-grace.C:
			s.closeSessions()
			return err
		case <-tick.C:
		}
	}
	return err
}

// kick moves the read deadline of the matching sessions into the past and
// returns how many sessions remain.
func (s *Service) kick(match func(*session) bool) int {
	s.mu.Lock()
	var conns []net.Conn
	for ss := range s.sessions {
		if match(ss) {
			conns = append(conns, ss.conn.Conn())
		}
	}
	n := len(s.sessions)
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Unix(1, 0))
	}
	return n
}

func (s *Service) closeSessions() {
	// Collect under the lock, close outside it: closing a go-smtp
	// connection calls Logout, which takes s.mu to forget the session.
	s.mu.Lock()
	conns := make([]*smtp.Conn, 0, len(s.sessions))
	for ss := range s.sessions {
		conns = append(conns, ss.conn)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// NewSession implements smtp.Backend.
func (s *Service) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ss, err := s.newSession(c, false)
	if err != nil {
		return nil, err
	}
	return ss, nil
}

// newSession registers a session; peer marks one on smtp.relay.
func (s *Service) newSession(c *smtp.Conn, peer bool) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		// RFC 5321 §3.8: 421 when the service is shutting down.
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
	}
	ss := &session{svc: s, conn: c, id: newID(), remote: c.Conn().RemoteAddr().String(), peer: peer}
	ss.log = s.cfg.Log.With("session", ss.id, "remote", ss.remote)
	s.sessions[ss] = struct{}{}

	s.cfg.Metrics.SessionOpened(metrics.SMTP)
	return ss, nil
}

// withLifetime bounds how long each connection l accepts lives
// (Config.MaxSession). It must wrap the listener below any TLS layer:
// go-smtp recognises implicit TLS by the *tls.Conn type.
func (s *Service) withLifetime(l net.Listener) net.Listener {
	if s.cfg.MaxSession <= 0 {
		return l
	}
	return lifetimeListener{Listener: l, s: s}
}

type lifetimeListener struct {
	net.Listener
	s *Service
}

func (l lifetimeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	lc := &lifetimeConn{Conn: c}
	lc.timer = time.AfterFunc(l.s.cfg.MaxSession, func() { l.s.expire(lc) })
	return lc, nil
}

// lifetimeConn stops its timer when closed, so that a busy listener does
// not accumulate an hour of timers.
type lifetimeConn struct {
	net.Conn
	timer *time.Timer
}

func (c *lifetimeConn) Close() error {
	c.timer.Stop()
	return c.Conn.Close()
}

// expire ends a connection that outlived MaxSession the way Shutdown ends
// sessions: its read deadline is moved into the past, so that its next
// read fails and go-smtp answers 421; a transaction in DATA finishes
// first. go-smtp sets a fresh deadline before each read, so the kick
// repeats until the connection is gone, and after a grace it is closed.
// This works at the connection, not the session: go-smtp creates the
// session at EHLO, and a client that never sends one must be bounded too.
func (s *Service) expire(c net.Conn) {
	remote := c.RemoteAddr().String()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		if s.busyConn(remote) {
			i = 0 // a transaction in DATA finishes; the grace starts after it
		} else if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil {
			return // closed
		} else if i == 0 {
			s.cfg.Log.Info("smtp session too long, closing", "remote", remote, "max", s.cfg.MaxSession.String())
		} else if i > 50 {
			c.Close()
			return
		}
		<-tick.C
	}
}

// busyConn reports whether the session of the connection from remote is
// in DATA.
func (s *Service) busyConn(remote string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ss := range s.sessions {
		if ss.remote == remote {
			return ss.busy()
		}
	}
	return false
}

func (s *Service) forget(ss *session) {
	s.mu.Lock()
	_, open := s.sessions[ss]
	delete(s.sessions, ss)
	s.mu.Unlock()
	// metrics: count each session's end once, however often Logout runs.
	if open {
		s.cfg.Metrics.SessionClosed(metrics.SMTP)
	}
}

// beginData registers an in-flight transaction unless shutting down. The
// session is marked busy under the same lock that Shutdown takes, so a
// session is either drained as busy or refused its DATA, never cut off
// between the two.
func (s *Service) beginData(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.inflight.Add(1)
	ss.setInData(true)
	return true
}

func (s *Service) endData(ss *session) {
	ss.setInData(false)
	s.inflight.Done()
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// slogAdapter routes go-smtp's internal error log to slog.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) {
	a.log.Warn("smtp server", "detail", sprintf(format, v...))
}

func (a slogAdapter) Println(v ...any) {
	a.log.Warn("smtp server", "detail", sprintln(v...))
}

// Package imapd is the IMAP service executants use to retrieve
// prescriptions with ordinary mail clients: implicit TLS (RFC 8314) and
// STARTTLS (RFC 3501 §6.2.1) listeners, LOGIN/AUTHENTICATE PLAIN only over
// TLS, and a go-imap/v2 backend over the store's mailbox views.
package imapd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mssrelay/mime"
	"mssrelay/relay/auth"
	"mssrelay/relay/metrics"
	"mssrelay/store"
)

// Config is what the IMAP service needs.
type Config struct {
	TLS       *tls.Config
	Auth      *auth.Directory
	Store     *store.Store
	Log       *slog.Logger
	Limits    mime.Limits // applied to APPENDed messages before parsing
	MaxAppend uint32      // APPENDLIMIT (RFC 7889)
	// Audit records logins, fetches, flag changes and expunges (nil: not
	// audited).
	Audit func(store.AuditEvent)
	// Fetched is told which records an account's client read the
	// contents of (FETCH of a body section), for the prescriptions'
	// history (store.MarkFetched); it must not block. nil: not recorded.
	Fetched func(account string, records []uint64)
	// Metrics records sessions and failed logins (nil: none).
	Metrics *metrics.Metrics
	// MaxSessionsPerAccount bounds one account's simultaneous logged-in
	// sessions over every listener of the service; a LOGIN beyond it gets
	// NO [LIMIT] (RFC 5530). 0: no limit.
	MaxSessionsPerAccount int
	// MaxErrors is how many failed commands in a row (NO or BAD answers
	// from the session, with no successful command between) a session may
	// give before it is told "* BYE Too many errors" and closed (RFC 3501
	// §7.1.5). 0: DefaultMaxErrors.
	MaxErrors int
	// LoginTimeout is how long a session may stay unauthenticated before
	// it is told BYE and closed. 0: DefaultLoginTimeout.
	LoginTimeout time.Duration
}

// Defaults of the hostile-client bounds in Config.
const (
	// DefaultMaxErrors: Dovecot also disconnects after 20 bad commands
	// in a row. Mail clients answered NO now and then (a folder another
	// client deleted, a full quota) succeed in between and never get
	// near it; a client looping on a failing command, or guessing
	// passwords on one connection, reaches it quickly.
	DefaultMaxErrors = 20
	// DefaultLoginTimeout: long enough for a mail client that asks its
	// user for the password after connecting (Dovecot's login processes
	// allow the same three minutes), short enough that unauthenticated
	// connections kept alive with NOOP or CAPABILITY cannot pile up.
	DefaultLoginTimeout = 3 * time.Minute
)

// caps lists what the backend really implements. Advertising a capability
// whose interface the session lacks panics go-imap, and IMAP4rev2 implies
// extensions we do not all offer yet, so only IMAP4rev1 plus these.
// UNSELECT, IDLE, ENABLE, SASL-IR and LITERAL- come from the library.
var caps = imap.CapSet{
	imap.CapIMAP4rev1:    {},
	imap.CapNamespace:    {}, // RFC 2342
	imap.CapUIDPlus:      {}, // RFC 4315
	imap.CapMove:         {}, // RFC 6851
	imap.CapSpecialUse:   {}, // RFC 6154
	imap.CapLiteralPlus:  {}, // RFC 7888
	imap.CapChildren:     {}, // RFC 3348
	imap.CapStatusSize:   {}, // RFC 8438
	imap.CapESearch:      {}, // RFC 4731
	imap.CapListExtended: {}, // RFC 5258
	imap.CapListStatus:   {}, // RFC 5819
}

// Service runs IMAP listeners sharing one backend.
type Service struct {
	cfg Config

	mu       sync.Mutex
	servers  []*imapserver.Server
	conns    map[*imapserver.Conn]struct{}
	draining bool
	// logins counts the logged-in sessions of each account (acquire,
	// release); an account with none has no key.
	logins map[string]int

	// snaps holds the latest entry list of recently selected mailboxes,
	// shared read-only by the sessions that have them selected
	// (mailboxEntries): a thousand clients idling on one INBOX hold one
	// copy, and a new message is read once, not once per session.
	snapMu sync.Mutex
	snaps  map[string]*snapshot
}

// snapshot is a mailbox's entries at one ModSeq. Never modified: sessions
// copy before they change their view (selected.own).
type snapshot struct {
	info    store.MailboxInfo
	entries []store.Entry
}

// maxSnapshots bounds the cache; past it, arbitrary snapshots are dropped
// (sessions keep the ones they hold).
const maxSnapshots = 1024

// mailboxEntries returns a mailbox's info and entries like
// store.Entries, from the shared snapshot when the mailbox has not changed
// since it was taken. The entries must not be modified.
func (s *Service) mailboxEntries(st *store.Store, account, name string) (*store.MailboxInfo, []store.Entry, error) {
	cur, err := st.Mailbox(account, name)
	if err != nil {
		return nil, nil, err
	}
	key := account + "\x00" + cur.Name
	s.snapMu.Lock()
	sn := s.snaps[key]
	s.snapMu.Unlock()
	// ModSeq grows with every change of the mailbox (new entry, flags,
	// expunge); UIDVALIDITY tells a recreated mailbox of the same name.
	if sn != nil && sn.info.ModSeq == cur.ModSeq && sn.info.UIDValidity == cur.UIDValidity {
		info := sn.info
		return &info, sn.entries, nil
	}
	info, entries, err := st.Entries(account, name)
	if err != nil {
		return nil, nil, err
	}
	s.snapMu.Lock()
	if old := s.snaps[key]; old == nil || old.info.UIDValidity != info.UIDValidity || old.info.ModSeq < info.ModSeq {
		if len(s.snaps) >= maxSnapshots {
			for k := range s.snaps {
				delete(s.snaps, k)
				if len(s.snaps) < maxSnapshots/2 {
					break
				}
			}
		}
		s.snaps[key] = &snapshot{info: *info, entries: entries}
	}
	s.snapMu.Unlock()
	return info, entries, nil
}

// New returns a service; call Serve for each listener.
func New(cfg Config) *Service {
	return &Service{cfg: cfg, conns: make(map[*imapserver.Conn]struct{}), logins: make(map[string]int), snaps: make(map[string]*snapshot)}
}

// Serve runs one listener until Shutdown. implicitTLS wraps the listener
// in TLS (port 993); otherwise LOGIN is disabled until STARTTLS (port 143).
func (s *Service) Serve(l net.Listener, implicitTLS bool) error {
	opts := &imapserver.Options{
		NewSession: s.newSession,
		Caps:       caps,
		Logger:     logAdapter{s.cfg.Log},
		// RFC 8314 §3 / RFC 3501 §6.2.3: no plaintext passwords.
		InsecureAuth: false,
	}
	if implicitTLS {
		l = tls.NewListener(l, s.cfg.TLS)
	} else {
		opts.TLSConfig = s.cfg.TLS
	}
	srv := imapserver.New(opts)
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	err := srv.Serve(l)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown says BYE to every client (RFC 3501 §7.1.5) and closes the
// listeners. IMAP holds no unacknowledged data, so nothing waits.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	servers := s.servers
	conns := make([]*imapserver.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Bye("Server shutting down")
	}
	var err error
	for _, srv := range servers {
		if e := srv.Close(); e != nil && err == nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	return err
}

func (s *Service) newSession(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil, nil, &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Server shutting down"}
	}
	s.conns[c] = struct{}{}
	s.cfg.Metrics.SessionOpened(metrics.IMAP)
	remote := c.NetConn().RemoteAddr().String()
	sess := &session{
		svc:    s,
		conn:   c,
		remote: remote,
		log:    s.cfg.Log.With("proto", "imap", "remote", remote),
	}
	// The login deadline starts with the greeting; Login or Close stops it.
	sess.loginTimer = time.AfterFunc(s.loginTimeout(), sess.loginExpired)
	return &guard{sess}, nil, nil
}

func (s *Service) maxErrors() int {
	if s.cfg.MaxErrors > 0 {
		return s.cfg.MaxErrors
	}
	return DefaultMaxErrors
}

func (s *Service) loginTimeout() time.Duration {
	if s.cfg.LoginTimeout > 0 {
		return s.cfg.LoginTimeout
	}
	return DefaultLoginTimeout
}

func (s *Service) forget(c *imapserver.Conn) {
	s.mu.Lock()
	_, open := s.conns[c]
	delete(s.conns, c)
	s.mu.Unlock()
	// metrics: count each session's end once.
	if open {
		s.cfg.Metrics.SessionClosed(metrics.IMAP)
	}
}

// acquire counts a new logged-in session of account, unless the account
// already has MaxSessionsPerAccount of them. The count is taken at login,
// not at connect: before LOGIN nobody knows the account, and counting
// failed attempts would let a stranger lock a pharmacy out.
func (s *Service) acquire(account string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit := s.cfg.MaxSessionsPerAccount; limit > 0 && s.logins[account] >= limit {
		return false
	}
	s.logins[account]++
	return true
}

// release uncounts a session acquire counted.
func (s *Service) release(account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.logins[account]; n > 1 {
		s.logins[account] = n - 1
	} else {
		delete(s.logins, account)
	}
}

// Sessions returns the number of logged-in sessions of account.
func (s *Service) Sessions(account string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins[account]
}

type logAdapter struct{ log *slog.Logger }

func (a logAdapter) Printf(format string, v ...any) {
	a.log.Warn("imap server", "detail", fmt.Sprintf(format, v...))
}

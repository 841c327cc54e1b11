// Package auth checks logins against the configured accounts.
//
// It is shared by SMTP submission and IMAP so that both protocols apply the
// same rules: the same account lookup, the same password check, the same
// constant-time behaviour for unknown accounts, the same cache.
package auth

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"mssrelay/configs"
)

// ErrFailed is returned for any failed login. It deliberately does not say
// whether the account exists.
var ErrFailed = errors.New("authentication failed")

// DefaultCacheTTL is how long a successful password check is remembered.
const DefaultCacheTTL = 5 * time.Minute

// Directory authenticates users against a configuration's accounts.
type Directory struct {
	cfg      atomic.Pointer[configs.Config]
	cache    *cache
	throttle *throttle
	// dummyHash is compared against when the account does not exist, so that
	// an unknown account costs the same time as a wrong password and logins
	// cannot be used to probe which accounts exist.
	dummyHash []byte
}

// Options tune a Directory.
type Options struct {
	// CacheTTL is how long a successful login is remembered (0: the
	// default; negative: no cache).
	CacheTTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Sleep holds back the answer to a failed login (time.Sleep when
	// nil; tests record instead of waiting).
	Sleep func(time.Duration)
	// Policy throttles failed logins (DefaultPolicy() when zero).
	Policy Policy
}

// OptionsFrom maps the configuration's [auth] section.
func OptionsFrom(c configs.Auth) Options {
	ttl := c.CacheTTL.Duration
	if ttl == 0 {
		ttl = -1 // configured off
	}
	return Options{CacheTTL: ttl, Policy: Policy{
		FailureDelay: c.FailureDelay.Duration, MaxFailures: c.MaxFailures, Lockout: c.Lockout.Duration,
	}}
}

// New returns a directory over cfg's accounts.
func New(cfg *configs.Config, opts Options) *Directory {
	// A hash at the cost the accounts use, of a password nobody has.
	h, err := bcrypt.GenerateFromPassword([]byte("mssrelay-no-such-account"), configs.PasswordCost)
	if err != nil {
		// bcrypt fails only for passwords over 72 bytes or bad costs.
		panic(err)
	}
	ttl := opts.CacheTTL
	if ttl == 0 {
		ttl = DefaultCacheTTL
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	policy := opts.Policy
	if policy == (Policy{}) {
		policy = DefaultPolicy()
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = time.Sleep
	}
	d := &Directory{dummyHash: h, cache: newCache(ttl, now), throttle: newThrottle(policy, now, sleep)}
	d.cfg.Store(cfg)
	return d
}

// Replace switches to a reloaded configuration's accounts and empties the
// cache, so that a removed account or a changed password takes effect for
// the very next login.
func (d *Directory) Replace(cfg *configs.Config) {
	d.cfg.Store(cfg)
	d.cache.purge()
}

// Lookup returns the account for an address.
func (d *Directory) Lookup(address string) (*configs.Account, bool) {
	return d.cfg.Load().Account(address)
}

// Authenticate checks username (the account address) and password for a
// client at remote (the zero Addr skips throttling: tests, local tools).
//
// A successful bcrypt check is remembered for the cache TTL, so a client
// that connects once per message pays one hash lookup instead of a bcrypt
// run (about 60–140 ms of CPU at cost 10 on this kind of machine). Failures
// are never cached, always pay the full cost, and are throttled: the answer
// is held back longer after each one, and an address with too many is
// locked out for a while (ErrLockedOut) even with the right password.
func (d *Directory) Authenticate(username, password string, remote netip.Addr) (*configs.Account, error) {
	if d.throttle.locked(remote) {
		return nil, ErrLockedOut
	}
	username = strings.TrimSpace(username)
	acct, err := d.check(username, password)
	if err != nil {
		d.throttle.sleep(d.throttle.fail(remote, strings.ToLower(username)))
		return nil, err
	}
	d.throttle.succeed(remote, strings.ToLower(username))
	return acct, nil
}

func (d *Directory) check(username, password string) (*configs.Account, error) {
	acct, ok := d.cfg.Load().Account(username)
	if !ok {
		_ = bcrypt.CompareHashAndPassword(d.dummyHash, []byte(password))
		return nil, ErrFailed
	}
	// The key binds the password hash too: a changed password (a new hash
	// after a reload) can never hit an entry made with the old one.
	key := d.cache.key(acct.Address, acct.PasswordHash, password)
	if d.cache.hit(key) {
		return acct, nil
	}
	if !acct.CheckPassword(password) {
		return nil, ErrFailed
	}
	d.cache.add(key)
	return acct, nil
}

// RemoteIP extracts the client's IP address from a connection's remote
// address (the zero Addr when it has none, e.g. a pipe in tests).
func RemoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// CacheStats reports the cache's hits and misses since start.
func (d *Directory) CacheStats() (hits, misses uint64) { return d.cache.stats() }

// Purge empties the cache (accounts reloaded, passwords changed).
func (d *Directory) Purge() { d.cache.purge() }

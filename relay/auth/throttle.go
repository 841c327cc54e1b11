package auth

import (
	"errors"
	"net/netip"
	"sync"
	"time"
)

// ErrLockedOut is returned, without checking the password, while a client
// address is locked out after too many failures. It is temporary: SMTP
// answers 454 4.7.0, IMAP NO [UNAVAILABLE].
var ErrLockedOut = errors.New("too many failed logins from this address, try again later")

// Throttling policy: each failure from an address (and for an account from
// that address) delays the answer twice as long as the previous one, from
// the first delay up to 32 times it, so that guessing costs the guesser time
// and not the server CPU; after maxFailures failures within failureWindow
// the address is locked out for lockout. Failures are counted per client
// address, not per account alone: counting per account would let anyone
// lock a pharmacist out of their mailbox by guessing badly on purpose.
const (
	failureWindow = 15 * time.Minute
	maxDoublings  = 5      // the delay grows to 32× the first one
	maxTracked    = 100000 // addresses tracked at once; bounds memory under a spray
)

// Policy is the throttling policy (configs.Auth).
type Policy struct {
	FailureDelay time.Duration
	MaxFailures  int
	Lockout      time.Duration
}

// DefaultPolicy matches the configuration's defaults.
func DefaultPolicy() Policy {
	return Policy{FailureDelay: 250 * time.Millisecond, MaxFailures: 10, Lockout: 15 * time.Minute}
}

type failState struct {
	count       int
	last        time.Time
	lockedUntil time.Time
}

// throttle counts failed logins per client address and per (address,
// account).
type throttle struct {
	policy Policy
	now    func() time.Time
	sleep  func(time.Duration)

	mu    sync.Mutex
	state map[string]*failState
}

func newThrottle(p Policy, now func() time.Time, sleep func(time.Duration)) *throttle {
	return &throttle{policy: p, now: now, sleep: sleep, state: make(map[string]*failState)}
}

func ipKey(ip netip.Addr) string { return "ip\x00" + ip.Unmap().String() }
func pairKey(ip netip.Addr, account string) string {
	return "pair\x00" + ip.Unmap().String() + "\x00" + account
}

// locked reports whether ip may not try now.
func (t *throttle) locked(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.state[ipKey(ip)]
	return ok && t.now().Before(st.lockedUntil)
}

// fail records a failure and returns how long to hold the answer back.
func (t *throttle) fail(ip netip.Addr, account string) time.Duration {
	if !ip.IsValid() {
		return t.policy.FailureDelay
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.state) >= maxTracked {
		t.expireLocked(now)
	}
	var delay time.Duration
	for _, k := range []string{ipKey(ip), pairKey(ip, account)} {
		st := t.state[k]
		if st == nil || now.Sub(st.last) > failureWindow {
			st = &failState{}
			t.state[k] = st
		}
		st.count++
		st.last = now
		if k == ipKey(ip) && st.count >= t.policy.MaxFailures {
			st.lockedUntil = now.Add(t.policy.Lockout)
		}
		delay = max(delay, t.policy.FailureDelay<<min(st.count-1, maxDoublings))
	}
	return delay
}

// succeed forgets the failures of this account from this address; the
// address's own count decays with time, so one good login among many
// guesses does not wipe the guesses out.
func (t *throttle) succeed(ip netip.Addr, account string) {
	if !ip.IsValid() {
		return
	}
	t.mu.Lock()
	delete(t.state, pairKey(ip, account))
	t.mu.Unlock()
}

func (t *throttle) expireLocked(now time.Time) {
	for k, st := range t.state {
		if now.Sub(st.last) > failureWindow && !now.Before(st.lockedUntil) {
			delete(t.state, k)
		}
	}
	if len(t.state) >= maxTracked {
		// Still full of live entries: a spray from many addresses.
		// Forget everything rather than grow; lockouts restart.
		clear(t.state)
	}
}

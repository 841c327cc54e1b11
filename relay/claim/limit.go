package claim

import (
	"sync"
	"time"
)

// Rate limiting of claims, per account (the idea of relay/auth's login
// throttle, keyed by account rather than client address: only
// authenticated executants reach a claim, so the number of keys is bounded
// by the configured accounts).
//
//   - At most maxPerHour claims in any sliding hour, accepted or refused;
//     past it a claim is refused at once (451 4.7.1) and is not counted.
//   - A claim that matched no prescription, or could not be read, is a
//     failure: its reply is held back failureDelay, doubled with each
//     failure of the account within failureWindow, up to 32 times it. A
//     successful claim forgets the failures.
//
// Together they bound an account that guesses INS numbers to maxPerHour
// tries an hour however many connections it opens, and to one try every
// 32 × failureDelay on one connection.
const (
	window        = time.Hour
	failureWindow = 15 * time.Minute
	maxDoublings  = 5 // the delay grows to 32× the first one
)

type accountState struct {
	attempts    []time.Time // within the last window, oldest first
	failures    int
	lastFailure time.Time
}

type limiter struct {
	maxPerHour   int
	failureDelay time.Duration
	now          func() time.Time

	mu    sync.Mutex
	state map[string]*accountState
}

func newLimiter(maxPerHour int, failureDelay time.Duration, now func() time.Time) *limiter {
	return &limiter{maxPerHour: maxPerHour, failureDelay: failureDelay, now: now, state: make(map[string]*accountState)}
}

// allow counts a claim of account and reports whether it may go on; when
// it may not, retryIn says when the oldest claim of the window leaves it.
func (l *limiter) allow(account string) (ok bool, retryIn time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	st := l.state[account]
	if st == nil {
		st = &accountState{}
		l.state[account] = st
	}
	// Drop the attempts that left the window.
	keep := 0
	for keep < len(st.attempts) && now.Sub(st.attempts[keep]) >= window {
		keep++
	}
	st.attempts = st.attempts[keep:]
	if len(st.attempts) >= l.maxPerHour {
		return false, window - now.Sub(st.attempts[0])
	}
	st.attempts = append(st.attempts, now)
	return true, 0
}

// fail records a failure of account and returns how long to hold the
// reply back.
func (l *limiter) fail(account string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	st := l.state[account]
	if st == nil {
		st = &accountState{}
		l.state[account] = st
	}
	if now.Sub(st.lastFailure) > failureWindow {
		st.failures = 0
	}
	st.failures++
	st.lastFailure = now
	return l.failureDelay << min(st.failures-1, maxDoublings)
}

// succeed forgets account's failures (its count of claims stays).
func (l *limiter) succeed(account string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.state[account]; st != nil {
		st.failures = 0
	}
}

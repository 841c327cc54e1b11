package auth

import (
	"bytes"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"mssrelay/configs"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func account(t *testing.T, addr, pw string) configs.Account {
	t.Helper()
	h, err := configs.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	return configs.Account{Address: addr, Role: configs.RoleExecutant, PasswordHash: h}
}

func TestAuthenticateAndCache(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg := &configs.Config{Accounts: []configs.Account{account(t, "pharma@example.org", "right password")}}
	d := New(cfg, Options{CacheTTL: time.Minute, Now: clk.now, Sleep: noSleep})

	steps := []struct {
		user, pw string
		ok       bool
		hits     uint64
	}{
		{"pharma@example.org", "wrong", false, 0},
		{"pharma@example.org", "right password", true, 0},   // bcrypt, then cached
		{"pharma@example.org", "right password", true, 1},   // cache hit
		{"pharma@example.org", "right passwordX", false, 1}, // a wrong password right after a cached right one
		{"pharma@example.org", "", false, 1},                // empty password
		{"pharma@EXAMPLE.ORG", "right password", true, 2},   // domain is case-insensitive
		{"Pharma@example.org", "right password", false, 2},  // local part is exact
		{"nobody@example.org", "right password", false, 2},  // unknown account
		{" pharma@example.org ", "right password", true, 3}, // surrounding blanks
	}
	for i, s := range steps {
		_, err := d.Authenticate(s.user, s.pw, netip.Addr{})
		if (err == nil) != s.ok {
			t.Fatalf("step %d (%q, %q): err = %v, want ok=%v", i, s.user, s.pw, err, s.ok)
		}
		if err != nil && !errors.Is(err, ErrFailed) {
			t.Errorf("step %d: error %v is not ErrFailed", i, err)
		}
		if hits, _ := d.CacheStats(); hits != s.hits {
			t.Errorf("step %d: %d cache hits, want %d", i, hits, s.hits)
		}
	}

	// Expiry: after the TTL the password is checked again.
	clk.add(2 * time.Minute)
	if _, err := d.Authenticate("pharma@example.org", "right password", netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if hits, _ := d.CacheStats(); hits != 3 {
		t.Errorf("expired entry was used: %d hits", hits)
	}
	// Purge empties it.
	d.Purge()
	if _, err := d.Authenticate("pharma@example.org", "right password", netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if hits, _ := d.CacheStats(); hits != 3 {
		t.Errorf("purged entry was used: %d hits", hits)
	}
}

// TestChangedPasswordRefusedAtOnce: after a reload with a new hash, the
// old password fails even though it is still cached under the old hash.
func TestChangedPasswordRefusedAtOnce(t *testing.T) {
	old := account(t, "dr@example.org", "old password")
	cfg := &configs.Config{Accounts: []configs.Account{old}}
	d := New(cfg, Options{Sleep: noSleep})
	for i := 0; i < 2; i++ {
		if _, err := d.Authenticate("dr@example.org", "old password", netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	// Even without Replace's purge, an entry made under the old hash
	// cannot match the new one.
	cfg.Accounts[0] = account(t, "dr@example.org", "new password")
	if _, err := d.Authenticate("dr@example.org", "old password", netip.Addr{}); err == nil {
		t.Fatal("old password accepted after the password changed")
	}
	if _, err := d.Authenticate("dr@example.org", "new password", netip.Addr{}); err != nil {
		t.Fatalf("new password refused: %v", err)
	}

	// A reload that removes the account locks it out at once.
	d.Replace(&configs.Config{})
	if _, err := d.Authenticate("dr@example.org", "new password", netip.Addr{}); err == nil {
		t.Fatal("removed account still logs in")
	}
	if n := len(d.cache.entries); n != 0 {
		t.Errorf("Replace left %d cache entries", n)
	}
}

func TestFailuresNotCached(t *testing.T) {
	cfg := &configs.Config{Accounts: []configs.Account{account(t, "a@example.org", "secret-password")}}
	d := New(cfg, Options{Sleep: noSleep})
	for i := 0; i < 3; i++ {
		if _, err := d.Authenticate("a@example.org", "guess", netip.Addr{}); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	if n := len(d.cache.entries); n != 0 {
		t.Errorf("%d cache entries after failures only", n)
	}
	if _, misses := d.CacheStats(); misses != 3 {
		t.Errorf("misses = %d, want 3", misses)
	}
}

// TestCacheHoldsNoPassword: the only things kept are HMAC keys under a
// per-process secret; neither the password nor its plain hash appears.
func TestCacheHoldsNoPassword(t *testing.T) {
	cfg := &configs.Config{Accounts: []configs.Account{account(t, "a@example.org", "Sup3r-secret-pw")}}
	d := New(cfg, Options{Sleep: noSleep})
	if _, err := d.Authenticate("a@example.org", "Sup3r-secret-pw", netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	other := New(cfg, Options{Sleep: noSleep})
	for k := range d.cache.entries {
		if bytes.Contains(k[:], []byte("Sup3r")) {
			t.Error("password bytes in a cache key")
		}
		if k == other.cache.key("a@example.org", cfg.Accounts[0].PasswordHash, "Sup3r-secret-pw") {
			t.Error("cache key does not depend on the per-process secret")
		}
	}
}

func TestCacheDisabled(t *testing.T) {
	cfg := &configs.Config{Accounts: []configs.Account{account(t, "a@example.org", "secret-password")}}
	d := New(cfg, Options{CacheTTL: -1, Sleep: noSleep})
	for i := 0; i < 2; i++ {
		if _, err := d.Authenticate("a@example.org", "secret-password", netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	if hits, _ := d.CacheStats(); hits != 0 {
		t.Errorf("disabled cache hit %d times", hits)
	}
}

func BenchmarkAuthenticateCached(b *testing.B) {
	h, _ := configs.HashPassword("secret-password")
	cfg := &configs.Config{Accounts: []configs.Account{{Address: "a@example.org", PasswordHash: h}}}
	d := New(cfg, Options{Sleep: noSleep})
	if _, err := d.Authenticate("a@example.org", "secret-password", netip.Addr{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Authenticate("a@example.org", "secret-password", netip.Addr{}); err != nil {
			b.Fatal(err)
		}
	}
}

func noSleep(time.Duration) {}

// TestThrottle: failures from an address are answered later and later, the
// address is locked out after too many (even with the right password), other
// addresses are not affected, and the lockout ends.
func TestThrottle(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var slept []time.Duration
	cfg := &configs.Config{Accounts: []configs.Account{account(t, "a@example.org", "right password")}}
	d := New(cfg, Options{Now: clk.now, Sleep: func(d time.Duration) { slept = append(slept, d) }})
	attacker := netip.MustParseAddr("192.0.2.7")
	other := netip.MustParseAddr("198.51.100.1")

	for i := 0; i < DefaultPolicy().MaxFailures; i++ {
		if _, err := d.Authenticate("a@example.org", "guess", attacker); !errors.Is(err, ErrFailed) {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	for i := 1; i < len(slept); i++ {
		if slept[i] < slept[i-1] {
			t.Errorf("delays shrink: %v", slept)
		}
	}
	if first, last := DefaultPolicy().FailureDelay, DefaultPolicy().FailureDelay*32; slept[0] != first || slept[len(slept)-1] != last {
		t.Errorf("delays %v, want from %v up to %v", slept, first, last)
	}
	// Locked out: even the right password fails, fast, and a cached
	// success does not bypass it.
	n := len(slept)
	if _, err := d.Authenticate("a@example.org", "right password", attacker); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("locked-out address logged in: %v", err)
	}
	if len(slept) != n {
		t.Error("a locked-out attempt was delayed instead of refused at once")
	}
	// Another address (the pharmacist's own) is not affected.
	if _, err := d.Authenticate("a@example.org", "right password", other); err != nil {
		t.Fatalf("other address refused: %v", err)
	}
	if _, err := d.Authenticate("a@example.org", "right password", attacker); !errors.Is(err, ErrLockedOut) {
		t.Fatalf("cached success bypassed the lockout: %v", err)
	}
	// The lockout ends.
	clk.add(DefaultPolicy().Lockout + time.Second)
	if _, err := d.Authenticate("a@example.org", "right password", attacker); err != nil {
		t.Fatalf("still locked out after %v: %v", DefaultPolicy().Lockout, err)
	}
}

// TestThrottleForgetsPairOnSuccess: a user who mistypes twice and then
// succeeds is not slowed down the next time.
func TestThrottleForgetsPairOnSuccess(t *testing.T) {
	var slept []time.Duration
	cfg := &configs.Config{Accounts: []configs.Account{
		account(t, "a@example.org", "right password"), account(t, "b@example.org", "b password")}}
	d := New(cfg, Options{Sleep: func(d time.Duration) { slept = append(slept, d) }})
	ip := netip.MustParseAddr("2001:db8::1")
	d.Authenticate("a@example.org", "typo", ip)
	d.Authenticate("a@example.org", "typo again", ip)
	if _, err := d.Authenticate("a@example.org", "right password", ip); err != nil {
		t.Fatal(err)
	}
	slept = nil
	d.Authenticate("a@example.org", "typo", ip)
	// The pair restarted at the first delay; the address's own count
	// (3 failures) still sets the pace.
	if want := DefaultPolicy().FailureDelay << 2; len(slept) != 1 || slept[0] != want {
		t.Errorf("delay after success then failure = %v, want %v", slept, want)
	}
}

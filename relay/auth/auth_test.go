package auth

import (
	"bytes"
	"errors"
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
	d := New(cfg, Options{CacheTTL: time.Minute, Now: clk.now})

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
		_, err := d.Authenticate(s.user, s.pw)
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
	if _, err := d.Authenticate("pharma@example.org", "right password"); err != nil {
		t.Fatal(err)
	}
	if hits, _ := d.CacheStats(); hits != 3 {
		t.Errorf("expired entry was used: %d hits", hits)
	}
	// Purge empties it.
	d.Purge()
	if _, err := d.Authenticate("pharma@example.org", "right password"); err != nil {
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
	d := New(cfg, Options{})
	for i := 0; i < 2; i++ {
		if _, err := d.Authenticate("dr@example.org", "old password"); err != nil {
			t.Fatal(err)
		}
	}
	// Even without Replace's purge, an entry made under the old hash
	// cannot match the new one.
	cfg.Accounts[0] = account(t, "dr@example.org", "new password")
	if _, err := d.Authenticate("dr@example.org", "old password"); err == nil {
		t.Fatal("old password accepted after the password changed")
	}
	if _, err := d.Authenticate("dr@example.org", "new password"); err != nil {
		t.Fatalf("new password refused: %v", err)
	}

	// A reload that removes the account locks it out at once.
	d.Replace(&configs.Config{})
	if _, err := d.Authenticate("dr@example.org", "new password"); err == nil {
		t.Fatal("removed account still logs in")
	}
	if n := len(d.cache.entries); n != 0 {
		t.Errorf("Replace left %d cache entries", n)
	}
}

func TestFailuresNotCached(t *testing.T) {
	cfg := &configs.Config{Accounts: []configs.Account{account(t, "a@example.org", "secret-password")}}
	d := New(cfg, Options{})
	for i := 0; i < 3; i++ {
		if _, err := d.Authenticate("a@example.org", "guess"); err == nil {
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
	d := New(cfg, Options{})
	if _, err := d.Authenticate("a@example.org", "Sup3r-secret-pw"); err != nil {
		t.Fatal(err)
	}
	other := New(cfg, Options{})
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
	d := New(cfg, Options{CacheTTL: -1})
	for i := 0; i < 2; i++ {
		if _, err := d.Authenticate("a@example.org", "secret-password"); err != nil {
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
	d := New(cfg, Options{})
	if _, err := d.Authenticate("a@example.org", "secret-password"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.Authenticate("a@example.org", "secret-password"); err != nil {
			b.Fatal(err)
		}
	}
}

package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"
)

// maxCacheEntries bounds the memory a burst of distinct logins can take.
const maxCacheEntries = 10000

// cache remembers successful logins in the spirit of Dovecot's auth cache.
// Entries are keyed by an HMAC of (account, password hash, password) under
// a random key drawn at start and held only in memory: the cache never
// holds a password, and its keys are useless outside this process.
type cache struct {
	ttl    time.Duration
	now    func() time.Time
	secret [32]byte

	mu      sync.Mutex
	entries map[[32]byte]time.Time // key → expiry
	hits    uint64
	misses  uint64
}

func newCache(ttl time.Duration, now func() time.Time) *cache {
	c := &cache{ttl: ttl, now: now, entries: make(map[[32]byte]time.Time)}
	if _, err := rand.Read(c.secret[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return c
}

func (c *cache) key(account, hash, password string) [32]byte {
	m := hmac.New(sha256.New, c.secret[:])
	for _, s := range []string{account, hash, password} {
		// Length-prefix each field so that no two triples collide.
		n := len(s)
		m.Write([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
		m.Write([]byte(s))
	}
	var k [32]byte
	m.Sum(k[:0])
	return k
}

func (c *cache) hit(k [32]byte) bool {
	if c.ttl < 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.entries[k]
	if ok && c.now().Before(exp) {
		c.hits++
		return true
	}
	if ok {
		delete(c.entries, k)
	}
	c.misses++
	return false
}

func (c *cache) add(k [32]byte) {
	if c.ttl < 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.entries) >= maxCacheEntries {
		// Drop expired entries first; if still full, drop everything:
		// the cost is one bcrypt per active client, and a flood of
		// distinct good logins cannot grow memory.
		for k, exp := range c.entries {
			if !now.Before(exp) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxCacheEntries {
			clear(c.entries)
		}
	}
	c.entries[k] = now.Add(c.ttl)
}

func (c *cache) purge() {
	c.mu.Lock()
	clear(c.entries)
	c.mu.Unlock()
}

func (c *cache) stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

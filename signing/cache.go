package signing

import (
	"cmp"
	"crypto/sha256"
	"crypto/x509"
	"slices"
	"sync"
	"time"
)

// verdictCacheSize bounds the verdict cache. Each entry holds a few pointers
// to certificates already parsed, so 4096 entries (every active prescriber
// of a large operator) cost well under a megabyte beyond the certificates.
const verdictCacheSize = 4096

// verdictCache remembers, per (signer certificate, certificates offered in
// the message), that the certificate passed every certificate-level check:
// chain to an anchor, key usage, extended key usage and revocation. A
// verdict holds only inside [from, until): the intersection of the chain's
// validity periods and of the CRLs' nextUpdate. Only successes are cached:
// a failure costs the sender a bounce, not us a cache slot.
//
// Each trustState owns its cache, so Reload (new anchors or CRLs) starts
// from an empty one.
type verdictCache struct {
	max int
	mu  sync.RWMutex // guards m: read on every verification, written on a miss
	m   map[[32]byte]*verdict
}

type verdict struct {
	chain       []*x509.Certificate // leaf first, anchor last
	from, until time.Time
}

func newVerdictCache(max int) *verdictCache {
	return &verdictCache{max: max, m: make(map[[32]byte]*verdict)}
}

func (c *verdictCache) get(key [32]byte, now time.Time) *verdict {
	c.mu.RLock()
	v := c.m[key]
	c.mu.RUnlock()
	if v == nil || now.Before(v.from) || !now.Before(v.until) {
		return nil
	}
	return v
}

func (c *verdictCache) put(key [32]byte, v *verdict, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		// Drop what has expired first; if the cache is still full, drop
		// arbitrary entries (map order is randomised): an evicted verdict
		// only costs one chain verification later.
		for k, old := range c.m {
			if !now.Before(old.until) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = v
}

func (c *verdictCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// chainCacheKey identifies the signer certificate together with the set of
// certificates the message offers: another set of intermediates may build
// another chain (or none).
func chainCacheKey(leaf *x509.Certificate, certs []*x509.Certificate) [32]byte {
	others := make([][32]byte, 0, len(certs))
	for _, c := range certs {
		if c != leaf {
			others = append(others, sha256.Sum256(c.Raw))
		}
	}
	slices.SortFunc(others, func(a, b [32]byte) int { return slices.Compare(a[:], b[:]) })
	others = slices.Compact(others)
	h := sha256.New()
	l := sha256.Sum256(leaf.Raw)
	h.Write(l[:])
	for _, o := range others {
		h.Write(o[:])
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// certCacheSize bounds the parsed-certificate cache: the certificates of
// a few thousand active prescribers and their authorities.
const certCacheSize = 8192

// certCache keeps certificates parsed from messages, by the SHA-256 of
// their DER. Every signed message carries the signer's certificate and
// usually its chain, the same bytes every time; parsing them again was
// about a third of the cost of a verification. Identical DER parses to an
// identical certificate, and nothing modifies a parsed certificate, so
// sharing one across verifications is safe. The zero value is ready; when
// full it starts over (a bound, not an eviction policy: the working set is
// far smaller).
type certCache struct {
	max int // 0: certCacheSize
	mu  sync.Mutex
	m   map[[32]byte]*x509.Certificate
}

// parse returns the certificates of ders, parsed or from the cache.
func (c *certCache) parse(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		key := sha256.Sum256(der)
		c.mu.Lock()
		cert := c.m[key]
		c.mu.Unlock()
		if cert == nil {
			var err error
			if cert, err = x509.ParseCertificate(der); err != nil {
				return nil, err
			}
			c.mu.Lock()
			if c.m == nil || len(c.m) >= cmp.Or(c.max, certCacheSize) {
				c.m = make(map[[32]byte]*x509.Certificate)
			}
			c.m[key] = cert
			c.mu.Unlock()
		}
		out[i] = cert
	}
	return out, nil
}

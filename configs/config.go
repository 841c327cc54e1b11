package configs

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"unicode"
)

// Account returns the account with this address. The domain is compared
// case-insensitively, the local part exactly (RFC 5321 §2.4: only the host
// that owns a mailbox may fold its local part). The returned account belongs
// to c: do not modify it.
func (c *Config) Account(address string) (*Account, bool) {
	if c == nil {
		return nil, false
	}
	key, ok := accountKey(address)
	if !ok {
		return nil, false
	}
	if i, ok := c.byAddress[key]; ok && i < len(c.Accounts) {
		// Check the hit, in case Accounts changed after Parse built the
		// index.
		if k, _ := accountKey(c.Accounts[i].Address); k == key {
			return &c.Accounts[i], true
		}
	}
	for i := range c.Accounts {
		if k, ok := accountKey(c.Accounts[i].Address); ok && k == key {
			return &c.Accounts[i], true
		}
	}
	return nil, false
}

// accountKey normalises an address for lookup: domain in lower case.
func accountKey(address string) (string, bool) {
	at := strings.LastIndexByte(address, '@')
	if at <= 0 || at == len(address)-1 {
		return "", false
	}
	domain := address[at+1:]
	if !strings.ContainsFunc(domain, unicode.IsUpper) {
		return address, true // the common case: no allocation
	}
	return address[:at] + "@" + strings.ToLower(domain), true
}

// Version returns the minimum TLS version as a crypto/tls constant, for
// tls.Config.MinVersion. Anything but "1.3" gives TLS 1.2, the floor of
// secure health messaging.
func (t TLS) Version() uint16 {
	if t.MinVersion == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// SlogLevel returns the configured level for log/slog; info when unset.
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// For returns the quota limits of an account (nil: an address without an
// account, which gets the defaults): its own quota_bytes and
// quota_messages where set, [quota] otherwise; 0 means no limit. The
// result is what store.QuotaFunc returns.
func (q Quota) For(a *Account) (maxBytes int64, maxMessages uint32) {
	maxBytes, maxMessages = q.MaxBytes, uint32(q.MaxMessages)
	if a != nil && a.QuotaBytes > 0 {
		maxBytes = a.QuotaBytes
	}
	if a != nil && a.QuotaMessages > 0 {
		maxMessages = uint32(a.QuotaMessages)
	}
	return maxBytes, maxMessages
}

// QuotaFor returns the quota limits of the account with this address
// (see Quota.For).
func (c *Config) QuotaFor(address string) (maxBytes int64, maxMessages uint32) {
	a, _ := c.Account(address)
	return c.Quota.For(a)
}

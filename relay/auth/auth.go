// Package auth checks logins against the configured accounts.
//
// It is shared by SMTP submission and IMAP so that both protocols apply the
// same rules: the same account lookup, the same password check, the same
// constant-time behaviour for unknown accounts.
package auth

import (
	"errors"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"mssrelay/configs"
)

// ErrFailed is returned for any failed login. It deliberately does not say
// whether the account exists.
var ErrFailed = errors.New("authentication failed")

// Directory authenticates users against a configuration's accounts.
type Directory struct {
	cfg *configs.Config
	// dummyHash is compared against when the account does not exist, so that
	// an unknown account costs the same time as a wrong password and logins
	// cannot be used to probe which accounts exist.
	dummyHash []byte
}

// New returns a directory over cfg's accounts.
func New(cfg *configs.Config) *Directory {
	// A fixed hash of a random-looking string at the minimum accepted cost.
	h, err := bcrypt.GenerateFromPassword([]byte("mssrelay-no-such-account"), bcrypt.DefaultCost)
	if err != nil {
		// bcrypt only fails for passwords over 72 bytes or bad costs.
		panic(err)
	}
	return &Directory{cfg: cfg, dummyHash: h}
}

// Lookup returns the account for an address.
func (d *Directory) Lookup(address string) (*configs.Account, bool) {
	return d.cfg.Account(address)
}

// Authenticate checks username (the account address) and password.
func (d *Directory) Authenticate(username, password string) (*configs.Account, error) {
	username = strings.TrimSpace(username)
	acct, ok := d.cfg.Account(username)
	if !ok {
		_ = bcrypt.CompareHashAndPassword(d.dummyHash, []byte(password))
		return nil, ErrFailed
	}
	if !acct.CheckPassword(password) {
		return nil, ErrFailed
	}
	return acct, nil
}

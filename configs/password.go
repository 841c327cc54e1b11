package configs

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"

	"golang.org/x/crypto/bcrypt"
)

// PasswordCost is the bcrypt cost HashPassword uses. The cost is chosen
// against offline cracking: whoever obtains the config (a backup, a leaked
// copy) brute-forces the hash, not the server, and cost 10 (tens of
// milliseconds per guess on a server core) makes that expensive. It stays
// at the accepted minimum rather than higher because every SMTP AUTH and
// IMAP LOGIN pays it too; the planned login cache (a successful login
// remembered for a short time) will make a client's repeated logins cheap,
// so the cost does not need lowering for mail clients that reconnect every
// few minutes.
const PasswordCost = MinBcryptCost

// ErrEmptyPassword is returned by HashPassword for an empty password.
var ErrEmptyPassword = errors.New("configs: empty password")

// HashPassword returns a bcrypt hash of pw for an account's password_hash.
// bcrypt reads at most 72 bytes; a longer password is refused rather than
// silently truncated.
func HashPassword(pw string) (string, error) {
	if pw == "" {
		return "", ErrEmptyPassword
	}
	if len(pw) > 72 {
		return "", errors.New("configs: password longer than 72 bytes (the bcrypt limit)")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), PasswordCost)
	if err != nil {
		return "", fmt.Errorf("configs: hashing password: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether pw is the account's password. The digest
// comparison is constant-time (bcrypt.CompareHashAndPassword); an account
// with no hash never matches, even an empty password.
func (a *Account) CheckPassword(pw string) bool {
	if a == nil || a.PasswordHash == "" {
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(a.PasswordHash), []byte(pw)) == nil
}

// passwordAlphabet has no characters that are easily mistaken for one
// another when read aloud or copied from a screen (0/O, 1/l/I).
const passwordAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// GeneratedPasswordLength gives about 116 bits of entropy with the
// 57-character alphabet.
const GeneratedPasswordLength = 20

// GeneratePassword returns a random password for demo and new accounts,
// drawn uniformly from an unambiguous alphabet with crypto/rand.
func GeneratePassword() (string, error) {
	n := big.NewInt(int64(len(passwordAlphabet)))
	b := make([]byte, GeneratedPasswordLength)
	for i := range b {
		r, err := rand.Int(rand.Reader, n)
		if err != nil {
			return "", fmt.Errorf("configs: generating password: %w", err)
		}
		b[i] = passwordAlphabet[r.Int64()]
	}
	return string(b), nil
}

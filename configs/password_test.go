package configs

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("s3cret pass")
	if err != nil {
		t.Fatal(err)
	}
	if cost, err := bcrypt.Cost([]byte(h)); err != nil || cost != PasswordCost || cost < MinBcryptCost {
		t.Errorf("cost %d, %v", cost, err)
	}
	if err := checkPasswordHash(h); err != nil {
		t.Errorf("a hash from HashPassword is refused by the config: %v", err)
	}
	h2, _ := HashPassword("s3cret pass")
	if h == h2 {
		t.Errorf("two hashes of one password are equal: no salt")
	}
	a := &Account{PasswordHash: h}
	for pw, want := range map[string]bool{"s3cret pass": true, "s3cret pas": false, "S3cret pass": false, "": false} {
		if got := a.CheckPassword(pw); got != want {
			t.Errorf("CheckPassword(%q) = %v", pw, got)
		}
	}
}

func TestHashPasswordRefusals(t *testing.T) {
	for _, pw := range []string{"", strings.Repeat("x", 73)} {
		if h, err := HashPassword(pw); err == nil {
			t.Errorf("HashPassword(%d bytes) = %q, want an error", len(pw), h)
		}
	}
	if _, err := HashPassword(strings.Repeat("x", 72)); err != nil {
		t.Errorf("72 bytes: %v", err)
	}
}

func TestCheckPasswordNoHash(t *testing.T) {
	for _, a := range []*Account{nil, {}, {PasswordHash: "plain"}, {PasswordHash: "$2a$10$short"}} {
		if a.CheckPassword("") || a.CheckPassword("plain") {
			t.Errorf("account %+v accepted a password", a)
		}
	}
}

func TestCheckPasswordHash(t *testing.T) {
	low, err := bcrypt.GenerateFromPassword([]byte("x"), 4)
	if err != nil {
		t.Fatal(err)
	}
	good := hash(t)
	cases := []struct {
		hash, msg string
	}{
		{string(low), "cost 4 is too low"},
		{"$2a$15" + good[6:], "cost 15 is too high"},
		{"$1$abc$def", "not a bcrypt hash"},
		{"$2a$10$tooshort", "not a valid bcrypt hash"},
		{"$2a$xx" + good[6:], "not a valid bcrypt hash"},
		{good[:59], "60"},
	}
	for _, c := range cases {
		err := checkPasswordHash(c.hash)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("checkPasswordHash(%q) = %v, want …%s…", c.hash, err, c.msg)
		}
	}
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		if err := checkPasswordHash(prefix + good[4:]); err != nil {
			t.Errorf("%s: %v", prefix, err)
		}
	}
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		pw, err := GeneratePassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != GeneratedPasswordLength {
			t.Errorf("length %d", len(pw))
		}
		for _, c := range pw {
			if !strings.ContainsRune(passwordAlphabet, c) {
				t.Errorf("%q has %q, outside the alphabet", pw, c)
			}
		}
		if seen[pw] {
			t.Errorf("password %q generated twice", pw)
		}
		seen[pw] = true
	}
	for _, amb := range "0O1lI" {
		if strings.ContainsRune(passwordAlphabet, amb) {
			t.Errorf("alphabet has the ambiguous %q", amb)
		}
	}
}

func BenchmarkCheckPassword(b *testing.B) {
	a := &Account{PasswordHash: hash(b)}
	for b.Loop() {
		if !a.CheckPassword("correct horse battery") {
			b.Fatal("refused")
		}
	}
}

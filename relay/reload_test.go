package relay_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mssrelay/configs"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
)

// TestReloadAccounts: a reload applies a changed password at once, without
// dropping the relay's connections, and a broken file is refused with the
// running configuration kept.
func TestReloadAccounts(t *testing.T) {
	h := newHarness(t)
	path := filepath.Join(h.dir, demo.ConfigFile)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// An IMAP session opened before the reload must survive it.
	before := h.imap(h.info.Pharmacy, nil)

	oldHash := h.cfg.Accounts[1].PasswordHash
	if h.cfg.Accounts[1].Address != h.info.Pharmacy.Address {
		t.Fatalf("account order changed: %s", h.cfg.Accounts[1].Address)
	}
	newHash, err := configs.HashPassword("a brand new password")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(orig), oldHash, newHash, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.relay.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	login := func(pw string) error {
		c, err := submit.Dial(submit.Options{Addr: h.info.Submission, TLS: h.clientTLS(), User: h.info.Pharmacy.Address, Password: pw})
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := login(h.info.Pharmacy.Password); err == nil {
		t.Error("old password still accepted after reload")
	}
	if err := login("a brand new password"); err != nil {
		t.Errorf("new password refused after reload: %v", err)
	}
	if err := before.Noop().Wait(); err != nil {
		t.Errorf("IMAP session dropped by reload: %v", err)
	}

	// A broken file is refused; the new password keeps working.
	if err := os.WriteFile(path, append([]byte("no_such_key = 1\n"), orig...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.relay.Reload(); err == nil {
		t.Fatal("Reload accepted a broken config")
	}
	if err := login("a brand new password"); err != nil {
		t.Errorf("running configuration lost after a refused reload: %v", err)
	}
}

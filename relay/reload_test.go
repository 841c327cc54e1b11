package relay_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
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

// noTrustPoll keeps the trust file watcher from firing during a test, so
// that only the test's explicit Reload brings new CRLs in.
func noTrustPoll(cfg *configs.Config) { cfg.Trust.ReloadInterval.Duration = time.Hour }

// writeDemoCRLs replaces the demo's CRLs where the relay's configuration
// reads them, as a job fetching the CA's new lists would (write and
// rename, so the relay never reads half a file): a fresh, empty one for the
// root, and one for the intermediate listing revoked, valid until
// nextUpdate.
func writeDemoCRLs(t *testing.T, h *harness, revoked []*x509.Certificate, nextUpdate time.Time) {
	t.Helper()
	pki, err := signing.LoadDevPKI(filepath.Dir(h.info.Path(h.info.RootCA)))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.info.CRLs) != 2 {
		t.Fatalf("the demo lists %d CRLs, want the root's and the intermediate's", len(h.info.CRLs))
	}
	now := time.Now()
	lists := []struct {
		issuer  *signing.KeyPair
		revoked []*x509.Certificate
		next    time.Time
	}{
		{pki.Root, nil, now.Add(24 * time.Hour)},
		{pki.Intermediate, revoked, nextUpdate},
	}
	for i, l := range lists {
		// thisUpdate before nextUpdate, even for a stale list.
		crl, err := pki.IssueCRL(l.issuer, l.revoked, l.next.Add(-48*time.Hour), l.next)
		if err != nil {
			t.Fatal(err)
		}
		path := h.info.Path(h.info.CRLs[i])
		tmp := path + ".new"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReloadCRLRevokes: Reload (what SIGHUP runs) brings in a new CRL, and
// a prescriber revoked in it is refused from the next message on, although
// the verdict for the certificate was cached as good before.
func TestReloadCRLRevokes(t *testing.T) {
	h := newHarnessWith(t, noTrustPoll)
	from, to := h.info.Prescriber.Address, h.info.Pharmacy.Address
	send := func() error {
		msg, _ := h.prescription()
		_, err := h.prescriber().Send(from, []string{to}, msg)
		return err
	}
	if err := send(); err != nil {
		t.Fatalf("before the new CRL: %v", err)
	}
	writeDemoCRLs(t, h, []*x509.Certificate{h.signer().Cert}, time.Now().Add(24*time.Hour))
	// The file changed, the material in force did not (no poll, no reload).
	if err := send(); err != nil {
		t.Fatalf("new CRL on disk, not reloaded yet: %v", err)
	}
	if err := h.relay.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	err := send()
	if code, enh := smtpCode(err); code != 554 || enh != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("after Reload: %v, want 554 5.7.1", err)
	}
	if !strings.Contains(err.Error(), "is revoked") {
		t.Errorf("reply %q does not say the certificate is revoked", err)
	}
}

// TestTrustWatcherPicksUpCRL: without SIGHUP, the trust watcher
// ([trust] reload_interval) sees a changed CRL file and reloads it.
func TestTrustWatcherPicksUpCRL(t *testing.T) {
	h := newHarnessWith(t, func(cfg *configs.Config) {
		// Far below the configurable minimum (1s), so the test does not
		// wait on the poll.
		cfg.Trust.ReloadInterval.Duration = 10 * time.Millisecond
	})
	msg, _ := h.prescription()
	signed, err := signing.SignDetached(h.signer(), []byte("probe\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	probe := signing.Request{PKCS7: signed, Content: []byte("probe\r\n")}
	if _, err := h.relay.Trust().Verify(probe); err != nil {
		t.Fatalf("before the new CRL: %v", err)
	}
	writeDemoCRLs(t, h, []*x509.Certificate{h.signer().Cert}, time.Now().Add(24*time.Hour))
	// Wait for the watcher: the bound only turns a broken watcher into a
	// failure instead of a hang.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := h.relay.Trust().Verify(probe)
		var se *signing.Error
		if errors.As(err, &se) && se.Reason == signing.ReasonRevoked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher did not load the new CRL (last verdict: %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err = h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg)
	if code, enh := smtpCode(err); code != 554 || enh != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("after the watcher's reload: %v, want 554 5.7.1", err)
	}
}

// TestStaleCRLIsTemporary: with the intermediate's CRL past its
// nextUpdate, the revocation status is unknown and the relay answers
// 451 4.7.5 (the sender retries), never a silent pass and never a final
// refusal. Temporary refusals do not count toward the per-session refusal
// cap (10): the same session files the prescription once a fresh CRL is in.
func TestStaleCRLIsTemporary(t *testing.T) {
	h := newHarnessWith(t, noTrustPoll)
	from, to := h.info.Prescriber.Address, h.info.Pharmacy.Address
	writeDemoCRLs(t, h, nil, time.Now().Add(-time.Hour))
	if err := h.relay.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	c := h.prescriber()
	msg, _ := h.prescription()
	for i := 0; i < 12; i++ {
		_, err := c.Send(from, []string{to}, msg)
		if code, enh := smtpCode(err); code != 451 || enh != (smtp.EnhancedCode{4, 7, 5}) {
			t.Fatalf("attempt %d with a stale CRL: %v, want 451 4.7.5", i+1, err)
		}
		if !strings.Contains(err.Error(), "Revocation status unavailable") || !strings.Contains(err.Error(), "expired") {
			t.Errorf("reply %q does not say the CRL expired", err)
		}
	}
	writeDemoCRLs(t, h, nil, time.Now().Add(24*time.Hour))
	if err := h.relay.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if _, err := c.Send(from, []string{to}, msg); err != nil {
		t.Fatalf("same session, fresh CRL: %v (temporary refusals counted toward the cap?)", err)
	}
}

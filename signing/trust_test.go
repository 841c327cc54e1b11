package signing

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeCRL(t *testing.T, path string, crl *x509.RevocationList, asPEM bool) {
	t.Helper()
	data := crl.Raw
	if asPEM {
		data = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw})
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoadTrustFilesAndReload: anchors, intermediates and CRLs (PEM and
// DER) from files; a new CRL takes effect on Reload, not before.
func TestLoadTrustFilesAndReload(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	rootPEM, interPEM := filepath.Join(dir, "root.pem"), filepath.Join(dir, "inter.pem")
	writePEMCerts(t, rootPEM, p.Root.Cert)
	writePEMCerts(t, interPEM, p.Intermediate.Cert)
	rootCRL, err := p.IssueCRL(p.Root, nil, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	emptyCRL, err := p.IssueCRL(nil, nil, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	rootCRLFile, interCRLFile := filepath.Join(dir, "root.crl"), filepath.Join(dir, "inter.crl")
	writeCRL(t, rootCRLFile, rootCRL, false) // DER
	writeCRL(t, interCRLFile, emptyCRL, true)

	trust, err := LoadTrust([]string{rootPEM}, []string{interPEM}, []string{rootCRLFile, interCRLFile})
	if err != nil {
		t.Fatal(err)
	}
	if !trust.ChecksRevocation() {
		t.Fatal("CRLs configured but revocation not checked")
	}
	// The message does not carry the intermediate: the configured one is used.
	der := makeSig(t, kp, testContent, sigOpts{noChain: true})
	req := Request{PKCS7: der, Content: testContent, From: drEmail, RPPS: drRPPS}
	if _, err := trust.Verify(req); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	revokedCRL, err := p.IssueCRL(nil, []*x509.Certificate{kp.Cert}, now, now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	writeCRL(t, interCRLFile, revokedCRL, true)
	if _, err := trust.Verify(req); err != nil {
		t.Fatalf("Verify before Reload (cached verdict, old CRL): %v", err)
	}
	if err := trust.Reload(); err != nil {
		t.Fatal(err)
	}
	_, err = trust.Verify(req)
	if got := reasonOf(t, err); got != ReasonRevoked {
		t.Fatalf("after Reload: reason %v (%v), want revoked", got, err)
	}

	// A broken file on Reload keeps the previous material.
	if err := os.WriteFile(interCRLFile, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := trust.Reload(); err == nil {
		t.Fatal("Reload accepted a broken CRL file")
	}
	_, err = trust.Verify(req)
	if got := reasonOf(t, err); got != ReasonRevoked {
		t.Fatalf("after failed Reload: reason %v (%v), want revoked", got, err)
	}

	// Pool holds the anchor and is a copy.
	pool := trust.Pool()
	if _, err := p.Intermediate.Cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Errorf("Pool does not verify the intermediate: %v", err)
	}
	pool.AddCert(mustPKI(t).Root.Cert)
	if n := len(trust.Anchors()); n != 1 {
		t.Errorf("Anchors() = %d certificates after changing the returned pool, want 1", n)
	}
}

func TestLoadTrustErrors(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	p := mustPKI(t)
	other := mustPKI(t)
	leaf := mustIssue(t, p, Template{Email: drEmail})
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	rootPEM := filepath.Join(dir, "root.pem")
	writePEMCerts(t, rootPEM, p.Root.Cert)
	interPEM := filepath.Join(dir, "inter.pem")
	writePEMCerts(t, interPEM, p.Intermediate.Cert)
	leafPEM := filepath.Join(dir, "leaf.pem")
	writePEMCerts(t, leafPEM, leaf.Cert)
	// Same issuer name (the other dev PKI), another key: the signature fails.
	forged, err := other.IssueCRL(nil, nil, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	forgedFile := filepath.Join(dir, "forged.crl")
	writeCRL(t, forgedFile, forged, true)
	orphan := filepath.Join(dir, "orphan.crl")
	orphanCRL, err := p.IssueCRL(nil, nil, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	writeCRL(t, orphan, orphanCRL, false)

	tests := []struct {
		name                  string
		anchors, inters, crls []string
		want                  string
	}{
		{"no anchor", nil, nil, nil, "no trust anchor"},
		{"missing file", []string{filepath.Join(dir, "nope.pem")}, nil, nil, "nope.pem"},
		{"no certificate in file", []string{write("empty.pem", []byte("hello\n"))}, nil, nil, "no PEM CERTIFICATE"},
		{"leaf as anchor", []string{leafPEM}, nil, nil, "not a CA"},
		{"leaf as intermediate", []string{rootPEM}, []string{leafPEM}, nil, "not a CA"},
		{"forged CRL", []string{rootPEM}, []string{interPEM}, []string{forgedFile}, "signature"},
		{"CRL of an unconfigured issuer", []string{rootPEM}, nil, []string{orphan}, "not a configured"},
		{"garbage CRL", []string{rootPEM}, nil, []string{write("bad.crl", []byte{0x30, 0x03, 1, 2, 3})}, "DER CRL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadTrust(tc.anchors, tc.inters, tc.crls)
			if err == nil {
				t.Fatal("LoadTrust succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestNewestCRLWins: with two CRLs of one issuer, the newer one applies.
func TestNewestCRLWins(t *testing.T) {
	now := time.Now()
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: drEmail})
	rootCRL, _ := p.IssueCRL(p.Root, nil, now.Add(-time.Hour), now.Add(time.Hour))
	older, _ := p.IssueCRL(nil, nil, now.Add(-2*time.Hour), now.Add(time.Hour))
	newer, err := p.IssueCRL(nil, []*x509.Certificate{kp.Cert}, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil || rootCRL == nil || older == nil {
		t.Fatal("IssueCRL failed")
	}
	for _, order := range [][]*x509.RevocationList{{rootCRL, older, newer}, {rootCRL, newer, older}} {
		trust := mustTrust(t, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert}, order)
		_, err := trust.Verify(Request{PKCS7: makeSig(t, kp, testContent, sigOpts{}), Content: testContent})
		if got := reasonOf(t, err); got != ReasonRevoked {
			t.Errorf("reason %v (%v), want revoked", got, err)
		}
	}
}

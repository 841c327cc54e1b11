package signing

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestIssuePersonShape(t *testing.T) {
	p := mustPKI(t)
	kp, err := p.IssuePerson(drEmail, drRPPS, drName)
	if err != nil {
		t.Fatal(err)
	}
	c := kp.Cert
	if got, want := c.Subject.SerialNumber, "8"+drRPPS; got != want {
		t.Errorf("subject serialNumber = %q, want %q", got, want)
	}
	if got, want := c.Subject.CommonName, "8"+drRPPS+"/"+drName; got != want {
		t.Errorf("CN = %q, want %q", got, want)
	}
	if !slices.Equal(c.EmailAddresses, []string{drEmail}) {
		t.Errorf("SAN e-mail = %v", c.EmailAddresses)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment {
		t.Errorf("KeyUsage = %v", c.KeyUsage)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}) {
		t.Errorf("ExtKeyUsage = %v", c.ExtKeyUsage)
	}
	if c.IsCA || len(c.SubjectKeyId) == 0 {
		t.Errorf("IsCA = %v, SubjectKeyId = %x", c.IsCA, c.SubjectKeyId)
	}
	if len(kp.Chain) != 1 || !kp.Chain[0].Equal(p.Intermediate.Cert) {
		t.Errorf("Chain should be the intermediate alone")
	}
	if err := c.CheckSignatureFrom(p.Intermediate.Cert); err != nil {
		t.Errorf("not issued by the intermediate: %v", err)
	}
	if p.Root.Cert.Subject.CommonName != DevRootName || p.Intermediate.Cert.Subject.CommonName != DevIntermediateName {
		t.Errorf("CA names %q / %q", p.Root.Cert.Subject.CommonName, p.Intermediate.Cert.Subject.CommonName)
	}

	noRPPS, err := p.IssuePerson("patient@patient.mssante.fr", "", "Cabinet")
	if err != nil {
		t.Fatal(err)
	}
	if noRPPS.Cert.Subject.SerialNumber != "" || noRPPS.Cert.Subject.CommonName != "Cabinet" {
		t.Errorf("without RPPS: subject %v", noRPPS.Cert.Subject)
	}
	for _, bad := range []string{"123", "1010120123x", "101012012345"} {
		if _, err := p.IssuePerson(drEmail, bad, drName); err == nil {
			t.Errorf("IssuePerson accepted RPPS %q", bad)
		}
	}
	if _, err := p.IssuePerson("", drRPPS, drName); err == nil {
		t.Errorf("IssuePerson accepted an empty e-mail")
	}
}

func TestIssueServerAndOrganisation(t *testing.T) {
	p := mustPKI(t)
	srv, err := p.IssueServer("mss.example.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.Root.Cert)
	inter := x509.NewCertPool()
	inter.AddCert(p.Intermediate.Cert)
	for _, host := range []string{"mss.example.test", "127.0.0.1"} {
		if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("server cert for %s: %v", host, err)
		}
	}
	if _, err := p.IssueServer(); err == nil {
		t.Errorf("IssueServer accepted no host")
	}
	org, err := p.IssueOrganisation("relay@mssrelay.example", "MSSRELAY")
	if err != nil {
		t.Fatal(err)
	}
	if org.Cert.Subject.CommonName != "MSSRELAY" || !slices.Equal(org.Cert.EmailAddresses, []string{"relay@mssrelay.example"}) {
		t.Errorf("organisation cert subject %v, e-mails %v", org.Cert.Subject, org.Cert.EmailAddresses)
	}
}

func TestIssueTemplateKeyTypes(t *testing.T) {
	p := mustPKI(t)
	tests := []struct {
		kt   KeyType
		bits int
	}{{KeyECDSAP256, 256}, {KeyECDSAP384, 384}, {KeyRSA2048, 2048}, {KeyRSA1024, 1024}}
	for _, tc := range tests {
		kp := mustIssue(t, p, Template{Email: drEmail, KeyType: tc.kt})
		var bits int
		switch k := kp.Cert.PublicKey.(type) {
		case *ecdsa.PublicKey:
			bits = k.Curve.Params().BitSize
		case *rsa.PublicKey:
			bits = k.N.BitLen()
		}
		if bits != tc.bits {
			t.Errorf("key type %d: %d bits, want %d", tc.kt, bits, tc.bits)
		}
	}
	nb := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	kp := mustIssue(t, p, Template{Email: drEmail, NotBefore: nb, NotAfter: nb.AddDate(1, 0, 0)})
	if !kp.Cert.NotBefore.Equal(nb) || !kp.Cert.NotAfter.Equal(nb.AddDate(1, 0, 0)) {
		t.Errorf("validity %v – %v", kp.Cert.NotBefore, kp.Cert.NotAfter)
	}
	a := mustIssue(t, p, Template{Email: drEmail})
	b := mustIssue(t, p, Template{Email: drEmail})
	if a.Cert.PublicKey.(*ecdsa.PublicKey).Equal(b.Cert.PublicKey) || a.Cert.SerialNumber.Cmp(b.Cert.SerialNumber) == 0 {
		t.Errorf("two issues share a key or a serial")
	}
}

func TestKeyPairFiles(t *testing.T) {
	p := mustPKI(t)
	dir := t.TempDir()
	for name, kt := range map[string]KeyType{"ec": KeyECDSAP256, "rsa": KeyRSA2048} {
		kp := mustIssue(t, p, Template{Email: drEmail, KeyType: kt})
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		// An existing world-readable file must come out 0600.
		if err := os.WriteFile(keyFile, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := kp.WriteFiles(certFile, keyFile); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file mode %v, want 0600", name, fi.Mode().Perm())
		}
		got, err := LoadKeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Cert.Equal(kp.Cert) || len(got.Chain) != 1 || !got.Chain[0].Equal(p.Intermediate.Cert) {
			t.Errorf("%s: loaded certificate chain differs", name)
		}
		if !publicKeysEqual(got.Key.Public(), kp.Cert.PublicKey) {
			t.Errorf("%s: loaded key differs", name)
		}
	}
	// A key that is not the certificate's is refused.
	if _, err := LoadKeyPair(filepath.Join(dir, "ec.pem"), filepath.Join(dir, "rsa.key")); err == nil {
		t.Errorf("LoadKeyPair accepted a mismatched key")
	}
	if _, err := LoadKeyPair(filepath.Join(dir, "missing.pem"), filepath.Join(dir, "ec.key")); err == nil {
		t.Errorf("LoadKeyPair accepted a missing file")
	}
}

// TestLoadKeyPairOpenSSLFormats: keys as openssl writes them (SEC1 with an
// EC PARAMETERS block, PKCS#1).
func TestLoadKeyPairOpenSSLFormats(t *testing.T) {
	bin := needOpenSSL(t)
	dir := t.TempDir()
	p := mustPKI(t)
	for name, kt := range map[string]KeyType{"ec": KeyECDSAP256, "rsa": KeyRSA2048} {
		kp := mustIssue(t, p, Template{Email: drEmail, KeyType: kt})
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		if err := kp.WriteFiles(certFile, keyFile); err != nil {
			t.Fatal(err)
		}
		legacy := filepath.Join(dir, name+"-legacy.key")
		if name == "ec" {
			params := runOpenSSL(t, bin, "ecparam", "-name", "prime256v1")
			key := runOpenSSL(t, bin, "ec", "-in", keyFile)
			if err := os.WriteFile(legacy, append(params, key...), 0o600); err != nil {
				t.Fatal(err)
			}
		} else {
			key := runOpenSSL(t, bin, "rsa", "-in", keyFile, "-traditional")
			if err := os.WriteFile(legacy, key, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := LoadKeyPair(certFile, legacy); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDevPKISaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	p, created, err := LoadOrCreateDevPKI(dir)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateDevPKI: created=%v err=%v", created, err)
	}
	q, created, err := LoadOrCreateDevPKI(dir)
	if err != nil || created {
		t.Fatalf("second LoadOrCreateDevPKI: created=%v err=%v", created, err)
	}
	if !q.Root.Cert.Equal(p.Root.Cert) || !q.Intermediate.Cert.Equal(p.Intermediate.Cert) {
		t.Fatalf("reloaded PKI differs")
	}
	// The reloaded PKI issues certificates the original's root trusts.
	kp := mustIssue(t, q, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	// No CRL: the development CAs are CRL-optional, as in the demo.
	trust, err := LoadTrustWith(LoadTrustOptions{
		Anchors:            []string{filepath.Join(dir, DevRootCertFile)},
		CRLOptionalIssuers: []string{filepath.Join(dir, DevRootCertFile), filepath.Join(dir, DevIntermediateCertFile)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trust.Verify(Request{PKCS7: makeSig(t, kp, testContent, sigOpts{}), Content: testContent, From: drEmail, RPPS: drRPPS}); err != nil {
		t.Errorf("Verify with reloaded PKI: %v", err)
	}
	for _, f := range []string{DevRootKeyFile, DevIntermediateKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	// A mismatched intermediate is detected.
	other := mustPKI(t)
	if err := other.Intermediate.WriteFiles(filepath.Join(dir, DevIntermediateCertFile), filepath.Join(dir, DevIntermediateKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDevPKI(dir); err == nil {
		t.Errorf("LoadDevPKI accepted an intermediate from another root")
	}
}

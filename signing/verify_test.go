package signing

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

const (
	drEmail = "jean.dupont@medecin.mssante.fr"
	drRPPS  = "10101201234"
	drName  = "Jean DUPONT"
)

func TestVerifyAccepts(t *testing.T) {
	p := mustPKI(t)
	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
	ec := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	rsaKP := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyType: KeyRSA2048})
	p384 := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyType: KeyECDSAP384})
	legacyEmail := mustIssue(t, p, Template{Name: "Cabinet Legacy", SubjectExtra: []pkix.AttributeTypeAndValue{
		{Type: oidEmailAddress, Value: "secretariat@cabinet.mssante.fr"}}})
	anyEKU := mustIssue(t, p, Template{Email: drEmail, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	noKU := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})

	tests := []struct {
		name       string
		kp         *KeyPair
		opts       sigOpts
		from, rpps string
		wantIDNPS  string
	}{
		{"ecdsa detached", ec, sigOpts{}, drEmail, drRPPS, "8" + drRPPS},
		{"ecdsa opaque", ec, sigOpts{opaque: true}, drEmail, drRPPS, "8" + drRPPS},
		{"rsa 2048 detached", rsaKP, sigOpts{}, drEmail, drRPPS, "8" + drRPPS},
		{"p384 sha384", p384, sigOpts{digest: pkcs7.OIDDigestAlgorithmSHA384}, drEmail, "", "8" + drRPPS},
		{"sha512", ec, sigOpts{digest: pkcs7.OIDDigestAlgorithmSHA512}, drEmail, "", "8" + drRPPS},
		{"domain case-insensitive", ec, sigOpts{}, "jean.dupont@MEDECIN.MSSANTE.FR", "", "8" + drRPPS},
		{"no From or RPPS check", ec, sigOpts{}, "", "", "8" + drRPPS},
		{"subject emailAddress fallback", legacyEmail, sigOpts{}, "secretariat@cabinet.mssante.fr", "", ""},
		{"anyExtendedKeyUsage", anyEKU, sigOpts{}, drEmail, "", ""},
		{"signing time within skew", ec, sigOpts{signingTime: time.Now().Add(4 * time.Minute)}, drEmail, drRPPS, "8" + drRPPS},
		{"backdated signing time, valid cert", ec, sigOpts{signingTime: time.Now().Add(-30 * time.Minute)}, drEmail, drRPPS, "8" + drRPPS},
		{"no explicit key usage change", noKU, sigOpts{}, drEmail, drRPPS, "8" + drRPPS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der := makeSig(t, tc.kp, testContent, tc.opts)
			req := Request{PKCS7: der, From: tc.from, RPPS: tc.rpps}
			if !tc.opts.opaque {
				req.Content = testContent
			}
			res, err := trust.Verify(req)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !bytes.Equal(res.Content, testContent) {
				t.Errorf("Content = %q, want the signed bytes", res.Content)
			}
			s := res.Signer
			if !s.Cert.Equal(tc.kp.Cert) {
				t.Errorf("Signer.Cert is not the signing certificate")
			}
			if len(s.Chain) != 3 || !s.Chain[0].Equal(tc.kp.Cert) || !s.Chain[2].Equal(p.Root.Cert) {
				t.Errorf("Signer.Chain has %d certificates, want leaf, intermediate, root", len(s.Chain))
			}
			if s.IDNPS != tc.wantIDNPS {
				t.Errorf("IDNPS = %q, want %q", s.IDNPS, tc.wantIDNPS)
			}
			if len(s.Emails) == 0 {
				t.Errorf("Signer.Emails is empty")
			}
		})
	}
}

func TestSignerRPPS(t *testing.T) {
	for _, tc := range []struct{ idnps, want string }{
		{"810101201234", "10101201234"}, {"", ""}, {"010101201234", ""}, {"8101", ""},
	} {
		if got := (&Signer{IDNPS: tc.idnps}).RPPS(); got != tc.want {
			t.Errorf("RPPS() of IDNPS %q = %q, want %q", tc.idnps, got, tc.want)
		}
	}
}

// TestVerifyRefusals builds, for every Reason, a certificate or message
// made to fail exactly that check.
func TestVerifyRefusals(t *testing.T) {
	now := time.Now()
	p := mustPKI(t)
	other := mustPKI(t)
	good := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	second := mustIssue(t, p, Template{Email: "autre@medecin.mssante.fr", Name: "Autre"})
	expired := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName,
		NotBefore: now.AddDate(-3, 0, 0), NotAfter: now.AddDate(0, 0, -1)})
	notYet := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName,
		NotBefore: now.Add(24 * time.Hour), NotAfter: now.AddDate(3, 0, 0)})
	oldSubCA := mustIssue(t, p, Template{Name: "MSSRELAY DEV AC EXPIREE", IsCA: true, Issuer: p.Root,
		NotBefore: now.AddDate(-2, 0, 0), NotAfter: now.Add(-time.Hour)})
	underOldCA := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, Issuer: oldSubCA,
		NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(1, 0, 0)})
	foreign := mustIssue(t, other, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	serverEKU := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	noEKU := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, NoExtKeyUsage: true})
	encOnly := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyUsage: x509.KeyUsageKeyEncipherment})
	tlsSubCA := mustIssue(t, p, Template{Name: "MSSRELAY DEV AC SERVEURS", IsCA: true, Issuer: p.Root})
	// An authority restricted to TLS cannot vouch for e-mail signers.
	tlsSubCA = restrictCA(t, p, tlsSubCA, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	underTLSCA := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, Issuer: tlsSubCA})
	weak := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyType: KeyRSA1024})
	rsaKP := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyType: KeyRSA2048})
	noRPPS := mustIssue(t, p, Template{Email: drEmail, Name: drName})
	otherRPPS := mustIssue(t, p, Template{Email: drEmail, RPPS: "10003456789", Name: drName})
	revoked := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})

	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)

	// Revocation: the intermediate's CRL lists `revoked`; the root's CRL
	// (for the intermediate) is fresh.
	rootCRL, err := p.IssueCRL(p.Root, nil, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	interCRL, err := p.IssueCRL(nil, []*x509.Certificate{revoked.Cert}, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	staleCRL, err := p.IssueCRL(nil, nil, now.Add(-48*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	roots, inters := []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert}
	withCRL := mustTrust(t, roots, inters, []*x509.RevocationList{rootCRL, interCRL})
	withStale := mustTrust(t, roots, inters, []*x509.RevocationList{rootCRL, staleCRL})
	missingRootCRL := mustTrust(t, roots, inters, []*x509.RevocationList{interCRL})

	degenerate, err := pkcs7.DegenerateCertificate(good.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	detached := makeSig(t, good, testContent, sigOpts{})
	opaque := makeSig(t, good, testContent, sigOpts{opaque: true})
	tampered := append([]byte(nil), testContent...)
	tampered[len(tampered)-5] ^= 0x20

	tests := []struct {
		name    string
		trust   *Trust
		req     Request
		want    Reason
		wantSub string // a word the detail must contain
	}{
		// Malformed
		{"empty", trust, Request{PKCS7: nil, Content: testContent}, ReasonMalformed, "empty"},
		{"garbage", trust, Request{PKCS7: []byte("MIAGCSqGSIb3DQEHAqCAMIACAQEx"), Content: testContent}, ReasonMalformed, "BER"},
		{"truncated", trust, Request{PKCS7: detached[:len(detached)/2], Content: testContent}, ReasonMalformed, "BER"},
		{"trailing bytes", trust, Request{PKCS7: append(append([]byte(nil), detached...), 0, 1, 2), Content: testContent}, ReasonMalformed, "BER"},
		{"too large", trust, Request{PKCS7: make([]byte, MaxDetachedSignatureSize+1), Content: testContent}, ReasonMalformed, "larger"},
		{"detached without content", trust, Request{PKCS7: detached}, ReasonMalformed, "no content"},
		{"opaque with detached content too", trust, Request{PKCS7: opaque, Content: testContent}, ReasonMalformed, "embed"},
		{"not signed-data", trust, Request{PKCS7: mustMarshal(t, rawContentInfo{ContentType: oidData}), Content: testContent}, ReasonMalformed, "SignedData"},
		// SignerCount
		{"two signers", trust, Request{PKCS7: makeSig(t, good, testContent, sigOpts{second: second}), Content: testContent}, ReasonSignerCount, "2 signers"},
		{"no signer", trust, Request{PKCS7: degenerate, Content: testContent}, ReasonSignerCount, "0 signers"},
		// Algorithm
		{"sha1 ecdsa", trust, Request{PKCS7: makeSig(t, good, testContent, sigOpts{digest: pkcs7.OIDDigestAlgorithmSHA1}), Content: testContent}, ReasonAlgorithm, "SHA-1"},
		{"sha1 rsa", trust, Request{PKCS7: makeSig(t, rsaKP, testContent, sigOpts{digest: pkcs7.OIDDigestAlgorithmSHA1}), Content: testContent}, ReasonAlgorithm, "SHA-1"},
		{"rsa 1024", trust, Request{PKCS7: makeSig(t, weak, testContent, sigOpts{}), Content: testContent}, ReasonAlgorithm, "1024"},
		// BadSignature
		{"tampered content", trust, Request{PKCS7: detached, Content: tampered}, ReasonBadSignature, "digest"},
		{"content with LF instead of CRLF", trust, Request{PKCS7: detached, Content: bytes.ReplaceAll(testContent, []byte("\r\n"), []byte("\n"))}, ReasonBadSignature, "digest"},
		{"tampered signature", trust, Request{PKCS7: makeSig(t, good, testContent, sigOpts{tamperSig: true}), Content: testContent}, ReasonBadSignature, "does not verify"},
		// Untrusted
		{"untrusted root", trust, Request{PKCS7: makeSig(t, foreign, testContent, sigOpts{}), Content: testContent}, ReasonUntrusted, "trusted"},
		{"intermediate missing", trust, Request{PKCS7: makeSig(t, good, testContent, sigOpts{noChain: true}), Content: testContent}, ReasonUntrusted, "trusted"},
		// Expired
		{"expired", trust, Request{PKCS7: makeSig(t, expired, testContent, sigOpts{}), Content: testContent}, ReasonExpired, "expired"},
		{"backdated signing time, expired cert", trust, Request{PKCS7: makeSig(t, expired, testContent,
			sigOpts{signingTime: now.AddDate(0, -6, 0)}), Content: testContent}, ReasonExpired, "expired"},
		{"not yet valid", trust, Request{PKCS7: makeSig(t, notYet, testContent, sigOpts{}), Content: testContent}, ReasonExpired, "not valid before"},
		{"expired intermediate", trust, Request{PKCS7: makeSig(t, underOldCA, testContent, sigOpts{}), Content: testContent}, ReasonExpired, "EXPIREE"},
		// FutureSigningTime
		{"future signing time", trust, Request{PKCS7: makeSig(t, good, testContent, sigOpts{signingTime: now.Add(time.Hour)}), Content: testContent}, ReasonFutureSigningTime, "future"},
		// KeyUsage
		{"wrong EKU", trust, Request{PKCS7: makeSig(t, serverEKU, testContent, sigOpts{}), Content: testContent}, ReasonKeyUsage, "e-mail protection"},
		{"no EKU", trust, Request{PKCS7: makeSig(t, noEKU, testContent, sigOpts{}), Content: testContent}, ReasonKeyUsage, "e-mail protection"},
		{"no digitalSignature", trust, Request{PKCS7: makeSig(t, encOnly, testContent, sigOpts{}), Content: testContent}, ReasonKeyUsage, "digital signature"},
		{"issuer restricted to TLS", trust, Request{PKCS7: makeSig(t, underTLSCA, testContent, sigOpts{}), Content: testContent}, ReasonKeyUsage, "authority"},
		// Revoked
		{"revoked", withCRL, Request{PKCS7: makeSig(t, revoked, testContent, sigOpts{}), Content: testContent}, ReasonRevoked, "revoked"},
		// RevocationUnknown
		{"stale CRL", withStale, Request{PKCS7: detached, Content: testContent}, ReasonRevocationUnknown, "expired"},
		{"no CRL for an issuer", missingRootCRL, Request{PKCS7: detached, Content: testContent}, ReasonRevocationUnknown, "no CRL"},
		// EmailMismatch
		{"email mismatch", trust, Request{PKCS7: detached, Content: testContent, From: "usurpateur@medecin.mssante.fr"}, ReasonEmailMismatch, drEmail},
		{"local part is case-sensitive", trust, Request{PKCS7: detached, Content: testContent, From: "Jean.Dupont@medecin.mssante.fr"}, ReasonEmailMismatch, "From"},
		{"From without domain", trust, Request{PKCS7: detached, Content: testContent, From: "jean.dupont"}, ReasonEmailMismatch, "From"},
		// IDNPSMismatch
		{"IDNPS mismatch", trust, Request{PKCS7: makeSig(t, otherRPPS, testContent, sigOpts{}), Content: testContent, From: drEmail, RPPS: drRPPS}, ReasonIDNPSMismatch, "810003456789"},
		{"certificate without IDNPS", trust, Request{PKCS7: makeSig(t, noRPPS, testContent, sigOpts{}), Content: testContent, From: drEmail, RPPS: drRPPS}, ReasonIDNPSMismatch, "no IDNPS"},
	}
	seen := map[Reason]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.trust.Verify(tc.req)
			if err == nil {
				t.Fatalf("Verify accepted (signer %v), want %v", res.Signer.Cert.Subject, tc.want)
			}
			got := reasonOf(t, err)
			if got != tc.want {
				t.Fatalf("reason = %v (%v), want %v", got, err, tc.want)
			}
			var e *Error
			errors.As(err, &e)
			if !strings.Contains(e.Detail, tc.wantSub) {
				t.Errorf("detail %q does not mention %q", e.Detail, tc.wantSub)
			}
			if e.Temporary() != (tc.want == ReasonRevocationUnknown) {
				t.Errorf("Temporary() = %v for %v", e.Temporary(), tc.want)
			}
			seen[got] = true
		})
	}
	for r := ReasonMalformed; r <= ReasonIDNPSMismatch; r++ {
		if !seen[r] {
			t.Errorf("no refusal test produced %v", r)
		}
	}
	// The good signature passes the CRL-checking store: the refusals above
	// come from the certificates, not from the store.
	if _, err := withCRL.Verify(Request{PKCS7: detached, Content: testContent, From: drEmail, RPPS: drRPPS}); err != nil {
		t.Errorf("good signature with fresh CRLs: %v", err)
	}
}

// restrictCA re-issues a sub-CA with an extended key usage restriction.
func restrictCA(t *testing.T, p *DevPKI, ca *KeyPair, eku []x509.ExtKeyUsage) *KeyPair {
	t.Helper()
	tmpl := *ca.Cert
	tmpl.ExtKeyUsage = eku
	tmpl.UnknownExtKeyUsage = nil
	tmpl.ExtraExtensions = nil
	tmpl.Extensions = nil
	kp, err := createCertificate(&tmpl, ca.Key, p.Root)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVerifyChainCheckedAtNow: a verdict cached while the certificate was
// valid must not outlive the certificate.
func TestVerifyCacheRespectsValidity(t *testing.T) {
	p := mustPKI(t)
	now := time.Now()
	kp := mustIssue(t, p, Template{Email: drEmail, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
	der := makeSig(t, kp, testContent, sigOpts{})
	if _, err := trust.Verify(Request{PKCS7: der, Content: testContent, Now: now}); err != nil {
		t.Fatalf("first Verify: %v", err)
	}
	st := trust.state.Load()
	if n := st.cache.len(); n != 1 {
		t.Fatalf("cache holds %d verdicts, want 1", n)
	}
	if _, err := trust.Verify(Request{PKCS7: der, Content: testContent, Now: now.Add(time.Minute)}); err != nil {
		t.Fatalf("cached Verify: %v", err)
	}
	_, err := trust.Verify(Request{PKCS7: der, Content: testContent, Now: now.Add(2 * time.Hour)})
	if got := reasonOf(t, err); got != ReasonExpired {
		t.Fatalf("after expiry: reason %v (%v), want expired", got, err)
	}
	_, err = trust.Verify(Request{PKCS7: der, Content: testContent, Now: now.Add(-2 * time.Hour)})
	if got := reasonOf(t, err); got != ReasonExpired {
		t.Fatalf("before validity: reason %v (%v), want expired", got, err)
	}
	if err := trust.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := trust.state.Load().cache.len(); n != 0 {
		t.Errorf("cache holds %d verdicts after Reload, want 0", n)
	}
}

// TestVerifyCacheBoundedByCRL: a verdict must not outlive the CRL that
// backed it; afterwards the stale CRL turns into a temporary refusal.
func TestVerifyCacheBoundedByCRL(t *testing.T) {
	p := mustPKI(t)
	now := time.Now()
	kp := mustIssue(t, p, Template{Email: drEmail})
	rootCRL, err := p.IssueCRL(p.Root, nil, now.Add(-time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	interCRL, err := p.IssueCRL(nil, nil, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	trust := mustTrust(t, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert}, []*x509.RevocationList{rootCRL, interCRL})
	der := makeSig(t, kp, testContent, sigOpts{})
	if _, err := trust.Verify(Request{PKCS7: der, Content: testContent, Now: now}); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	_, err = trust.Verify(Request{PKCS7: der, Content: testContent, Now: now.Add(2 * time.Hour)})
	if got := reasonOf(t, err); got != ReasonRevocationUnknown {
		t.Fatalf("after CRL nextUpdate: reason %v (%v), want revocation-unknown", got, err)
	}
}

func TestVerifyCacheEviction(t *testing.T) {
	c := newVerdictCache(4)
	now := time.Now()
	for i := 0; i < 10; i++ {
		c.put([32]byte{byte(i)}, &verdict{from: now.Add(-time.Hour), until: now.Add(time.Hour)}, now)
		if c.len() > 4 {
			t.Fatalf("cache grew to %d entries, bound is 4", c.len())
		}
	}
	if c.get([32]byte{9}, now) == nil {
		t.Errorf("the entry just added was evicted")
	}
	if c.get([32]byte{9}, now.Add(2*time.Hour)) != nil {
		t.Errorf("an expired verdict was returned")
	}
}

func TestReasonString(t *testing.T) {
	names := map[string]bool{}
	for r := ReasonMalformed; r <= ReasonIDNPSMismatch; r++ {
		s := r.String()
		if strings.HasPrefix(s, "reason(") || names[s] {
			t.Errorf("Reason %d has no unique name (%q)", int(r), s)
		}
		names[s] = true
	}
	if Reason(99).String() != "reason(99)" {
		t.Errorf("unknown reason name = %q", Reason(99).String())
	}
}

func TestVerifyConcurrent(t *testing.T) {
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: drEmail})
	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
	der := makeSig(t, kp, testContent, sigOpts{})
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		go func() {
			var err error
			for j := 0; j < 20 && err == nil; j++ {
				if j == 10 {
					err = trust.Reload()
				}
				if err == nil {
					_, err = trust.Verify(Request{PKCS7: der, Content: testContent, From: drEmail})
				}
			}
			errs <- err
		}()
	}
	for i := 0; i < 16; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

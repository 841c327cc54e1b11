package signing

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"slices"
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
	// IGC-Santé CN "<IDNPS>/<name>" without a serialNumber attribute.
	idnpsInCN := mustIssue(t, p, Template{Email: drEmail, Name: "8" + drRPPS + "/" + drName})
	// serialNumber and CN name two different IDNPS: the certificate names
	// no one for sure, so it carries no IDNPS (accepted without RPPS).
	ambiguousIDNPS := mustIssue(t, p, Template{Email: drEmail, Name: "8" + drRPPS + "/" + drName,
		SubjectExtra: []pkix.AttributeTypeAndValue{{Type: oidSubjectSerialNumber, Value: "810003456789"}}})

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
		{"IDNPS from the CN alone", idnpsInCN, sigOpts{}, drEmail, drRPPS, "8" + drRPPS},
		{"serialNumber and CN disagree, no RPPS registered", ambiguousIDNPS, sigOpts{}, drEmail, "", ""},
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
	ambiguousIDNPS := mustIssue(t, p, Template{Email: drEmail, Name: "8" + drRPPS + "/" + drName,
		SubjectExtra: []pkix.AttributeTypeAndValue{{Type: oidSubjectSerialNumber, Value: "810003456789"}}})
	// A serialNumber that is not an IDNPS hides the CN's: no IDNPS.
	serialNotIDNPS := mustIssue(t, p, Template{Email: drEmail, Name: "8" + drRPPS + "/" + drName,
		SubjectExtra: []pkix.AttributeTypeAndValue{{Type: oidSubjectSerialNumber, Value: "AB-1234"}}})

	// Keys the algorithm policy refuses. Issue generates only allowed keys
	// (and RSA-1024), so these certificates are built for the key. Where
	// the test holds no private key (Ed25519, which the PKCS#7 library
	// cannot sign with; an RSA modulus too large to generate in a test),
	// the message is signed with another key: the policy refuses the
	// certificate's key before any signature check.
	dr := Template{Email: drEmail, RPPS: drRPPS, Name: drName}
	var p521, p224 *KeyPair
	for _, c := range []struct {
		kp    **KeyPair
		curve elliptic.Curve
	}{{&p521, elliptic.P521()}, {&p224, elliptic.P224()}} {
		key, err := ecdsa.GenerateKey(c.curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		*c.kp = reissueForKey(t, p, dr, key.Public())
		(*c.kp).Key = key
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edKP := reissueForKey(t, p, dr, edPub)
	edKP.Key = good.Key
	// 2^8199 + 1: an 8200-bit modulus, one bit over the policy's bound.
	bigN := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), maxRSABits+7), big.NewInt(1))
	bigRSA := reissueForKey(t, p, dr, &rsa.PublicKey{N: bigN, E: 65537})
	bigRSA.Key = good.Key
	// A certificate with one key type, the signature algorithm of another
	// (the message is signed with the other type's key).
	rsaCertECDSASig := &KeyPair{Cert: rsaKP.Cert, Key: good.Key, Chain: rsaKP.Chain}
	ecCertRSASig := &KeyPair{Cert: good.Cert, Key: rsaKP.Key, Chain: good.Chain}
	// An authority with an RSA-1024 key under the root.
	weakCA := mustIssue(t, p, Template{Name: "MSSRELAY DEV AC FAIBLE", IsCA: true, Issuer: p.Root, KeyType: KeyRSA1024})
	underWeakCA := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, Issuer: weakCA})

	// An expired authority that x509 reports as an unknown authority, not as
	// expired: the message carries the expired sub-CA and, after it, a
	// re-issue of it (same subject and key, valid now) by an untrusted
	// root. x509 tries the expired one (CertificateInvalidError), then the
	// re-issue, which finds no anchor and replaces the error with
	// UnknownAuthorityError. verifyChain then finds the chain that existed
	// when the signer's certificate became valid and reports the expired
	// sub-CA. The validity periods sit inside the dev root's (from an hour
	// ago) so that chain exists.
	lapsedCA := mustIssue(t, p, Template{Name: "MSSRELAY DEV AC EXPIREE RECENTE", IsCA: true, Issuer: p.Root,
		NotBefore: now.Add(-50 * time.Minute), NotAfter: now.Add(-10 * time.Minute)})
	underLapsedCA := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, Issuer: lapsedCA,
		NotBefore: now.Add(-40 * time.Minute), NotAfter: now.AddDate(1, 0, 0)})
	reissuedTmpl := *lapsedCA.Cert
	reissuedTmpl.Extensions, reissuedTmpl.ExtraExtensions = nil, nil
	reissuedTmpl.NotBefore, reissuedTmpl.NotAfter = now.Add(-time.Hour), now.AddDate(1, 0, 0)
	lapsedReissued, err := createCertificate(&reissuedTmpl, lapsedCA.Key, other.Root)
	if err != nil {
		t.Fatal(err)
	}

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
	// id-ct-TSTInfo (RFC 3161): a SignedData, but not over a MIME entity.
	notData := rewriteSignedData(t, detached, func(sd, _ []asn1.RawValue) {
		sd[2] = asn1.RawValue{FullBytes: mustMarshal(t, rawContentInfo{ContentType: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 4}})}
	})
	tooManyCerts := makeSig(t, good, testContent, sigOpts{extraCerts: slices.Repeat([]*x509.Certificate{p.Root.Cert}, maxMessageCertificates-1)})
	// The content-type attribute names signed-data, the content is id-data.
	otherContentType := resignSignedAttrs(t, detached, good, func(attrs []rawAttribute) []rawAttribute {
		for i := range attrs {
			if attrs[i].Type.Equal(oidContentType) {
				attrs[i].Values = attrValues(t, oidSignedData)
			}
		}
		return attrs
	})

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
		{"opaque too large", trust, Request{PKCS7: make([]byte, MaxOpaqueSize+1)}, ReasonMalformed, "larger than 33554432"},
		{"signed content not id-data", trust, Request{PKCS7: notData, Content: testContent}, ReasonMalformed, "1.2.840.113549.1.9.16.1.4 is not id-data"},
		{"more than 32 certificates", trust, Request{PKCS7: tooManyCerts, Content: testContent}, ReasonMalformed, "more than 32 certificates"},
		// SignerCount
		{"two signers", trust, Request{PKCS7: makeSig(t, good, testContent, sigOpts{second: second}), Content: testContent}, ReasonSignerCount, "2 signers"},
		{"no signer", trust, Request{PKCS7: degenerate, Content: testContent}, ReasonSignerCount, "0 signers"},
		// Algorithm
		{"sha1 ecdsa", trust, Request{PKCS7: makeSig(t, good, testContent, sigOpts{digest: pkcs7.OIDDigestAlgorithmSHA1}), Content: testContent}, ReasonAlgorithm, "SHA-1"},
		{"sha1 rsa", trust, Request{PKCS7: makeSig(t, rsaKP, testContent, sigOpts{digest: pkcs7.OIDDigestAlgorithmSHA1}), Content: testContent}, ReasonAlgorithm, "SHA-1"},
		{"rsa 1024", trust, Request{PKCS7: makeSig(t, weak, testContent, sigOpts{}), Content: testContent}, ReasonAlgorithm, "1024"},
		{"md5", trust, Request{PKCS7: withDigestAlgorithm(t, detached, oidMD5), Content: testContent}, ReasonAlgorithm, "digest algorithm 1.2.840.113549.2.5 is refused"},
		{"ecdsa p521", trust, Request{PKCS7: makeSig(t, p521, testContent, sigOpts{digest: pkcs7.OIDDigestAlgorithmSHA512}), Content: testContent}, ReasonAlgorithm, "P-521"},
		{"ecdsa p224", trust, Request{PKCS7: makeSig(t, p224, testContent, sigOpts{}), Content: testContent}, ReasonAlgorithm, "P-224"},
		{"ed25519 key", trust, Request{PKCS7: makeSig(t, edKP, testContent, sigOpts{}), Content: testContent}, ReasonAlgorithm, "ed25519.PublicKey is refused"},
		{"rsa over 8192 bits", trust, Request{PKCS7: makeSig(t, bigRSA, testContent, sigOpts{}), Content: testContent}, ReasonAlgorithm, "RSA key of 8200 bits"},
		{"rsa key, ecdsa signature algorithm", trust, Request{PKCS7: makeSig(t, rsaCertECDSASig, testContent, sigOpts{}), Content: testContent}, ReasonAlgorithm, "1.2.840.10045.4.3.2 is refused with an RSA key"},
		{"rsa, sha256WithRSA over a SHA-384 digest", trust, Request{PKCS7: withDigestAlgorithm(t, makeSig(t, rsaKP, testContent, sigOpts{}), oidSHA384), Content: testContent}, ReasonAlgorithm, "1.2.840.113549.1.1.11 is refused with an RSA key"},
		{"ecdsa key, rsa signature algorithm", trust, Request{PKCS7: makeSig(t, ecCertRSASig, testContent, sigOpts{}), Content: testContent}, ReasonAlgorithm, "1.2.840.113549.1.1.11 is refused with an ECDSA key"},
		{"ecdsa-with-SHA256 over a SHA-384 digest", trust, Request{PKCS7: withDigestAlgorithm(t, detached, oidSHA384), Content: testContent}, ReasonAlgorithm, "1.2.840.10045.4.3.2 is refused with an ECDSA key"},
		{"authority with an rsa 1024 key", trust, Request{PKCS7: makeSig(t, underWeakCA, testContent, sigOpts{}), Content: testContent}, ReasonAlgorithm, `authority "MSSRELAY DEV AC FAIBLE" has an RSA key of 1024 bits`},
		// BadSignature
		{"tampered content", trust, Request{PKCS7: detached, Content: tampered}, ReasonBadSignature, "digest"},
		{"content with LF instead of CRLF", trust, Request{PKCS7: detached, Content: bytes.ReplaceAll(testContent, []byte("\r\n"), []byte("\n"))}, ReasonBadSignature, "digest"},
		{"tampered signature", trust, Request{PKCS7: makeSig(t, good, testContent, sigOpts{tamperSig: true}), Content: testContent}, ReasonBadSignature, "does not verify"},
		{"content-type attribute not the content's", trust, Request{PKCS7: otherContentType, Content: testContent}, ReasonBadSignature, "content-type attribute"},
		// Untrusted
		{"untrusted root", trust, Request{PKCS7: makeSig(t, foreign, testContent, sigOpts{}), Content: testContent}, ReasonUntrusted, "trusted"},
		{"intermediate missing", trust, Request{PKCS7: makeSig(t, good, testContent, sigOpts{noChain: true}), Content: testContent}, ReasonUntrusted, "trusted"},
		// Expired
		{"expired", trust, Request{PKCS7: makeSig(t, expired, testContent, sigOpts{}), Content: testContent}, ReasonExpired, "expired"},
		{"backdated signing time, expired cert", trust, Request{PKCS7: makeSig(t, expired, testContent,
			sigOpts{signingTime: now.AddDate(0, -6, 0)}), Content: testContent}, ReasonExpired, "expired"},
		{"not yet valid", trust, Request{PKCS7: makeSig(t, notYet, testContent, sigOpts{}), Content: testContent}, ReasonExpired, "not valid before"},
		{"expired intermediate", trust, Request{PKCS7: makeSig(t, underOldCA, testContent, sigOpts{}), Content: testContent}, ReasonExpired, "EXPIREE"},
		{"expired intermediate reported as unknown authority", trust, Request{PKCS7: makeSig(t, underLapsedCA, testContent,
			sigOpts{extraCerts: []*x509.Certificate{lapsedReissued.Cert}}), Content: testContent}, ReasonExpired, `"MSSRELAY DEV AC EXPIREE RECENTE" expired`},
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
		{"serialNumber and CN disagree", trust, Request{PKCS7: makeSig(t, ambiguousIDNPS, testContent, sigOpts{}), Content: testContent, From: drEmail, RPPS: drRPPS}, ReasonIDNPSMismatch, "no IDNPS"},
		{"serialNumber not an IDNPS, CN is", trust, Request{PKCS7: makeSig(t, serialNotIDNPS, testContent, sigOpts{}), Content: testContent, From: drEmail, RPPS: drRPPS}, ReasonIDNPSMismatch, "no IDNPS"},
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

// Object identifiers only the tests need.
var (
	oidMD5                 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
	oidSubjectSerialNumber = asn1.ObjectIdentifier{2, 5, 4, 5} // X.520 serialNumber
)

// withDigestAlgorithm returns der with the digest algorithm of its first
// SignerInfo replaced by oid. The algorithm policy runs before any digest
// or signature is computed, so nothing else needs to match.
func withDigestAlgorithm(t *testing.T, der []byte, oid asn1.ObjectIdentifier) []byte {
	t.Helper()
	return rewriteSignedData(t, der, func(_, si []asn1.RawValue) {
		si[2] = asn1.RawValue{FullBytes: mustMarshal(t, pkix.AlgorithmIdentifier{Algorithm: oid})}
	})
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

// TestVerifySignedAttributeShape: RFC 5652 5.3 and 11 fix the shape of the
// signed attributes the verifier relies on. Each message is signed again
// over its edited attributes, so the refusal comes from the shape check,
// not from a broken signature.
func TestVerifySignedAttributeShape(t *testing.T) {
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
	detached := makeSig(t, kp, testContent, sigOpts{})

	find := func(t *testing.T, attrs []rawAttribute, oid asn1.ObjectIdentifier) int {
		t.Helper()
		for i, a := range attrs {
			if a.Type.Equal(oid) {
				return i
			}
		}
		t.Fatalf("no %v attribute to edit", oid)
		return -1
	}
	without := func(oid asn1.ObjectIdentifier) func(*testing.T, []rawAttribute) []rawAttribute {
		return func(t *testing.T, attrs []rawAttribute) []rawAttribute {
			i := find(t, attrs, oid)
			return slices.Delete(attrs, i, i+1)
		}
	}
	tests := []struct {
		name    string
		edit    func(*testing.T, []rawAttribute) []rawAttribute
		wantErr string // "" : accepted; else a word of the cause
	}{
		{"unchanged (the re-signing itself is sound)", func(_ *testing.T, a []rawAttribute) []rawAttribute { return a }, ""},
		{"message-digest twice", func(t *testing.T, attrs []rawAttribute) []rawAttribute {
			return append(attrs, attrs[find(t, attrs, oidMessageDigest)])
		}, "appears twice"},
		{"signing-time twice", func(t *testing.T, attrs []rawAttribute) []rawAttribute {
			return append(attrs, rawAttribute{Type: oidSigningTime, Values: attrValues(t, time.Now().Add(-time.Hour).UTC())})
		}, "appears twice"},
		{"content-type with two values", func(t *testing.T, attrs []rawAttribute) []rawAttribute {
			attrs[find(t, attrs, oidContentType)].Values = attrValues(t, oidData, oidData)
			return attrs
		}, "more than one value"},
		{"message-digest values not a SET", func(t *testing.T, attrs []rawAttribute) []rawAttribute {
			i := find(t, attrs, oidMessageDigest)
			v := attrs[i].Values
			attrs[i].Values = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: v.Bytes}
			return attrs
		}, "not a SET"},
		{"message-digest of the wrong type", func(t *testing.T, attrs []rawAttribute) []rawAttribute {
			attrs[find(t, attrs, oidMessageDigest)].Values = attrValues(t, oidData)
			return attrs
		}, "1.2.840.113549.1.9.4"},
		{"no content-type", without(oidContentType), "lack content-type"},
		{"no message-digest", without(oidMessageDigest), "lack message-digest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der := resignSignedAttrs(t, detached, kp, func(a []rawAttribute) []rawAttribute { return tc.edit(t, a) })
			_, err := trust.Verify(Request{PKCS7: der, Content: testContent, From: drEmail, RPPS: drRPPS})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if got := reasonOf(t, err); got != ReasonMalformed {
				t.Fatalf("reason = %v (%v), want malformed", got, err)
			}
			var e *Error
			errors.As(err, &e)
			if e.Detail != "the signed attributes do not parse" {
				t.Errorf("detail %q", e.Detail)
			}
			if e.Err == nil || !strings.Contains(e.Err.Error(), tc.wantErr) {
				t.Errorf("cause %v does not mention %q", e.Err, tc.wantErr)
			}
		})
	}
}

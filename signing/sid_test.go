package signing

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Signers identified by subject key identifier (RFC 5652 5.3: sid
// [0] IMPLICIT SubjectKeyIdentifier, SignerInfo version 3), as
// `openssl cms -sign -keyid` and some Outlook versions write them. The
// OpenSSL-made ones are in testdata/openssl (*-keyid.p7s) and
// interop_test.go; these are built from the PKCS#7 library's output with
// the sid rewritten (withSID), to reach the cases no signer makes on
// purpose.

// twinCert certifies key under p's intermediate with kp's subject and
// extensions, and kp's subject key identifier: the same key re-certified
// (a renewal) when key is kp.Key, a certificate made to collide otherwise.
func twinCert(t testing.TB, p *DevPKI, kp *KeyPair, key *KeyPair) *x509.Certificate {
	t.Helper()
	tmpl := *kp.Cert
	tmpl.Extensions = nil
	tmpl.ExtraExtensions = nil
	tmpl.SubjectKeyId = kp.Cert.SubjectKeyId
	twin, err := createCertificate(&tmpl, key.Key, p.Intermediate)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(twin.Cert.SubjectKeyId, kp.Cert.SubjectKeyId) || bytes.Equal(twin.Cert.Raw, kp.Cert.Raw) {
		t.Fatal("twin certificate does not share the subject key identifier, or is the same certificate")
	}
	return twin.Cert
}

func TestVerifySubjectKeyIdentifier(t *testing.T) {
	p := mustPKI(t)
	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
	ec := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	rsaKP := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyType: KeyRSA2048})
	if len(ec.Cert.SubjectKeyId) == 0 || len(rsaKP.Cert.SubjectKeyId) == 0 {
		t.Fatal("DevPKI certificates lack a subject key identifier")
	}
	// Another certificate in the message, with its own identifier, must not
	// be taken for the signer.
	other := mustIssue(t, p, Template{Email: "autre@medecin.mssante.fr", Name: "Autre"})

	tests := []struct {
		name    string
		kp      *KeyPair
		opts    sigOpts
		sid     asn1.RawValue
		version int
	}{
		{"ecdsa detached", ec, sigOpts{}, sidKeyID(ec.Cert.SubjectKeyId), 3},
		{"ecdsa opaque", ec, sigOpts{opaque: true}, sidKeyID(ec.Cert.SubjectKeyId), 3},
		{"rsa detached", rsaKP, sigOpts{}, sidKeyID(rsaKP.Cert.SubjectKeyId), 3},
		{"rsa opaque", rsaKP, sigOpts{opaque: true}, sidKeyID(rsaKP.Cert.SubjectKeyId), 3},
		{"another certificate in the message", ec, sigOpts{extraCerts: []*x509.Certificate{other.Cert}}, sidKeyID(ec.Cert.SubjectKeyId), 3},
		{"signer certificate included twice", ec, sigOpts{extraCerts: []*x509.Certificate{ec.Cert}}, sidKeyID(ec.Cert.SubjectKeyId), 3},
		// RFC 5652 5.3 pairs version 3 with subjectKeyIdentifier and 1
		// with issuerAndSerialNumber; the pairing is not enforced (see
		// parseSignerInfo for why). These pin that decision.
		{"subject key identifier with version 1", ec, sigOpts{}, sidKeyID(ec.Cert.SubjectKeyId), 1},
		{"issuer and serial with version 3", ec, sigOpts{}, issuerSerialSID(t, ec.Cert), 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der := withSID(t, makeSig(t, tc.kp, testContent, tc.opts), tc.sid, tc.version)
			req := Request{PKCS7: der, From: drEmail, RPPS: drRPPS}
			if !tc.opts.opaque {
				req.Content = testContent
			}
			res, err := trust.Verify(req)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !res.Signer.Cert.Equal(tc.kp.Cert) {
				t.Errorf("Signer.Cert is %q, not the signing certificate", res.Signer.Cert.Subject)
			}
			if !bytes.Equal(res.Content, testContent) {
				t.Errorf("Content = %q, want the signed bytes", res.Content)
			}
			if len(res.Signer.Chain) != 3 || !res.Signer.Chain[2].Equal(p.Root.Cert) {
				t.Errorf("Signer.Chain has %d certificates, want leaf, intermediate, root", len(res.Signer.Chain))
			}
			if res.Signer.IDNPS != "8"+drRPPS {
				t.Errorf("IDNPS = %q", res.Signer.IDNPS)
			}
		})
	}

	// The rewriting itself is sound: an unchanged sid still verifies, and
	// the same signature with a tampered content is still refused for the
	// content (the sid does not bypass the digest check).
	der := withSID(t, makeSig(t, ec, testContent, sigOpts{}), sidKeyID(ec.Cert.SubjectKeyId), 3)
	tampered := append([]byte(nil), testContent...)
	tampered[len(tampered)-5] ^= 0x20
	_, err := trust.Verify(Request{PKCS7: der, Content: tampered})
	if got := reasonOf(t, err); got != ReasonBadSignature {
		t.Errorf("tampered content with a key identifier sid: reason %v (%v), want bad-signature", got, err)
	}
}

// issuerSerialSID is the issuerAndSerialNumber form of a signer identifier.
func issuerSerialSID(t *testing.T, c *x509.Certificate) asn1.RawValue {
	t.Helper()
	b, err := asn1.Marshal(issuerAndSerial{Issuer: asn1.RawValue{FullBytes: c.RawIssuer}, Serial: c.SerialNumber})
	if err != nil {
		t.Fatal(err)
	}
	return asn1.RawValue{FullBytes: b}
}

// TestVerifySubjectKeyIdentifierRefusals: a key identifier that names no
// certificate of the message, or several, is Malformed, as is a sid of
// neither form.
func TestVerifySubjectKeyIdentifierRefusals(t *testing.T) {
	p := mustPKI(t)
	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
	good := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	collider := mustIssue(t, p, Template{Email: "usurpateur@medecin.mssante.fr", Name: "Usurpateur"})
	forged := twinCert(t, p, good, collider) // another key, the signer's identifier
	renewed := twinCert(t, p, good, good)    // the signer's key, certified again

	// A leaf without the extension (x509 adds one to CAs only): an empty
	// identifier in the sid must not match it.
	tmpl := *good.Cert
	tmpl.Extensions, tmpl.ExtraExtensions, tmpl.SubjectKeyId = nil, nil, nil
	noSKI, err := createCertificate(&tmpl, good.Key, p.Intermediate)
	if err != nil {
		t.Fatal(err)
	}
	if len(noSKI.Cert.SubjectKeyId) != 0 {
		t.Fatal("the certificate without subject key identifier has one")
	}

	withInter := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert})
	detached := makeSig(t, good, testContent, sigOpts{})
	unknown := bytes.Repeat([]byte{0x5a}, 20)
	interKeyID := p.Intermediate.Cert.SubjectKeyId
	tests := []struct {
		name    string
		trust   *Trust
		der     []byte
		want    Reason
		wantSub string // a phrase the error (detail and cause) must contain
	}{
		{"identifier of no certificate", trust, withSID(t, detached, sidKeyID(unknown), 3),
			ReasonMalformed, "no certificate in the signature has the signer's subject key identifier " + strings.Repeat("5A", 20)},
		// The signer's certificate must come with the message: a
		// configured certificate is an authority, never a signer.
		{"identifier of a configured intermediate, not in the message", withInter,
			withSID(t, makeSig(t, good, testContent, sigOpts{noChain: true}), sidKeyID(interKeyID), 3), ReasonMalformed, "no certificate"},
		// The intermediate travels in the message and is found, but the
		// signature is not its key's.
		{"identifier of the intermediate in the message", trust, withSID(t, detached, sidKeyID(interKeyID), 3),
			ReasonBadSignature, "does not verify"},
		{"two certificates share the identifier (collision)", trust, withSID(t, makeSig(t, good, testContent,
			sigOpts{extraCerts: []*x509.Certificate{forged}}), sidKeyID(good.Cert.SubjectKeyId), 3), ReasonMalformed, "ambiguous"},
		{"two certificates share the identifier (same key renewed)", trust, withSID(t, makeSig(t, good, testContent,
			sigOpts{extraCerts: []*x509.Certificate{renewed}}), sidKeyID(good.Cert.SubjectKeyId), 3), ReasonMalformed, "ambiguous"},
		{"empty identifier, certificate without one", trust, withSID(t, makeSig(t, noSKI, testContent, sigOpts{}),
			sidKeyID([]byte{}), 3), ReasonMalformed, "subjectKeyIdentifier is empty"},
		{"long identifier is cut short in the detail", trust, withSID(t, detached, sidKeyID(bytes.Repeat([]byte{1}, 4096)), 3),
			ReasonMalformed, "(4096 bytes)"},
		{"constructed identifier", trust, withSID(t, detached, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0,
			IsCompound: true, Bytes: mustMarshal(t, good.Cert.SubjectKeyId)}, 3), ReasonMalformed, "constructed"},
		{"sid [1]", trust, withSID(t, detached, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, Bytes: good.Cert.SubjectKeyId}, 3),
			ReasonMalformed, "(class 2, tag 1) is neither"},
		{"sid OCTET STRING without the tag", trust, withSID(t, detached, asn1.RawValue{Class: asn1.ClassUniversal,
			Tag: asn1.TagOctetString, Bytes: good.Cert.SubjectKeyId}, 3), ReasonMalformed, "(class 0, tag 4) is neither"},
		{"issuer and serial of no certificate", trust, withSID(t, detached, issuerSerialSID(t, collider.Cert), 1),
			ReasonMalformed, "issuer and serial number"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.trust.Verify(Request{PKCS7: tc.der, Content: testContent, From: drEmail})
			if err == nil {
				t.Fatalf("Verify accepted (signer %v), want %v", res.Signer.Cert.Subject, tc.want)
			}
			if got := reasonOf(t, err); got != tc.want {
				t.Fatalf("reason = %v (%v), want %v", got, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.wantSub) {
				t.Errorf("error %q does not mention %q", err, tc.wantSub)
			}
			var e *Error
			errors.As(err, &e)
			if len(e.Detail) > 300 {
				t.Errorf("detail of %d bytes: the sender's identifier must be cut short", len(e.Detail))
			}
		})
	}
}

func TestParseSignerInfoSID(t *testing.T) {
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: drEmail, Name: drName})
	der := withSID(t, makeSig(t, kp, testContent, sigOpts{}), sidKeyID(kp.Cert.SubjectKeyId), 3)
	cms, err := parseCMS(der)
	if err != nil {
		t.Fatal(err)
	}
	si, err := parseSignerInfo(cms.signers[0])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(si.subjectKeyID, kp.Cert.SubjectKeyId) || si.serial != nil || si.issuerRaw != nil {
		t.Errorf("key identifier sid parsed as keyID %X, serial %v, issuer %X", si.subjectKeyID, si.serial, si.issuerRaw)
	}
	cms, err = parseCMS(makeSig(t, kp, testContent, sigOpts{}))
	if err != nil {
		t.Fatal(err)
	}
	if si, err = parseSignerInfo(cms.signers[0]); err != nil {
		t.Fatal(err)
	}
	if si.subjectKeyID != nil || si.serial.Cmp(kp.Cert.SerialNumber) != 0 || !bytes.Equal(si.issuerRaw, kp.Cert.RawIssuer) {
		t.Errorf("issuerAndSerialNumber sid parsed as keyID %X, serial %v", si.subjectKeyID, si.serial)
	}
}

// TestOpenSSLKeyIDVectorsNameTheKey: the committed -keyid vectors really
// name their signer by subject key identifier, with SignerInfo version 3,
// so that their `ok` verdict in MANIFEST covers that path and not issuer
// and serial number by accident.
func TestOpenSSLKeyIDVectorsNameTheKey(t *testing.T) {
	for _, k := range []string{"rsa", "ecdsa"} {
		t.Run(k, func(t *testing.T) {
			der, err := os.ReadFile(filepath.Join("testdata", "openssl", k+"-keyid.p7s"))
			if err != nil {
				t.Fatal(err)
			}
			pemBytes, err := os.ReadFile(filepath.Join("testdata", "openssl", k+"-signer.pem"))
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(pemBytes)
			if block == nil {
				t.Fatal("no PEM block in the signer certificate file")
			}
			signer, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			cms, err := parseCMS(der)
			if err != nil {
				t.Fatal(err)
			}
			if len(cms.signers) != 1 {
				t.Fatalf("%d signers", len(cms.signers))
			}
			si, err := parseSignerInfo(cms.signers[0])
			if err != nil {
				t.Fatal(err)
			}
			if len(signer.SubjectKeyId) == 0 || !bytes.Equal(si.subjectKeyID, signer.SubjectKeyId) {
				t.Errorf("sid key identifier %X, signer certificate's %X", si.subjectKeyID, signer.SubjectKeyId)
			}
			var raw rawSignerInfo
			if _, err := asn1.Unmarshal(cms.signers[0].FullBytes, &raw); err != nil {
				t.Fatal(err)
			}
			if raw.Version != 3 {
				t.Errorf("SignerInfo version %d, want 3 (RFC 5652 5.3)", raw.Version)
			}
		})
	}
}

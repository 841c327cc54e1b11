package signing

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

// testContent is a MIME entity as a prescriber's software signs it: CRLF
// line ends, exactly these bytes.
var testContent = []byte("Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n\r\n" +
	"Ordonnance n° 2024-000123\r\nAmoxicilline 1 g, 2 fois par jour pendant 6 jours.\r\n")

func mustPKI(t testing.TB) *DevPKI {
	t.Helper()
	p, err := NewDevPKI()
	if err != nil {
		t.Fatalf("NewDevPKI: %v", err)
	}
	return p
}

func mustIssue(t testing.TB, p *DevPKI, tmpl Template) *KeyPair {
	t.Helper()
	kp, err := p.Issue(tmpl)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", tmpl, err)
	}
	return kp
}

func mustTrust(t testing.TB, anchors, intermediates []*x509.Certificate, crls []*x509.RevocationList) *Trust {
	t.Helper()
	tr, err := NewTrust(anchors, intermediates, crls)
	if err != nil {
		t.Fatalf("NewTrust: %v", err)
	}
	return tr
}

// mustTrustNoCRL builds a trust store for tests that are not about
// revocation: the root and intermediate of p are CRL-optional.
func mustTrustNoCRL(t testing.TB, p *DevPKI, anchors, intermediates []*x509.Certificate) *Trust {
	t.Helper()
	tr, err := NewTrustWith(TrustMaterial{Anchors: anchors, Intermediates: intermediates,
		CRLOptionalIssuers: []*x509.Certificate{p.Root.Cert, p.Intermediate.Cert}})
	if err != nil {
		t.Fatalf("NewTrustWith: %v", err)
	}
	return tr
}

// sigOpts shapes a signature built with the PKCS#7 library for a test.
type sigOpts struct {
	digest      asn1.ObjectIdentifier // nil: SHA-256
	opaque      bool
	signingTime time.Time           // zero: what the library writes (now)
	second      *KeyPair            // a second signer
	noChain     bool                // leave the intermediates out of the message
	tamperSig   bool                // flip a bit of the signature value
	extraCerts  []*x509.Certificate // more certificates in the message
}

// makeSig signs content like a prescriber's software would, with the knobs
// of sigOpts to build each refusal.
func makeSig(t testing.TB, kp *KeyPair, content []byte, o sigOpts) []byte {
	t.Helper()
	digest := o.digest
	if digest == nil {
		digest = pkcs7.OIDDigestAlgorithmSHA256
	}
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(digest)
	add := func(kp *KeyPair) {
		if o.noChain || len(kp.Chain) == 0 {
			err = sd.AddSigner(kp.Cert, kp.Key, pkcs7.SignerInfoConfig{})
		} else {
			err = sd.AddSignerChain(kp.Cert, kp.Key, kp.Chain, pkcs7.SignerInfoConfig{})
		}
		if err != nil {
			t.Fatalf("AddSigner: %v", err)
		}
	}
	add(kp)
	if o.second != nil {
		add(o.second)
	}
	for _, c := range o.extraCerts {
		sd.AddCertificate(c)
	}
	if !o.signingTime.IsZero() {
		resignWithTime(t, sd, kp, o.signingTime, digest)
	}
	if o.tamperSig {
		si := &sd.GetSignedData().SignerInfos[0]
		si.EncryptedDigest[len(si.EncryptedDigest)/2] ^= 0x01
	}
	if !o.opaque {
		sd.Detach()
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// sidKeyID is the [0] IMPLICIT SubjectKeyIdentifier form of a signer
// identifier (RFC 5652 5.3), as `openssl cms -sign -keyid` writes it.
func sidKeyID(keyID []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: keyID}
}

// withSID returns der (a SignedData from makeSig) with the sid of its first
// SignerInfo replaced by sid and the SignerInfo's version set to version;
// the SignedData version becomes 3 with a version 3 SignerInfo, as
// RFC 5652 5.1 asks. The signature stays valid: it covers the signed
// attributes, not the SignerInfo around them (RFC 5652 5.4). The PKCS#7
// library writes issuerAndSerialNumber only, so this is how the tests get
// the other form.
func withSID(t testing.TB, der []byte, sid asn1.RawValue, version int) []byte {
	t.Helper()
	sidDER, err := asn1.Marshal(sid)
	if err != nil {
		t.Fatal(err)
	}
	return rewriteSignedData(t, der, func(sd, si []asn1.RawValue) {
		si[0] = derInt(t, version)
		si[1] = asn1.RawValue{FullBytes: sidDER}
		if version == 3 {
			sd[0] = derInt(t, 3)
		}
	})
}

// rewriteSignedData decodes der (a ContentInfo holding a SignedData, as
// makeSig returns) down to the elements of the SignedData and of its first
// SignerInfo, lets edit replace elements of either, and encodes the result
// again:
//
//	SignedData { version, digestAlgorithms, encapContentInfo,
//	             [0] certificates, …, signerInfos }          (RFC 5652 5.1)
//	SignerInfo { version, sid, digestAlgorithm, [0] signedAttrs,
//	             signatureAlgorithm, signature, … }          (RFC 5652 5.3)
//
// The last SignedData element (signerInfos) is rebuilt from si after edit.
func rewriteSignedData(t testing.TB, der []byte, edit func(sd, si []asn1.RawValue)) []byte {
	t.Helper()
	// ContentInfo { contentType, [0] { SignedData { version, …, signerInfos } } }
	ci := derElements(t, der)
	wrapper := derElements(t, ci[1].FullBytes)
	sd := derElements(t, wrapper[0].FullBytes)
	sis := derElements(t, sd[len(sd)-1].FullBytes)
	si := derElements(t, sis[0].FullBytes)
	edit(sd, si)
	sis[0] = derConstructed(t, asn1.ClassUniversal, asn1.TagSequence, si)
	sd[len(sd)-1] = derConstructed(t, asn1.ClassUniversal, asn1.TagSet, sis)
	wrapper[0] = derConstructed(t, asn1.ClassUniversal, asn1.TagSequence, sd)
	ci[1] = derConstructed(t, asn1.ClassContextSpecific, 0, wrapper)
	return derConstructed(t, asn1.ClassUniversal, asn1.TagSequence, ci).FullBytes
}

// resignSignedAttrs returns der (from makeSig, signed by kp) with the signed
// attributes of its first SignerInfo replaced by what edit makes of them,
// signed again by kp: the signature stays valid, so Verify gets past the
// signature to the attribute check under test (RFC 5652 5.4: the signature
// covers the DER of the attributes under an explicit SET OF tag).
func resignSignedAttrs(t testing.TB, der []byte, kp *KeyPair, edit func([]rawAttribute) []rawAttribute) []byte {
	t.Helper()
	return rewriteSignedData(t, der, func(_, si []asn1.RawValue) {
		var digestAlg pkix.AlgorithmIdentifier
		if _, err := asn1.Unmarshal(si[2].FullBytes, &digestAlg); err != nil {
			t.Fatal(err)
		}
		var attrs []rawAttribute
		for _, e := range derElements(t, si[3].FullBytes) {
			var a rawAttribute
			if _, err := asn1.Unmarshal(e.FullBytes, &a); err != nil {
				t.Fatal(err)
			}
			attrs = append(attrs, a)
		}
		attrs = edit(attrs)
		// DER SET OF: elements sorted by their encodings (X.690 11.6).
		encs := make([][]byte, len(attrs))
		for i, a := range attrs {
			var err error
			if encs[i], err = asn1.Marshal(a); err != nil {
				t.Fatal(err)
			}
		}
		sort.Slice(encs, func(a, b int) bool { return bytes.Compare(encs[a], encs[b]) < 0 })
		body := bytes.Join(encs, nil)
		set, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: body})
		if err != nil {
			t.Fatal(err)
		}
		hash := hashOfDigestOID(t, digestAlg.Algorithm)
		h := hash.New()
		h.Write(set)
		sig, err := kp.Key.Sign(rand.Reader, h.Sum(nil), hash)
		if err != nil {
			t.Fatal(err)
		}
		implicit, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: body})
		if err != nil {
			t.Fatal(err)
		}
		sigDER, err := asn1.Marshal(sig)
		if err != nil {
			t.Fatal(err)
		}
		si[3] = asn1.RawValue{FullBytes: implicit}
		si[5] = asn1.RawValue{FullBytes: sigDER}
	})
}

// attrValues is the SET OF AttributeValue holding vals.
func attrValues(t testing.TB, vals ...any) asn1.RawValue {
	t.Helper()
	var body []byte
	for _, v := range vals {
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body = append(body, b...)
	}
	return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: body}
}

func hashOfDigestOID(t testing.TB, oid asn1.ObjectIdentifier) crypto.Hash {
	t.Helper()
	switch {
	case oid.Equal(oidSHA256):
		return crypto.SHA256
	case oid.Equal(oidSHA384):
		return crypto.SHA384
	case oid.Equal(oidSHA512):
		return crypto.SHA512
	}
	t.Fatalf("digest algorithm %v: no hash for it in the tests", oid)
	return 0
}

// reissueForKey issues a certificate shaped by tmpl (through p.Issue) but
// for the public key pub, which Issue cannot generate (curves and key
// types the verifier refuses, an RSA modulus too large to generate in a
// test). Key is left nil: the caller picks the key the message is signed
// with. The verifier refuses such keys before any signature check, so pub
// need not have a private key at all.
func reissueForKey(t testing.TB, p *DevPKI, tmpl Template, pub crypto.PublicKey) *KeyPair {
	t.Helper()
	kp := mustIssue(t, p, tmpl)
	issuer := tmpl.Issuer
	if issuer == nil {
		issuer = p.Intermediate
	}
	c := *kp.Cert
	c.Extensions, c.ExtraExtensions, c.SubjectKeyId = nil, nil, nil
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	c.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, &c, issuer.Cert, pub, issuer.Key)
	if err != nil {
		t.Fatalf("CreateCertificate for a %T: %v", pub, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &KeyPair{Cert: cert, Chain: kp.Chain}
}

// derElements returns the elements inside the constructed DER value b.
func derElements(t testing.TB, b []byte) []asn1.RawValue {
	t.Helper()
	var outer asn1.RawValue
	if rest, err := asn1.Unmarshal(b, &outer); err != nil || len(rest) > 0 || !outer.IsCompound {
		t.Fatalf("not one constructed DER value (%v, %d trailing bytes)", err, len(rest))
	}
	var out []asn1.RawValue
	for body := outer.Bytes; len(body) > 0; {
		var e asn1.RawValue
		rest, err := asn1.Unmarshal(body, &e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
		body = rest
	}
	return out
}

func derConstructed(t testing.TB, class, tag int, elems []asn1.RawValue) asn1.RawValue {
	t.Helper()
	var body []byte
	for _, e := range elems {
		body = append(body, e.FullBytes...)
	}
	b, err := asn1.Marshal(asn1.RawValue{Class: class, Tag: tag, IsCompound: true, Bytes: body})
	if err != nil {
		t.Fatal(err)
	}
	return asn1.RawValue{FullBytes: b}
}

func derInt(t testing.TB, n int) asn1.RawValue {
	t.Helper()
	b, err := asn1.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return asn1.RawValue{FullBytes: b}
}

// resignWithTime replaces the signing-time attribute of the first signer
// (the library always writes "now") and signs the attributes again.
func resignWithTime(t testing.TB, sd *pkcs7.SignedData, kp *KeyPair, at time.Time, digest asn1.ObjectIdentifier) {
	t.Helper()
	si := &sd.GetSignedData().SignerInfos[0]
	tb, err := asn1.Marshal(at.UTC())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i := range si.AuthenticatedAttributes {
		a := &si.AuthenticatedAttributes[i]
		if a.Type.Equal(oidSigningTime) {
			a.Value = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: tb}
			found = true
		}
	}
	if !found {
		t.Fatal("no signing-time attribute to replace")
	}
	// DER SET OF: elements sorted by their encodings (X.690 11.6).
	encs := make([][]byte, len(si.AuthenticatedAttributes))
	for i, a := range si.AuthenticatedAttributes {
		if encs[i], err = asn1.Marshal(a); err != nil {
			t.Fatal(err)
		}
	}
	idx := make([]int, len(encs))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return bytes.Compare(encs[idx[a]], encs[idx[b]]) < 0 })
	sorted := append(si.AuthenticatedAttributes[:0:0], si.AuthenticatedAttributes...)
	var body []byte
	for i, j := range idx {
		sorted[i] = si.AuthenticatedAttributes[j]
		body = append(body, encs[j]...)
	}
	si.AuthenticatedAttributes = sorted
	set, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: body})
	if err != nil {
		t.Fatal(err)
	}
	hash := crypto.SHA256
	switch {
	case digest.Equal(pkcs7.OIDDigestAlgorithmSHA384):
		hash = crypto.SHA384
	case digest.Equal(pkcs7.OIDDigestAlgorithmSHA512):
		hash = crypto.SHA512
	}
	h := hash.New()
	h.Write(set)
	sig, err := kp.Key.Sign(rand.Reader, h.Sum(nil), hash)
	if err != nil {
		t.Fatal(err)
	}
	si.EncryptedDigest = sig
}

// reasonOf returns the Reason of a verification error, failing the test
// when err is not a *Error.
func reasonOf(t testing.TB, err error) Reason {
	t.Helper()
	if err == nil {
		return 0
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *signing.Error", err, err)
	}
	if e.Detail == "" {
		t.Errorf("error %v has no detail for the sender", err)
	}
	return e.Reason
}

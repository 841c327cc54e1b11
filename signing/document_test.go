package signing

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

// docContent stands for the operators' whitelist: a document, not a MIME
// entity (LF line ends, no header).
var docContent = []byte("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" +
	"<ListeDomaines>\n  <Domaine><Nom>mssante.fr</Nom></Domaine>\n</ListeDomaines>\n")

const (
	docPublisherEmail = "liste-blanche@agence.example"
	docPublisherName  = "AGENCE DEV LISTE BLANCHE"
)

// docFixture is a development PKI with fresh CRLs for both CAs and a
// publisher certificate, as a whitelist publisher would have.
type docFixture struct {
	pki       *DevPKI
	publisher *KeyPair
	rootCRL   *x509.RevocationList
	interCRL  *x509.RevocationList
	trust     *Trust // anchors: root; intermediates: the intermediate; both CRLs
}

func newDocFixture(t testing.TB) *docFixture {
	t.Helper()
	p := mustPKI(t)
	pub, err := p.IssueOrganisation(docPublisherEmail, docPublisherName)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f := &docFixture{pki: p, publisher: pub}
	f.rootCRL = docCRL(t, p, p.Root, nil, now)
	f.interCRL = docCRL(t, p, p.Intermediate, nil, now)
	f.trust = mustTrust(t, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert},
		[]*x509.RevocationList{f.rootCRL, f.interCRL})
	return f
}

func docCRL(t testing.TB, p *DevPKI, issuer *KeyPair, revoked []*x509.Certificate, now time.Time) *x509.RevocationList {
	t.Helper()
	l, err := p.IssueCRL(issuer, revoked, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func docSign(t testing.TB, kp *KeyPair, content []byte) []byte {
	t.Helper()
	sig, err := SignDetached(kp, content)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func docPEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestVerifyDocumentAccepts(t *testing.T) {
	f := newDocFixture(t)
	p := f.pki
	der := docSign(t, f.publisher, docContent)
	rsaKP := mustIssue(t, p, Template{Name: docPublisherName, Email: docPublisherEmail, KeyType: KeyRSA2048})
	// A document-signing certificate need not be an e-mail certificate.
	noEKU := mustIssue(t, p, Template{Name: docPublisherName, NoExtKeyUsage: true})
	codeSigning := mustIssue(t, p, Template{Name: docPublisherName, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}})
	nonRepOnly := mustIssue(t, p, Template{Name: docPublisherName, KeyUsage: x509.KeyUsageContentCommitment})

	tests := []struct {
		name string
		kp   *KeyPair
		sig  []byte
	}{
		{"DER", f.publisher, der},
		{"PEM CMS", f.publisher, docPEM("CMS", der)},
		{"PEM PKCS7 with surrounding blank lines", f.publisher, append(append([]byte("\n\n"), docPEM("PKCS7", der)...), "\n\n"...)},
		{"RSA 2048", rsaKP, docSign(t, rsaKP, docContent)},
		{"no extended key usage", noEKU, docSign(t, noEKU, docContent)},
		{"code signing extended key usage", codeSigning, docSign(t, codeSigning, docContent)},
		{"key usage nonRepudiation only", nonRepOnly, docSign(t, nonRepOnly, docContent)},
		{"no intermediate in the signature", f.publisher, makeSig(t, f.publisher, docContent, sigOpts{noChain: true})},
		{"SHA-384", f.publisher, makeSig(t, f.publisher, docContent, sigOpts{digest: pkcs7.OIDDigestAlgorithmSHA384})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := f.trust.VerifyDocument(tc.sig, docContent, time.Now())
			if err != nil {
				t.Fatalf("VerifyDocument: %v", err)
			}
			if !cert.Equal(tc.kp.Cert) {
				t.Errorf("returned certificate %q is not the signer's", cert.Subject)
			}
		})
	}
	// The empty document signs and verifies like any other.
	if _, err := f.trust.VerifyDocument(docSign(t, f.publisher, nil), nil, time.Time{}); err != nil {
		t.Errorf("empty document: %v", err)
	}
}

func TestVerifyDocumentRefusals(t *testing.T) {
	f := newDocFixture(t)
	p := f.pki
	now := time.Now()
	good := docSign(t, f.publisher, docContent)

	other := mustPKI(t)
	stranger, err := other.IssueOrganisation(docPublisherEmail, docPublisherName)
	if err != nil {
		t.Fatal(err)
	}
	expired := mustIssue(t, p, Template{Name: docPublisherName, NotBefore: now.AddDate(-3, 0, 0), NotAfter: now.AddDate(0, 0, -1)})
	notYet := mustIssue(t, p, Template{Name: docPublisherName, NotBefore: now.Add(48 * time.Hour)})
	revoked := mustIssue(t, p, Template{Name: docPublisherName})
	keyEnc := mustIssue(t, p, Template{Name: docPublisherName, KeyUsage: x509.KeyUsageKeyEncipherment})
	weak := mustIssue(t, p, Template{Name: docPublisherName, KeyType: KeyRSA1024})
	revokedTrust := mustTrust(t, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert},
		[]*x509.RevocationList{f.rootCRL, docCRL(t, p, p.Intermediate, []*x509.Certificate{revoked.Cert}, now)})
	noInterCRL := mustTrust(t, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert},
		[]*x509.RevocationList{f.rootCRL})
	opaque, err := SignOpaque(f.publisher, docContent)
	if err != nil {
		t.Fatal(err)
	}
	altered := append([]byte(nil), docContent...)
	altered[bytes.Index(altered, []byte("mssante"))] = 'M'

	tests := []struct {
		name    string
		trust   *Trust
		sig     []byte
		content []byte
		now     time.Time
		want    Reason
	}{
		{"altered content", nil, good, altered, now, ReasonBadSignature},
		{"content with a byte appended", nil, good, append(append([]byte(nil), docContent...), '\n'), now, ReasonBadSignature},
		{"signature value tampered", nil, makeSig(t, f.publisher, docContent, sigOpts{tamperSig: true}), docContent, now, ReasonBadSignature},
		{"signer from another PKI", nil, docSign(t, stranger, docContent), docContent, now, ReasonUntrusted},
		{"expired signer", nil, docSign(t, expired, docContent), docContent, now, ReasonExpired},
		{"signer not yet valid", nil, docSign(t, notYet, docContent), docContent, now, ReasonExpired},
		{"valid signer checked after its expiry", nil, good, docContent, f.publisher.Cert.NotAfter.Add(time.Hour), ReasonExpired},
		{"revoked signer", revokedTrust, docSign(t, revoked, docContent), docContent, now, ReasonRevoked},
		{"no CRL of the intermediate", noInterCRL, good, docContent, now, ReasonRevocationUnknown},
		{"stale CRL", nil, good, docContent, f.interCRL.NextUpdate.Add(time.Minute), ReasonRevocationUnknown},
		{"key usage keyEncipherment only", nil, docSign(t, keyEnc, docContent), docContent, now, ReasonKeyUsage},
		{"RSA 1024", nil, docSign(t, weak, docContent), docContent, now, ReasonAlgorithm},
		{"SHA-1 digest", nil, makeSig(t, f.publisher, docContent, sigOpts{digest: pkcs7.OIDDigestAlgorithmSHA1}), docContent, now, ReasonAlgorithm},
		{"two signers", nil, makeSig(t, f.publisher, docContent, sigOpts{second: f.publisher}), docContent, now, ReasonSignerCount},
		{"signing time in the future", nil, makeSig(t, f.publisher, docContent, sigOpts{signingTime: now.Add(time.Hour)}), docContent, now, ReasonFutureSigningTime},
		{"opaque signature", nil, opaque, docContent, now, ReasonMalformed},
		{"garbage", nil, []byte("this is not a signature"), docContent, now, ReasonMalformed},
		{"empty", nil, nil, docContent, now, ReasonMalformed},
		{"blank", nil, []byte(" \n\t\n"), docContent, now, ReasonMalformed},
		{"truncated", nil, good[:len(good)/2], docContent, now, ReasonMalformed},
		{"trailing bytes", nil, append(append([]byte(nil), good...), 0), docContent, now, ReasonMalformed},
		{"PEM of a certificate", nil, docPEM("CERTIFICATE", f.publisher.Cert.Raw), docContent, now, ReasonMalformed},
		{"two PEM blocks", nil, append(docPEM("CMS", good), docPEM("CMS", good)...), docContent, now, ReasonMalformed},
		{"broken PEM", nil, []byte("-----BEGIN CMS-----\n!!!\n-----END CMS-----\n"), docContent, now, ReasonMalformed},
		{"empty PEM block", nil, docPEM("PKCS7", nil), docContent, now, ReasonMalformed},
		{"oversized", nil, make([]byte, maxDocumentSignatureInput+1), docContent, now, ReasonMalformed},
		{"oversized PEM", nil, docPEM("CMS", make([]byte, MaxDetachedSignatureSize+1)), docContent, now, ReasonMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			trust := tc.trust
			if trust == nil {
				trust = f.trust
			}
			cert, err := trust.VerifyDocument(tc.sig, tc.content, tc.now)
			if err == nil {
				t.Fatalf("accepted (signer %q), want %v", cert.Subject, tc.want)
			}
			if cert != nil {
				t.Errorf("a refusal returned a certificate")
			}
			if got := reasonOf(t, err); got != tc.want {
				t.Errorf("reason %v, want %v (%v)", got, tc.want, err)
			}
		})
	}
}

// TestVerifyDocumentDoesNotCacheForMessages: a certificate without the
// e-mail extended key usage passes VerifyDocument; that must not make a
// later message signed with it pass Verify through the verdict cache.
func TestVerifyDocumentDoesNotCacheForMessages(t *testing.T) {
	f := newDocFixture(t)
	kp := mustIssue(t, f.pki, Template{Name: docPublisherName, Email: docPublisherEmail, NoExtKeyUsage: true})
	if _, err := f.trust.VerifyDocument(docSign(t, kp, testContent), testContent, time.Now()); err != nil {
		t.Fatalf("VerifyDocument: %v", err)
	}
	if n := f.trust.state.Load().cache.len(); n != 0 {
		t.Errorf("VerifyDocument left %d verdicts in the message cache", n)
	}
	_, err := f.trust.Verify(Request{PKCS7: docSign(t, kp, testContent), Content: testContent})
	if got := reasonOf(t, err); got != ReasonKeyUsage {
		t.Errorf("Verify after VerifyDocument: reason %v, want %v (%v)", got, ReasonKeyUsage, err)
	}
}

// TestVerifyDocumentAfterReload: VerifyDocument uses the trust material in
// force, so a CRL loaded by Reload applies to documents at once.
func TestVerifyDocumentAfterReload(t *testing.T) {
	f := newDocFixture(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	inter := filepath.Join(dir, "inter.pem")
	crls := filepath.Join(dir, "crls.pem")
	writePEMCerts(t, root, f.pki.Root.Cert)
	writePEMCerts(t, inter, f.pki.Intermediate.Cert)
	writeCRLs := func(lists ...*x509.RevocationList) {
		t.Helper()
		var buf bytes.Buffer
		for _, l := range lists {
			buf.Write(docPEM("X509 CRL", l.Raw))
		}
		if err := os.WriteFile(crls, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCRLs(f.rootCRL, f.interCRL)
	trust, err := LoadTrustWith(LoadTrustOptions{Anchors: []string{root}, Intermediates: []string{inter}, CRLs: []string{crls}})
	if err != nil {
		t.Fatal(err)
	}
	sig := docSign(t, f.publisher, docContent)
	if _, err := trust.VerifyDocument(sig, docContent, time.Now()); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	// A newer CRL (later thisUpdate) revokes the publisher.
	later := time.Now().Add(time.Minute)
	revoking, err := f.pki.IssueCRL(nil, []*x509.Certificate{f.publisher.Cert}, later.Add(-30*time.Second), later.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	writeCRLs(f.rootCRL, revoking)
	if err := trust.Reload(); err != nil {
		t.Fatal(err)
	}
	_, err = trust.VerifyDocument(sig, docContent, later)
	if got := reasonOf(t, err); got != ReasonRevoked {
		t.Errorf("after revocation: reason %v, want %v (%v)", got, ReasonRevoked, err)
	}
}

// requireOpenSSLForDocuments finds openssl; without it the test is
// skipped, except in CI, which installs it (the same rule as the relay's
// OpenSSL tests).
func requireOpenSSLForDocuments(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl not installed (CI installs it)")
		}
		t.Skip("openssl not installed")
	}
	return bin
}

// TestOpenSSLSignsDocumentWeVerify: a detached signature made by `openssl
// cms -sign` over a file (as a publisher's tooling would make it), in DER
// and PEM, verifies; the same signature over another file does not.
func TestOpenSSLSignsDocumentWeVerify(t *testing.T) {
	bin := requireOpenSSLForDocuments(t)
	f := newDocFixture(t)
	dir := t.TempDir()
	leafPEM := filepath.Join(dir, "publisher.pem")
	keyPEM := filepath.Join(dir, "publisher.key")
	interPEM := filepath.Join(dir, "inter.pem")
	docFile := filepath.Join(dir, "ListeDomaines.xml")
	if err := f.publisher.WriteFiles(filepath.Join(dir, "publisher-chain.pem"), keyPEM); err != nil {
		t.Fatal(err)
	}
	writePEMCerts(t, leafPEM, f.publisher.Cert)
	writePEMCerts(t, interPEM, f.pki.Intermediate.Cert)
	if err := os.WriteFile(docFile, docContent, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{"DER", "PEM"} {
		t.Run(form, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "ListeDomaines.xml.p7s")
			// Without -nodetach, cms -sign writes a detached signature;
			// -binary keeps the file's LF line ends as they are.
			runOpenSSL(t, bin, "cms", "-sign", "-binary", "-md", "sha256", "-in", docFile,
				"-signer", leafPEM, "-inkey", keyPEM, "-certfile", interPEM,
				"-outform", form, "-out", out)
			sig, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := f.trust.VerifyDocument(sig, docContent, time.Now())
			if err != nil {
				t.Fatalf("VerifyDocument: %v", err)
			}
			if !cert.Equal(f.publisher.Cert) {
				t.Errorf("returned certificate %q is not the signer's", cert.Subject)
			}
			crlf := bytes.ReplaceAll(docContent, []byte("\n"), []byte("\r\n"))
			_, err = f.trust.VerifyDocument(sig, crlf, time.Now())
			if got := reasonOf(t, err); got != ReasonBadSignature {
				t.Errorf("content with CRLF line ends: reason %v, want %v (%v)", got, ReasonBadSignature, err)
			}
		})
	}
}

// FuzzVerifyDocument: arbitrary signature bytes never panic and every
// refusal is a *Error.
func FuzzVerifyDocument(f *testing.F) {
	fx := newDocFixture(f)
	good := docSign(f, fx.publisher, docContent)
	f.Add(good, docContent)
	f.Add(docPEM("CMS", good), docContent)
	f.Add([]byte("-----BEGIN PKCS7-----\n-----END PKCS7-----\n"), docContent)
	f.Add([]byte{0x30, 0x80}, []byte("x"))
	f.Fuzz(func(t *testing.T, sig, content []byte) {
		cert, err := fx.trust.VerifyDocument(sig, content, time.Time{})
		if err != nil {
			if cert != nil {
				t.Fatal("a refusal returned a certificate")
			}
			reasonOf(t, err)
			return
		}
		if cert == nil {
			t.Fatal("accepted without a certificate")
		}
	})
}

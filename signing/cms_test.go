package signing

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"mssrelay/mime"
)

// TestParseCMSAgreesWithLibrary reads every OpenSSL-made signature with
// parseCMS and with the PKCS#7 library the verifier used before it read
// content and certificates itself: both must find the same content and the
// same certificates, byte for byte (DER and streamed BER, opaque and
// detached, with and without the chain).
func TestParseCMSAgreesWithLibrary(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "openssl", "*.p7[ms]"))
	if err != nil || len(files) < 8 {
		t.Fatalf("vectors: %v, %d files", err, len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := pem.Decode(raw); b != nil {
				raw = b.Bytes
			}
			der, err := normalizeBER(raw)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := parseCMS(der)
			if err != nil {
				t.Fatal(err)
			}
			lib, err := pkcs7.Parse(der)
			if err != nil && !strings.Contains(f, "keyid") {
				t.Fatal(err) // the library cannot read a subjectKeyIdentifier signer
			}
			if lib == nil {
				return
			}
			if !bytes.Equal(ours.content, lib.Content) {
				t.Errorf("content: %d bytes, library %d", len(ours.content), len(lib.Content))
			}
			opaque := strings.Contains(f, "opaque")
			if opaque != (len(ours.content) > 0) {
				t.Errorf("opaque %v but %d bytes of content", opaque, len(ours.content))
			}
			if len(ours.certs) != len(lib.Certificates) {
				t.Fatalf("%d certificates, library %d", len(ours.certs), len(lib.Certificates))
			}
			for i, c := range lib.Certificates {
				if !bytes.Equal(ours.certs[i], c.Raw) {
					t.Errorf("certificate %d differs", i)
				}
			}
		})
	}
}

// TestParseCMSRefusesOtherCertificateChoices: CertificateChoices other than
// a plain Certificate (RFC 5652 10.2.2: context-tagged) are refused rather
// than skipped, as the library refused them.
func TestParseCMSRefusesOtherCertificateChoices(t *testing.T) {
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: "dr@example.org", RPPS: "10101201234", Name: "MARTIN"})
	sig, err := SignDetached(kp, []byte("content\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The leaf certificate's SEQUENCE tag (0x30) becomes [1] constructed
	// (0xa1): an "extendedCertificate" choice of the same length.
	leaf := kp.Cert.Raw
	i := bytes.Index(sig, leaf)
	if i < 0 {
		t.Fatal("certificate not found in the signature")
	}
	bad := bytes.Clone(sig)
	bad[i] = 0xa1
	if _, err := parseCMS(bad); err == nil || !strings.Contains(err.Error(), "certificate choice") {
		t.Fatalf("parseCMS: %v, want a certificate-choice error", err)
	}
}

// TestCertCache: the second parse of the same DER returns the same
// certificate without parsing; a DER that does not parse is an error and
// is not cached; the cache never holds more than its bound.
func TestCertCache(t *testing.T) {
	p := mustPKI(t)
	var kps []*KeyPair
	for _, name := range []string{"A", "B", "C"} {
		kps = append(kps, mustIssue(t, p, Template{Email: strings.ToLower(name) + "@example.org", Name: name}))
	}
	c := certCache{max: 2}
	a, err := c.parse([][]byte{kps[0].Cert.Raw})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.parse([][]byte{kps[0].Cert.Raw})
	if err != nil {
		t.Fatal(err)
	}
	if a[0] != b[0] || !a[0].Equal(kps[0].Cert) {
		t.Fatal("the cached certificate is not reused or not the one parsed")
	}
	if _, err := c.parse([][]byte{kps[1].Cert.Raw, []byte("not a certificate")}); err == nil {
		t.Fatal("garbage parsed")
	}
	if len(c.m) != 2 {
		t.Fatalf("%d entries, want 2 (failures are not cached)", len(c.m))
	}
	got, err := c.parse([][]byte{kps[2].Cert.Raw, kps[0].Cert.Raw})
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Equal(kps[2].Cert) || !got[1].Equal(kps[0].Cert) {
		t.Fatal("certificates out of order")
	}
	if len(c.m) > 2 {
		t.Fatalf("%d entries, bound 2", len(c.m))
	}
}

// TestSignedContent reads the content of opaque signatures, DER and
// streamed BER, and refuses a detached one (no content) and garbage.
func TestSignedContent(t *testing.T) {
	for _, name := range []string{"rsa-opaque-chain.p7m", "ecdsa-opaque-ber-nochain.p7m", "rsa-detached-chain.p7s"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "openssl", name))
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := pem.Decode(raw); b != nil {
			raw = b.Bytes
		}
		got, err := SignedContent(raw)
		if strings.Contains(name, "detached") {
			if err == nil {
				t.Errorf("%s: content %q from a detached signature", name, got)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		content, err := os.ReadFile(filepath.Join("testdata", "openssl", "content.eml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content) {
			t.Errorf("%s: content differs from content.eml (%d vs %d bytes)", name, len(got), len(content))
		}
	}
	if _, err := SignedContent([]byte("garbage")); err == nil {
		t.Error("garbage accepted")
	}
}

// TestFiledContent reads the signed entity of both S/MIME forms and
// reports a message whose content cannot be read, never returning
// something else.
func TestFiledContent(t *testing.T) {
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: "dr@example.org", RPPS: "10101201234", Name: "MARTIN"})
	header := []byte("From: dr@example.org\r\n")
	sig, err := SignDetached(kp, testContent)
	if err != nil {
		t.Fatal(err)
	}
	got, err := FiledContent(mime.BuildDetached(header, testContent, sig))
	if err != nil || !bytes.Equal(got, testContent) {
		t.Fatalf("detached: %v, %q", err, got)
	}
	raw, err := os.ReadFile(filepath.Join("testdata", "openssl", "rsa-smime-opaque-chain.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := FiledContent(raw); err != nil || len(got) == 0 {
		t.Fatalf("opaque: %v, %d bytes", err, len(got))
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		want string
	}{
		{"not signed", []byte("From: a@b.test\r\nContent-Type: text/plain\r\n\r\nhello\r\n"), "signed"},
		{"opaque, not a SignedData", mime.BuildOpaque(header, []byte("not DER")), "signed content"},
	} {
		if _, err := FiledContent(tc.raw); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

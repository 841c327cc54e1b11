package signing

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerify feeds arbitrary PKCS#7 bytes and content to Verify: it must
// never panic, and every refusal must be a *Error.
func FuzzVerify(f *testing.F) {
	p := mustPKI(f)
	kp := mustIssue(f, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	trust := mustTrustNoCRL(f, p, []*x509.Certificate{p.Root.Cert}, nil)
	detached, err := SignDetached(kp, testContent)
	if err != nil {
		f.Fatal(err)
	}
	opaque, err := SignOpaque(kp, testContent)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(detached, testContent, true)
	f.Add(opaque, []byte(nil), false)
	f.Add(makeSig(f, kp, testContent, sigOpts{second: kp}), testContent, true)
	// Signers named by subject key identifier (RFC 5652 5.3): two that
	// verify (detached, opaque), one whose identifier two certificates
	// share, and OpenSSL's -keyid vector (from another PKI: it reaches the
	// chain check).
	f.Add(withSID(f, detached, sidKeyID(kp.Cert.SubjectKeyId), 3), testContent, true)
	f.Add(withSID(f, opaque, sidKeyID(kp.Cert.SubjectKeyId), 3), []byte(nil), false)
	f.Add(withSID(f, makeSig(f, kp, testContent, sigOpts{extraCerts: []*x509.Certificate{twinCert(f, p, kp, kp)}}),
		sidKeyID(kp.Cert.SubjectKeyId), 3), testContent, true)
	keyidVector, err := os.ReadFile(filepath.Join("testdata", "openssl", "rsa-keyid.p7s"))
	if err != nil {
		f.Fatal(err)
	}
	vectorContent, err := os.ReadFile(filepath.Join("testdata", "openssl", "content.eml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(keyidVector, vectorContent, true)
	f.Add(unhexF(f, "3080 0609 2a864886f70d010702 a080 3080 020101 3100 3080 0609 2a864886f70d010701 0000 3100 0000 0000 0000"), []byte(nil), false)
	f.Add([]byte{0x30, 0x80}, []byte("x"), true)
	f.Fuzz(func(t *testing.T, sig, content []byte, isDetached bool) {
		req := Request{PKCS7: sig, From: drEmail, RPPS: drRPPS}
		if isDetached {
			if content == nil {
				content = []byte{}
			}
			req.Content = content
		}
		res, err := trust.Verify(req)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason < ReasonMalformed || e.Reason > ReasonIDNPSMismatch {
				t.Fatalf("error %v (%T) is not a *Error with a known reason", err, err)
			}
			return
		}
		if res.Signer == nil || res.Signer.Cert == nil || len(res.Signer.Chain) == 0 {
			t.Fatalf("accepted without a signer")
		}
		if isDetached && !bytes.Equal(res.Content, content) {
			t.Fatalf("detached: Result.Content is not the given content")
		}
	})
}

// FuzzNormalizeBER: normalization never panics and is idempotent.
func FuzzNormalizeBER(f *testing.F) {
	f.Add(unhexF(f, "3080040241420000"))
	f.Add(unhexF(f, "2480 2480 040141 0000 040142 0000"))
	f.Add(unhexF(f, "BF8101 03 020101"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := normalizeBER(in)
		if err != nil {
			return
		}
		// The DER fast path and the full parser agree.
		p := &berParser{in: in}
		if root, end, err := p.parse(0, 0); err != nil || end != len(in) {
			t.Fatalf("fast path accepted what the parser refuses: %v", err)
		} else if full := p.encode(nil, root); !bytes.Equal(full, out) {
			t.Fatalf("fast path %x, parser %x", out, full)
		}
		again, err := normalizeBER(out)
		if err != nil {
			t.Fatalf("normalized output does not normalize: %v", err)
		}
		if !bytes.Equal(out, again) {
			t.Fatalf("not idempotent: %x then %x", out, again)
		}
	})
}

func unhexF(f *testing.F, s string) []byte {
	f.Helper()
	b, err := hexDecode(s)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

package signing

import (
	"bytes"
	"crypto/x509"
	"errors"
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

package signing

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Interoperability with OpenSSL, the reference S/MIME implementation most
// prescribers' software (and our executants' tooling) is built on. The
// fixtures are generated at test time in t.TempDir().

func needOpenSSL(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not found in PATH")
	}
	return path
}

func runOpenSSL(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

func writePEMCerts(t *testing.T, path string, certs ...*x509.Certificate) {
	t.Helper()
	var buf bytes.Buffer
	for _, c := range certs {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOpenSSLSignsWeVerify: signatures made by `openssl cms -sign`, detached
// and opaque (DER and BER-streamed), RSA and ECDSA, with and without the
// intermediate in the message, verify with our Verify.
func TestOpenSSLSignsWeVerify(t *testing.T) {
	bin := needOpenSSL(t)
	dir := t.TempDir()
	p := mustPKI(t)
	rootPEM := filepath.Join(dir, "root.pem")
	interPEM := filepath.Join(dir, "inter.pem")
	writePEMCerts(t, rootPEM, p.Root.Cert)
	writePEMCerts(t, interPEM, p.Intermediate.Cert)
	contentFile := filepath.Join(dir, "content.eml")
	if err := os.WriteFile(contentFile, testContent, 0o644); err != nil {
		t.Fatal(err)
	}
	anchorsOnly := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
	withInter := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert})

	keys := map[string]KeyType{"p256": KeyECDSAP256, "rsa2048": KeyRSA2048}
	for kname, kt := range keys {
		kp := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyType: kt})
		leafPEM := filepath.Join(dir, kname+".pem")
		keyPEM := filepath.Join(dir, kname+".key")
		if err := kp.WriteFiles(filepath.Join(dir, kname+"-chain.pem"), keyPEM); err != nil {
			t.Fatal(err)
		}
		writePEMCerts(t, leafPEM, kp.Cert)
		// -keyid names the signer by subject key identifier (RFC 5652
		// 5.3) instead of issuer and serial number.
		modes := []struct {
			name     string
			detached bool
			args     []string
		}{
			{"detached", true, nil},
			{"opaque-der", false, []string{"-nodetach"}},
			{"opaque-ber-stream", false, []string{"-nodetach", "-stream"}},
			{"detached-keyid", true, []string{"-keyid"}},
			{"opaque-der-keyid", false, []string{"-nodetach", "-keyid"}},
			{"opaque-ber-stream-keyid", false, []string{"-nodetach", "-stream", "-keyid"}},
		}
		for _, mode := range modes {
			for _, withChain := range []bool{true, false} {
				name := kname + "/" + mode.name + "/chain=" + map[bool]string{true: "yes", false: "no"}[withChain]
				t.Run(name, func(t *testing.T) {
					out := filepath.Join(t.TempDir(), "sig.der")
					args := []string{"cms", "-sign", "-binary", "-md", "sha256", "-in", contentFile,
						"-signer", leafPEM, "-inkey", keyPEM, "-outform", "DER", "-out", out}
					args = append(args, mode.args...)
					trust := withInter
					if withChain {
						args = append(args, "-certfile", interPEM)
						trust = anchorsOnly
					}
					runOpenSSL(t, bin, args...)
					der, err := os.ReadFile(out)
					if err != nil {
						t.Fatal(err)
					}
					req := Request{PKCS7: der, From: drEmail, RPPS: drRPPS}
					if mode.detached {
						req.Content = testContent
					}
					res, err := trust.Verify(req)
					if err != nil {
						t.Fatalf("Verify: %v", err)
					}
					if !bytes.Equal(res.Content, testContent) {
						t.Errorf("content differs from the signed bytes")
					}
					if res.Signer.IDNPS != "8"+drRPPS {
						t.Errorf("IDNPS = %q", res.Signer.IDNPS)
					}
					if !res.Signer.Cert.Equal(kp.Cert) {
						t.Errorf("Signer.Cert is %q, not the signing certificate", res.Signer.Cert.Subject)
					}
				})
			}
		}
	}
}

// TestOpenSSLStreamedChunksWeVerify: `openssl cms -sign -nodetach -stream`
// writes the content as a constructed OCTET STRING of indefinite length, in
// segments of a few KiB (4096 bytes for OpenSSL 3). A prescription larger
// than one segment must verify: the segments are joined in order, and the
// digest is over the whole content.
func TestOpenSSLStreamedChunksWeVerify(t *testing.T) {
	bin := needOpenSSL(t)
	dir := t.TempDir()
	p := mustPKI(t)
	interPEM := filepath.Join(dir, "inter.pem")
	writePEMCerts(t, interPEM, p.Intermediate.Cert)
	// About 20 KiB of lines that differ, so a segment dropped, repeated or
	// reordered changes the digest.
	var content bytes.Buffer
	content.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	for i := 0; content.Len() < 20<<10; i++ {
		fmt.Fprintf(&content, "Ligne %04d : Amoxicilline 1 g, 2 fois par jour pendant 6 jours.\r\n", i)
	}
	contentFile := filepath.Join(dir, "content.eml")
	if err := os.WriteFile(contentFile, content.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
	for kname, kt := range map[string]KeyType{"p256": KeyECDSAP256, "rsa2048": KeyRSA2048} {
		kp := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyType: kt})
		leafPEM := filepath.Join(dir, kname+".pem")
		keyPEM := filepath.Join(dir, kname+".key")
		if err := kp.WriteFiles(filepath.Join(dir, kname+"-chain.pem"), keyPEM); err != nil {
			t.Fatal(err)
		}
		writePEMCerts(t, leafPEM, kp.Cert)
		for _, keyid := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/keyid=%v", kname, keyid), func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "sig.der")
				args := []string{"cms", "-sign", "-binary", "-md", "sha256", "-in", contentFile,
					"-signer", leafPEM, "-inkey", keyPEM, "-certfile", interPEM,
					"-nodetach", "-stream", "-outform", "DER", "-out", out}
				if keyid {
					args = append(args, "-keyid")
				}
				runOpenSSL(t, bin, args...)
				ber, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				// The input really is streamed in several segments: the
				// primitive OCTET STRINGs holding pieces of the content
				// add up to all of it.
				bp := &berParser{in: ber}
				if _, _, err := bp.parse(0, 0); err != nil {
					t.Fatalf("parse: %v", err)
				}
				segments, total := 0, 0
				for _, n := range bp.nodes {
					if len(n.ident) == 1 && n.ident[0] == 0x04 && len(n.content) > 0 &&
						len(n.content) < content.Len() && bytes.Contains(content.Bytes(), n.content) {
						segments++
						total += len(n.content)
					}
				}
				if segments < 2 || total != content.Len() {
					t.Fatalf("openssl wrote %d content segments of %d bytes in all, want several adding up to %d", segments, total, content.Len())
				}
				t.Logf("%d bytes of content in %d segments", total, segments)
				if der, err := normalizeBER(ber); err != nil || bytes.Equal(der, ber) {
					t.Fatalf("normalizeBER left the streamed input unchanged (err %v): it was not BER", err)
				}
				res, err := trust.Verify(Request{PKCS7: ber, From: drEmail, RPPS: drRPPS})
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !bytes.Equal(res.Content, content.Bytes()) {
					t.Errorf("content (%d bytes) differs from the %d signed bytes", len(res.Content), content.Len())
				}
				if !res.Signer.Cert.Equal(kp.Cert) {
					t.Errorf("Signer.Cert is %q, not the signing certificate", res.Signer.Cert.Subject)
				}
			})
		}
	}
}

// TestOpenSSLRefusals: what OpenSSL can produce but we refuse.
func TestOpenSSLRefusals(t *testing.T) {
	bin := needOpenSSL(t)
	dir := t.TempDir()
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	leafPEM := filepath.Join(dir, "leaf.pem")
	keyPEM := filepath.Join(dir, "leaf.key")
	if err := kp.WriteFiles(filepath.Join(dir, "chain.pem"), keyPEM); err != nil {
		t.Fatal(err)
	}
	writePEMCerts(t, leafPEM, kp.Cert)
	contentFile := filepath.Join(dir, "content.eml")
	if err := os.WriteFile(contentFile, testContent, 0o644); err != nil {
		t.Fatal(err)
	}
	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert})
	tests := []struct {
		name  string
		extra []string
		want  Reason
	}{
		{"sha1", []string{"-md", "sha1"}, ReasonAlgorithm},
		{"no signed attributes", []string{"-md", "sha256", "-noattr"}, ReasonMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "sig.der")
			args := append([]string{"cms", "-sign", "-binary", "-in", contentFile, "-signer", leafPEM,
				"-inkey", keyPEM, "-outform", "DER", "-out", out}, tc.extra...)
			runOpenSSL(t, bin, args...)
			der, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			_, err = trust.Verify(Request{PKCS7: der, Content: testContent})
			if got := reasonOf(t, err); got != tc.want {
				t.Fatalf("reason %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

// TestOpenSSLIgnoresSignerInfoVersion backs the decision not to enforce
// RFC 5652 5.3's pairing of SignerInfo version and sid form (see
// parseSignerInfo): `openssl cms -verify` accepts a key identifier sid with
// version 1, and so do we. Should OpenSSL start refusing it, signers would
// learn to write the right number and the decision can be revisited.
func TestOpenSSLIgnoresSignerInfoVersion(t *testing.T) {
	bin := needOpenSSL(t)
	dir := t.TempDir()
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	store := filepath.Join(dir, "store.pem")
	writePEMCerts(t, store, p.Root.Cert, p.Intermediate.Cert)
	contentFile := filepath.Join(dir, "content.eml")
	if err := os.WriteFile(contentFile, testContent, 0o644); err != nil {
		t.Fatal(err)
	}
	trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
	for _, version := range []int{1, 3} {
		der := withSID(t, makeSig(t, kp, testContent, sigOpts{}), sidKeyID(kp.Cert.SubjectKeyId), version)
		sig := filepath.Join(dir, "sig.der")
		if err := os.WriteFile(sig, der, 0o644); err != nil {
			t.Fatal(err)
		}
		runOpenSSL(t, bin, "cms", "-verify", "-purpose", "smimesign", "-CAfile", store,
			"-content", contentFile, "-inform", "DER", "-in", sig, "-binary", "-out", os.DevNull)
		if _, err := trust.Verify(Request{PKCS7: der, Content: testContent}); err != nil {
			t.Errorf("key identifier sid, SignerInfo version %d: OpenSSL accepts, Verify: %v", version, err)
		}
	}
}

// TestWeSignOpenSSLVerifies: our SignDetached and SignOpaque output passes
// `openssl cms -verify -purpose smimesign` against the root alone, as an
// executant would check a notification.
func TestWeSignOpenSSLVerifies(t *testing.T) {
	bin := needOpenSSL(t)
	dir := t.TempDir()
	p := mustPKI(t)
	rootPEM := filepath.Join(dir, "root.pem")
	writePEMCerts(t, rootPEM, p.Root.Cert)
	contentFile := filepath.Join(dir, "content.eml")
	if err := os.WriteFile(contentFile, testContent, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, kt := range map[string]KeyType{"p256": KeyECDSAP256, "rsa2048": KeyRSA2048, "p384": KeyECDSAP384} {
		kp := mustIssue(t, p, Template{Email: "relay@mssrelay.example", Name: "MSSRELAY", Organisation: "MSSRELAY", KeyType: kt})
		t.Run(name+"/detached", func(t *testing.T) {
			der, err := SignDetached(kp, testContent)
			if err != nil {
				t.Fatal(err)
			}
			sig := filepath.Join(t.TempDir(), "sig.der")
			if err := os.WriteFile(sig, der, 0o644); err != nil {
				t.Fatal(err)
			}
			runOpenSSL(t, bin, "cms", "-verify", "-purpose", "smimesign", "-CAfile", rootPEM,
				"-content", contentFile, "-inform", "DER", "-in", sig, "-binary", "-out", os.DevNull)
		})
		t.Run(name+"/opaque", func(t *testing.T) {
			der, err := SignOpaque(kp, testContent)
			if err != nil {
				t.Fatal(err)
			}
			tmp := t.TempDir()
			sig := filepath.Join(tmp, "sig.der")
			if err := os.WriteFile(sig, der, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(tmp, "out.eml")
			runOpenSSL(t, bin, "cms", "-verify", "-purpose", "smimesign", "-CAfile", rootPEM,
				"-inform", "DER", "-in", sig, "-binary", "-out", out)
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, testContent) {
				t.Errorf("openssl extracted %q, want the signed bytes", got)
			}
		})
	}
}

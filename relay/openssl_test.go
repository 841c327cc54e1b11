package relay_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
)

func requireOpenSSL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl not installed (CI installs it)")
		}
		t.Skip("openssl not installed")
	}
}

// opensslSign signs content with `openssl cms -sign` as the demo prescriber
// and returns a complete message: OpenSSL writes the S/MIME entity, we put
// the outer header fields above it.
func opensslSign(t *testing.T, info *demo.Info, from, to string, content []byte, opaque bool) []byte {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "content.eml")
	if err := os.WriteFile(in, content, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"cms", "-sign", "-binary", "-md", "sha256",
		"-signer", info.Path(info.Prescriber.CertFile), "-inkey", info.Path(info.Prescriber.KeyFile),
		"-certfile", info.Path(info.Intermediate), "-in", in}
	if opaque {
		args = append(args, "-nodetach", "-stream")
	}
	out, err := exec.Command("openssl", args...).Output()
	if err != nil {
		t.Fatalf("openssl cms -sign: %v", err)
	}
	// OpenSSL starts with MIME-Version and Content-Type; line ends are LF
	// outside the signed bytes (detached: the content is copied as is).
	out = crlf(out)
	hdr := submit.Message(from, to, "Ordonnance (OpenSSL)", time.Now().Format("150405.000000")+"@openssl.test", time.Now())
	return append(hdr, out...)
}

// crlf turns bare LF into CRLF, leaving existing CRLF alone.
func crlf(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// opensslVerify checks a fetched message with `openssl cms -verify` against
// the development root, for e-mail signing. Without -binary OpenSSL reads
// the MIME entity in canonical (CRLF) form, as RFC 8551 §3.1.1 signs it and as
// mail clients verify it.
func opensslVerify(t *testing.T, info *demo.Info, raw []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "fetched.eml")
	if err := os.WriteFile(f, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("openssl", "cms", "-verify", "-purpose", "smimesign",
		"-CAfile", info.Path(info.RootCA), "-certfile", info.Path(info.Intermediate),
		"-in", f, "-out", os.DevNull)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -verify refused the fetched message: %v\n%s", err, out)
	}
}

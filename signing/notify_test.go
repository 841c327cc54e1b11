package signing

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const relayAddress = "postmaster@mssante.example"

// testNotification is a delivery status notification (RFC 3464) as the
// relay builds it: the MIME entity that is signed, CRLF line ends.
var testNotification = []byte("Content-Type: multipart/report; report-type=delivery-status;\r\n" +
	"\tboundary=\"dsn-b1\"\r\n" +
	"\r\n" +
	"--dsn-b1\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"La prescription n'a pas pu etre remise au patient.\r\n" +
	"--dsn-b1\r\n" +
	"Content-Type: message/delivery-status\r\n" +
	"\r\n" +
	"Reporting-MTA: dns; mssante.example\r\n" +
	"\r\n" +
	"Final-Recipient: rfc822; 123456789012345@patient.mssante.fr\r\n" +
	"Action: failed\r\n" +
	"Status: 4.4.7\r\n" +
	"--dsn-b1--\r\n")

// TestSignNotification: a notification signed with an organisation
// certificate verifies with our Verify (From = the relay's address) and
// with `openssl cms -verify -purpose smimesign`, both as a detached
// signature and as a whole multipart/signed message (RFC 8551 3.5), which
// is what a receiving mail client checks.
func TestSignNotification(t *testing.T) {
	p := mustPKI(t)
	for name, kt := range map[string]KeyType{"p256": KeyECDSAP256, "rsa2048": KeyRSA2048} {
		t.Run(name, func(t *testing.T) {
			org, err := p.Issue(Template{Email: relayAddress, Name: "MSSRELAY EXPLOITANT", Organisation: "MSSRELAY EXPLOITANT", KeyType: kt})
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckNotificationSigner(org, relayAddress, time.Now()); err != nil {
				t.Fatalf("CheckNotificationSigner: %v", err)
			}
			der, err := SignNotification(org, testNotification)
			if err != nil {
				t.Fatalf("SignNotification: %v", err)
			}
			trust := mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil)
			res, err := trust.Verify(Request{PKCS7: der, Content: testNotification, From: relayAddress})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !res.Signer.Cert.Equal(org.Cert) || res.Signer.IDNPS != "" {
				t.Errorf("signer %v (IDNPS %q), want the organisation certificate without IDNPS", res.Signer.Cert.Subject, res.Signer.IDNPS)
			}

			bin := needOpenSSL(t)
			dir := t.TempDir()
			rootPEM := filepath.Join(dir, "root.pem")
			writePEMCerts(t, rootPEM, p.Root.Cert)
			content := filepath.Join(dir, "content.eml")
			sig := filepath.Join(dir, "sig.der")
			for path, data := range map[string][]byte{content: testNotification, sig: der} {
				if err := os.WriteFile(path, data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			runOpenSSL(t, bin, "cms", "-verify", "-purpose", "smimesign", "-CAfile", rootPEM,
				"-content", content, "-inform", "DER", "-in", sig, "-binary", "-out", os.DevNull)

			msg := filepath.Join(dir, "dsn.eml")
			if err := os.WriteFile(msg, multipartSigned(testNotification, der), 0o644); err != nil {
				t.Fatal(err)
			}
			// Text mode, as a mail client reads S/MIME: the first part is
			// canonicalised to CRLF, which it already is.
			out := filepath.Join(dir, "out.eml")
			runOpenSSL(t, bin, "cms", "-verify", "-purpose", "smimesign", "-CAfile", rootPEM,
				"-in", msg, "-out", out)
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, testNotification) {
				t.Errorf("openssl extracted %q, want the notification", got)
			}
		})
	}
}

// multipartSigned wraps content and its detached signature as
// multipart/signed (RFC 8551 3.5, RFC 1847).
func multipartSigned(content, der []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: " + relayAddress + "\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"sig-b2\"\r\n" +
		"\r\n--sig-b2\r\n")
	b.Write(content)
	b.WriteString("\r\n--sig-b2\r\n" +
		"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(der)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--sig-b2--\r\n")
	return b.Bytes()
}

func TestCheckNotificationSignerRefusals(t *testing.T) {
	now := time.Now()
	p := mustPKI(t)
	org := mustIssue(t, p, Template{Email: relayAddress, Name: "MSSRELAY", Organisation: "MSSRELAY"})
	other := mustIssue(t, p, Template{Email: relayAddress, Name: "MSSRELAY", Organisation: "MSSRELAY"})
	server, err := p.IssueServer("mssante.example")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		kp      *KeyPair
		address string
		now     time.Time
		want    string
	}{
		{"nil", nil, "", now, "incomplete"},
		{"no key", &KeyPair{Cert: org.Cert}, "", now, "incomplete"},
		{"TLS server certificate", server, "", now, "emailProtection"},
		{"no extended key usage", mustIssue(t, p, Template{Email: relayAddress, Name: "X", NoExtKeyUsage: true}), "", now, "emailProtection"},
		{"encipherment only", mustIssue(t, p, Template{Email: relayAddress, Name: "X", KeyUsage: x509.KeyUsageKeyEncipherment}), "", now, "digital signature"},
		{"expired", org, "", org.Cert.NotAfter.Add(time.Hour), "expired"},
		{"not yet valid", org, "", org.Cert.NotBefore.Add(-time.Hour), "not valid before"},
		{"RSA 1024", mustIssue(t, p, Template{Email: relayAddress, Name: "X", KeyType: KeyRSA1024}), "", now, "1024"},
		{"key of another certificate", &KeyPair{Cert: org.Cert, Key: other.Key}, "", now, "does not match"},
		{"another address", org, "mdn@mssante.example", now, "not for mdn@mssante.example"},
		{"local part case", org, "Postmaster@mssante.example", now, "not for"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckNotificationSigner(tc.kp, tc.address, tc.now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckNotificationSigner = %v, want an error with %q", err, tc.want)
			}
		})
	}
	if err := CheckNotificationSigner(org, "postmaster@MSSANTE.example", now); err != nil {
		t.Errorf("domain compared with case: %v", err)
	}
	if _, err := SignNotification(server, testNotification); err == nil || !strings.Contains(err.Error(), "sign notification") {
		t.Errorf("SignNotification with a TLS certificate: %v, want a refusal", err)
	}
}

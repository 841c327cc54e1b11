package signing

import (
	"bytes"
	"crypto/x509"
	"testing"
)

// benchVerify measures one detached verification of a 20 KiB prescription
// with the chain verdict cached, the steady state of a relay.
func benchVerify(b *testing.B, kt KeyType) {
	p := mustPKI(b)
	kp := mustIssue(b, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyType: kt})
	trust := mustTrustNoCRL(b, p, []*x509.Certificate{p.Root.Cert}, nil)
	content := bytes.Repeat([]byte("Amoxicilline 1 g, 2 fois par jour pendant 6 jours.\r\n"), 20<<10/52)
	der, err := SignDetached(kp, content)
	if err != nil {
		b.Fatal(err)
	}
	req := Request{PKCS7: der, Content: content, From: drEmail, RPPS: drRPPS}
	if _, err := trust.Verify(req); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(content)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := trust.Verify(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyRSA2048(b *testing.B) { benchVerify(b, KeyRSA2048) }
func BenchmarkVerifyP256(b *testing.B)    { benchVerify(b, KeyECDSAP256) }

// BenchmarkVerifyP256Cold is the cost of a signer seen for the first time
// (or after Reload): chain building and its signature checks included.
func BenchmarkVerifyP256Cold(b *testing.B) {
	p := mustPKI(b)
	kp := mustIssue(b, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	trust := mustTrustNoCRL(b, p, []*x509.Certificate{p.Root.Cert}, nil)
	content := bytes.Repeat([]byte("x"), 20<<10)
	der, err := SignDetached(kp, content)
	if err != nil {
		b.Fatal(err)
	}
	req := Request{PKCS7: der, Content: content}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := trust.Reload(); err != nil {
			b.Fatal(err)
		}
		if _, err := trust.Verify(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignDetachedP256(b *testing.B) {
	p := mustPKI(b)
	kp := mustIssue(b, p, Template{Email: drEmail})
	content := bytes.Repeat([]byte("x"), 20<<10)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := SignDetached(kp, content); err != nil {
			b.Fatal(err)
		}
	}
}

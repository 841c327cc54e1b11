package signing

import (
	"bytes"
	"crypto/x509"
	"testing"
	"time"
)

// benchTrust is a trust store as the relay runs it: the root as anchor,
// the intermediate configured, and a fresh CRL required for each of them
// (the default policy), so that a verdict includes the revocation check.
func benchTrust(b *testing.B, p *DevPKI) *Trust {
	b.Helper()
	now := time.Now()
	var crls []*x509.RevocationList
	for _, issuer := range []*KeyPair{p.Root, p.Intermediate} {
		crl, err := p.IssueCRL(issuer, nil, now.Add(-time.Hour), now.Add(24*time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		crls = append(crls, crl)
	}
	trust := mustTrust(b, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert}, crls)
	if !trust.ChecksRevocation() {
		b.Fatal("the benchmark's trust store checks no CRL")
	}
	return trust
}

// reportRate adds verifications per second (per core: the loop is
// sequential) to the benchmark's output.
func reportRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "verifications/s")
	}
}

// benchVerify measures one detached verification of a 20 KiB prescription
// with the chain and CRL verdict cached, the steady state of a relay.
func benchVerify(b *testing.B, kt KeyType) {
	p := mustPKI(b)
	kp := mustIssue(b, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, KeyType: kt})
	trust := benchTrust(b, p)
	content := bytes.Repeat([]byte("Amoxicilline 1 g, 2 fois par jour pendant 6 jours.\r\n"), 20<<10/52)
	der, err := SignDetached(kp, content)
	if err != nil {
		b.Fatal(err)
	}
	req := Request{PKCS7: der, Content: content, From: drEmail, RPPS: drRPPS}
	if _, err := trust.Verify(req); err != nil {
		b.Fatal(err)
	}
	if n := trust.state.Load().cache.len(); n != 1 {
		b.Fatalf("the verdict cache holds %d entries after the first verification, want 1", n)
	}
	b.SetBytes(int64(len(content)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := trust.Verify(req); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

func BenchmarkVerifyRSA2048(b *testing.B) { benchVerify(b, KeyRSA2048) }
func BenchmarkVerifyP256(b *testing.B)    { benchVerify(b, KeyECDSAP256) }

// BenchmarkVerifyP256Cold is the cost of a signer seen for the first time
// (or after Reload): chain building and its signature checks, and the CRL
// lookups, included.
func BenchmarkVerifyP256Cold(b *testing.B) {
	p := mustPKI(b)
	kp := mustIssue(b, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	trust := benchTrust(b, p)
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
	reportRate(b)
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

package configs

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sync"
	"testing"
	"time"
)

// testPKI is a throwaway CA and a server certificate it issued, PEM encoded.
type testPKI struct {
	caPEM, certPEM, keyPEM, otherKeyPEM, crlDER []byte

	// S/MIME signing certificates for [signer], all but the Ed25519 one
	// on signerKeyPEM's key.
	signerPEM           []byte // emailProtection, SAN postmaster@ of both test domains
	signerKeyPEM        []byte
	signerOtherPEM      []byte // SAN notifications@relay.test.example only
	signerEncOnlyPEM    []byte // key usage keyEncipherment only
	signerEd25519PEM    []byte
	signerEd25519KeyPEM []byte
}

var pkiOnce = sync.OnceValues(func() (*testPKI, error) {
	newKey := func() (*ecdsa.PrivateKey, []byte, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, nil, err
		}
		return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	caKey, _, err := newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	srvKey, srvKeyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "relay.test.example"},
		DNSNames:     []string{"relay.test.example"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	_, otherKeyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour),
	}, caCert, caKey)
	if err != nil {
		return nil, err
	}
	enc := func(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }
	signerKey, signerKeyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	smime := func(serial int64, pub any, emails []string, ku x509.KeyUsage) ([]byte, error) {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber:   big.NewInt(serial),
			Subject:        pkix.Name{CommonName: "Relay organisation"},
			EmailAddresses: emails,
			NotBefore:      now.Add(-time.Hour),
			NotAfter:       now.Add(24 * time.Hour),
			KeyUsage:       ku,
			ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		}, caCert, pub, caKey)
		if err != nil {
			return nil, err
		}
		return append(enc(der), enc(caDER)...), nil
	}
	signerPEM, err := smime(3, &signerKey.PublicKey, []string{"postmaster@relay.test.example", "postmaster@example.org"}, x509.KeyUsageDigitalSignature)
	if err != nil {
		return nil, err
	}
	signerOtherPEM, err := smime(4, &signerKey.PublicKey, []string{"notifications@relay.test.example"}, x509.KeyUsageDigitalSignature)
	if err != nil {
		return nil, err
	}
	signerEncOnlyPEM, err := smime(5, &signerKey.PublicKey, []string{"postmaster@relay.test.example"}, x509.KeyUsageKeyEncipherment)
	if err != nil {
		return nil, err
	}
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	edDER, err := x509.MarshalPKCS8PrivateKey(edKey)
	if err != nil {
		return nil, err
	}
	signerEd25519PEM, err := smime(6, edPub, []string{"postmaster@relay.test.example"}, x509.KeyUsageDigitalSignature)
	if err != nil {
		return nil, err
	}
	return &testPKI{
		caPEM:               enc(caDER),
		certPEM:             append(enc(srvDER), enc(caDER)...),
		keyPEM:              srvKeyPEM,
		otherKeyPEM:         otherKeyPEM,
		crlDER:              crl,
		signerPEM:           signerPEM,
		signerKeyPEM:        signerKeyPEM,
		signerOtherPEM:      signerOtherPEM,
		signerEncOnlyPEM:    signerEncOnlyPEM,
		signerEd25519PEM:    signerEd25519PEM,
		signerEd25519KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER}),
	}, nil
})

func pki(t testing.TB) *testPKI {
	t.Helper()
	p, err := pkiOnce()
	if err != nil {
		t.Fatalf("test PKI: %v", err)
	}
	return p
}

var testHash = sync.OnceValues(func() (string, error) { return HashPassword("correct horse battery") })

func hash(t testing.TB) string {
	t.Helper()
	h, err := testHash()
	if err != nil {
		t.Fatalf("HashPassword: %v", err)
	}
	return h
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// fixtureDir writes the files the base config names into a new directory.
func fixtureDir(t testing.TB) string {
	t.Helper()
	p := pki(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "cert.pem"), p.certPEM)
	writeFile(t, filepath.Join(dir, "key.pem"), p.keyPEM)
	writeFile(t, filepath.Join(dir, "other-key.pem"), p.otherKeyPEM)
	writeFile(t, filepath.Join(dir, "anchor.pem"), p.caPEM)
	writeFile(t, filepath.Join(dir, "inter.pem"), p.caPEM)
	writeFile(t, filepath.Join(dir, "ca.crl"), p.crlDER)
	writeFile(t, filepath.Join(dir, "garbage.pem"), []byte("not a certificate\n"))
	writeFile(t, filepath.Join(dir, "empty.crl"), nil)
	writeFile(t, filepath.Join(dir, "signer.pem"), p.signerPEM)
	writeFile(t, filepath.Join(dir, "signer-key.pem"), p.signerKeyPEM)
	writeFile(t, filepath.Join(dir, "signer-other.pem"), p.signerOtherPEM)
	writeFile(t, filepath.Join(dir, "signer-enc.pem"), p.signerEncOnlyPEM)
	writeFile(t, filepath.Join(dir, "signer-ed25519.pem"), p.signerEd25519PEM)
	writeFile(t, filepath.Join(dir, "signer-ed25519-key.pem"), p.signerEd25519KeyPEM)
	return dir
}

// baseConfig is a valid config over fixtureDir's files. Refusal tests
// change one line of it; their expected line numbers refer to this text.
const baseConfig = `[server]
hostname = "relay.test.example"
data_dir = "data"

[tls]
cert = "cert.pem"
key = "key.pem"

[smtp]
submission = ["127.0.0.1:2587"]
submission_tls = ["127.0.0.1:2465"]

[imap]
tls = ["127.0.0.1:2993"]
starttls = ["127.0.0.1:2143"]

[trust]
anchors = ["anchor.pem"]
intermediates = ["inter.pem"]
crls = ["ca.crl"]

[[account]]
address = "dr.martin@Example.ORG"
role = "prescriber"
password_hash = "HASH"
rpps = "10101201234"
name = "Dr Martin"

[[account]]
address = "pharma@example.org"
role = "executant"
password_hash = "HASH"
`

func base(t testing.TB) string {
	return regexp.MustCompile(`HASH`).ReplaceAllLiteralString(baseConfig, hash(t))
}

// schemaKeys lists every key path of the Config tree, with arrays of
// tables written without index ("account.address").
func schemaKeys() []string {
	var keys []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := tomlName(f)
			if name == "" {
				continue
			}
			path := joinKey(prefix, name)
			switch kindOf(f.Type) {
			case kindTable:
				walk(path, f.Type)
			case kindTableArray:
				walk(path, f.Type.Elem())
			default:
				keys = append(keys, path)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
	return keys
}

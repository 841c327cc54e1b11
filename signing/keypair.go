package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// maxPEMFileSize bounds what LoadKeyPair, LoadTrust and LoadDevPKI read: a
// configuration mistake (pointing at a mailbox file) must not exhaust memory.
const maxPEMFileSize = 16 << 20

// LoadKeyPair reads a PEM certificate file (leaf first, then intermediates)
// and a PEM private key file (PKCS#8, PKCS#1 or SEC1). The key must match
// the leaf certificate.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	certPEM, err := readBounded(certFile)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	certs, err := parsePEMCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s: %w", certFile, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("certificate file %s: no CERTIFICATE block", certFile)
	}
	keyPEM, err := readBounded(keyFile)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	key, err := parsePEMPrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("private key file %s: %w", keyFile, err)
	}
	if !publicKeysEqual(certs[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("private key file %s does not match the certificate in %s", keyFile, certFile)
	}
	return &KeyPair{Cert: certs[0], Key: key, Chain: certs[1:]}, nil
}

// WriteFiles writes the certificate chain (leaf then intermediates) and the
// key (PKCS#8, mode 0600) as PEM. Each file is replaced atomically.
func (kp *KeyPair) WriteFiles(certFile, keyFile string) error {
	if kp == nil || kp.Cert == nil || kp.Key == nil {
		return errors.New("write key pair: incomplete key pair")
	}
	var certPEM bytes.Buffer
	for _, c := range append([]*x509.Certificate{kp.Cert}, kp.Chain...) {
		if err := pem.Encode(&certPEM, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
			return fmt.Errorf("write key pair: %w", err)
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(kp.Key)
	if err != nil {
		return fmt.Errorf("write key pair: marshal key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write key pair: %w", err)
	}
	if err := writeFileAtomic(certFile, certPEM.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write key pair: %w", err)
	}
	return nil
}

// readBounded reads a whole file of at most maxPEMFileSize bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxPEMFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPEMFileSize)
	}
	return data, nil
}

// writeFileAtomic writes data to a temporary file in the same directory,
// syncs it, sets perm and renames it over path, so a crash leaves either the
// old or the new file and a key is never readable by others, even briefly.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	ok = true
	return nil
}

// parsePEMCertificates returns every CERTIFICATE block of data, in order.
// Other block types are ignored; a block that does not parse is an error.
func parsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		out = append(out, c)
	}
}

// parsePEMPrivateKey returns the first private key block of data.
func parsePEMPrivateKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no private key PEM block")
		}
		if _, encrypted := block.Headers["Proc-Type"]; encrypted {
			return nil, errors.New("encrypted PEM keys are not supported")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted PKCS#8 keys are not supported")
		default:
			continue // e.g. "EC PARAMETERS" written by openssl ecparam
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", block.Type, err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		default:
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

package signing

import (
	"crypto/x509"
	"errors"
)

var errTODO = errors.New("signing: not implemented yet")

// Trust holds anchors, intermediates and CRLs. Safe for concurrent use.
type Trust struct{}

// LoadTrust reads PEM files of anchors, intermediates and CRLs (PEM or DER).
func LoadTrust(anchorFiles, intermediateFiles, crlFiles []string) (*Trust, error) {
	return nil, errTODO
}

// NewTrust builds a trust store from parsed material.
func NewTrust(anchors, intermediates []*x509.Certificate, crls []*x509.RevocationList) (*Trust, error) {
	return nil, errTODO
}

// Verify checks one signature; failures are *Error.
func (t *Trust) Verify(req Request) (*Result, error) { return nil, errTODO }

// Pool returns the anchors as a pool (for TLS client verification).
func (t *Trust) Pool() *x509.CertPool { return nil }

// LoadKeyPair reads a PEM certificate file (leaf first, then intermediates)
// and a PEM private key file (PKCS#8, PKCS#1 or SEC1).
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) { return nil, errTODO }

// WriteFiles writes the certificate chain (leaf then intermediates) and the
// key (PKCS#8, mode 0600) as PEM.
func (kp *KeyPair) WriteFiles(certFile, keyFile string) error { return errTODO }

// SignDetached returns a DER SignedData (SHA-256) over content, without the
// content, with the certificate chain included.
func SignDetached(kp *KeyPair, content []byte) ([]byte, error) { return nil, errTODO }

// SignOpaque returns a DER SignedData (SHA-256) that embeds content.
func SignOpaque(kp *KeyPair, content []byte) ([]byte, error) { return nil, errTODO }

// DevPKI is a development PKI shaped like the health PKI (IGC-Santé):
// a root, an intermediate, and leaves issued by the intermediate.
type DevPKI struct {
	Root         *KeyPair
	Intermediate *KeyPair
}

// NewDevPKI generates a new root and intermediate (ECDSA P-256 unless
// opts say otherwise).
func NewDevPKI() (*DevPKI, error) { return nil, errTODO }

// IssueServer issues a TLS server certificate (and client auth) for hosts
// (DNS names or IPs).
func (p *DevPKI) IssueServer(hosts ...string) (*KeyPair, error) { return nil, errTODO }

// IssuePerson issues an S/MIME signing certificate for a health
// professional: e-mail in the SAN, IDNPS "8"+rpps in the subject
// serialNumber and CN "8<rpps>/<name>" like IGC-Santé; rpps may be "".
func (p *DevPKI) IssuePerson(email, rpps, name string) (*KeyPair, error) { return nil, errTODO }

// IssueOrganisation issues a signing certificate for the relay itself
// (notifications), with the e-mail address in the SAN.
func (p *DevPKI) IssueOrganisation(email, name string) (*KeyPair, error) { return nil, errTODO }

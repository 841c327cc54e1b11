package signing

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Names of the development PKI, echoing IGC-Santé's "AC IGC-SANTE … RACINE"
// and "AC … PERSONNES" so the demo reads like the real thing while no one
// can mistake it for it.
const (
	DevRootName         = "MSSRELAY DEV AC RACINE"
	DevIntermediateName = "MSSRELAY DEV AC PERSONNES"
	devOrganisation     = "MSSRELAY DEVELOPPEMENT"
)

// File names used by (*DevPKI).Save and LoadDevPKI inside their directory.
// DevRootCertFile is the trust anchor to configure in the relay.
const (
	DevRootCertFile         = "dev-ca-root.pem"
	DevRootKeyFile          = "dev-ca-root.key"
	DevIntermediateCertFile = "dev-ca-intermediate.pem"
	DevIntermediateKeyFile  = "dev-ca-intermediate.key"
)

// KeyType selects the key algorithm of an issued certificate.
type KeyType int

const (
	KeyECDSAP256 KeyType = iota // default
	KeyECDSAP384
	KeyRSA2048
	KeyRSA3072
	KeyRSA1024 // too weak: only for refusal tests
)

// Template describes a certificate for (*DevPKI).Issue. Zero fields take
// the defaults of an IGC-Santé-like S/MIME signing certificate, so a test
// sets only what it wants to break.
type Template struct {
	Email        string   // SAN rfc822Name
	RPPS         string   // 11 digits; subject serialNumber "8"+RPPS and CN "8"+RPPS+"/"+Name
	Name         string   // person or organisation name
	Organisation string   // subject O, optional
	Hosts        []string // SAN DNS names or IP addresses

	KeyType   KeyType
	NotBefore time.Time // zero: an hour ago (clock skew)
	NotAfter  time.Time // zero: NotBefore + 3 years

	KeyUsage      x509.KeyUsage                // zero: digitalSignature | contentCommitment (nonRepudiation)
	ExtKeyUsage   []x509.ExtKeyUsage           // nil: emailProtection
	NoExtKeyUsage bool                         // omit the extended key usage extension
	IsCA          bool                         // issue a sub-CA (keyCertSign, cRLSign, path length 0)
	Issuer        *KeyPair                     // nil: the intermediate
	SubjectExtra  []pkix.AttributeTypeAndValue // extra subject attributes (e.g. emailAddress)
}

// DevPKI is a development PKI shaped like the health PKI (IGC-Santé):
// a root, an intermediate, and leaves issued by the intermediate.
type DevPKI struct {
	Root         *KeyPair
	Intermediate *KeyPair
}

// NewDevPKI generates a new root and intermediate, both ECDSA P-256.
func NewDevPKI() (*DevPKI, error) {
	now := time.Now()
	rootKey, err := generateKey(KeyECDSAP256)
	if err != nil {
		return nil, fmt.Errorf("dev PKI: root key: %w", err)
	}
	rootTmpl := &x509.Certificate{
		Subject:               pkix.Name{Country: []string{"FR"}, Organization: []string{devOrganisation}, CommonName: DevRootName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	root, err := createCertificate(rootTmpl, rootKey, nil)
	if err != nil {
		return nil, fmt.Errorf("dev PKI: root: %w", err)
	}
	p := &DevPKI{Root: root}
	p.Intermediate, err = p.Issue(Template{
		Name:         DevIntermediateName,
		Organisation: devOrganisation,
		IsCA:         true,
		Issuer:       root,
		NotAfter:     now.AddDate(10, 0, 0),
	})
	if err != nil {
		return nil, fmt.Errorf("dev PKI: intermediate: %w", err)
	}
	return p, nil
}

// Issue issues a certificate from t. The key is generated for this call.
func (p *DevPKI) Issue(t Template) (*KeyPair, error) {
	issuer := t.Issuer
	if issuer == nil {
		issuer = p.Intermediate
	}
	if issuer == nil || issuer.Cert == nil || issuer.Key == nil {
		return nil, errors.New("issue: no issuer key pair")
	}
	subject := pkix.Name{Country: []string{"FR"}}
	if t.Organisation != "" {
		subject.Organization = []string{t.Organisation}
	}
	switch {
	case t.RPPS != "":
		if !isDigits(t.RPPS, 11) {
			return nil, fmt.Errorf("issue: RPPS %q is not 11 digits", t.RPPS)
		}
		// IGC-Santé personal certificates: serialNumber = IDNPS and
		// CN = "<IDNPS>/<name>".
		subject.SerialNumber = "8" + t.RPPS
		subject.CommonName = "8" + t.RPPS + "/" + t.Name
	case t.Name != "":
		subject.CommonName = t.Name
	case t.Email != "":
		subject.CommonName = t.Email
	case len(t.Hosts) > 0:
		subject.CommonName = t.Hosts[0]
	default:
		return nil, errors.New("issue: template has no name, e-mail or host")
	}
	subject.ExtraNames = t.SubjectExtra

	notBefore := t.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	notAfter := t.NotAfter
	if notAfter.IsZero() {
		notAfter = notBefore.AddDate(3, 0, 0)
	}
	tmpl := &x509.Certificate{
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
	}
	if t.IsCA {
		tmpl.IsCA = true
		tmpl.MaxPathLenZero = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = t.KeyUsage
		if tmpl.KeyUsage == 0 {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
		}
		switch {
		case t.NoExtKeyUsage:
		case t.ExtKeyUsage != nil:
			tmpl.ExtKeyUsage = t.ExtKeyUsage
		default:
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
		}
	}
	if t.IsCA && t.KeyUsage != 0 {
		tmpl.KeyUsage = t.KeyUsage
	}
	if t.Email != "" {
		tmpl.EmailAddresses = []string{t.Email}
	}
	for _, h := range t.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	key, err := generateKey(t.KeyType)
	if err != nil {
		return nil, fmt.Errorf("issue %q: %w", subject.CommonName, err)
	}
	// RFC 5280 4.2.1.2: end-entity certificates SHOULD carry a subject key
	// identifier (x509 only adds one to CAs): the first 160 bits of the
	// SHA-256 of the SubjectPublicKeyInfo, in the spirit of RFC 7093.
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("issue %q: %w", subject.CommonName, err)
	}
	ski := sha256.Sum256(spki)
	tmpl.SubjectKeyId = ski[:20]
	kp, err := createCertificate(tmpl, key, issuer)
	if err != nil {
		return nil, fmt.Errorf("issue %q: %w", subject.CommonName, err)
	}
	return kp, nil
}

// IssueServer issues a TLS server certificate (and client auth, for mutual
// TLS between operators) for hosts (DNS names or IPs), valid one year.
func (p *DevPKI) IssueServer(hosts ...string) (*KeyPair, error) {
	if len(hosts) == 0 {
		return nil, errors.New("issue server: no host")
	}
	return p.Issue(Template{
		Hosts:        hosts,
		Organisation: devOrganisation,
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
}

// IssuePerson issues an S/MIME signing certificate for a health
// professional: e-mail in the SAN, IDNPS "8"+rpps in the subject
// serialNumber and CN "8<rpps>/<name>" like IGC-Santé; rpps may be "".
func (p *DevPKI) IssuePerson(email, rpps, name string) (*KeyPair, error) {
	if email == "" {
		return nil, errors.New("issue person: no e-mail address")
	}
	return p.Issue(Template{Email: email, RPPS: rpps, Name: name})
}

// IssueOrganisation issues a signing certificate for the relay itself
// (notifications), with the e-mail address in the SAN.
func (p *DevPKI) IssueOrganisation(email, name string) (*KeyPair, error) {
	if email == "" {
		return nil, errors.New("issue organisation: no e-mail address")
	}
	return p.Issue(Template{Email: email, Name: name, Organisation: name})
}

// IssueCRL signs a CRL (RFC 5280 5) by issuer (nil: the intermediate)
// listing revoked, valid from thisUpdate to nextUpdate.
func (p *DevPKI) IssueCRL(issuer *KeyPair, revoked []*x509.Certificate, thisUpdate, nextUpdate time.Time) (*x509.RevocationList, error) {
	if issuer == nil {
		issuer = p.Intermediate
	}
	if issuer == nil || issuer.Cert == nil || issuer.Key == nil {
		return nil, errors.New("issue CRL: no issuer key pair")
	}
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, c := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: thisUpdate})
	}
	number, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("issue CRL: %w", err)
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		RevokedCertificateEntries: entries,
		Number:                    number,
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
	}, issuer.Cert, issuer.Key)
	if err != nil {
		return nil, fmt.Errorf("issue CRL: %w", err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("issue CRL: parse: %w", err)
	}
	return crl, nil
}

// Save writes the root and intermediate (certificates and keys) to dir,
// using the Dev*File names; keys are mode 0600.
func (p *DevPKI) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save dev PKI: %w", err)
	}
	if err := p.Root.WriteFiles(filepath.Join(dir, DevRootCertFile), filepath.Join(dir, DevRootKeyFile)); err != nil {
		return fmt.Errorf("save dev PKI root: %w", err)
	}
	if err := p.Intermediate.WriteFiles(filepath.Join(dir, DevIntermediateCertFile), filepath.Join(dir, DevIntermediateKeyFile)); err != nil {
		return fmt.Errorf("save dev PKI intermediate: %w", err)
	}
	return nil
}

// LoadDevPKI reads a development PKI written by Save and checks that the
// intermediate was issued by the root.
func LoadDevPKI(dir string) (*DevPKI, error) {
	root, err := LoadKeyPair(filepath.Join(dir, DevRootCertFile), filepath.Join(dir, DevRootKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load dev PKI: %w", err)
	}
	inter, err := LoadKeyPair(filepath.Join(dir, DevIntermediateCertFile), filepath.Join(dir, DevIntermediateKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load dev PKI: %w", err)
	}
	if !root.Cert.IsCA || !inter.Cert.IsCA {
		return nil, fmt.Errorf("load dev PKI %s: root and intermediate must be CA certificates", dir)
	}
	if err := inter.Cert.CheckSignatureFrom(root.Cert); err != nil {
		return nil, fmt.Errorf("load dev PKI %s: intermediate not issued by root: %w", dir, err)
	}
	inter.Chain = nil // the root is the anchor, not part of the chain
	return &DevPKI{Root: root, Intermediate: inter}, nil
}

// LoadOrCreateDevPKI loads the development PKI of dir, or creates and saves
// one when dir holds none yet. created reports which happened.
func LoadOrCreateDevPKI(dir string) (p *DevPKI, created bool, err error) {
	if _, err := os.Stat(filepath.Join(dir, DevRootCertFile)); err == nil {
		p, err := LoadDevPKI(dir)
		return p, false, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("dev PKI: %w", err)
	}
	p, err = NewDevPKI()
	if err != nil {
		return nil, false, err
	}
	if err := p.Save(dir); err != nil {
		return nil, false, err
	}
	return p, true, nil
}

func generateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case KeyRSA1024:
		return rsa.GenerateKey(rand.Reader, 1024)
	default:
		return nil, fmt.Errorf("unknown key type %d", kt)
	}
}

// randomSerial returns a positive 127-bit serial (RFC 5280 4.1.2.2: at most
// 20 octets, unpredictable per CA/B Forum practice).
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// createCertificate signs tmpl for key by issuer (nil: self-signed).
func createCertificate(tmpl *x509.Certificate, key crypto.Signer, issuer *KeyPair) (*KeyPair, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	parent, signer := tmpl, key
	var chain []*x509.Certificate
	if issuer != nil {
		parent, signer = issuer.Cert, issuer.Key
		// The chain stops below the anchor: a self-signed issuer is a root.
		if !isSelfSigned(issuer.Cert) {
			chain = append([]*x509.Certificate{issuer.Cert}, issuer.Chain...)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key, Chain: chain}, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

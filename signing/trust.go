package signing

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Trust holds anchors, intermediates and CRLs. Safe for concurrent use.
//
// The material lives in an immutable trustState swapped atomically by
// Reload, so a verification in flight keeps a consistent view (anchors,
// CRLs and the verdict cache that was computed from them) and never needs a
// lock on the hot path.
type Trust struct {
	// files is set by LoadTrust; Reload re-reads them.
	anchorFiles, intermediateFiles, crlFiles []string
	fromFiles                                bool

	reloadMu sync.Mutex // serialises Reload so two reloads cannot interleave
	state    atomic.Pointer[trustState]
}

// trustState is one immutable generation of the trust material.
type trustState struct {
	anchors       *x509.CertPool
	anchorList    []*x509.Certificate
	intermediates []*x509.Certificate
	// crls maps an issuer identity (issuerKey) to its newest CRL. When
	// checkRevocation is false no CRL was configured and revocation is not
	// checked at all (the demo).
	crls            map[[32]byte]*crlInfo
	checkRevocation bool
	cache           *verdictCache
}

// crlInfo is a CRL whose signature was verified against a configured CA.
type crlInfo struct {
	issuer     *x509.Certificate
	thisUpdate time.Time
	nextUpdate time.Time
	revoked    map[string]struct{} // serial numbers, big.Int.String()
}

// LoadTrust reads PEM files of anchors, intermediates and CRLs (PEM or DER).
func LoadTrust(anchorFiles, intermediateFiles, crlFiles []string) (*Trust, error) {
	t := &Trust{
		anchorFiles:       append([]string(nil), anchorFiles...),
		intermediateFiles: append([]string(nil), intermediateFiles...),
		crlFiles:          append([]string(nil), crlFiles...),
		fromFiles:         true,
	}
	st, err := t.loadFiles()
	if err != nil {
		return nil, err
	}
	t.state.Store(st)
	return t, nil
}

// NewTrust builds a trust store from parsed material.
func NewTrust(anchors, intermediates []*x509.Certificate, crls []*x509.RevocationList) (*Trust, error) {
	st, err := newTrustState(anchors, intermediates, crls)
	if err != nil {
		return nil, err
	}
	t := &Trust{}
	t.state.Store(st)
	return t, nil
}

// Reload re-reads the files given to LoadTrust (new CRLs, a rotated
// intermediate) and replaces the trust material at once; cached verdicts
// are dropped. On error the previous material stays in force. For a Trust
// made by NewTrust it only drops the cached verdicts.
func (t *Trust) Reload() error {
	t.reloadMu.Lock()
	defer t.reloadMu.Unlock()
	old := t.state.Load()
	if !t.fromFiles {
		st := *old
		st.cache = newVerdictCache(verdictCacheSize)
		t.state.Store(&st)
		return nil
	}
	st, err := t.loadFiles()
	if err != nil {
		return err
	}
	t.state.Store(st)
	return nil
}

// Pool returns the anchors as a pool (for TLS client verification). The
// pool is a copy: adding to it does not change the trust store.
func (t *Trust) Pool() *x509.CertPool {
	return t.state.Load().anchors.Clone()
}

// Anchors returns the configured trust anchors.
func (t *Trust) Anchors() []*x509.Certificate {
	return append([]*x509.Certificate(nil), t.state.Load().anchorList...)
}

// ChecksRevocation reports whether CRLs are configured (and therefore
// checked for every certificate of a chain).
func (t *Trust) ChecksRevocation() bool { return t.state.Load().checkRevocation }

func (t *Trust) loadFiles() (*trustState, error) {
	var anchors, intermediates []*x509.Certificate
	for _, f := range t.anchorFiles {
		certs, err := loadCertFile(f)
		if err != nil {
			return nil, fmt.Errorf("trust anchors: %w", err)
		}
		anchors = append(anchors, certs...)
	}
	for _, f := range t.intermediateFiles {
		certs, err := loadCertFile(f)
		if err != nil {
			return nil, fmt.Errorf("trust intermediates: %w", err)
		}
		intermediates = append(intermediates, certs...)
	}
	var crls []*x509.RevocationList
	for _, f := range t.crlFiles {
		l, err := loadCRLFile(f)
		if err != nil {
			return nil, fmt.Errorf("trust CRLs: %w", err)
		}
		crls = append(crls, l...)
	}
	return newTrustState(anchors, intermediates, crls)
}

func loadCertFile(path string) ([]*x509.Certificate, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	certs, err := parsePEMCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	return certs, nil
}

// loadCRLFile reads "X509 CRL" PEM blocks, or one DER CRL when the file has
// no PEM block (CAs publish DER at their distribution points).
func loadCRLFile(path string) ([]*x509.RevocationList, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.RevocationList
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "X509 CRL" {
			continue
		}
		l, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: PEM block %d: %w", path, n, err)
		}
		out = append(out, l)
	}
	if len(out) > 0 {
		return out, nil
	}
	if bytes.Contains(data, []byte("-----BEGIN")) {
		return nil, fmt.Errorf("%s: no PEM X509 CRL block", path)
	}
	l, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("%s: DER CRL: %w", path, err)
	}
	return []*x509.RevocationList{l}, nil
}

func newTrustState(anchors, intermediates []*x509.Certificate, crls []*x509.RevocationList) (*trustState, error) {
	if len(anchors) == 0 {
		return nil, errors.New("trust: no trust anchor")
	}
	st := &trustState{
		anchors:         x509.NewCertPool(),
		crls:            make(map[[32]byte]*crlInfo),
		checkRevocation: len(crls) > 0,
		cache:           newVerdictCache(verdictCacheSize),
	}
	for _, a := range anchors {
		if a == nil {
			return nil, errors.New("trust: nil anchor")
		}
		if !a.IsCA {
			return nil, fmt.Errorf("trust: anchor %q is not a CA certificate", a.Subject)
		}
		st.anchors.AddCert(a)
		st.anchorList = append(st.anchorList, a)
	}
	for _, c := range intermediates {
		if c == nil {
			return nil, errors.New("trust: nil intermediate")
		}
		if !c.IsCA {
			return nil, fmt.Errorf("trust: intermediate %q is not a CA certificate", c.Subject)
		}
		st.intermediates = append(st.intermediates, c)
	}
	cas := append(append([]*x509.Certificate(nil), st.anchorList...), st.intermediates...)
	for _, l := range crls {
		if l == nil {
			return nil, errors.New("trust: nil CRL")
		}
		info, err := checkCRL(l, cas)
		if err != nil {
			return nil, err
		}
		key := issuerKey(info.issuer)
		if prev, ok := st.crls[key]; !ok || info.thisUpdate.After(prev.thisUpdate) {
			st.crls[key] = info
		}
	}
	return st, nil
}

// checkCRL finds the configured CA that signed l and indexes its entries.
// RFC 5280 5.1.2.5: a conforming CRL carries nextUpdate; without it we
// could never tell a stale list, so it is refused.
func checkCRL(l *x509.RevocationList, cas []*x509.Certificate) (*crlInfo, error) {
	if l.NextUpdate.IsZero() {
		return nil, fmt.Errorf("trust: CRL of %q has no nextUpdate", l.Issuer)
	}
	var issuer *x509.Certificate
	var lastErr error
	for _, ca := range cas {
		if !bytes.Equal(ca.RawSubject, l.RawIssuer) {
			continue
		}
		// Checks the CA flag, the cRLSign key usage and the signature.
		if err := l.CheckSignatureFrom(ca); err != nil {
			lastErr = err
			continue
		}
		issuer = ca
		break
	}
	if issuer == nil {
		if lastErr != nil {
			return nil, fmt.Errorf("trust: CRL of %q: signature does not verify: %w", l.Issuer, lastErr)
		}
		return nil, fmt.Errorf("trust: CRL of %q: issuer is not a configured anchor or intermediate", l.Issuer)
	}
	info := &crlInfo{
		issuer:     issuer,
		thisUpdate: l.ThisUpdate,
		nextUpdate: l.NextUpdate,
		revoked:    make(map[string]struct{}, len(l.RevokedCertificateEntries)),
	}
	for _, e := range l.RevokedCertificateEntries {
		if e.SerialNumber != nil {
			info.revoked[e.SerialNumber.String()] = struct{}{}
		}
	}
	return info, nil
}

// issuerKey identifies a CA by subject and public key: a copy of an
// intermediate carried in a message, or re-issued with the same key, is the
// same issuer for its CRL.
func issuerKey(c *x509.Certificate) [32]byte {
	h := sha256.New()
	h.Write(c.RawSubject)
	h.Write(c.RawSubjectPublicKeyInfo)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// revocation checks every certificate of chain but the anchor against the
// CRL of its issuer. It returns nil, or a *Error (Revoked or
// RevocationUnknown), and the earliest nextUpdate consulted (zero when
// revocation is not checked).
func (st *trustState) revocation(chain []*x509.Certificate, now time.Time) (time.Time, *Error) {
	if !st.checkRevocation {
		return time.Time{}, nil
	}
	var earliest time.Time
	var unknown *Error
	for i := 0; i+1 < len(chain); i++ {
		cert, issuer := chain[i], chain[i+1]
		info := st.crls[issuerKey(issuer)]
		if info == nil {
			if unknown == nil {
				unknown = &Error{Reason: ReasonRevocationUnknown,
					Detail: fmt.Sprintf("no CRL configured for issuer %q: revocation status unknown", issuer.Subject.CommonName)}
			}
			continue
		}
		// A revoked serial is final even in a stale CRL: report it first.
		if _, ok := info.revoked[cert.SerialNumber.String()]; ok {
			return time.Time{}, &Error{Reason: ReasonRevoked,
				Detail: fmt.Sprintf("certificate %q (serial %x) is revoked by its issuer", cert.Subject.CommonName, cert.SerialNumber)}
		}
		if now.After(info.nextUpdate) {
			if unknown == nil {
				unknown = &Error{Reason: ReasonRevocationUnknown,
					Detail: fmt.Sprintf("CRL of %q expired at %s: revocation status unknown, try again later",
						issuer.Subject.CommonName, info.nextUpdate.UTC().Format(time.RFC3339))}
			}
			continue
		}
		if earliest.IsZero() || info.nextUpdate.Before(earliest) {
			earliest = info.nextUpdate
		}
	}
	if unknown != nil {
		return time.Time{}, unknown
	}
	return earliest, nil
}

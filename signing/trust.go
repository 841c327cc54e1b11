package signing

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mssrelay/filestamp"
)

// Trust holds anchors, intermediates, CRLs and the revocation policy. Safe
// for concurrent use.
//
// The material lives in an immutable trustState swapped atomically by
// Reload, so a verification in flight keeps a consistent view (anchors,
// CRLs and the verdict cache that was computed from them) and never needs a
// lock on the hot path.
//
// Revocation policy: every CA that issues a certificate of a chain (the
// anchor issuing the intermediate, the intermediate issuing the signer)
// must have a CRL that is not past its nextUpdate, unless the CA is listed
// as CRL-optional. A missing or stale CRL is ReasonRevocationUnknown, a
// temporary refusal: the health PKI publishes its CRLs and a relay that
// cannot see them must not accept a possibly revoked signer (RFC 5280 6.3
// makes an undetermined status the relying party's decision; ours is to
// defer).
type Trust struct {
	// files is set by LoadTrust/LoadTrustWith; Reload and Changed use it.
	files     LoadTrustOptions
	fromFiles bool
	clock     func() time.Time // nil: time.Now; for the racy-stamp check only

	reloadMu sync.Mutex // serialises Reload so two reloads cannot interleave
	state    atomic.Pointer[trustState]
	// certs caches the certificates messages carry; parsing does not
	// depend on the trust material, so it survives reloads.
	certs certCache
}

// LoadTrustOptions names the files of a trust store (LoadTrustWith).
type LoadTrustOptions struct {
	Anchors       []string // PEM files of root certificates; at least one certificate in all
	Intermediates []string // PEM files of intermediate CA certificates
	CRLs          []string // CRL files: PEM "X509 CRL" blocks, or one DER CRL
	// CRLOptionalIssuers are PEM files of CA certificates whose issued
	// certificates need no CRL. Every other issuer needs one.
	CRLOptionalIssuers []string
}

// TrustMaterial is parsed trust material (NewTrustWith).
type TrustMaterial struct {
	Anchors       []*x509.Certificate
	Intermediates []*x509.Certificate
	CRLs          []*x509.RevocationList
	// CRLOptionalIssuers are CA certificates whose issued certificates need
	// no CRL, matched by subject and public key.
	CRLOptionalIssuers []*x509.Certificate
}

// trustState is one immutable generation of the trust material.
type trustState struct {
	anchors       *x509.CertPool
	anchorList    []*x509.Certificate
	intermediates []*x509.Certificate
	// crls maps an issuer identity (issuerKey) to its newest CRL.
	crls map[[32]byte]*crlInfo
	// crlOptional holds the issuers (issuerKey) whose certificates need no
	// CRL.
	crlOptional map[[32]byte]struct{}
	cache       *verdictCache
	// stamps identify the files this generation was read from, for Changed;
	// nil for a Trust built by NewTrust.
	stamps []filestamp.Stamp
}

// crlInfo is a CRL whose signature was verified against a configured CA.
type crlInfo struct {
	issuer     *x509.Certificate
	thisUpdate time.Time
	nextUpdate time.Time
	revoked    map[string]struct{} // serial numbers, big.Int.String()
}

// CRLStatus describes one loaded CRL, for logs and monitoring (a CRL close
// to its nextUpdate means revocation-unknown refusals soon).
type CRLStatus struct {
	Issuer     string // issuer distinguished name
	ThisUpdate time.Time
	NextUpdate time.Time
	Revoked    int // number of revoked serials listed
}

// LoadTrust reads PEM files of anchors, intermediates and CRLs (PEM or DER).
// Every issuer needs a CRL (no CRL-optional issuer): it is
// LoadTrustWith(LoadTrustOptions{Anchors: …, Intermediates: …, CRLs: …}).
func LoadTrust(anchorFiles, intermediateFiles, crlFiles []string) (*Trust, error) {
	return LoadTrustWith(LoadTrustOptions{Anchors: anchorFiles, Intermediates: intermediateFiles, CRLs: crlFiles})
}

// LoadTrustWith reads the files of opts. Reload re-reads them and Changed
// reports whether they changed since.
func LoadTrustWith(opts LoadTrustOptions) (*Trust, error) {
	return loadTrust(opts, nil)
}

func loadTrust(opts LoadTrustOptions, clock func() time.Time) (*Trust, error) {
	t := &Trust{
		clock: clock,
		files: LoadTrustOptions{
			Anchors:            slices.Clone(opts.Anchors),
			Intermediates:      slices.Clone(opts.Intermediates),
			CRLs:               slices.Clone(opts.CRLs),
			CRLOptionalIssuers: slices.Clone(opts.CRLOptionalIssuers),
		},
		fromFiles: true,
	}
	st, err := t.loadFiles()
	if err != nil {
		return nil, err
	}
	t.state.Store(st)
	return t, nil
}

// NewTrust builds a trust store from parsed material in which every issuer
// needs a CRL: it is NewTrustWith(TrustMaterial{Anchors: …, Intermediates:
// …, CRLs: …}).
func NewTrust(anchors, intermediates []*x509.Certificate, crls []*x509.RevocationList) (*Trust, error) {
	return NewTrustWith(TrustMaterial{Anchors: anchors, Intermediates: intermediates, CRLs: crls})
}

// NewTrustWith builds a trust store from parsed material.
func NewTrustWith(m TrustMaterial) (*Trust, error) {
	st, err := newTrustState(m)
	if err != nil {
		return nil, err
	}
	t := &Trust{}
	t.state.Store(st)
	return t, nil
}

// Reload re-reads the files given to LoadTrust or LoadTrustWith (new CRLs,
// a rotated intermediate) and replaces the trust material at once; cached
// verdicts are dropped. On error the previous material, and its cache, stay
// in force, and Changed goes on reporting a change, so that a poller retries.
// For a Trust made by NewTrust it only drops the cached verdicts.
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

// ChecksRevocation reports whether at least one CRL is loaded. Whatever it
// says, a certificate whose issuer is not CRL-optional is refused without a
// fresh CRL from that issuer.
func (t *Trust) ChecksRevocation() bool { return len(t.state.Load().crls) > 0 }

// CRLs describes the CRLs in force (the newest per issuer), sorted by
// nextUpdate, soonest first.
func (t *Trust) CRLs() []CRLStatus {
	st := t.state.Load()
	out := make([]CRLStatus, 0, len(st.crls))
	for _, c := range st.crls {
		out = append(out, CRLStatus{Issuer: c.issuer.Subject.String(), ThisUpdate: c.thisUpdate,
			NextUpdate: c.nextUpdate, Revoked: len(c.revoked)})
	}
	slices.SortFunc(out, func(a, b CRLStatus) int {
		if c := a.NextUpdate.Compare(b.NextUpdate); c != 0 {
			return c
		}
		return strings.Compare(a.Issuer, b.Issuer)
	})
	return out
}

// loadFiles reads every configured file once and builds a generation from
// them. Each file is stamped (fstat) before it is read, so a change that
// lands while it is read shows up in the next Changed.
func (t *Trust) loadFiles() (*trustState, error) {
	var m TrustMaterial
	var stamps []filestamp.Stamp
	now := t.now()
	certs := func(what string, files []string, dst *[]*x509.Certificate) error {
		for _, f := range files {
			data, stamp, err := filestamp.Read(f, maxPEMFileSize, now)
			if err != nil {
				return fmt.Errorf("trust %s: %w", what, err)
			}
			stamps = append(stamps, stamp)
			cs, err := parseCertFile(f, data)
			if err != nil {
				return fmt.Errorf("trust %s: %w", what, err)
			}
			*dst = append(*dst, cs...)
		}
		return nil
	}
	if err := certs("anchors", t.files.Anchors, &m.Anchors); err != nil {
		return nil, err
	}
	if err := certs("intermediates", t.files.Intermediates, &m.Intermediates); err != nil {
		return nil, err
	}
	if err := certs("CRL-optional issuers", t.files.CRLOptionalIssuers, &m.CRLOptionalIssuers); err != nil {
		return nil, err
	}
	for _, f := range t.files.CRLs {
		data, stamp, err := filestamp.Read(f, maxPEMFileSize, now)
		if err != nil {
			return nil, fmt.Errorf("trust CRLs: %w", err)
		}
		stamps = append(stamps, stamp)
		l, err := parseCRLFile(f, data)
		if err != nil {
			return nil, fmt.Errorf("trust CRLs: %w", err)
		}
		m.CRLs = append(m.CRLs, l...)
	}
	st, err := newTrustState(m)
	if err != nil {
		return nil, err
	}
	st.stamps = stamps
	return st, nil
}

func parseCertFile(path string, data []byte) ([]*x509.Certificate, error) {
	certs, err := parsePEMCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	return certs, nil
}

// parseCRLFile reads "X509 CRL" PEM blocks, or one DER CRL when the file
// has no PEM block (CAs publish DER at their distribution points).
func parseCRLFile(path string, data []byte) ([]*x509.RevocationList, error) {
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

func newTrustState(m TrustMaterial) (*trustState, error) {
	if len(m.Anchors) == 0 {
		return nil, errors.New("trust: no trust anchor")
	}
	st := &trustState{
		anchors:     x509.NewCertPool(),
		crls:        make(map[[32]byte]*crlInfo),
		crlOptional: make(map[[32]byte]struct{}),
		cache:       newVerdictCache(verdictCacheSize),
	}
	for _, a := range m.Anchors {
		if a == nil {
			return nil, errors.New("trust: nil anchor")
		}
		if !a.IsCA {
			return nil, fmt.Errorf("trust: anchor %q is not a CA certificate", a.Subject)
		}
		st.anchors.AddCert(a)
		st.anchorList = append(st.anchorList, a)
	}
	for _, c := range m.Intermediates {
		if c == nil {
			return nil, errors.New("trust: nil intermediate")
		}
		if !c.IsCA {
			return nil, fmt.Errorf("trust: intermediate %q is not a CA certificate", c.Subject)
		}
		st.intermediates = append(st.intermediates, c)
	}
	for _, c := range m.CRLOptionalIssuers {
		if c == nil {
			return nil, errors.New("trust: nil CRL-optional issuer")
		}
		// Only a CA issues certificates: a leaf here is a configuration
		// mistake that would silently exempt nothing.
		if !c.IsCA {
			return nil, fmt.Errorf("trust: CRL-optional issuer %q is not a CA certificate", c.Subject)
		}
		st.crlOptional[issuerKey(c)] = struct{}{}
	}
	cas := append(append([]*x509.Certificate(nil), st.anchorList...), st.intermediates...)
	for _, l := range m.CRLs {
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
// RevocationUnknown), and the earliest nextUpdate of the fresh CRLs
// consulted (zero when none was).
//
// An issuer that is not CRL-optional must have a CRL not past its
// nextUpdate (RFC 5280 6.3.3 (a)(2): a CRL whose nextUpdate has passed is
// not current). A CRL-optional issuer's CRL is still consulted when one is
// loaded: a listed serial is revoked whatever the policy.
func (st *trustState) revocation(chain []*x509.Certificate, now time.Time) (time.Time, *Error) {
	var earliest time.Time
	var unknown *Error
	for i := 0; i+1 < len(chain); i++ {
		cert, issuer := chain[i], chain[i+1]
		key := issuerKey(issuer)
		info := st.crls[key]
		// A revoked serial is final even in a stale CRL: report it first.
		if info != nil {
			if _, ok := info.revoked[cert.SerialNumber.String()]; ok {
				return time.Time{}, &Error{Reason: ReasonRevoked,
					Detail: fmt.Sprintf("certificate %q (serial %x) is revoked by its issuer", cert.Subject.CommonName, cert.SerialNumber)}
			}
		}
		_, optional := st.crlOptional[key]
		switch {
		case info != nil && !now.After(info.nextUpdate):
			if earliest.IsZero() || info.nextUpdate.Before(earliest) {
				earliest = info.nextUpdate
			}
		case optional:
			// No current CRL, none required.
		case unknown != nil:
			// Keep the first unknown link; go on looking for a revocation.
		case info == nil:
			unknown = &Error{Reason: ReasonRevocationUnknown,
				Detail: fmt.Sprintf("no CRL of issuer %q is available: revocation status unknown, try again later", issuer.Subject.CommonName)}
		default:
			unknown = &Error{Reason: ReasonRevocationUnknown,
				Detail: fmt.Sprintf("the CRL of %q expired at %s: revocation status unknown, try again later",
					issuer.Subject.CommonName, info.nextUpdate.UTC().Format(time.RFC3339))}
		}
	}
	if unknown != nil {
		return time.Time{}, unknown
	}
	return earliest, nil
}

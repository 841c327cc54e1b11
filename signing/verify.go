package signing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	_ "crypto/sha256" // register SHA-256 for crypto.Hash.New
	_ "crypto/sha512" // register SHA-384 and SHA-512
)

// Limits on untrusted input.
const (
	// MaxDetachedSignatureSize bounds the PKCS#7 blob of a detached
	// signature (multipart/signed): it holds a signer info and a few
	// certificates, a few KiB in practice.
	MaxDetachedSignatureSize = 1 << 20
	// MaxOpaqueSize bounds the PKCS#7 blob of an opaque signature
	// (application/pkcs7-mime), which embeds the content. The relay's
	// message size limit normally applies first.
	MaxOpaqueSize = 32 << 20
	// maxMessageCertificates bounds the certificates a message may carry
	// (a signer and its chain are 2 to 4).
	maxMessageCertificates = 32
	// maxSigningTimeSkew is how far in the future a signing-time may be:
	// clocks drift, but a signature "from tomorrow" is not believable.
	maxSigningTimeSkew = 5 * time.Minute
	// RSA keys above this size cost verification time without adding
	// security anyone uses.
	maxRSABits = 8192
)

var reasonNames = map[Reason]string{
	ReasonMalformed:         "malformed",
	ReasonSignerCount:       "signer-count",
	ReasonAlgorithm:         "algorithm",
	ReasonBadSignature:      "bad-signature",
	ReasonUntrusted:         "untrusted",
	ReasonExpired:           "expired",
	ReasonFutureSigningTime: "future-signing-time",
	ReasonKeyUsage:          "key-usage",
	ReasonRevoked:           "revoked",
	ReasonRevocationUnknown: "revocation-unknown",
	ReasonEmailMismatch:     "email-mismatch",
	ReasonIDNPSMismatch:     "idnps-mismatch",
}

// String returns a short stable name for logs and metrics labels.
func (r Reason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

func refuse(r Reason, detail string, err error) *Error {
	return &Error{Reason: r, Detail: detail, Err: err}
}

// Verify checks one signature; failures are *Error.
//
// The checks run in a fixed order (docs/security-model.md), so that a
// message with several faults is always refused for the same, most basic
// one: structure, signer count, algorithms, signature and signed
// attributes, chain to an anchor now, signing time, key usages, revocation,
// e-mail address, IDNPS.
func (t *Trust) Verify(req Request) (*Result, error) {
	st := t.state.Load()
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}

	// 1. Structure.
	detached := req.Content != nil
	limit := MaxOpaqueSize
	if detached {
		limit = MaxDetachedSignatureSize
	}
	if len(req.PKCS7) == 0 {
		return nil, refuse(ReasonMalformed, "the signature is empty", nil)
	}
	if len(req.PKCS7) > limit {
		return nil, refuse(ReasonMalformed, fmt.Sprintf("the signature is larger than %d bytes", limit), nil)
	}
	der, err := normalizeBER(req.PKCS7)
	if err != nil {
		return nil, refuse(ReasonMalformed, "the signature is not valid BER/DER", err)
	}
	cms, err := parseCMS(der)
	if err != nil {
		return nil, refuse(ReasonMalformed, "the signature is not a CMS SignedData", err)
	}
	if !cms.eContentType.Equal(oidData) {
		// RFC 8551 3.1: S/MIME signs MIME entities as id-data.
		return nil, refuse(ReasonMalformed, fmt.Sprintf("the signed content type %v is not id-data", cms.eContentType), nil)
	}
	var content []byte
	if detached {
		if len(cms.content) > 0 {
			return nil, refuse(ReasonMalformed, "a detached signature must not embed content", nil)
		}
		content = req.Content
	} else {
		if len(cms.content) == 0 {
			return nil, refuse(ReasonMalformed, "the signature carries no content (detached signature without its content?)", nil)
		}
		content = cms.content
	}
	if len(cms.certs) > maxMessageCertificates {
		return nil, refuse(ReasonMalformed, fmt.Sprintf("the signature carries more than %d certificates", maxMessageCertificates), nil)
	}
	certs, err := t.certs.parse(cms.certs)
	if err != nil {
		return nil, refuse(ReasonMalformed, "a certificate in the signature does not parse", err)
	}

	// 2-4. One signer, allowed algorithms, the signature over the exact
	// bytes: the relay attributes a prescription to one prescriber; a
	// second signature would be unchecked or ambiguous.
	leaf, attrs, rerr := checkSignature(cms, certs, content, "message", "altered in transit?")
	if rerr != nil {
		return nil, rerr
	}

	// 5-8. Certificate-level checks, cached per certificate set.
	key := chainCacheKey(leaf, certs)
	v := st.cache.get(key, now)
	var chains [][]*x509.Certificate
	if v == nil {
		var rerr *Error
		chains, rerr = st.verifyChain(leaf, certs, now)
		if rerr != nil {
			return nil, rerr
		}
	}
	// 6. A signing time in the future is a lie or a broken clock; a
	// signing time in the past proves nothing (the chain was checked at
	// now, whatever the sender claims).
	if attrs.hasSigningTime && attrs.signingTime.After(now.Add(maxSigningTimeSkew)) {
		return nil, refuse(ReasonFutureSigningTime, fmt.Sprintf("the signing time %s is in the future (check the signer's clock)",
			attrs.signingTime.UTC().Format(time.RFC3339)), nil)
	}
	if v == nil {
		// 7. Key usage and extended key usage.
		chain, rerr := checkUsage(chains)
		if rerr != nil {
			return nil, rerr
		}
		// 8. Revocation.
		crlUntil, rerr := st.revocation(chain, now)
		if rerr != nil {
			return nil, rerr
		}
		v = &verdict{chain: chain}
		for _, c := range chain {
			if v.from.IsZero() || c.NotBefore.After(v.from) {
				v.from = c.NotBefore
			}
			if v.until.IsZero() || c.NotAfter.Before(v.until) {
				v.until = c.NotAfter
			}
		}
		if !crlUntil.IsZero() && crlUntil.Before(v.until) {
			v.until = crlUntil
		}
		st.cache.put(key, v, now)
	}

	signer := &Signer{
		Cert:   leaf,
		Chain:  append([]*x509.Certificate(nil), v.chain...),
		Emails: certEmails(leaf),
		IDNPS:  certIDNPS(leaf),
	}

	// 9. The certificate must be the From: address's (RFC 8550 3: the
	// address in the certificate must match the sender's address).
	if req.From != "" && !emailsContain(signer.Emails, req.From) {
		certAddr := "no e-mail address"
		if len(signer.Emails) > 0 {
			certAddr = strings.Join(signer.Emails, ", ")
		}
		return nil, refuse(ReasonEmailMismatch, fmt.Sprintf("the signing certificate is for %s, not for the From: address %s", certAddr, req.From), nil)
	}

	// 10. The certificate must be the registered prescriber's.
	if req.RPPS != "" && signer.IDNPS != "8"+req.RPPS {
		got := signer.IDNPS
		if got == "" {
			got = "no IDNPS"
		}
		return nil, refuse(ReasonIDNPSMismatch, fmt.Sprintf("the signing certificate carries %s, the sender is registered with RPPS %s", got, req.RPPS), nil)
	}

	return &Result{Signer: signer, Content: content}, nil
}

// findSignerCert returns the certificate the SignerInfo's sid names
// (RFC 5652 5.3) among the certificates the message carries, or a
// Malformed refusal. The signer's certificate must travel with the message
// (RFC 8551 2.5.x): the relay has no directory to fetch it from, and a
// configured intermediate is an authority, never a signer.
func findSignerCert(certs []*x509.Certificate, si *signerInfo) (*x509.Certificate, *Error) {
	if si.subjectKeyID != nil {
		return findSignerCertByKeyID(certs, si.subjectKeyID)
	}
	if si.serial != nil {
		for _, c := range certs {
			if c.SerialNumber.Cmp(si.serial) == 0 && bytes.Equal(c.RawIssuer, si.issuerRaw) {
				return c, nil
			}
		}
	}
	return nil, refuse(ReasonMalformed, "the signer's certificate (by issuer and serial number) is not included in the signature", nil)
}

// findSignerCertByKeyID finds the certificate whose subject key identifier
// extension (RFC 5280 4.2.1.2) holds exactly keyID. The identifier is not
// unique the way issuer and serial number are (two certificates of one key,
// or a certificate made to collide, share it), so when several different
// certificates match, the message is refused rather than one picked: the
// certificate decides the prescriber's identity (e-mail, IDNPS). The same
// certificate included twice is not ambiguous.
func findSignerCertByKeyID(certs []*x509.Certificate, keyID []byte) (*x509.Certificate, *Error) {
	var found *x509.Certificate
	for _, c := range certs {
		if len(c.SubjectKeyId) == 0 || !bytes.Equal(c.SubjectKeyId, keyID) {
			continue
		}
		if found != nil && !bytes.Equal(found.Raw, c.Raw) {
			return nil, refuse(ReasonMalformed, fmt.Sprintf(
				"several different certificates in the signature have the signer's subject key identifier %s: the signer is ambiguous", shortHex(keyID)), nil)
		}
		found = c
	}
	if found == nil {
		return nil, refuse(ReasonMalformed, fmt.Sprintf(
			"no certificate in the signature has the signer's subject key identifier %s (the signer's certificate must be included)", shortHex(keyID)), nil)
	}
	return found, nil
}

// shortHex renders an identifier from the message for a refusal detail,
// cut short: the sender chooses its length, and a key identifier is 20
// bytes in practice (RFC 5280 4.2.1.2, RFC 7093).
func shortHex(b []byte) string {
	const limit = 32
	if len(b) > limit {
		return fmt.Sprintf("%X… (%d bytes)", b[:limit], len(b))
	}
	return fmt.Sprintf("%X", b)
}

// checkAlgorithms enforces the algorithm policy: SHA-256/384/512 digests;
// RSA PKCS#1 v1.5 with at least 2048 bits, or ECDSA on P-256/P-384. SHA-1
// and MD5 are broken for signatures (RFC 8551 2.1 lets receivers refuse
// them); RSA-PSS and EdDSA are not supported by the PKCS#7 library.
func checkAlgorithms(si *signerInfo, leaf *x509.Certificate) (crypto.Hash, x509.SignatureAlgorithm, *Error) {
	var hash crypto.Hash
	switch {
	case si.digestAlg.Equal(oidSHA256):
		hash = crypto.SHA256
	case si.digestAlg.Equal(oidSHA384):
		hash = crypto.SHA384
	case si.digestAlg.Equal(oidSHA512):
		hash = crypto.SHA512
	case si.digestAlg.Equal(oidSHA1):
		return 0, 0, refuse(ReasonAlgorithm, "SHA-1 digests are refused: sign with SHA-256", nil)
	default:
		return 0, 0, refuse(ReasonAlgorithm, fmt.Sprintf("digest algorithm %v is refused: sign with SHA-256", si.digestAlg), nil)
	}
	switch pub := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < 2048 || bits > maxRSABits {
			return 0, 0, refuse(ReasonAlgorithm, fmt.Sprintf("RSA key of %d bits is refused (2048 to %d required)", bits, maxRSABits), nil)
		}
		want := pick(hash, x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA)
		switch {
		case si.sigAlg.Equal(oidRSAEncryption),
			hash == crypto.SHA256 && si.sigAlg.Equal(oidSHA256WithRSA),
			hash == crypto.SHA384 && si.sigAlg.Equal(oidSHA384WithRSA),
			hash == crypto.SHA512 && si.sigAlg.Equal(oidSHA512WithRSA):
			return hash, want, nil
		}
		return 0, 0, refuse(ReasonAlgorithm, fmt.Sprintf("signature algorithm %v is refused with an RSA key and this digest (PKCS#1 v1.5 required)", si.sigAlg), nil)
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384() {
			return 0, 0, refuse(ReasonAlgorithm, fmt.Sprintf("elliptic curve %s is refused (P-256 or P-384 required)", pub.Curve.Params().Name), nil)
		}
		want := pick(hash, x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512)
		switch {
		case si.sigAlg.Equal(oidECPublicKey), // RFC 5753 7.1.1 lets some signers name the key type
			hash == crypto.SHA256 && si.sigAlg.Equal(oidECDSAWithSHA2),
			hash == crypto.SHA384 && si.sigAlg.Equal(oidECDSAWithSHA3),
			hash == crypto.SHA512 && si.sigAlg.Equal(oidECDSAWithSHA5):
			return hash, want, nil
		}
		return 0, 0, refuse(ReasonAlgorithm, fmt.Sprintf("signature algorithm %v is refused with an ECDSA key and this digest", si.sigAlg), nil)
	default:
		return 0, 0, refuse(ReasonAlgorithm, fmt.Sprintf("signer key type %T is refused (RSA or ECDSA required)", leaf.PublicKey), nil)
	}
}

func pick(h crypto.Hash, s256, s384, s512 x509.SignatureAlgorithm) x509.SignatureAlgorithm {
	switch h {
	case crypto.SHA384:
		return s384
	case crypto.SHA512:
		return s512
	}
	return s256
}

// verifyChain builds the chains from leaf to a configured anchor, valid at
// now. The message's certificates help as intermediates only: an anchor
// comes from configuration, never from the sender.
//
// pkcs7's VerifyWithChain validates at the signing time the sender wrote,
// which lets a backdated signature from an expired certificate through; we
// use x509 with CurrentTime = now instead. The extended key usage is
// checked separately (checkUsage) so that its refusal has its own reason.
func (st *trustState) verifyChain(leaf *x509.Certificate, msgCerts []*x509.Certificate, now time.Time) ([][]*x509.Certificate, *Error) {
	inter := x509.NewCertPool()
	for _, c := range st.intermediates {
		inter.AddCert(c)
	}
	for _, c := range msgCerts {
		if c != leaf {
			inter.AddCert(c)
		}
	}
	opts := x509.VerifyOptions{
		Roots:         st.anchors,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		var cie x509.CertificateInvalidError
		if errors.As(err, &cie) && cie.Reason == x509.Expired {
			return nil, refuse(ReasonExpired, validityDetail(cie.Cert, now), err)
		}
		// x509 reports an expired intermediate or anchor as "unknown
		// authority" (the candidate was skipped). Try again at the edges of
		// the leaf's validity: a chain that exists then, but not now, has a
		// certificate out of its validity period now.
		for _, at := range []time.Time{leaf.NotBefore, leaf.NotAfter} {
			opts.CurrentTime = at
			if then, err2 := leaf.Verify(opts); err2 == nil {
				for _, c := range then[0] {
					if now.Before(c.NotBefore) || now.After(c.NotAfter) {
						return nil, refuse(ReasonExpired, validityDetail(c, now), err)
					}
				}
			}
		}
		return nil, refuse(ReasonUntrusted, "the signing certificate is not issued by a trusted authority", err)
	}
	// Weak keys anywhere in the chain undermine the signer's strong one.
	for _, chain := range chains {
		for _, c := range chain[1:] {
			if pub, ok := c.PublicKey.(*rsa.PublicKey); ok && pub.N.BitLen() < 2048 {
				return nil, refuse(ReasonAlgorithm, fmt.Sprintf("the authority %q has an RSA key of %d bits (2048 required)", c.Subject.CommonName, pub.N.BitLen()), nil)
			}
		}
	}
	return chains, nil
}

func validityDetail(c *x509.Certificate, now time.Time) string {
	name := c.Subject.CommonName
	if now.Before(c.NotBefore) {
		return fmt.Sprintf("the certificate %q is not valid before %s", name, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("the certificate %q expired on %s", name, c.NotAfter.UTC().Format(time.RFC3339))
}

// checkUsage enforces key usage and extended key usage and returns the first
// chain whose authorities may issue e-mail certificates.
//
// RFC 8550 4.4.2: when present, key usage must allow digitalSignature or
// nonRepudiation (contentCommitment); when absent, both are presumed.
// RFC 8550 4.4.4 accepts a certificate without extended key usage; the
// health PKI always sets emailProtection on signing certificates, so we
// require it (or anyExtendedKeyUsage) to keep TLS or code-signing
// certificates of the same PKI from signing prescriptions.
func checkUsage(chains [][]*x509.Certificate) ([]*x509.Certificate, *Error) {
	leaf := chains[0][0]
	if leaf.KeyUsage != 0 && leaf.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return nil, refuse(ReasonKeyUsage, "the certificate's key usage allows neither digital signature nor non-repudiation", nil)
	}
	if !allowsEmail(leaf, false) {
		return nil, refuse(ReasonKeyUsage, "the certificate is not for e-mail protection (extended key usage)", nil)
	}
	for _, chain := range chains {
		ok := true
		for _, ca := range chain[1:] {
			if !allowsEmail(ca, true) {
				ok = false
				break
			}
		}
		if ok {
			return chain, nil
		}
	}
	return nil, refuse(ReasonKeyUsage, "an issuing authority of the certificate is not allowed to issue e-mail protection certificates", nil)
}

// allowsEmail reports whether c's extended key usage includes
// emailProtection or anyExtendedKeyUsage. For a CA, an absent extension
// means no restriction.
func allowsEmail(c *x509.Certificate, isCA bool) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return isCA
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageEmailProtection || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// certEmails returns the SAN rfc822Names, else the subject emailAddress
// attributes (RFC 8550 3: older certificates carry only the latter).
func certEmails(c *x509.Certificate) []string {
	if len(c.EmailAddresses) > 0 {
		return append([]string(nil), c.EmailAddresses...)
	}
	var out []string
	for _, atv := range c.Subject.Names {
		if atv.Type.Equal(oidEmailAddress) {
			if s, ok := atv.Value.(string); ok && s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// emailsContain compares addresses as RFC 5321 2.4 says: the local part is
// case-sensitive (compared exactly), the domain is not.
func emailsContain(emails []string, addr string) bool {
	addr = strings.TrimSpace(addr)
	al, ad, ok := splitAddr(addr)
	if !ok {
		return false
	}
	for _, e := range emails {
		el, ed, ok := splitAddr(e)
		if ok && el == al && strings.EqualFold(ed, ad) {
			return true
		}
	}
	return false
}

func splitAddr(a string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return "", "", false
	}
	return a[:i], a[i+1:], true
}

// certIDNPS returns the IDNPS ("8" + 11-digit RPPS) from the subject
// serialNumber, else from the CN before "/" (IGC-Santé: CN =
// "<IDNPS>/<name>"). When both are present and differ, the certificate is
// ambiguous and no IDNPS is returned.
func certIDNPS(c *x509.Certificate) string {
	valid := func(s string) bool { return len(s) == 12 && s[0] == '8' && isDigits(s, 12) }
	fromSerial := strings.TrimSpace(c.Subject.SerialNumber)
	fromCN := ""
	if i := strings.IndexByte(c.Subject.CommonName, '/'); i > 0 {
		fromCN = c.Subject.CommonName[:i]
	}
	switch {
	case valid(fromSerial) && valid(fromCN) && fromSerial != fromCN:
		return ""
	case valid(fromSerial):
		return fromSerial
	case fromSerial == "" && valid(fromCN):
		return fromCN
	}
	return ""
}

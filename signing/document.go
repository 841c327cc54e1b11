package signing

import (
	"bytes"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"
)

// maxDocumentSignatureInput bounds a document signature as given, before
// PEM decoding: base64 grows the DER by 4/3, plus line ends and armour.
const maxDocumentSignatureInput = 2 * MaxDetachedSignatureSize

// PEM block types a document signature may come in: "CMS" is what
// `openssl cms -outform PEM` writes, "PKCS7" what `openssl smime -pk7out`
// and most other tools write (RFC 7468 8 and 9).
var documentPEMTypes = map[string]bool{"CMS": true, "PKCS7": true}

// VerifyDocument checks a detached CMS SignedData (RFC 5652) over content,
// a document rather than an e-mail (the operators' whitelist published by
// the national agency, for instance). sig is DER (or BER), or one PEM
// block of type "CMS" or "PKCS7". It returns the signer's certificate;
// failures are *Error with the Reasons of Verify.
//
// The checks are Verify's, in Verify's order, on the same trust state
// (anchors, intermediates, CRLs and the CRL policy): structure, exactly one
// signer, algorithms, signature over the exact bytes through the
// content-type and message-digest signed attributes, chain to an anchor
// valid at now (not at a signing time the signer claims), signing time not
// in the future, key usage, revocation. What is specific to e-mail is left
// out: no extended key usage (an organisation's document-signing
// certificate need not carry emailProtection), no e-mail address, no IDNPS.
// Key usage, when present, must allow digitalSignature or nonRepudiation
// (RFC 5280 4.2.1.3).
//
// Any signer that chains to the trust anchors passes, which for the health
// PKI is every professional: a caller that expects one publisher must
// check the returned certificate's identity itself.
//
// Verdicts are not cached (documents are verified at load time, rarely),
// and never written into the message verdict cache: a certificate that
// passed here has not passed Verify's extended key usage check.
//
// A zero now means time.Now().
func (t *Trust) VerifyDocument(sig, content []byte, now time.Time) (*x509.Certificate, error) {
	st := t.state.Load()
	if now.IsZero() {
		now = time.Now()
	}

	// 1. Structure.
	if len(bytes.TrimSpace(sig)) == 0 {
		return nil, refuse(ReasonMalformed, "the document signature is empty", nil)
	}
	if len(sig) > maxDocumentSignatureInput {
		return nil, refuse(ReasonMalformed, fmt.Sprintf("the document signature is larger than %d bytes", maxDocumentSignatureInput), nil)
	}
	raw, rerr := documentSignatureDER(sig)
	if rerr != nil {
		return nil, rerr
	}
	if len(raw) > MaxDetachedSignatureSize {
		return nil, refuse(ReasonMalformed, fmt.Sprintf("the document signature is larger than %d bytes", MaxDetachedSignatureSize), nil)
	}
	der, err := normalizeBER(raw)
	if err != nil {
		return nil, refuse(ReasonMalformed, "the document signature is not valid BER/DER", err)
	}
	cms, err := parseCMS(der)
	if err != nil {
		return nil, refuse(ReasonMalformed, "the document signature is not a CMS SignedData", err)
	}
	if !cms.eContentType.Equal(oidData) {
		// RFC 5652 4: arbitrary octet strings are id-data; a detached
		// signature over a file is id-data (OpenSSL writes nothing else).
		return nil, refuse(ReasonMalformed, fmt.Sprintf("the signed content type %v is not id-data", cms.eContentType), nil)
	}
	if len(cms.content) > 0 {
		// An embedded copy could differ from the file beside it; only
		// the file's bytes are used, so only a detached form is accepted.
		return nil, refuse(ReasonMalformed, "the document signature embeds content: a detached signature is required", nil)
	}
	if len(cms.certs) > maxMessageCertificates {
		return nil, refuse(ReasonMalformed, fmt.Sprintf("the document signature carries more than %d certificates", maxMessageCertificates), nil)
	}
	certs, err := t.certs.parse(cms.certs)
	if err != nil {
		return nil, refuse(ReasonMalformed, "a certificate in the document signature does not parse", err)
	}

	// 2-4. One signer (the document is attributed to one publisher),
	// allowed algorithms, the signature over the exact bytes.
	leaf, attrs, rerr := checkSignature(cms, certs, content, "document", "altered, or not the signed file?")
	if rerr != nil {
		return nil, rerr
	}

	// 5. Chain to a configured anchor, valid now.
	chains, rerr := st.verifyChain(leaf, certs, now)
	if rerr != nil {
		return nil, rerr
	}

	// 6. A signing time in the future is a lie or a broken clock (see
	// Verify); one in the past proves nothing.
	if attrs.hasSigningTime && attrs.signingTime.After(now.Add(maxSigningTimeSkew)) {
		return nil, refuse(ReasonFutureSigningTime, fmt.Sprintf("the signing time %s is in the future (check the signer's clock)",
			attrs.signingTime.UTC().Format(time.RFC3339)), nil)
	}

	// 7. Key usage (RFC 5280 4.2.1.3): when present it must allow
	// digitalSignature or nonRepudiation (contentCommitment); when absent
	// the key is unrestricted.
	if leaf.KeyUsage != 0 && leaf.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return nil, refuse(ReasonKeyUsage, "the certificate's key usage allows neither digital signature nor non-repudiation", nil)
	}

	// 8. Revocation of every certificate of the chain but the anchor,
	// under the trust store's CRL policy. x509 puts the chain it prefers
	// first; Verify takes the first whose authorities may issue e-mail
	// certificates, which is the same one when no authority restricts
	// its extended key usage.
	if _, rerr := st.revocation(chains[0], now); rerr != nil {
		return nil, rerr
	}
	return leaf, nil
}

// documentSignatureDER returns the DER or BER of sig: sig itself, or the
// content of its one PEM block. A PEM file must hold exactly one CMS
// block: a second signature beside it would be ignored, which is how a
// reader would be misled about who signed.
func documentSignatureDER(sig []byte) ([]byte, *Error) {
	trimmed := bytes.TrimLeft(sig, " \t\r\n")
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return sig, nil
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, refuse(ReasonMalformed, "the document signature is not a valid PEM block", nil)
	}
	if !documentPEMTypes[block.Type] {
		return nil, refuse(ReasonMalformed, fmt.Sprintf("the document signature is a PEM %q block, not CMS or PKCS7", block.Type), nil)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, refuse(ReasonMalformed, "the document signature file holds more than one PEM block", nil)
	}
	if len(block.Bytes) == 0 {
		return nil, refuse(ReasonMalformed, "the document signature PEM block is empty", nil)
	}
	return block.Bytes, nil
}

// checkSignature runs the checks Verify and VerifyDocument share, in their
// order: exactly one signer and its certificate (2), allowed algorithms
// before any cryptographic work with them (3), and the signature over the
// exact content through the signed attributes (4, RFC 5652 5.4, 5.6).
// Without signed attributes the signature would cover the content
// directly: that form is refused, so that one policy holds for everything
// the relay verifies. what names the object in refusals ("message",
// "document"), alteredHint says what a digest mismatch suggests.
func checkSignature(cms *parsedCMS, certs []*x509.Certificate, content []byte, what, alteredHint string) (*x509.Certificate, *signedAttrs, *Error) {
	if n := len(cms.signers); n != 1 {
		return nil, nil, refuse(ReasonSignerCount, fmt.Sprintf("the %s has %d signers, exactly one is required", what, n), nil)
	}
	si, err := parseSignerInfo(cms.signers[0])
	if err != nil {
		return nil, nil, refuse(ReasonMalformed, "the signer information does not parse", err)
	}
	leaf, rerr := findSignerCert(certs, si)
	if rerr != nil {
		return nil, nil, rerr
	}
	hash, sigAlg, rerr := checkAlgorithms(si, leaf)
	if rerr != nil {
		return nil, nil, rerr
	}
	if !si.hasSignedAttr {
		return nil, nil, refuse(ReasonMalformed, fmt.Sprintf("the %s signature has no signed attributes (content-type and message-digest are required)", what), nil)
	}
	attrs, err := parseSignedAttrs(si.signedAttrs)
	if err != nil {
		return nil, nil, refuse(ReasonMalformed, "the signed attributes do not parse", err)
	}
	if !attrs.contentType.Equal(cms.eContentType) {
		// RFC 5652 11.1: the attribute must name the signed content type.
		return nil, nil, refuse(ReasonBadSignature, "the signed content-type attribute does not match the content", nil)
	}
	h := hash.New()
	h.Write(content)
	if subtle.ConstantTimeCompare(h.Sum(nil), attrs.messageDigest) != 1 {
		return nil, nil, refuse(ReasonBadSignature, fmt.Sprintf("the %s does not match the signed message digest (%s)", what, alteredHint), nil)
	}
	if err := leaf.CheckSignature(sigAlg, si.signedAttrs, si.signature); err != nil {
		return nil, nil, refuse(ReasonBadSignature, "the signature does not verify with the signer's certificate", err)
	}
	return leaf, attrs, nil
}

// CheckRevocation checks every certificate of chain but the last (the
// anchor) against the CRLs under the trust store's policy, as Verify does
// for a signer: nil, or an *Error with ReasonRevoked, or
// ReasonRevocationUnknown when a required CRL is missing or stale (the
// caller should answer "try again later"). The relay checks the client
// certificates of other operators with it (crypto/tls checks only the
// chain).
func (t *Trust) CheckRevocation(chain []*x509.Certificate, now time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	if _, rerr := t.state.Load().revocation(chain, now); rerr != nil {
		return rerr
	}
	return nil
}

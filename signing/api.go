// Package signing holds the trust store, S/MIME signature verification with
// typed failure reasons, the relay's own signer, and the development PKI used
// by the demo and by tests.
package signing

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"time"
)

// Reason says why a signature was refused. Each reason maps to one SMTP
// reply in the relay (see docs/security-model.md).
type Reason int

const (
	ReasonMalformed         Reason = iota + 1 // PKCS#7 does not parse, too large, no content
	ReasonSignerCount                         // not exactly one signer
	ReasonAlgorithm                           // digest/signature algorithm or key size not allowed
	ReasonBadSignature                        // signature or message-digest does not match the bytes
	ReasonUntrusted                           // no chain to a configured anchor
	ReasonExpired                             // a certificate of the chain is not valid now
	ReasonFutureSigningTime                   // signing-time attribute too far in the future
	ReasonKeyUsage                            // key usage / extended key usage do not allow e-mail signing
	ReasonRevoked                             // certificate revoked by a CRL
	ReasonRevocationUnknown                   // CRL missing or stale: transient
	ReasonEmailMismatch                       // certificate e-mail is not the From: address
	ReasonIDNPSMismatch                       // IDNPS in the subject differs from the registered RPPS
)

// Error is a refused verification. Temporary reports whether the sender
// should retry later (revocation status unknown).
type Error struct {
	Reason Reason
	Detail string // human-readable, safe to show to the sender
	Err    error  // underlying cause, for logs
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Detail, e.Err)
	}
	return e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the failure may go away on retry.
func (e *Error) Temporary() bool { return e.Reason == ReasonRevocationUnknown }

// Signer is what a verified signature proves about who signed.
type Signer struct {
	Cert   *x509.Certificate
	Chain  []*x509.Certificate // leaf first, anchor last
	Emails []string            // SAN rfc822Name, else subject emailAddress
	IDNPS  string              // "8" + RPPS when the subject carries it, else ""
}

// RPPS returns the RPPS (IDNPS without its leading 8), or "".
func (s *Signer) RPPS() string {
	if len(s.IDNPS) == 12 && s.IDNPS[0] == '8' {
		return s.IDNPS[1:]
	}
	return ""
}

// Request is one signature to verify.
type Request struct {
	PKCS7   []byte    // DER (or BER) of the SignedData
	Content []byte    // detached form: the exact signed bytes; nil for opaque
	From    string    // the From: address the certificate must carry ("" skips the check)
	RPPS    string    // registered RPPS of the sender ("" skips the check)
	Now     time.Time // zero means time.Now()
}

// Result is a successful verification.
type Result struct {
	Signer  *Signer
	Content []byte // the signed content (for opaque signatures, extracted from the PKCS#7)
}

// KeyPair is a certificate, its private key and the intermediates that
// chain it to an anchor (leaf excluded, anchor excluded).
type KeyPair struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

package signing

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/smallstep/pkcs7"
)

// SignDetached returns a DER SignedData (SHA-256) over content, without the
// content, with the certificate chain included.
func SignDetached(kp *KeyPair, content []byte) ([]byte, error) {
	der, err := sign(kp, content, true)
	if err != nil {
		return nil, fmt.Errorf("sign detached: %w", err)
	}
	return der, nil
}

// SignOpaque returns a DER SignedData (SHA-256) that embeds content.
func SignOpaque(kp *KeyPair, content []byte) ([]byte, error) {
	der, err := sign(kp, content, false)
	if err != nil {
		return nil, fmt.Errorf("sign opaque: %w", err)
	}
	return der, nil
}

// SignNotification signs a notification the relay emits (an RFC 3464 DSN or
// an RFC 8098 MDN: the MIME entity that becomes the first part of a
// multipart/signed, RFC 8551 3.5) with the operator's organisation
// certificate. The signature is the same as SignDetached's (SHA-256,
// signing-time, chain without the anchor); before signing, the key pair is
// checked with CheckNotificationSigner at the current time (the time the
// PKCS#7 library writes as signing-time), so that a certificate receivers
// would refuse fails here, once, rather than at every receiver.
func SignNotification(kp *KeyPair, content []byte) ([]byte, error) {
	if err := CheckNotificationSigner(kp, "", time.Now()); err != nil {
		return nil, fmt.Errorf("sign notification: %w", err)
	}
	der, err := sign(kp, content, true)
	if err != nil {
		return nil, fmt.Errorf("sign notification: %w", err)
	}
	return der, nil
}

// CheckNotificationSigner reports why kp cannot sign the relay's
// notifications sent from address at now, or nil. A receiver that verifies
// like Verify (or like `openssl cms -verify -purpose smimesign`) requires:
//   - the certificate valid at now;
//   - key usage, when present, allowing digitalSignature or nonRepudiation
//     (RFC 8550 4.4.2);
//   - extended key usage emailProtection (RFC 8550 4.4.4; Verify refuses a
//     certificate without it);
//   - an RSA key of 2048 to 8192 bits or an ECDSA P-256/P-384 key (what
//     Verify and the PKCS#7 library accept);
//   - when address is not "", address among the certificate's e-mail
//     addresses (RFC 8550 3): local part exactly, domain in any case.
//
// The relay calls it at start-up with the configured signer address.
func CheckNotificationSigner(kp *KeyPair, address string, now time.Time) error {
	if kp == nil || kp.Cert == nil || kp.Key == nil {
		return errors.New("incomplete key pair")
	}
	c := kp.Cert
	name := c.Subject.CommonName
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return errors.New(validityDetail(c, now))
	}
	if c.KeyUsage != 0 && c.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return fmt.Errorf("certificate %q: key usage allows neither digital signature nor non-repudiation", name)
	}
	hasEmail := false
	for _, u := range c.ExtKeyUsage {
		hasEmail = hasEmail || u == x509.ExtKeyUsageEmailProtection
	}
	if !hasEmail {
		return fmt.Errorf("certificate %q: extended key usage lacks emailProtection", name)
	}
	switch pub := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < 2048 || bits > maxRSABits {
			return fmt.Errorf("certificate %q: RSA key of %d bits (2048 to %d required)", name, bits, maxRSABits)
		}
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384() {
			return fmt.Errorf("certificate %q: elliptic curve %s (P-256 or P-384 required)", name, pub.Curve.Params().Name)
		}
	default:
		return fmt.Errorf("certificate %q: key type %T cannot sign S/MIME here (RSA or ECDSA required)", name, c.PublicKey)
	}
	if !publicKeysEqual(c.PublicKey, kp.Key.Public()) {
		return fmt.Errorf("certificate %q: the private key does not match it", name)
	}
	if address != "" && !emailsContain(certEmails(c), address) {
		have := "no e-mail address"
		if e := certEmails(c); len(e) > 0 {
			have = strings.Join(e, ", ")
		}
		return fmt.Errorf("certificate %q is for %s, not for %s", name, have, address)
	}
	return nil
}

// sign builds the SignedData with the PKCS#7 library. The library adds the
// content-type, message-digest and signing-time signed attributes
// (RFC 8551 2.5 asks for signing-time) and defaults to SHA-1, which
// receivers (us included) refuse: SHA-256 is set explicitly (RFC 8551 2.1).
// The chain goes in so a receiver that only holds the root can verify.
func sign(kp *KeyPair, content []byte, detached bool) ([]byte, error) {
	if kp == nil || kp.Cert == nil || kp.Key == nil {
		return nil, errors.New("incomplete key pair")
	}
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		return nil, err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if len(kp.Chain) > 0 {
		err = sd.AddSignerChain(kp.Cert, kp.Key, kp.Chain, pkcs7.SignerInfoConfig{})
	} else {
		err = sd.AddSigner(kp.Cert, kp.Key, pkcs7.SignerInfoConfig{})
	}
	if err != nil {
		return nil, err
	}
	if detached {
		sd.Detach()
	}
	return sd.Finish()
}

package signing

import (
	"errors"
	"fmt"

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

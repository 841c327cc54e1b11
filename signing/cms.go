package signing

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"mssrelay/mime"
)

// ASN.1 object identifiers used by the verifier (RFC 5652, RFC 5754,
// RFC 5758, RFC 8017).
var (
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidEmailAddress  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}

	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA256WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidECPublicKey   = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidECDSAWithSHA2 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSAWithSHA3 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSAWithSHA5 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
)

// The structures below mirror RFC 5652 closely enough to check what the
// PKCS#7 library does not: its SignedData parser discards the ASN.1 error
// (a truncated SignerInfos silently becomes "no signer"), knows only the
// issuerAndSerialNumber form of a signer identifier, never compares the
// content-type attribute, and re-encodes the signed attributes instead of
// using the bytes that were signed. The verifier therefore reads the whole
// SignedData itself; the library only signs (sign.go).

// rawContentInfo is ContentInfo (RFC 5652 3) and EncapsulatedContentInfo
// (RFC 5652 5.2), which have the same shape.
type rawContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,optional,tag:0"`
}

// rawSignedData is SignedData (RFC 5652 5.1).
type rawSignedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContentInfo rawContentInfo
	Certificates     asn1.RawValue   `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue   `asn1:"optional,tag:1"`
	SignerInfos      []asn1.RawValue `asn1:"set"`
}

// rawSignerInfo is SignerInfo (RFC 5652 5.3). SID is kept raw: it is either
// IssuerAndSerialNumber (a SEQUENCE) or [0] IMPLICIT SubjectKeyIdentifier.
type rawSignerInfo struct {
	Version            int
	SID                asn1.RawValue
	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignedAttrs        asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnsignedAttrs      asn1.RawValue `asn1:"optional,tag:1"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type rawAttribute struct {
	Type   asn1.ObjectIdentifier
	Values asn1.RawValue // SET OF AttributeValue
}

// signerInfo is the one signer of a message, decoded and checked for shape.
// Exactly one of the two forms of sid (RFC 5652 5.3) is set: issuerRaw and
// serial, or subjectKeyID.
type signerInfo struct {
	issuerRaw     []byte
	serial        *big.Int
	subjectKeyID  []byte // SubjectKeyIdentifier (RFC 5280 4.2.1.2), the KeyIdentifier octets
	digestAlg     asn1.ObjectIdentifier
	sigAlg        asn1.ObjectIdentifier
	signature     []byte
	signedAttrs   []byte // DER of the SET OF Attribute that was signed (RFC 5652 5.4)
	hasSignedAttr bool
}

// parsedCMS is the strict view of a SignedData.
type parsedCMS struct {
	eContentType asn1.ObjectIdentifier
	// content is eContent (RFC 5652 5.2): the signed bytes of an opaque
	// signature, empty for a detached one.
	content []byte
	// certs is the DER of each certificate the SignedData carries, in
	// order, not parsed yet (Trust.parseCerts caches the parsing).
	certs   [][]byte
	signers []asn1.RawValue
}

// parseCMS decodes ContentInfo and SignedData from DER strictly.
func parseCMS(der []byte) (*parsedCMS, error) {
	var ci rawContentInfo
	rest, err := asn1.Unmarshal(der, &ci)
	if err != nil {
		return nil, fmt.Errorf("ContentInfo: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("ContentInfo: trailing data")
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, fmt.Errorf("content type %v is not signed-data", ci.ContentType)
	}
	var sd rawSignedData
	rest, err = asn1.Unmarshal(ci.Content.Bytes, &sd)
	if err != nil {
		return nil, fmt.Errorf("SignedData: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("SignedData: trailing data")
	}
	p := &parsedCMS{eContentType: sd.EncapContentInfo.ContentType, signers: sd.SignerInfos}
	if c := sd.EncapContentInfo.Content; len(c.FullBytes) > 0 {
		// eContent [0] EXPLICIT OCTET STRING: encoding/asn1 leaves the
		// explicit tag on a RawValue, so the OCTET STRING is inside.
		// normalizeBER turned the constructed form OpenSSL streams (chunks
		// of 4 KiB) into one primitive OCTET STRING.
		var oct asn1.RawValue
		rest, err := asn1.Unmarshal(c.Bytes, &oct)
		if err != nil {
			return nil, fmt.Errorf("eContent: %w", err)
		}
		if len(rest) > 0 {
			return nil, errors.New("eContent: trailing data")
		}
		if oct.Class != asn1.ClassUniversal || oct.Tag != asn1.TagOctetString || oct.IsCompound {
			return nil, errors.New("eContent is not an OCTET STRING")
		}
		p.content = oct.Bytes
	}
	// certificates [0] IMPLICIT CertificateSet: a SET OF CertificateChoices
	// (RFC 5652 10.2.3). Only the plain Certificate choice (a SEQUENCE) is
	// accepted; the obsolete extended and attribute certificate choices
	// are context-tagged and would not name a signer anyway.
	for rest := sd.Certificates.Bytes; len(rest) > 0; {
		if len(p.certs) > maxMessageCertificates {
			break // the caller refuses the count; no need to walk further
		}
		var rv asn1.RawValue
		if rest, err = asn1.Unmarshal(rest, &rv); err != nil {
			return nil, fmt.Errorf("certificates: %w", err)
		}
		if rv.Class != asn1.ClassUniversal || rv.Tag != asn1.TagSequence || !rv.IsCompound {
			return nil, fmt.Errorf("certificates: a certificate choice other than Certificate (class %d, tag %d)", rv.Class, rv.Tag)
		}
		p.certs = append(p.certs, rv.FullBytes)
	}
	return p, nil
}

// parseSignerInfo decodes one SignerInfo.
func parseSignerInfo(raw asn1.RawValue) (*signerInfo, error) {
	var si rawSignerInfo
	rest, err := asn1.Unmarshal(raw.FullBytes, &si)
	if err != nil {
		return nil, fmt.Errorf("SignerInfo: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("SignerInfo: trailing data")
	}
	out := &signerInfo{
		digestAlg: si.DigestAlgorithm.Algorithm,
		sigAlg:    si.SignatureAlgorithm.Algorithm,
		signature: si.Signature,
	}
	// RFC 5652 5.3: SignerIdentifier ::= CHOICE { issuerAndSerialNumber,
	// subjectKeyIdentifier [0] IMPLICIT }; the tag alone says which.
	//
	// RFC 5652 5.3 also ties the version to the choice (1 with
	// issuerAndSerialNumber, 3 with subjectKeyIdentifier). That rule is
	// deliberately not enforced, and any version is accepted as before:
	//   - the version is outside the signature (which covers the signed
	//     attributes only), so checking it proves nothing about the signer,
	//     and the tag of sid already identifies the form without it;
	//   - the verifiers signers test against do not check it (OpenSSL's
	//     CMS_verify ignores it, openssl/openssl#29484, as does Bouncy
	//     Castle's SignerInfo decoder), so a signer writing the wrong
	//     number never finds out;
	//   - CMS producers in the field do write wrong SignerInfo versions
	//     that mainstream verifiers accept (Authenticode signatures with
	//     version 0, accepted by Windows: ralphje/signify#18).
	// Refusing a genuine prescription over an unsigned, redundant number
	// would be the worse error.
	switch sid := si.SID; {
	case sid.Class == asn1.ClassUniversal && sid.Tag == asn1.TagSequence && sid.IsCompound:
		var ias issuerAndSerial
		if rest, err := asn1.Unmarshal(sid.FullBytes, &ias); err != nil {
			return nil, fmt.Errorf("SignerInfo: issuerAndSerialNumber: %w", err)
		} else if len(rest) > 0 {
			return nil, errors.New("SignerInfo: issuerAndSerialNumber: trailing data")
		}
		out.issuerRaw, out.serial = ias.Issuer.FullBytes, ias.Serial
	case sid.Class == asn1.ClassContextSpecific && sid.Tag == 0:
		// [0] IMPLICIT SubjectKeyIdentifier, an OCTET STRING (RFC 5280
		// 4.2.1.2) compared byte for byte with the certificates'. A
		// constructed one (BER chunks, which no signer writes for 20
		// bytes) is refused: behind the implicit tag normalizeBER cannot
		// tell it is a string and join the chunks.
		if sid.IsCompound {
			return nil, errors.New("SignerInfo: subjectKeyIdentifier is constructed, not an OCTET STRING")
		}
		if len(sid.Bytes) == 0 {
			// An empty identifier would match every certificate without
			// the extension.
			return nil, errors.New("SignerInfo: subjectKeyIdentifier is empty")
		}
		out.subjectKeyID = sid.Bytes
	default:
		return nil, fmt.Errorf("SignerInfo: signer identifier (class %d, tag %d) is neither issuerAndSerialNumber nor [0] subjectKeyIdentifier", sid.Class, sid.Tag)
	}
	if len(si.SignedAttrs.FullBytes) > 0 {
		// RFC 5652 5.4: the signature covers the DER of the signed
		// attributes with an EXPLICIT SET OF tag instead of the IMPLICIT
		// [0]. The input is DER already (normalizeBER), so these are the
		// bytes the sender signed.
		b := append([]byte(nil), si.SignedAttrs.FullBytes...)
		b[0] = 0x31
		out.signedAttrs = b
		out.hasSignedAttr = true
	}
	return out, nil
}

// signedAttrs holds the three attributes RFC 5652 11 defines and the
// verifier uses.
type signedAttrs struct {
	contentType    asn1.ObjectIdentifier
	messageDigest  []byte
	signingTime    time.Time
	hasSigningTime bool
}

// parseSignedAttrs decodes the signed attributes. Content-type and
// message-digest are mandatory when attributes are present (RFC 5652 5.3),
// and each of the three attributes must appear once with one value
// (RFC 5652 11.1, 11.2, 11.3).
func parseSignedAttrs(set []byte) (*signedAttrs, error) {
	var attrs []rawAttribute
	rest, err := asn1.UnmarshalWithParams(set, &attrs, "set")
	if err != nil {
		return nil, fmt.Errorf("signed attributes: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("signed attributes: trailing data")
	}
	var out signedAttrs
	var seenCT, seenMD bool
	for _, a := range attrs {
		var target any
		var seen *bool
		switch {
		case a.Type.Equal(oidContentType):
			target, seen = &out.contentType, &seenCT
		case a.Type.Equal(oidMessageDigest):
			target, seen = &out.messageDigest, &seenMD
		case a.Type.Equal(oidSigningTime):
			target, seen = &out.signingTime, &out.hasSigningTime
		default:
			continue // other attributes (S/MIME capabilities, …) are not used
		}
		if *seen {
			return nil, fmt.Errorf("signed attribute %v appears twice", a.Type)
		}
		*seen = true
		if a.Values.Tag != asn1.TagSet || !a.Values.IsCompound {
			return nil, fmt.Errorf("signed attribute %v: values are not a SET", a.Type)
		}
		rest, err := asn1.Unmarshal(a.Values.Bytes, target)
		if err != nil {
			return nil, fmt.Errorf("signed attribute %v: %w", a.Type, err)
		}
		if len(rest) > 0 {
			return nil, fmt.Errorf("signed attribute %v has more than one value", a.Type)
		}
	}
	if !seenCT {
		return nil, errors.New("signed attributes lack content-type")
	}
	if !seenMD {
		return nil, errors.New("signed attributes lack message-digest")
	}
	return &out, nil
}

// SignedContent returns the content an opaque signature carries (eContent,
// RFC 5652 5.2), DER or streamed BER, without verifying anything. It is
// for reading messages that were verified when they were filed (filed
// bytes never change, while verifying again could fail for reasons that
// have nothing to do with them: a certificate expired since, a CRL not yet
// refreshed). Never use it to decide whether to trust a message.
func SignedContent(p7 []byte) ([]byte, error) {
	if len(p7) > MaxOpaqueSize {
		return nil, fmt.Errorf("signed content: the signature is larger than %d bytes", MaxOpaqueSize)
	}
	der, err := normalizeBER(p7)
	if err != nil {
		return nil, fmt.Errorf("signed content: %w", err)
	}
	cms, err := parseCMS(der)
	if err != nil {
		return nil, fmt.Errorf("signed content: %w", err)
	}
	if len(cms.content) == 0 {
		return nil, errors.New("signed content: the signature carries no content")
	}
	return cms.content, nil
}

// FiledContent returns the signed MIME entity of a filed S/MIME message:
// the first part of a detached signature (multipart/signed), or the
// content inside an opaque one (RFC 8551 3.5.2), without verifying
// anything (see SignedContent: for messages verified when they were
// filed, never to decide whether to trust one).
func FiledContent(raw []byte) ([]byte, error) {
	s, err := mime.Split(raw)
	if err != nil {
		return nil, err
	}
	if s.Form == mime.Detached {
		return s.Content, nil
	}
	return SignedContent(s.PKCS7)
}

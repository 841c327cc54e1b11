package mime

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"strings"
)

// Split separates a scanned message into signed content and signature.
// It returns *Error (KindNotSigned for messages that are not S/MIME signed).
//
// Signed.Header and Signed.Content are sub-slices of raw, never copies or
// re-encodings: the content is what the signer hashed, byte for byte.
// Split does not rely on Scan for safety (it is linear on any input) but
// only Scan enforces the size and nesting limits.
func Split(raw []byte) (*Signed, error) {
	h, err := parseHeader(raw, 0, 0, 0)
	if err != nil {
		return nil, err
	}
	ctv, ok, err := h.single("Content-Type")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errorf(KindNotSigned, "message has no Content-Type: it is not S/MIME signed")
	}
	ct, cte, err := parseContentType(&h)
	if err != nil {
		return nil, err
	}
	header, body := raw[:h.end], raw[h.end:]
	switch ct.media {
	case "multipart/signed":
		return splitDetached(header, body, ct)
	case "application/pkcs7-mime", "application/x-pkcs7-mime":
		return splitOpaque(&h, header, body, ct, cte)
	default:
		return nil, errorf(KindNotSigned, "Content-Type is %s, not an S/MIME signed message", clip([]byte(ctv)))
	}
}

// isSignatureType reports whether a media type is the S/MIME detached
// signature (RFC 8551 §3.5.3; x- alias from RFC 2311 era clients).
func isSignatureType(media string) bool {
	return media == "application/pkcs7-signature" || media == "application/x-pkcs7-signature"
}

// splitDetached handles multipart/signed (RFC 1847 §2.1, RFC 8551 §3.5.3).
func splitDetached(header, body []byte, ct contentType) (*Signed, error) {
	protocol := strings.ToLower(ct.params["protocol"])
	if !isSignatureType(protocol) {
		return nil, errorf(KindNotSigned, "multipart/signed with protocol %q is not S/MIME", clip([]byte(protocol)))
	}
	b, err := checkBoundary(ct)
	if err != nil {
		return nil, err
	}
	// RFC 1847 §2.1: exactly two parts; read one more to detect extras.
	spans, err := splitParts(body, b, 3)
	if err != nil {
		return nil, err
	}
	switch {
	case len(spans) < 2:
		return nil, errorf(KindMalformed, "multipart/signed has %d part(s), the signature part is missing", len(spans))
	case len(spans) > 2:
		return nil, errorf(KindMalformed, "multipart/signed has more than two parts")
	}
	content := body[spans[0][0]:spans[0][1]]
	sigPart := body[spans[1][0]:spans[1][1]]

	sh, err := parseHeader(sigPart, 0, 0, 0)
	if err != nil {
		return nil, wrapDetail(err, "signature part: ")
	}
	if !sh.terminated {
		return nil, errorf(KindMalformed, "signature part has no body")
	}
	sct, scte, err := parseContentType(&sh)
	if err != nil {
		return nil, wrapDetail(err, "signature part: ")
	}
	if !isSignatureType(sct.media) {
		return nil, errorf(KindMalformed, "second part of multipart/signed is %s, not application/pkcs7-signature", clip([]byte(sct.media)))
	}
	der, err := decodeBlob(scte, sigPart[sh.end:], "signature part")
	if err != nil {
		return nil, err
	}
	return &Signed{
		Form:    Detached,
		Header:  header,
		Content: content,
		PKCS7:   der,
		Micalg:  strings.ToLower(ct.params["micalg"]),
	}, nil
}

// splitOpaque handles application/pkcs7-mime signed-data (RFC 8551
// §3.5.2). Without smime-type, the file name smime.p7m is what marks it
// (RFC 8551 §3.2.2 lists the smime-type as optional for older agents).
func splitOpaque(h *headerBlock, header, body []byte, ct contentType, cte string) (*Signed, error) {
	switch st := strings.ToLower(ct.params["smime-type"]); st {
	case "signed-data":
	case "":
		if !strings.EqualFold(ct.params["name"], "smime.p7m") && !strings.EqualFold(dispositionFilename(h), "smime.p7m") {
			return nil, errorf(KindNotSigned, "%s without smime-type and not named smime.p7m", ct.media)
		}
	default:
		return nil, errorf(KindNotSigned, "%s with smime-type=%s is not signed-data", ct.media, clip([]byte(st)))
	}
	der, err := decodeBlob(cte, body, "pkcs7-mime body")
	if err != nil {
		return nil, err
	}
	return &Signed{Form: Opaque, Header: header, PKCS7: der}, nil
}

// dispositionFilename returns the filename parameter of Content-Disposition.
func dispositionFilename(h *headerBlock) string {
	v, n := h.get("Content-Disposition")
	if n != 1 {
		return ""
	}
	_, params, err := parseMediaTypeLoose(v)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// decodeBlob decodes a PKCS#7 body: base64 (line breaks allowed, RFC 2045
// §6.8) or binary (RFC 8551 §3.1.3 allows binary transport).
func decodeBlob(cte string, body []byte, what string) ([]byte, error) {
	var der []byte
	switch cte {
	case "base64":
		var err error
		der, err = decodeBase64(body)
		if err != nil {
			return nil, errorf(KindMalformed, "%s: invalid base64: %v", what, err)
		}
	case "binary":
		der = body
	case "":
		return nil, errorf(KindMalformed, "%s has no Content-Transfer-Encoding (base64 expected)", what)
	default:
		return nil, errorf(KindMalformed, "%s has Content-Transfer-Encoding %s (base64 expected)", what, clip([]byte(cte)))
	}
	if len(der) == 0 {
		return nil, errorf(KindMalformed, "%s is empty", what)
	}
	return der, nil
}

// decodeBase64 decodes RFC 2045 §6.8 base64, ignoring line breaks and
// whitespace between characters.
func decodeBase64(b []byte) ([]byte, error) {
	clean := make([]byte, 0, len(b))
	for _, c := range b {
		switch c {
		case '\r', '\n', ' ', '\t':
		default:
			clean = append(clean, c)
		}
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
	n, err := base64.StdEncoding.Decode(out, clean)
	if err != nil {
		return nil, err
	}
	return out[:n], nil
}

// splitParts returns the spans (offsets in body) of the body parts of a
// multipart body with the given boundary, stopping after max parts. A
// part's span excludes the line break before the next delimiter: RFC 2046
// §5.1.1 makes that CRLF part of the delimiter, and RFC 1847 §2.1 the
// signed content ends before it. The close delimiter is required.
func splitParts(body []byte, boundary []byte, max int) ([][2]int, error) {
	dash := append([]byte("--"), boundary...)
	var spans [][2]int
	start := -1 // start of the current part, -1 in the preamble
	for pos := 0; pos < len(body); {
		lineStart := pos
		line, next := nextLine(body, pos)
		pos = next
		if !bytes.HasPrefix(line, dash) {
			continue
		}
		closing, ok := delimiterRest(line[len(dash):])
		if !ok {
			return nil, errorf(KindMalformed, "line begins with the boundary delimiter %q but is not a delimiter", clip(dash))
		}
		if start >= 0 {
			end := lineStart
			if end > start && body[end-1] == '\n' {
				end--
				if end > start && body[end-1] == '\r' {
					end--
				}
			}
			spans = append(spans, [2]int{start, end})
		}
		if closing {
			return spans, nil
		}
		if len(spans) >= max {
			return spans, nil
		}
		start = next
	}
	return nil, errorf(KindMalformed, "multipart has no close delimiter (\"%s--\")", clip(dash))
}

// wrapDetail prefixes the detail of a *Error, keeping its kind.
func wrapDetail(err error, prefix string) error {
	if e, ok := err.(*Error); ok {
		return &Error{Kind: e.Kind, Detail: prefix + e.Detail}
	}
	return err
}

// outerHeader prepares caller-supplied outer fields for a built message:
// MIME fields are dropped (the builder writes its own), trailing empty
// lines are removed and the last line gets its CRLF.
func outerHeader(header []byte) []byte {
	var out []byte
	skip := false
	for pos := 0; pos < len(header); {
		line, next := nextLine(header, pos)
		pos = next
		if len(line) == 0 {
			break
		}
		if !isWSP(line[0]) {
			name, _, _ := bytes.Cut(line, []byte(":"))
			n := strings.ToLower(string(bytes.TrimSpace(name)))
			skip = n == "mime-version" || n == "content-type" || n == "content-transfer-encoding"
		}
		if !skip {
			out = append(out, line...)
			out = append(out, '\r', '\n')
		}
	}
	return out
}

// newBoundary returns a random boundary (RFC 2046 §5.1.1 bchars) that does
// not occur in any of the given bodies.
func newBoundary(bodies ...[]byte) string {
	for {
		b := "=_mss_" + rand.Text()
		clash := false
		for _, body := range bodies {
			if bytes.Contains(body, []byte(b)) {
				clash = true
				break
			}
		}
		if !clash {
			return b
		}
	}
}

// appendBase64Lines appends data in base64 with 76-character lines ending
// CRLF (RFC 2045 §6.8).
func appendBase64Lines(dst, data []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		dst = append(dst, enc[:76]...)
		dst = append(dst, '\r', '\n')
		enc = enc[76:]
	}
	if len(enc) > 0 {
		dst = append(dst, enc...)
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// BuildDetached assembles a multipart/signed message: header holds the
// outer fields (From, To, Subject, Date, Message-ID…, each ending CRLF,
// without MIME-Version/Content-Type, which this adds), content is the signed
// MIME entity (CRLF line endings) and sig the DER signature.
//
// content goes in unchanged, so Split gives it back byte for byte; the
// CRLF before the next delimiter belongs to the delimiter (RFC 1847 §2.1).
func BuildDetached(header, content, sig []byte) []byte {
	b := newBoundary(content)
	out := make([]byte, 0, len(header)+len(content)+len(sig)*4/3+512)
	out = append(out, outerHeader(header)...)
	out = append(out, "MIME-Version: 1.0\r\n"...)
	out = append(out, `Content-Type: multipart/signed; protocol="application/pkcs7-signature";`+"\r\n"...)
	out = append(out, "\tmicalg=sha-256; boundary=\""+b+"\"\r\n"...)
	out = append(out, "\r\nThis is an S/MIME signed message (RFC 8551).\r\n\r\n"...)
	out = append(out, "--"+b+"\r\n"...)
	out = append(out, content...)
	out = append(out, "\r\n--"+b+"\r\n"...)
	out = append(out, "Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"...)
	out = append(out, "Content-Transfer-Encoding: base64\r\n"...)
	out = append(out, "Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"...)
	out = appendBase64Lines(out, sig)
	out = append(out, "\r\n--"+b+"--\r\n"...)
	return out
}

// BuildOpaque assembles an application/pkcs7-mime signed-data message
// (RFC 8551 §3.5.2) around a DER SignedData that holds the content.
func BuildOpaque(header, signedData []byte) []byte {
	out := make([]byte, 0, len(header)+len(signedData)*4/3+512)
	out = append(out, outerHeader(header)...)
	out = append(out, "MIME-Version: 1.0\r\n"...)
	out = append(out, "Content-Type: application/pkcs7-mime; smime-type=signed-data;\r\n\tname=smime.p7m\r\n"...)
	out = append(out, "Content-Transfer-Encoding: base64\r\n"...)
	out = append(out, "Content-Disposition: attachment; filename=smime.p7m\r\n\r\n"...)
	return appendBase64Lines(out, signedData)
}

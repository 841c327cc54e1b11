package mime

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strconv"
	"strings"
)

// Prescription is what the relay reads out of the signed content.
type Prescription struct {
	Number     string // unique prescription number (Bundle.identifier.value / XDM uniqueId)
	PatientINS string // 15 characters
	IDNPS      string // prescriber "8"+RPPS
	AuthoredOn string
	Delivery   string // X-Ordonnance-Delivery of the signed entity: "messaging-only", "paper" or ""
	Items      []Item

	// Opposition is set by "X-Ordonnance-Opposition: execution" in the
	// signed entity: the patient objects to the prescriber seeing
	// execution data, so no execution notice may be sent.
	Opposition bool
	// HiddenFromPatient is set when the document is marked not visible
	// to the patient: confidentialityCode INVISIBLE_PATIENT (the DMP's
	// code) in the XDM metadata, or a Bundle meta.security coding with
	// that code.
	HiddenFromPatient bool
}

// Item is one prescribed medication or act.
type Item struct {
	Kind   string // "MedicationRequest" or "ServiceRequest"
	Text   string
	Dosage string
}

// OppositionExecution is the only value of X-Ordonnance-Opposition.
const OppositionExecution = "execution"

// CodeInvisiblePatient is the confidentiality code of a document the
// patient must not see (DMP, CI-SIS; XDS confidentialityCode and FHIR
// meta.security).
const CodeInvisiblePatient = "INVISIBLE_PATIENT"

// Delivery values of the X-Ordonnance-Delivery header.
const (
	DeliveryMessagingOnly = "messaging-only" // the patient gets it only by secure messaging
	DeliveryPaper         = "paper"          // the patient gets a paper copy
)

// OIDs and identifier systems read from the prescription (MISSION.md).
const (
	OIDINS         = "1.2.250.1.213.1.4.8" // NIR-based INS
	OIDIDNPS       = "1.2.250.1.71.4.2.1"  // national professional identifier
	SystemINS      = "urn:oid:" + OIDINS
	SystemIDNPS    = "urn:oid:" + OIDIDNPS
	XDMName        = "IHE_XDM.ZIP"
	MediaTypeFHIR  = "application/fhir+json"
	maxNumberChars = 64
)

// Size caps of the parts the extractor decodes. The whole message is
// already capped by Limits.MaxMessageBytes; these bound the decoded copies.
const (
	maxFHIRBytes = 2 << 20  // decoded FHIR JSON
	maxZipBytes  = 16 << 20 // decoded IHE_XDM.ZIP (compressed)
	maxItems     = 256      // MedicationRequest + ServiceRequest per Bundle
	maxEntries   = 1024     // Bundle.entry
)

func rxError(format string, args ...any) *Error {
	return errorf(KindPrescription, format, args...)
}

// ExtractPrescription reads the prescription from the signed MIME entity
// (content as signed, CRLF) under DefaultLimits. It returns *Error with
// KindPrescription. The relay itself uses ExtractPrescriptionWith and its
// configured limits; this form serves tools and tests.
func ExtractPrescription(content []byte) (*Prescription, error) {
	return ExtractPrescriptionWith(content, DefaultLimits())
}

// ExtractPrescriptionWith is ExtractPrescription under lim (zero fields
// take their default, as in Scan).
//
// The entity is first scanned with lim: for the opaque form it was inside
// the PKCS#7, so the scan of the outer message never saw its structure,
// and the limits an administrator configured must hold there too. It is
// then walked through its multipart/* containers (not into message/rfc822)
// to find at most one application/fhir+json part and at most one
// IHE_XDM.ZIP attachment; at least one must be present. When both are,
// they must name the same prescription, patient and prescriber.
func ExtractPrescriptionWith(content []byte, lim Limits) (*Prescription, error) {
	lim = lim.withDefaults()
	if err := Scan(content, lim); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, rxError("signed content: %s", e.Detail)
		}
		return nil, rxError("signed content: %v", err)
	}
	h, err := parseHeader(content, 0, 0, 0)
	if err != nil {
		return nil, rxError("signed content header: %v", err)
	}
	delivery, err := readDelivery(&h)
	if err != nil {
		return nil, err
	}
	opposition, err := readOpposition(&h)
	if err != nil {
		return nil, err
	}

	var fhirPart, xdmPart *leaf
	err = walk(content, 0, lim, func(l *leaf) error {
		switch {
		case l.ct.media == MediaTypeFHIR || l.ct.media == "application/json+fhir":
			if fhirPart != nil {
				return rxError("more than one FHIR part (%s)", MediaTypeFHIR)
			}
			fhirPart = l
		case strings.EqualFold(l.filename, XDMName):
			switch l.ct.media {
			case "application/zip", "application/x-zip-compressed", "application/octet-stream":
			default:
				return rxError("%s attachment has type %s, expected application/zip", XDMName, clip([]byte(l.ct.media)))
			}
			if xdmPart != nil {
				return rxError("more than one %s attachment", XDMName)
			}
			xdmPart = l
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if fhirPart == nil && xdmPart == nil {
		return nil, rxError("no prescription found: neither an %s part nor an %s attachment", MediaTypeFHIR, XDMName)
	}

	var fx *Prescription
	if fhirPart != nil {
		data, err := decodeBody(fhirPart.cte, fhirPart.body, maxFHIRBytes)
		if err != nil {
			return nil, rxError("FHIR part: %v", err)
		}
		if fx, err = parseFHIR(data); err != nil {
			return nil, err
		}
	}
	var xd *xdmMetadata
	if xdmPart != nil {
		data, err := decodeBody(xdmPart.cte, xdmPart.body, maxZipBytes)
		if err != nil {
			return nil, rxError("%s attachment: %v", XDMName, err)
		}
		if xd, err = parseXDM(data); err != nil {
			return nil, err
		}
	}
	rx, err := merge(fx, xd)
	if err != nil {
		return nil, err
	}
	rx.Delivery = delivery
	rx.Opposition = opposition
	// Either source marks the document hidden: the XDM archive travels
	// whole, so a hidden document anywhere in it hides the prescription.
	rx.HiddenFromPatient = (fx != nil && fx.HiddenFromPatient) || (xd != nil && xd.hidden)
	if err := rx.check(fx != nil); err != nil {
		return nil, err
	}
	return rx, nil
}

// readDelivery reads X-Ordonnance-Delivery from the signed entity's own
// header: being under the signature, the prescriber vouches for it.
func readDelivery(h *headerBlock) (string, error) {
	v, n := h.get("X-Ordonnance-Delivery")
	switch {
	case n == 0:
		return "", nil
	case n > 1:
		return "", rxError("more than one X-Ordonnance-Delivery field")
	}
	switch d := strings.ToLower(v); d {
	case DeliveryMessagingOnly, DeliveryPaper:
		return d, nil
	default:
		return "", rxError("X-Ordonnance-Delivery %q is not %q or %q", clip([]byte(v)), DeliveryMessagingOnly, DeliveryPaper)
	}
}

// readOpposition reads X-Ordonnance-Opposition from the signed entity's
// own header, like readDelivery: absent is no opposition, "execution" is
// one, anything else is refused rather than guessed.
func readOpposition(h *headerBlock) (bool, error) {
	v, n := h.get("X-Ordonnance-Opposition")
	switch {
	case n == 0:
		return false, nil
	case n > 1:
		return false, rxError("more than one X-Ordonnance-Opposition field")
	}
	if !strings.EqualFold(v, OppositionExecution) {
		return false, rxError("X-Ordonnance-Opposition %q is not %q", clip([]byte(v)), OppositionExecution)
	}
	return true, nil
}

// merge combines what the FHIR Bundle and the XDM metadata say. The XDM
// holds documents, each with its uniqueId: with a Bundle, one of them must
// carry the Bundle's number; alone, it must hold exactly one document.
func merge(fx *Prescription, xd *xdmMetadata) (*Prescription, error) {
	switch {
	case xd == nil:
		return fx, nil
	case fx == nil:
		if len(xd.uniqueIDs) != 1 {
			return nil, rxError("%s holds %d documents and no FHIR Bundle says which one is the prescription", XDMName, len(xd.uniqueIDs))
		}
		return &Prescription{Number: xd.uniqueIDs[0], PatientINS: xd.ins, IDNPS: xd.idnps}, nil
	}
	found := false
	for _, u := range xd.uniqueIDs {
		if u == fx.Number {
			found = true
		}
	}
	if !found {
		return nil, rxError("FHIR Bundle and %s disagree on the prescription number", XDMName)
	}
	if fx.PatientINS != xd.ins {
		return nil, rxError("FHIR Bundle and %s disagree on the patient INS", XDMName)
	}
	if fx.IDNPS != xd.idnps {
		return nil, rxError("FHIR Bundle and %s disagree on the prescriber IDNPS", XDMName)
	}
	return fx, nil
}

// check applies the content rules of docs/message-format.md. Items are
// required when a FHIR Bundle is present: the XDM metadata does not list
// what is prescribed.
func (rx *Prescription) check(needItems bool) error {
	switch {
	case rx.Number == "":
		return rxError("prescription number missing")
	case len(rx.Number) > maxNumberChars:
		return rxError("prescription number longer than %d characters", maxNumberChars)
	case !validNumber(rx.Number):
		return rxError("prescription number has characters outside [A-Za-z0-9._-]")
	}
	if err := insProblem(rx.PatientINS); err != "" {
		return rxError("%s", err)
	}
	switch {
	case rx.IDNPS == "":
		return rxError("prescriber IDNPS missing")
	case !ValidIDNPS(rx.IDNPS):
		return rxError("prescriber IDNPS is not 8 followed by the 11-digit RPPS")
	}
	if needItems && len(rx.Items) == 0 {
		return rxError("prescription has no item (MedicationRequest or ServiceRequest)")
	}
	return nil
}

func validNumber(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidIDNPS reports whether s is "8" followed by an 11-digit RPPS.
func ValidIDNPS(s string) bool {
	return len(s) == 12 && s[0] == '8' && allDigits(s[1:])
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ValidINS reports whether s is a 15-character NIR-based INS with a valid key.
func ValidINS(s string) bool { return insProblem(s) == "" }

// insProblem says what is wrong with an INS, or "" when it is valid.
func insProblem(s string) string {
	switch {
	case s == "":
		return "patient INS missing"
	case len(s) != 15:
		return "patient INS is not 15 characters"
	}
	key, err := ComputeINSKey(s[:13])
	if err != nil {
		return "patient INS has invalid characters"
	}
	if !allDigits(s[13:]) {
		return "patient INS key is not two digits"
	}
	if key != s[13:] {
		return "patient INS has an invalid key"
	}
	return ""
}

// ComputeINSKey returns the two-digit key of a 13-character NIR: 97 minus
// the number modulo 97. For Corsica, the department 2A or 2B at positions
// 6-7 counts as 19 or 18 in the computation.
func ComputeINSKey(first13 string) (string, error) {
	if len(first13) != 13 {
		return "", fmt.Errorf("mime: INS number must be 13 characters, got %d", len(first13))
	}
	digits := []byte(first13)
	switch {
	case digits[5] == '2' && (digits[6] == 'A' || digits[6] == 'a'):
		digits[5], digits[6] = '1', '9'
	case digits[5] == '2' && (digits[6] == 'B' || digits[6] == 'b'):
		digits[5], digits[6] = '1', '8'
	}
	if !allDigits(string(digits)) {
		return "", fmt.Errorf("mime: INS number %q has characters other than digits (and 2A/2B)", first13)
	}
	n, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil {
		return "", fmt.Errorf("mime: INS number: %w", err)
	}
	return fmt.Sprintf("%02d", 97-n%97), nil
}

// leaf is a non-multipart entity met while walking.
type leaf struct {
	ct       contentType
	cte      string
	filename string // Content-Disposition filename, else Content-Type name
	body     []byte // raw, still transfer-encoded
}

// walk calls fn for every leaf of the entity b, descending multipart/*.
// The caller has run Scan, so depth and size are bounded; the depth check
// here is a second guard that keeps the recursion bounded on its own.
func walk(b []byte, depth int, lim Limits, fn func(*leaf) error) error {
	h, err := parseHeader(b, 0, 0, 0)
	if err != nil {
		return rxError("signed content: %v", err)
	}
	ct, cte, err := parseContentType(&h)
	if err != nil {
		return rxError("signed content: %v", err)
	}
	body := b[h.end:]
	if !strings.HasPrefix(ct.media, "multipart/") {
		name := dispositionFilename(&h)
		if name == "" {
			name = ct.params["name"]
		}
		return fn(&leaf{ct: ct, cte: cte, filename: name, body: body})
	}
	if depth >= lim.MaxDepth {
		return rxError("signed content nested deeper than %d levels", lim.MaxDepth)
	}
	boundary, err := checkBoundary(ct)
	if err != nil {
		return rxError("signed content: %v", err)
	}
	spans, err := splitParts(body, boundary, lim.MaxParts)
	if err != nil {
		return rxError("signed content: %v", err)
	}
	for _, s := range spans {
		if err := walk(body[s[0]:s[1]], depth+1, lim, fn); err != nil {
			return err
		}
	}
	return nil
}

// decodeBody removes the Content-Transfer-Encoding (RFC 2045 §6) and
// refuses results over max bytes.
func decodeBody(cte string, body []byte, max int) ([]byte, error) {
	switch cte {
	case "", "7bit", "8bit", "binary":
		if len(body) > max {
			return nil, fmt.Errorf("larger than %d bytes", max)
		}
		return body, nil
	case "base64":
		if len(body)/4*3 > max+max/8+3 { // line breaks shrink the estimate
			return nil, fmt.Errorf("larger than %d bytes", max)
		}
		out, err := decodeBase64Lines(body)
		if err != nil {
			return nil, fmt.Errorf("invalid base64: %w", err)
		}
		if len(out) > max {
			return nil, fmt.Errorf("larger than %d bytes", max)
		}
		return out, nil
	case "quoted-printable":
		out, err := io.ReadAll(io.LimitReader(quotedprintable.NewReader(bytes.NewReader(body)), int64(max)+1))
		if err != nil {
			return nil, fmt.Errorf("invalid quoted-printable: %w", err)
		}
		if len(out) > max {
			return nil, fmt.Errorf("larger than %d bytes", max)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unknown Content-Transfer-Encoding %q", clip([]byte(cte)))
	}
}

// decodeBase64Lines is decodeBase64 with one allocation for the usual
// input, base64 in CRLF lines: encoding/base64 skips CR and LF itself,
// so the decoded bytes are the same. Other whitespace, and invalid input
// (whose error reports an offset in the input without line breaks), go
// to decodeBase64.
func decodeBase64Lines(b []byte) ([]byte, error) {
	out := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
	if n, err := base64.StdEncoding.Decode(out, b); err == nil {
		return out[:n], nil
	}
	return decodeBase64(b)
}

package mime

import "time"

// Scan walks the raw message once and enforces lim. It returns *Error.
func Scan(raw []byte, lim Limits) error {
	return &Error{Kind: KindMalformed, Detail: "not implemented"}
}

// Split separates a scanned message into signed content and signature.
// It returns *Error (KindNotSigned for messages that are not S/MIME signed).
func Split(raw []byte) (*Signed, error) {
	return nil, &Error{Kind: KindMalformed, Detail: "not implemented"}
}

// HeaderField returns the first value of a header field in a raw header
// block (unfolded, not decoded), and whether it was present.
func HeaderField(header []byte, name string) (string, bool) { return "", false }

// Address parses an RFC 5322 mailbox (with optional display name) and
// returns the bare address, lower-casing the domain only.
func Address(s string) (string, error) {
	return "", &Error{Kind: KindMalformed, Detail: "not implemented"}
}

// BuildDetached assembles a multipart/signed message: header holds the
// outer fields (From, To, Subject, Date, Message-ID…, each ending CRLF,
// without MIME-Version/Content-Type, which this adds), content is the signed
// MIME entity (CRLF line endings) and sig the DER signature.
func BuildDetached(header, content, sig []byte) []byte { return nil }

// BuildOpaque assembles an application/pkcs7-mime signed-data message.
func BuildOpaque(header, signedData []byte) []byte { return nil }

// Prescription is what the relay reads out of the signed content.
type Prescription struct {
	Number     string // unique prescription number (Bundle.identifier.value / XDM uniqueId)
	PatientINS string // 15 characters
	IDNPS      string // prescriber "8"+RPPS
	AuthoredOn string
	Delivery   string // X-Ordonnance-Delivery of the signed entity: "messaging-only", "paper" or ""
	Items      []Item
}

// Item is one prescribed medication or act.
type Item struct {
	Kind   string // "MedicationRequest" or "ServiceRequest"
	Text   string
	Dosage string
}

// ExtractPrescription reads the prescription from the signed MIME entity
// (content as signed, CRLF). It returns *Error with KindPrescription.
func ExtractPrescription(content []byte) (*Prescription, error) {
	return nil, &Error{Kind: KindPrescription, Detail: "not implemented"}
}

// ValidINS reports whether s is a 15-character NIR-based INS with a valid key.
func ValidINS(s string) bool { return false }

// Sample describes a prescription to generate (tests, demo, load tool).
type Sample struct {
	Number     string
	PatientINS string
	Patient    string // display name
	RPPS       string
	Prescriber string // display name
	Authored   time.Time
	Delivery   string // "" (header absent), "messaging-only" or "paper"
	Items      []Item
}

// Content renders the signed MIME entity: multipart/mixed holding a
// text/plain summary and the FHIR R4 Bundle as application/fhir+json,
// CRLF line endings, with X-Ordonnance-Delivery when set.
func (s Sample) Content() []byte { return nil }

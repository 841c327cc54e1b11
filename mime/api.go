// Package mime handles message structure only: scanning with limits,
// splitting S/MIME into signed bytes and signature, building signed
// messages, and extracting the prescription. No network, no storage.
package mime

import (
	"errors"
	"fmt"
)

// Limits bound what Scan accepts before any library parser sees a message.
type Limits struct {
	MaxMessageBytes int64 // default 32 MiB
	MaxHeaderBytes  int   // per header block, default 64 KiB
	MaxHeaders      int   // fields per header block, default 1000
	MaxDepth        int   // multipart nesting, default 16
	MaxParts        int   // total MIME parts, default 256
}

// DefaultLimits returns the documented defaults.
func DefaultLimits() Limits {
	return Limits{
		MaxMessageBytes: 32 << 20,
		MaxHeaderBytes:  64 << 10,
		MaxHeaders:      1000,
		MaxDepth:        16,
		MaxParts:        256,
	}
}

// ErrorKind classifies a structural refusal.
type ErrorKind int

const (
	KindTooLarge     ErrorKind = iota + 1 // message over MaxMessageBytes (552 5.3.4)
	KindLimit                             // header bytes/count, depth, parts over limit (554 5.6.0 / 552 5.3.4)
	KindMalformed                         // syntax: bad header, bad boundary, truncated multipart (554 5.6.0)
	KindNotSigned                         // not an S/MIME signed message (554 5.7.0 / 5.6.0)
	KindPrescription                      // the prescription inside is missing or invalid (554 5.6.0)
)

// Error is a structural refusal with a reason a person understands.
type Error struct {
	Kind   ErrorKind
	Detail string
}

func (e *Error) Error() string { return fmt.Sprintf("mime: %s", e.Detail) }

// Is lets errors.Is(err, &Error{Kind: k}) match on kind.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Kind == e.Kind && t.Detail == ""
}

// Form is how a message is signed.
type Form int

const (
	Detached Form = iota + 1 // multipart/signed (RFC 8551 §3.5.3)
	Opaque                   // application/pkcs7-mime; smime-type=signed-data
)

// Signed is an S/MIME message split into its parts, raw and untouched.
type Signed struct {
	Form Form
	// Header is the outer header block, raw, including its final CRLF CRLF.
	Header []byte
	// Content is, for Detached, the exact signed bytes (the first part's
	// raw header and body, RFC 8551 §3.5.3 / RFC 1847 §2.1); nil for Opaque.
	Content []byte
	// PKCS7 is the decoded (base64 removed) signature or signed-data blob.
	PKCS7 []byte
	// Micalg is the micalg parameter of multipart/signed, lower case ("" for Opaque).
	Micalg string
}

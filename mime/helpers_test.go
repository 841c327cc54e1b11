package mime

import (
	"errors"
	"strings"
	"testing"
)

// wantError checks that err is a *Error of kind k whose detail contains
// substr.
func wantError(t *testing.T, err error, k ErrorKind, substr string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v (%T), want *Error kind %d", err, err, k)
	}
	if e.Kind != k {
		t.Fatalf("got kind %d (%q), want kind %d", e.Kind, e.Detail, k)
	}
	if !strings.Contains(e.Detail, substr) {
		t.Fatalf("detail %q does not contain %q", e.Detail, substr)
	}
	if !errors.Is(err, &Error{Kind: k}) {
		t.Fatalf("errors.Is does not match kind %d", k)
	}
}

// crlf turns "\n" into "\r\n" so fixtures can be written readably.
func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }

// testPart is one body part of a test entity.
type testPart struct {
	header string // fields, each ending "\n"
	body   string
}

// entity builds a CRLF multipart/mixed entity with extra top fields.
func entity(top string, parts ...testPart) []byte {
	var b strings.Builder
	b.WriteString(top)
	b.WriteString("Content-Type: multipart/mixed; boundary=\"tb\"\n\n")
	for _, p := range parts {
		b.WriteString("--tb\n" + p.header + "\n" + p.body + "\n")
	}
	b.WriteString("--tb--\n")
	return crlf(b.String())
}

// sample returns a valid sample with every option set.
func sample(n int) Sample {
	s := NewSample(n)
	s.XDM, s.PDF = true, true
	return s
}

var fakeSig = []byte(strings.Repeat("\x30\x82\x0b\xad signature bytes ", 150))

// signedMessage is a detached message of about 20 KiB around sample n.
func signedMessage(n int) []byte {
	return BuildDetached(crlf("From: Dr Camille Martin <camille.martin@Hopital.MSSANTE.fr>\nTo: pharmacie@example.mssante.fr\nSubject: Ordonnance\nDate: Mon, 6 Jan 2025 09:00:00 +0100\nMessage-ID: <rx1@example>\n"),
		sample(n).Content(), fakeSig)
}

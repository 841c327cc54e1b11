package imapd

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"testing"
)

const encodedMessage = "From: dr@example.org\r\n" +
	"Subject: =?utf-8?q?Ordonnance_=C3=A9lectronique?=\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=b\r\n" +
	"\r\n" +
	"--b\r\n" +
	"Content-Type: text/plain; charset=iso-8859-1\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Pharmacie G=E9n=E9rale\r\n" +
	"--b\r\n" +
	"Content-Type: application/fhir+json\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"%s\r\n" +
	"--b\r\n" +
	"Content-Type: application/pdf\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"%s\r\n" +
	"--b--\r\n"

func testMessage() []byte {
	fhir := base64.StdEncoding.EncodeToString([]byte(`{"resourceType":"Bundle","text":"Amoxicilline 1 g"}`))
	pdf := base64.StdEncoding.EncodeToString([]byte("%PDF-1.4 Secret binary Paracetamol"))
	return []byte(fmt.Sprintf(encodedMessage, fhir, pdf))
}

func TestDecodedText(t *testing.T) {
	raw := testMessage()
	header, body := decodedText(raw)
	for _, c := range []struct {
		in   []byte
		want string
		ok   bool
	}{
		{header, "Ordonnance électronique", true},
		{body, "Pharmacie Générale", true}, // ISO-8859-1, quoted-printable
		{body, "Amoxicilline", true},       // base64 FHIR JSON
		{body, "Paracetamol", false},       // binary parts are not text
		{raw, "Amoxicilline", false},       // only found once decoded
	} {
		if got := bytes.Contains(c.in, []byte(c.want)); got != c.ok {
			t.Errorf("contains %q = %v, want %v", c.want, got, c.ok)
		}
	}
	if !headerContains(raw[:headerEnd(raw)], "Subject", "électronique") {
		t.Error("SUBJECT does not match an RFC 2047 encoded word")
	}
}

func TestDecodedTextGarbage(t *testing.T) {
	for _, raw := range [][]byte{nil, []byte("no header at all"), []byte("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nbroken")} {
		decodedText(raw) // must not panic
	}
}

package claim

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

const vectors = "../../signing/testdata/openssl"

// TestSignedContent reads the signed entity back out of messages signed by
// OpenSSL in every form the relay files: detached, opaque DER and opaque
// streamed BER (indefinite lengths, chunked content).
func TestSignedContent(t *testing.T) {
	want, err := os.ReadFile(filepath.Join(vectors, "content.eml"))
	if err != nil {
		t.Fatal(err)
	}
	opaque := func(p7m string) []byte {
		der, err := os.ReadFile(filepath.Join(vectors, p7m))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.WriteString("From: <dr.vector@mssante.test>\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n")
		enc := base64.StdEncoding.EncodeToString(der)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
		return b.Bytes()
	}
	file := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(vectors, name))
		if err != nil {
			t.Fatal(err)
		}
		// As filed: trace fields above the message.
		return append([]byte("Return-Path: <dr.vector@mssante.test>\r\nReceived: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n"), b...)
	}
	cases := map[string][]byte{
		"rsa detached":       file("rsa-smime-detached-chain.eml"),
		"ecdsa detached":     file("ecdsa-smime-detached-nochain.eml"),
		"rsa opaque":         file("rsa-smime-opaque-chain.eml"),
		"rsa opaque BER":     opaque("rsa-opaque-ber-chain.p7m"),
		"ecdsa opaque BER":   opaque("ecdsa-opaque-ber-nochain.p7m"),
		"ecdsa opaque DER":   opaque("ecdsa-opaque-chain.p7m"),
		"rsa opaque no cert": opaque("rsa-opaque-ber-nochain.p7m"),
	}
	for name, msg := range cases {
		got, err := signedContent(msg)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		// OpenSSL's S/MIME output may turn the content's line ends into
		// CRLF; compare without them.
		if !bytes.Equal(bytes.ReplaceAll(got, []byte("\r\n"), []byte("\n")), bytes.ReplaceAll(want, []byte("\r\n"), []byte("\n"))) {
			t.Errorf("%s: content differs:\n%q\nwant\n%q", name, got[:min(len(got), 120)], want[:min(len(want), 120)])
		}
	}
	if _, err := signedContent([]byte("Subject: not signed\r\n\r\nhello\r\n")); !errors.Is(err, errUnreadable) {
		t.Errorf("unsigned message: %v", err)
	}
	if _, err := signedContent(opaque("content.eml")); !errors.Is(err, errUnreadable) {
		t.Errorf("garbage PKCS#7: %v", err)
	}
}

func TestRestriction(t *testing.T) {
	cases := []struct {
		name    string
		header  string
		allowed []string
		refused []string
	}{
		{"none", "Content-Type: multipart/mixed; boundary=x\r\n", []string{"any@example.org"}, nil},
		{"one", "X-Ordonnance-Restrict: pharma@example.org\r\nContent-Type: text/plain\r\n",
			[]string{"pharma@example.org", "pharma@EXAMPLE.org"}, []string{"other@example.org", "Pharma@example.org"}},
		{"list with names, folded, lower-case field name", "x-ordonnance-restrict: Pharmacie <pharma@example.org>,\r\n\tlabo@example.org\r\n",
			[]string{"pharma@example.org", "labo@example.org"}, []string{"other@example.org"}},
		{"several fields add up", "X-Ordonnance-Restrict: a@example.org\r\nX-Ordonnance-Restrict: b@example.org\r\n",
			[]string{"a@example.org", "b@example.org"}, []string{"c@example.org"}},
		{"unreadable: nobody", "X-Ordonnance-Restrict: not an address\r\n", nil, []string{"not", "a@example.org"}},
		{"one unreadable field closes it", "X-Ordonnance-Restrict: a@example.org\r\nX-Ordonnance-Restrict: ,,,@\r\n", nil, []string{"a@example.org"}},
		{"empty: nobody", "X-Ordonnance-Restrict:\r\n", nil, []string{"a@example.org"}},
		{"only the header block counts", "Content-Type: text/plain\r\n\r\nX-Ordonnance-Restrict: a@example.org\r\n", []string{"b@example.org"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := readRestriction([]byte(c.header + "\r\nbody\r\n"))
			for _, a := range c.allowed {
				if !r.allows(a) {
					t.Errorf("%s refused (%+v)", a, r)
				}
			}
			for _, a := range c.refused {
				if r.allows(a) {
					t.Errorf("%s allowed (%+v)", a, r)
				}
			}
		})
	}
}

package mime

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

func TestSplitDetachedRoundTrip(t *testing.T) {
	contents := map[string][]byte{
		"sample":               sample(2).Content(),
		"minimal":              sample(3).Content()[:0:0],
		"no final CRLF":        crlf("Content-Type: text/plain\n\nhello"),
		"trailing blank lines": crlf("Content-Type: text/plain\n\nhello\n\n\n"),
		"LF only":              []byte("Content-Type: text/plain\n\nhello\n"),
	}
	contents["minimal"] = crlf("Content-Type: text/plain\n\n")
	sigs := [][]byte{fakeSig, {0x30}, bytes.Repeat([]byte{0xff, 0x00}, 1000)}
	header := crlf("From: a@b.fr\nSubject: s\n")
	for name, c := range contents {
		for _, sig := range sigs {
			msg := BuildDetached(header, c, sig)
			if err := Scan(msg, DefaultLimits()); err != nil {
				t.Fatalf("%s: Scan refused a built message: %v", name, err)
			}
			s, err := Split(msg)
			if err != nil {
				t.Fatalf("%s: Split: %v", name, err)
			}
			if s.Form != Detached || !bytes.Equal(s.Content, c) || !bytes.Equal(s.PKCS7, sig) || s.Micalg != "sha-256" {
				t.Fatalf("%s: round trip lost bytes: form %d, content equal %v, sig equal %v, micalg %q",
					name, s.Form, bytes.Equal(s.Content, c), bytes.Equal(s.PKCS7, sig), s.Micalg)
			}
			if !bytes.HasPrefix(msg, s.Header) || !bytes.HasSuffix(s.Header, []byte("\r\n\r\n")) {
				t.Fatalf("%s: Header is not the raw outer block: %q", name, s.Header)
			}
			if v, _ := HeaderField(s.Header, "subject"); v != "s" {
				t.Fatalf("%s: Subject %q", name, v)
			}
		}
	}
}

func TestBuildDetachedFormat(t *testing.T) {
	msg := BuildDetached(crlf("From: a@b.fr\nMIME-Version: 1.0\nContent-Type: text/plain\n folded\n\n"), crlf("Content-Type: text/plain\n\nx\n"), fakeSig)
	if n := bytes.Count(msg, []byte("MIME-Version:")); n != 1 {
		t.Fatalf("%d MIME-Version fields", n)
	}
	if bytes.Contains(msg, []byte("folded")) || bytes.Contains(msg, []byte("Content-Type: text/plain\r\n\r\nx")) == false {
		t.Fatalf("caller's Content-Type not dropped or content altered:\n%s", msg)
	}
	for _, want := range []string{`protocol="application/pkcs7-signature"`, "micalg=sha-256", "Content-Type: application/pkcs7-signature; name=smime.p7s",
		"Content-Disposition: attachment; filename=smime.p7s"} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Fatalf("missing %q", want)
		}
	}
	for _, line := range strings.Split(string(msg), "\r\n") {
		if len(line) > 78 {
			t.Fatalf("line of %d characters", len(line))
		}
		if strings.Contains(line, "\n") {
			t.Fatalf("bare LF in %q", line)
		}
	}
	// Two builds use different random boundaries.
	b1, _ := HeaderField(msg, "Content-Type")
	b2, _ := HeaderField(BuildDetached(nil, []byte("x"), fakeSig), "Content-Type")
	if b1 == b2 || !strings.Contains(b1, "boundary=") {
		t.Fatalf("boundaries not random: %q %q", b1, b2)
	}
}

func TestSplitOpaque(t *testing.T) {
	blob := []byte("\x30\x80 signed-data with content")
	msg := BuildOpaque(crlf("From: a@b.fr\n"), blob)
	s, err := Split(msg)
	if err != nil {
		t.Fatal(err)
	}
	if s.Form != Opaque || !bytes.Equal(s.PKCS7, blob) || s.Content != nil || s.Micalg != "" {
		t.Fatalf("bad opaque split: %+v", s)
	}
}

func TestSplitAliases(t *testing.T) {
	sig := base64.StdEncoding.EncodeToString([]byte("SIG"))
	content := "Content-Type: text/plain\n\nhi"
	tests := []struct {
		name, raw string
		form      Form
		pkcs7     string
	}{
		{"x-pkcs7-signature protocol and part", "Content-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; micalg=SHA-256; boundary=b\n\n--b\n" + content + "\n--b\nContent-Type: application/x-pkcs7-signature\nContent-Transfer-Encoding: base64\n\n" + sig + "\n--b--\n", Detached, "SIG"},
		{"protocol in upper case", "Content-Type: Multipart/Signed; Protocol=\"Application/PKCS7-Signature\"; boundary=b\n\n--b\n" + content + "\n--b\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: BASE64\n\n" + sig + "\n--b--\n", Detached, "SIG"},
		{"binary signature", "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\n\n--b\n" + content + "\n--b\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: binary\n\nSIG\n--b--\n", Detached, "SIG"},
		{"x-pkcs7-mime", "Content-Type: application/x-pkcs7-mime; smime-type=signed-data\nContent-Transfer-Encoding: base64\n\n" + sig + "\n", Opaque, "SIG"},
		{"no smime-type, name=smime.p7m", "Content-Type: application/pkcs7-mime; name=\"smime.p7m\"\nContent-Transfer-Encoding: base64\n\n" + sig + "\n", Opaque, "SIG"},
		{"no smime-type, filename=smime.p7m", "Content-Type: application/pkcs7-mime\nContent-Disposition: attachment; filename=SMIME.P7M\nContent-Transfer-Encoding: base64\n\n" + sig + "\n", Opaque, "SIG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, raw := range [][]byte{crlf(tt.raw), []byte(tt.raw)} {
				s, err := Split(raw)
				if err != nil {
					t.Fatal(err)
				}
				if s.Form != tt.form || string(s.PKCS7) != tt.pkcs7 {
					t.Fatalf("form %d pkcs7 %q", s.Form, s.PKCS7)
				}
				if tt.form == Detached {
					if want := strings.ReplaceAll(content, "\n", string(lineBreak(raw))); string(s.Content) != want {
						t.Fatalf("content %q, want %q", s.Content, want)
					}
				}
			}
		})
	}
}

func lineBreak(raw []byte) []byte {
	if bytes.Contains(raw, []byte("\r\n")) {
		return []byte("\r\n")
	}
	return []byte("\n")
}

func TestSplitRefusals(t *testing.T) {
	sig := base64.StdEncoding.EncodeToString([]byte("SIG"))
	ms := "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=b\n\n"
	sigPart := "--b\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\n" + sig + "\n"
	first := "--b\nContent-Type: text/plain\n\nhi\n"
	tests := []struct {
		name, raw string
		kind      ErrorKind
		detail    string
	}{
		{"no Content-Type", "From: a@b\n\nhello\n", KindNotSigned, "no Content-Type"},
		{"plain multipart", "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\n", KindNotSigned, "multipart/mixed"},
		{"PGP multipart/signed", "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=b\n\n", KindNotSigned, "pgp-signature"},
		{"enveloped-data", "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\nContent-Transfer-Encoding: base64\n\n" + sig + "\n", KindNotSigned, "enveloped-data"},
		{"pkcs7-mime unnamed", "Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: base64\n\n" + sig + "\n", KindNotSigned, "smime.p7m"},
		{"two Content-Type", "Content-Type: application/pkcs7-mime; smime-type=signed-data\nContent-Type: text/plain\n\n", KindMalformed, "more than one Content-Type"},
		{"bad header", "Content-Type application/pkcs7-mime\n\n", KindMalformed, "not a field"},
		{"opaque bad base64", "Content-Type: application/pkcs7-mime; smime-type=signed-data\nContent-Transfer-Encoding: base64\n\n!!!notbase64\n", KindMalformed, "invalid base64"},
		{"opaque empty", "Content-Type: application/pkcs7-mime; smime-type=signed-data\nContent-Transfer-Encoding: base64\n\n", KindMalformed, "empty"},
		{"opaque 7bit", "Content-Type: application/pkcs7-mime; smime-type=signed-data\nContent-Transfer-Encoding: 7bit\n\nxx\n", KindMalformed, "7bit"},
		{"signed bad boundary", "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"\"\n\n", KindMalformed, "boundary"},
		{"only content part", ms + first + "--b--\n", KindMalformed, "signature part is missing"},
		{"no part", ms + "--b--\n", KindMalformed, "0 part"},
		{"three parts", ms + first + sigPart + sigPart + "--b--\n", KindMalformed, "more than two parts"},
		{"missing close delimiter", ms + first + sigPart, KindMalformed, "no close delimiter"},
		{"delimiter with garbage", ms + first + "--bb\n" + sigPart + "--b--\n", KindMalformed, "not a delimiter"},
		{"second part not a signature", ms + first + "--b\nContent-Type: text/plain\n\nx\n--b--\n", KindMalformed, "not application/pkcs7-signature"},
		{"signature bad base64", ms + first + "--b\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\nAB$=\n--b--\n", KindMalformed, "invalid base64"},
		{"signature no CTE", ms + first + "--b\nContent-Type: application/pkcs7-signature\n\nSIG\n--b--\n", KindMalformed, "no Content-Transfer-Encoding"},
		{"signature part without body", ms + first + "--b\nContent-Type: application/pkcs7-signature\n--b--\n", KindMalformed, "signature part"},
		{"signature empty", ms + first + "--b\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\n\n--b--\n", KindMalformed, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Split(crlf(tt.raw))
			wantError(t, err, tt.kind, tt.detail)
		})
	}
}

func TestHeaderField(t *testing.T) {
	h := crlf("From: a@b\nsubject: first\n part two\nSubject: second\nX-Empty:\nBroken line\nTo:  c@d  \n\nBody: no\n")
	tests := []struct {
		name, want string
		ok         bool
	}{
		{"Subject", "first part two", true},
		{"SUBJECT", "first part two", true},
		{"x-empty", "", true},
		{"To", "c@d", true},
		{"Body", "", false},
		{"Cc", "", false},
	}
	for _, tt := range tests {
		got, ok := HeaderField(h, tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("HeaderField(%q) = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestAddress(t *testing.T) {
	tests := []struct{ in, want string }{
		{"camille.martin@Hopital.MSSANTE.fr", "camille.martin@hopital.mssante.fr"},
		{"Dr Camille Martin <Camille.Martin@EXAMPLE.fr>", "Camille.Martin@example.fr"},
		{"=?utf-8?q?Ren=C3=A9e?= <renee@x.fr>", "renee@x.fr"},
		{"<a@b.fr>", "a@b.fr"},
		{`"Martin: C" <a@X.fr>`, "a@x.fr"},
		{"a@b.fr (Dr: Martin)", "a@b.fr"},
	}
	for _, tt := range tests {
		got, err := Address(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Address(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "nobody", "a@b.fr, c@d.fr", "group: a@b.fr;", "<a@>", "a@b@c"} {
		_, err := Address(bad)
		wantError(t, err, KindMalformed, "")
	}
}

func BenchmarkSplit(b *testing.B) {
	raw := signedMessage(7)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Split(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzSplit(f *testing.F) {
	f.Add(signedMessage(1))
	f.Add(BuildOpaque(crlf("From: a@b.fr\n"), fakeSig))
	f.Add(crlf("Content-Type: multipart/signed; protocol=\"application/x-pkcs7-signature\"; boundary=b\n\n--b\n\nx\n--b\nContent-Type: application/pkcs7-signature\nContent-Transfer-Encoding: base64\n\nU0lH\n--b--\n"))
	f.Add(crlf("Content-Type: application/pkcs7-mime; name=smime.p7m\nContent-Transfer-Encoding: base64\n\nU0lH\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := Split(raw)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("Split returned %T, want *Error", err)
			}
			return
		}
		if !bytes.HasPrefix(raw, s.Header) || len(s.PKCS7) == 0 {
			t.Fatalf("bad split: header prefix %v, pkcs7 %d bytes", bytes.HasPrefix(raw, s.Header), len(s.PKCS7))
		}
		if s.Form == Detached {
			if !bytes.Contains(raw, s.Content) {
				t.Fatal("content is not a part of raw")
			}
			// Rebuilding keeps the signed bytes and the signature.
			r, err := Split(BuildDetached(nil, s.Content, s.PKCS7))
			if err != nil || !bytes.Equal(r.Content, s.Content) || !bytes.Equal(r.PKCS7, s.PKCS7) {
				t.Fatalf("rebuild round trip failed: %v", err)
			}
		}
	})
}

package mime

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestScanAccepts(t *testing.T) {
	lf := bytes.ReplaceAll(signedMessage(1), []byte("\r\n"), []byte("\n"))
	rfc822 := crlf("Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: message/rfc822\n\nFrom: a@b\nContent-Type: multipart/alternative; boundary=i\n\n--i\n\ntext\n--i--\n--o--\n")
	tests := []struct {
		name string
		raw  []byte
	}{
		{"detached sample", signedMessage(1)},
		{"opaque", BuildOpaque(crlf("From: a@b.fr\n"), fakeSig)},
		{"bare LF line endings", lf},
		{"plain text, no MIME", crlf("From: a@b\nSubject: hi\n\nhello\n")},
		{"header only, no body", []byte("From: a@b\r\n")},
		{"empty message", nil},
		{"folded header", crlf("Subject: a\n  b\n\tc\n\nbody")},
		{"preamble, epilogue and padding", crlf("Content-Type: multipart/mixed; boundary=\"x y\"\n\npreamble\n--x y \t\n\npart\n--x y--  \nepilogue\n")},
		{"message/rfc822 with nested multipart", rfc822},
		{"boundary with every bchar", crlf("Content-Type: multipart/mixed; boundary=\"0aZ'()+_,-./:=? z\"\n\n--0aZ'()+_,-./:=? z\n\nx\n--0aZ'()+_,-./:=? z--\n")},
		{"last line without CRLF", []byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Scan(tt.raw, DefaultLimits()); err != nil {
				t.Fatalf("Scan refused a valid message: %v", err)
			}
		})
	}
}

// nested builds a multipart nested depth levels deep, each level with a
// distinct boundary (fixed width: none is a prefix of another).
func nested(depth int) []byte {
	var b bytes.Buffer
	for i := 0; i < depth; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b%06d\"\r\n\r\n--b%06d\r\n", i, i)
	}
	b.WriteString("\r\nleaf\r\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%06d--\r\n", i)
	}
	return b.Bytes()
}

func manyParts(n int) []byte {
	var b bytes.Buffer
	b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
	for i := 0; i < n; i++ {
		b.WriteString("--b\r\n\r\npart\r\n")
	}
	b.WriteString("--b--\r\n")
	return b.Bytes()
}

func TestScanRefusals(t *testing.T) {
	small := Limits{MaxMessageBytes: 1000, MaxHeaderBytes: 200, MaxHeaders: 5, MaxDepth: 3, MaxParts: 4}
	tests := []struct {
		name   string
		raw    []byte
		kind   ErrorKind
		detail string
	}{
		{"too large", bytes.Repeat([]byte("a"), 1001), KindTooLarge, "1001 bytes"},
		{"header bytes", crlf("Subject: " + strings.Repeat("x", 200) + "\n\n"), KindLimit, "header block larger than 200"},
		{"header bytes in a part", crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nX-A: " + strings.Repeat("x", 200) + "\n\n--b--\n"), KindLimit, "header block larger"},
		{"header bytes without end of line", []byte("Subject: " + strings.Repeat("x", 300)), KindLimit, "header block larger"},
		{"header fields", crlf(strings.Repeat("X-A: 1\n", 6) + "\n"), KindLimit, "more than 5 fields"},
		{"depth", nested(4), KindLimit, "deeper than 3"},
		{"depth through message/rfc822", crlf("Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\nContent-Type: message/rfc822\n\nContent-Type: message/rfc822\n\nx\n"), KindLimit, "deeper than 3"},
		{"parts", manyParts(4), KindLimit, "more than 4 MIME parts"},
		{"no colon", crlf("Subject hello\n\n"), KindMalformed, "not a field"},
		{"empty field name", crlf(": x\n\n"), KindMalformed, "not a field"},
		{"space before colon", crlf("Subject : x\n\n"), KindMalformed, "ftext"},
		{"non-ASCII field name", crlf("Sübject: x\n\n"), KindMalformed, "ftext"},
		{"leading continuation", crlf(" folded\nSubject: x\n\n"), KindMalformed, "begins with a continuation"},
		{"whitespace-only line", crlf("Subject: x\n \nFrom: a\n\n"), KindMalformed, "whitespace-only"},
		{"bare CR", []byte("Subject: a\rb\r\n\r\n"), KindMalformed, "bare CR"},
		{"NUL", []byte("Subject: a\x00b\r\n\r\n"), KindMalformed, "NUL"},
		{"two Content-Type", crlf("Content-Type: text/plain\nContent-Type: multipart/mixed; boundary=b\n\n"), KindMalformed, "more than one Content-Type"},
		{"bad Content-Type", crlf("Content-Type: multipart/mixed; boundary\n\n"), KindMalformed, "invalid Content-Type"},
		{"duplicate boundary parameter", crlf("Content-Type: multipart/mixed; boundary=a; boundary=b\n\n"), KindMalformed, "invalid Content-Type"},
		{"no boundary", crlf("Content-Type: multipart/mixed\n\n"), KindMalformed, "without a boundary"},
		{"boundary too long", crlf("Content-Type: multipart/mixed; boundary=" + strings.Repeat("b", 71) + "\n\n"), KindMalformed, "71 characters"},
		{"boundary bad char", crlf("Content-Type: multipart/mixed; boundary=\"a;b\"\n\n"), KindMalformed, "bchars"},
		{"boundary ends with space", crlf("Content-Type: multipart/mixed; boundary=\"ab \"\n\n"), KindMalformed, "ends with a space"},
		{"encoded multipart", crlf("Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: base64\n\n"), KindMalformed, "Content-Transfer-Encoding base64"},
		{"missing close delimiter", crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\ntext\n"), KindMalformed, "no close delimiter"},
		{"no delimiter at all", crlf("Content-Type: multipart/mixed; boundary=b\n\njust a preamble\n"), KindMalformed, "no close delimiter"},
		{"part header unterminated", crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain"), KindMalformed, "no close delimiter"},
		{"part header runs into delimiter", crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n--b--\n"), KindMalformed, "not a field"},
		{"no body part", crlf("Content-Type: multipart/mixed; boundary=b\n\n--b--\n"), KindMalformed, "no body part"},
		{"inner not closed", crlf("Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/mixed; boundary=i\n\n--i\n\nx\n--o--\n"), KindMalformed, "ended without its close delimiter"},
		{"inner boundary extends outer", crlf("Content-Type: multipart/mixed; boundary=ab\n\n--ab\nContent-Type: multipart/mixed; boundary=abc\n\n--abc\n\nx\n--abc--\n--ab--\n"), KindMalformed, "collides"},
		{"inner boundary prefix of outer", crlf("Content-Type: multipart/mixed; boundary=abc\n\n--abc\nContent-Type: multipart/mixed; boundary=ab\n\n--ab\n\nx\n--ab--\n--abc--\n"), KindMalformed, "collides"},
		{"delimiter followed by garbage", crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--bX\n--b--\n"), KindMalformed, "not a delimiter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, Scan(tt.raw, small), tt.kind, tt.detail)
		})
	}
}

func TestScanZeroLimitsMeanDefaults(t *testing.T) {
	if err := Scan(nested(16), Limits{}); err != nil {
		t.Fatalf("16 levels with default limits: %v", err)
	}
	wantError(t, Scan(nested(17), Limits{}), KindLimit, "deeper than 16")
	wantError(t, Scan(manyParts(256), Limits{}), KindLimit, "more than 256")
}

// TestScanDeepNesting: 5,000 nested multipart levels are refused (the
// benchmark below shows it takes microseconds).
func TestScanDeepNesting(t *testing.T) {
	raw := nested(5000)
	wantError(t, Scan(raw, DefaultLimits()), KindLimit, "deeper than 16")
	// With a limit above the depth it is accepted: the scanner handles
	// the structure itself, not only by refusing early.
	lim := DefaultLimits()
	lim.MaxDepth, lim.MaxParts = 5000, 6000
	if err := Scan(raw, lim); err != nil {
		t.Fatalf("5000 levels under a 5000 limit: %v", err)
	}
}

func BenchmarkScanDeepNesting(b *testing.B) {
	raw := nested(5000)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if Scan(raw, DefaultLimits()) == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkScan(b *testing.B) {
	raw := signedMessage(7)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if err := Scan(raw, DefaultLimits()); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzScan(f *testing.F) {
	f.Add(signedMessage(1))
	f.Add(BuildOpaque(crlf("From: a@b.fr\n"), fakeSig))
	f.Add(nested(20))
	f.Add(manyParts(3))
	f.Add(crlf("Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: message/rfc822\n\nSubject: x\n\nbody\n--o--\n"))
	f.Add(crlf("Content-Type: multipart/mixed; boundary=ab\n\n--ab\nContent-Type: multipart/mixed; boundary=abc\n\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		lim := Limits{MaxMessageBytes: 1 << 20, MaxHeaderBytes: 4096, MaxHeaders: 50, MaxDepth: 8, MaxParts: 64}
		err := Scan(raw, lim)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("Scan returned %T, want *Error", err)
			}
			return
		}
		// What Scan accepts, the other parsers must handle without panic.
		Split(raw)
		ExtractPrescription(raw)
	})
}

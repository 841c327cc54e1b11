package signing

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func TestNormalizeBER(t *testing.T) {
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: drEmail})
	der, err := SignOpaque(kp, testContent)
	if err != nil {
		t.Fatal(err)
	}
	got, err := normalizeBER(der)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, der) {
		t.Errorf("DER input was changed by normalization")
	}

	ok := []struct{ name, in, want string }{
		{"indefinite sequence", "3080040241420000", "3004040241 42"},
		{"constructed octet string", "2480040141040142 0000", "04024142"},
		{"nested constructed octet string", "2480 2480 040141 0000 040142 0000", "04024142"},
		{"definite constructed octet string", "2406 040141 040142", "04024142"},
		{"empty constructed octet string", "2480 0000", "0400"},
		{"non-minimal long length", "3081 03 020101", "3003020101"},
		{"high tag number", "BF8101 03 020101", "BF810103020101"},
		{"indefinite inside definite", "3007 3080 020101 0000", "3005 3003020101"},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			got, err := normalizeBER(unhex(t, tc.in))
			if err != nil {
				t.Fatalf("normalizeBER: %v", err)
			}
			if want := unhex(t, tc.want); !bytes.Equal(got, want) {
				t.Errorf("got %x, want %x", got, want)
			}
		})
	}

	bad := []struct{ name, in, want string }{
		{"empty", "", "empty"},
		{"trailing bytes", "020101 00", "trailing"},
		{"truncated value", "0405 4142", "exceeds"},
		{"truncated length", "30", "truncated"},
		{"primitive indefinite", "0480 41 0000", "primitive"},
		{"reserved length", "30FF", "reserved"},
		{"length too long", "3085 0000000001 00", "too large"},
		{"end-of-contents in definite", "3002 0000", "end-of-contents"},
		{"missing end-of-contents", "3080 020101", "end-of-contents"},
		{"non-octet segment", "2480 020101 0000", "non-OCTET"},
		{"child overruns parent", "3003 0203010203", "overruns"},
		{"tag number too large", "BF8181818101 00", "tag number"},
		{"too deep", strings.Repeat("3080", maxBERDepth+2) + strings.Repeat("0000", maxBERDepth+2), "deep"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := normalizeBER(unhex(t, tc.in))
			if err == nil {
				t.Fatal("normalizeBER accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestNormalizeBERManyChunks: OpenSSL-style streamed content with many
// chunks and no NUL byte (the PKCS#7 library's quadratic case) flattens
// into one OCTET STRING.
func TestNormalizeBERManyChunks(t *testing.T) {
	chunk := bytes.Repeat([]byte("A"), 100)
	var in bytes.Buffer
	in.Write([]byte{0x24, 0x80})
	const n = 50000
	for i := 0; i < n; i++ {
		in.Write([]byte{0x04, byte(len(chunk))})
		in.Write(chunk)
	}
	in.Write([]byte{0, 0})
	out, err := normalizeBER(in.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := n * len(chunk)
	if out[0] != 0x04 || len(out) != want+5 || !bytes.Equal(out[5:], bytes.Repeat(chunk, n)) {
		t.Errorf("flattened to %d bytes (tag %x), want a %d-byte OCTET STRING", len(out), out[0], want)
	}
}

// TestNormalizeBERElementLimit: the parse tree is bounded by
// maxBERElements, counting the outer element; one element more is refused
// rather than allocated.
func TestNormalizeBERElementLimit(t *testing.T) {
	// An indefinite-length SEQUENCE of n NULLs: not DER, so it takes the
	// parser, not the DER fast path.
	seq := func(n int) []byte {
		b := make([]byte, 0, 2+2*n+2)
		b = append(b, 0x30, 0x80)
		for i := 0; i < n; i++ {
			b = append(b, 0x05, 0x00)
		}
		return append(b, 0, 0)
	}
	out, err := normalizeBER(seq(maxBERElements - 1))
	if err != nil {
		t.Fatalf("%d elements: %v", maxBERElements, err)
	}
	// 0x30, a 3-octet long length, the NULLs.
	if want := 1 + 4 + 2*(maxBERElements-1); len(out) != want || out[0] != 0x30 {
		t.Errorf("%d elements: %d bytes out (tag %x), want a %d-byte SEQUENCE", maxBERElements, len(out), out[0], want)
	}
	_, err = normalizeBER(seq(maxBERElements))
	if err == nil || !strings.Contains(err.Error(), "more than 262144 BER elements") {
		t.Fatalf("%d elements: error %v, want the element limit", maxBERElements+1, err)
	}
}

func hexDecode(s string) ([]byte, error) {
	return hex.DecodeString(strings.ReplaceAll(s, " ", ""))
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hexDecode(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

package mime

import (
	"bytes"
	"encoding/base64"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestDecodeBase64Lines: the one-allocation decoder gives decodeBase64's
// bytes, and its error text, for every input shape a message carries.
func TestDecodeBase64Lines(t *testing.T) {
	payload := bytes.Repeat([]byte("ordonnance numérique\x00\xff"), 200)
	enc := base64.StdEncoding.EncodeToString(payload)
	var crlf, lf strings.Builder
	for i := 0; i < len(enc); i += 76 {
		line := enc[i:min(i+76, len(enc))]
		crlf.WriteString(line + "\r\n")
		lf.WriteString(line + "\n")
	}
	for name, in := range map[string]string{
		"CRLF lines":      crlf.String(),
		"LF lines":        lf.String(),
		"one line":        enc,
		"spaces":          strings.ReplaceAll(crlf.String(), "\r\n", " \r\n"),
		"tabs":            strings.ReplaceAll(lf.String(), "\n", "\t\n"),
		"invalid":         crlf.String()[:100] + "*" + crlf.String()[100:],
		"truncated":       enc[:len(enc)-3],
		"empty":           "",
		"only line break": "\r\n",
		"padding inside":  "QQ==QQ==\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			want, wantErr := decodeBase64([]byte(in))
			got, err := decodeBase64Lines([]byte(in))
			if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("error %v, want %v", err, wantErr)
			}
			if err == nil && !bytes.Equal(got, want) {
				t.Fatalf("decoded %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

// TestReadAllSized: io.ReadAll's result whatever the declared size (exact,
// too small, too large, zero) and however the reader splits its reads, and
// its error.
func TestReadAllSized(t *testing.T) {
	data := bytes.Repeat([]byte("<xml/>"), 1000)
	for _, size := range []uint64{0, 1, 100, uint64(len(data)) - 1, uint64(len(data)), uint64(len(data)) + 1, 1 << 16} {
		for name, r := range map[string]func() io.Reader{
			"whole":    func() io.Reader { return bytes.NewReader(data) },
			"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
			"half":     func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
			"data+EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) },
		} {
			got, err := readAllSized(r(), size)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("size %d, %s: %d bytes, %v", size, name, len(got), err)
			}
		}
	}
	// On a read error the caller keeps only the error (how much was read
	// before it depends on the buffer size, as with io.ReadAll).
	_, err := readAllSized(iotest.TimeoutReader(bytes.NewReader(data)), 10)
	_, wantErr := io.ReadAll(iotest.TimeoutReader(bytes.NewReader(data)))
	if err != wantErr {
		t.Errorf("error %v, io.ReadAll %v", err, wantErr)
	}
}

package smtpd

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestReadAllOwnsItsResult: the scratch buffer is reused between messages,
// so each result must be a copy that a later read cannot overwrite; a
// message over the limit is refused; an oversized buffer is not kept.
func TestReadAllOwnsItsResult(t *testing.T) {
	s := New(Config{})
	first, err := s.readAll(strings.NewReader("first message\r\n"), 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.readAll(strings.NewReader("SECOND MESSAGE, longer than the first\r\n"), 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	if string(first) != "first message\r\n" || string(second) != "SECOND MESSAGE, longer than the first\r\n" {
		t.Fatalf("results share storage: %q, %q", first, second)
	}
	if _, err := s.readAll(strings.NewReader("12345"), 4); !errors.Is(err, errTooLarge) {
		t.Fatalf("over the limit: %v, want errTooLarge", err)
	}
	if _, err := s.readAll(bytes.NewReader(make([]byte, 2*maxPooledScratch)), 4*maxPooledScratch); err != nil {
		t.Fatal(err)
	}
	if b, ok := s.scratch.Get().(*bytes.Buffer); ok && b.Cap() > maxPooledScratch {
		t.Fatalf("a %d-byte scratch buffer was kept", b.Cap())
	}
}

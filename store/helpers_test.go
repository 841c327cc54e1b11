package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mss.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func reopen(t testing.TB, s *Store, path string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	return s2
}

// testFiling builds a filing whose bytes, number and digest derive from n.
func testFiling(n int, recipients ...string) *Filing {
	raw := []byte(fmt.Sprintf("From: dr@example.org\r\nMessage-ID: <%d@example.org>\r\n\r\nprescription %d\r\n", n, n))
	return &Filing{
		Raw:        raw,
		Received:   time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
		Sender:     "dr@example.org",
		Recipients: recipients,
		Number:     fmt.Sprintf("RX%08d", n),
		Digest:     sha256.Sum256(raw),
		MessageID:  fmt.Sprintf("<%d@example.org>", n),
		Signer:     "dr@example.org",
		IDNPS:      "810101201234",
		PatientINS: "180017512345610",
		Delivery:   "messaging-only",
		Meta:       []byte(fmt.Sprintf("meta %d", n)),
	}
}

func mustFile(t testing.TB, s *Store, f *Filing) *Filed {
	t.Helper()
	res, err := s.File(context.Background(), f)
	if err != nil {
		t.Fatalf("File: %v", err)
	}
	return res
}

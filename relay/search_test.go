package relay_test

import (
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestIMAPSearchDecoded: SEARCH finds words as a reader sees them, inside
// base64 and quoted-printable parts, in ISO-8859-1, and in RFC 2047 encoded
// header words (RFC 3501 §6.4.4).
func TestIMAPSearchDecoded(t *testing.T) {
	h := newHarness(t)
	fhir := base64.StdEncoding.EncodeToString([]byte(`{"resourceType":"Bundle","text":"Amoxicilline 1 g"}`))
	msg := fmt.Sprintf("From: dr@example.org\r\nSubject: =?utf-8?q?Ordonnance_=C3=A9lectronique?=\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"+
		"Content-Transfer-Encoding: quoted-printable\r\n\r\nPharmacie G=E9n=E9rale\r\n--b\r\n"+
		"Content-Type: application/fhir+json\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--b--\r\n", fhir)
	c := h.imap(h.info.Pharmacy, nil)
	ap := c.Append("Drafts", int64(len(msg)), nil)
	if _, err := ap.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := ap.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ap.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("Drafts", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		criteria imap.SearchCriteria
		want     int
	}{
		{"TEXT in base64 JSON", imap.SearchCriteria{Text: []string{"amoxicilline"}}, 1},
		{"BODY in ISO-8859-1 QP", imap.SearchCriteria{Body: []string{"Générale"}}, 1},
		{"SUBJECT encoded word", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "électronique"}}}, 1},
		{"absent word", imap.SearchCriteria{Text: []string{"morphine"}}, 0},
	} {
		data, err := c.Search(&tc.criteria, nil).Wait()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := len(data.AllSeqNums()); got != tc.want {
			t.Errorf("%s: %d hits, want %d", tc.name, got, tc.want)
		}
	}
}

package intake

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"mssrelay/mime"
	"mssrelay/signing"
	"mssrelay/store"
)

// TestSigningRepliesMatchDocs: every verification reason maps to exactly
// the reply that docs/security-model.md promises senders.
func TestSigningRepliesMatchDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security-model.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile(`(?m)^\|\s*([A-Za-z]+)\s*\|\s*(\d{3} \d\.\d+\.\d+)\s*\|`).FindAllSubmatch(doc, -1)
	documented := map[string]string{}
	for _, r := range rows {
		documented[norm(string(r[1]))] = string(r[2])
	}
	for reason := signing.ReasonMalformed; reason <= signing.ReasonIDNPSMismatch; reason++ {
		want, ok := documented[norm(reason.String())]
		if !ok {
			t.Errorf("reason %s has no row in docs/security-model.md", reason)
			continue
		}
		r := fromSigning(&signing.Error{Reason: reason, Detail: "x"})
		got := fmt.Sprintf("%d %d.%d.%d", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
		if got != want {
			t.Errorf("reason %s replies %s, docs say %s", reason, got, want)
		}
		if r.Temporary() != (reason == signing.ReasonRevocationUnknown) {
			t.Errorf("reason %s: temporary = %v", reason, r.Temporary())
		}
	}
	// An error that is not a verdict (a bug, an I/O problem) must never
	// become a permanent refusal: the sender retries.
	if r := fromSigning(errors.New("boom")); !r.Temporary() {
		t.Errorf("unexpected verify error is permanent: %v", r)
	}
}

// norm folds "EmailMismatch" and "email-mismatch" to one spelling.
func norm(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, "-", ""))
}

func TestStructuralReplies(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{&mime.Error{Kind: mime.KindTooLarge, Detail: "x"}, "552 5.3.4"},
		{&mime.Error{Kind: mime.KindLimit, Detail: "x"}, "552 5.3.4"},
		{&mime.Error{Kind: mime.KindMalformed, Detail: "x"}, "554 5.6.0"},
		{&mime.Error{Kind: mime.KindNotSigned, Detail: "x"}, "554 5.7.0"},
		{&mime.Error{Kind: mime.KindPrescription, Detail: "x"}, "554 5.6.0"},
		{errors.New("other"), "554 5.6.0"},
	}
	for _, tc := range cases {
		r := fromMIME(tc.err)
		if got := fmt.Sprintf("%d %d.%d.%d", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2]); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
	if r := fromStore(fmt.Errorf("x: %w", store.ErrReplay)); r.Code != 554 || r.Enhanced != [3]int{5, 7, 1} {
		t.Errorf("replay: %v", r)
	}
	// A full mailbox is transient (RFC 3463 X.2.2) and names the recipient.
	over := fmt.Errorf("file: %w", &store.QuotaError{Account: "pharma@example.org", MaxMessages: 1, Messages: 1, AddMessages: 1})
	if r := fromStore(over); r.Code != 452 || r.Enhanced != [3]int{4, 2, 2} || !strings.Contains(r.Message, "pharma@example.org") {
		t.Errorf("over quota: %v", r)
	}
	if r := fromStore(fmt.Errorf("x: %w", store.ErrOverQuota)); r.Code != 452 || r.Enhanced != [3]int{4, 2, 2} {
		t.Errorf("bare over quota: %v", r)
	}
	// Anything else from the store is transient: the message was not filed
	// and the sender must retry, never be told it failed for good.
	if r := fromStore(errors.New("disk full")); !r.Temporary() {
		t.Errorf("store failure is permanent: %v", r)
	}
}

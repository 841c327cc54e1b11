package mime

import (
	"os"
	"strings"
	"testing"
)

// docExample returns the fenced blocks of the "Complete example" section
// of docs/message-format.md, in order, without their fences.
func docExample(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../docs/message-format.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Complete example\n")
	if !ok {
		t.Fatal(`docs/message-format.md has no "## Complete example" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var blocks []string
	for {
		_, rest, ok := strings.Cut(section, "\n```")
		if !ok {
			break
		}
		_, rest, _ = strings.Cut(rest, "\n") // the info string ("json")
		block, after, ok := strings.Cut(rest, "\n```")
		if !ok {
			t.Fatal("unterminated fenced block in the complete example")
		}
		blocks = append(blocks, block+"\n")
		section = after
	}
	if len(blocks) < 2 {
		t.Fatalf("the complete example has %d fenced blocks, want the message and the decoded FHIR part", len(blocks))
	}
	return blocks
}

// TestDocCompleteExample: the complete example of docs/message-format.md
// is what the generator produces for mime.NewSample(1) with
// X-Ordonnance-Delivery: messaging-only, byte for byte in the signed
// entity and the decoded FHIR Bundle, so the contract cannot drift from
// the code that tests, the demo and the load tool share.
func TestDocCompleteExample(t *testing.T) {
	blocks := docExample(t)
	s := NewSample(1)
	s.Delivery = DeliveryMessagingOnly
	content := string(s.Content())

	// The signed entity: from its first field to its close delimiter.
	msg := blocks[0]
	start := strings.Index(msg, "\nX-Ordonnance-Delivery: ")
	h, _, _ := strings.Cut(content, "\r\n\r\n")
	ct, _ := HeaderField([]byte(h+"\r\n\r\n"), "Content-Type")
	_, boundary, _ := strings.Cut(ct, `boundary="`)
	boundary = strings.TrimSuffix(boundary, `"`)
	closeLine := "\n--" + boundary + "--\n"
	end := strings.Index(msg, closeLine)
	if start < 0 || end < start {
		t.Fatalf("the example message has no signed entity from X-Ordonnance-Delivery to %q", strings.TrimSpace(closeLine))
	}
	got := strings.ReplaceAll(msg[start+1:end+len(closeLine)], "\n", "\r\n")
	if got != content {
		t.Errorf("the example's signed entity differs from NewSample(1).Content():\n--- doc\n%s\n--- generator\n%s", got, content)
	}

	// The outer header names the same prescription and patient.
	for _, want := range []string{
		"Subject: Ordonnance " + s.Number + "\n",
		" " + s.PatientINS + "@patient.mssante.fr\n",
		`Content-Type: multipart/signed; protocol="application/pkcs7-signature";` + "\n\tmicalg=sha-256;",
	} {
		if !strings.Contains(msg[:start], want) {
			t.Errorf("the example's outer header lacks %q", want)
		}
	}

	// The decoded FHIR part.
	if blocks[1] != string(s.fhirBundle()) {
		t.Errorf("the example's decoded FHIR part differs from the generator's:\n--- doc\n%s\n--- generator\n%s", blocks[1], s.fhirBundle())
	}
}

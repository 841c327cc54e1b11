package relay_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
)

// nestIn wraps a MIME entity in n more multipart/mixed levels (fixed-width
// boundaries: none is a prefix of another, nor of the generator's).
func nestIn(entity []byte, n int) []byte {
	out := entity
	for i := n - 1; i >= 0; i-- {
		b := fmt.Sprintf("=_lvl_%03d", i)
		out = fmt.Appendf(nil, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n--%s\r\n%s\r\n--%s--\r\n", b, b, out, b)
	}
	return out
}

// signedAs composes a message from the demo prescriber to the pharmacy
// around content, signed detached (multipart/signed) or opaque
// (application/pkcs7-mime, the content inside the SignedData).
func (h *harness) signedAs(content []byte, number string, opaque bool) []byte {
	h.t.Helper()
	now := time.Now()
	header := submit.Message(h.info.Prescriber.Address, h.info.Pharmacy.Address, "Ordonnance",
		fmt.Sprintf("%d.%s@%s", now.UnixNano(), number, demo.Domain), now)
	if opaque {
		p7, err := signing.SignOpaque(h.signer(), content)
		if err != nil {
			h.t.Fatal(err)
		}
		return mime.BuildOpaque(header, p7)
	}
	sig, err := signing.SignDetached(h.signer(), content)
	if err != nil {
		h.t.Fatal(err)
	}
	return mime.BuildDetached(header, content, sig)
}

// TestStructureDepthOverSMTP: the nesting limit holds over SMTP with the
// reply docs/message-format.md gives. In a detached message the scan that
// runs first counts multipart/signed and every level of the signed entity:
// one level too many is 552 5.3.4. In an opaque message the signed entity
// is inside the PKCS#7, out of that scan's sight; extraction scans it with
// the same configured limits, and one level too many is an invalid
// prescription (554 5.6.0). A configured limit stricter than the default
// applies to both.
func TestStructureDepthOverSMTP(t *testing.T) {
	type tc struct {
		name   string
		opaque bool
		levels int               // multipart levels of the whole message (detached) or of the signed entity (opaque)
		code   int               // 0: accepted
		enh    smtp.EnhancedCode // of a refusal
		detail string            // in a refusal's text
	}
	run := func(t *testing.T, h *harness, cases []tc) {
		accepted := 0
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				sample := demo.SamplePrescription(time.Now())
				// The generator's entity is one multipart level; detached
				// adds multipart/signed.
				extra := c.levels - 1
				if !c.opaque {
					extra--
				}
				msg := h.signedAs(nestIn(sample.Content(), extra), sample.Number, c.opaque)
				_, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg)
				if c.code == 0 {
					if err != nil {
						t.Fatalf("refused: %v", err)
					}
					accepted++
					if _, err := h.relay.Store().RecordByNumber(sample.Number); err != nil {
						t.Fatalf("accepted but not filed: %v", err)
					}
					return
				}
				if code, enh := smtpCode(err); code != c.code || enh != c.enh || !strings.Contains(err.Error(), c.detail) {
					t.Fatalf("got %v, want %d %v …%s…", err, c.code, c.enh, c.detail)
				}
			})
		}
		if n := h.storedCount(h.info.Pharmacy.Address); n != accepted {
			t.Errorf("the pharmacy holds %d messages, %d were accepted", n, accepted)
		}
	}
	tooLarge, invalid := smtp.EnhancedCode{5, 3, 4}, smtp.EnhancedCode{5, 6, 0}

	t.Run("default limit", func(t *testing.T) {
		run(t, newHarness(t), []tc{
			{"detached, 16 levels", false, 16, 0, smtp.EnhancedCode{}, ""},
			{"detached, 17 levels", false, 17, 552, tooLarge, "MIME nesting deeper than 16 levels"},
			{"opaque, 16 levels signed", true, 16, 0, smtp.EnhancedCode{}, ""},
			{"opaque, 17 levels signed", true, 17, 554, invalid, "signed content: MIME nesting deeper than 16 levels"},
		})
	})
	t.Run("configured limit", func(t *testing.T) {
		h := newHarnessWith(t, func(cfg *configs.Config) { cfg.Limits.MaxMIMEDepth = 4 })
		run(t, h, []tc{
			{"detached, 4 levels", false, 4, 0, smtp.EnhancedCode{}, ""},
			{"detached, 5 levels", false, 5, 552, tooLarge, "MIME nesting deeper than 4 levels"},
			{"opaque, 4 levels signed", true, 4, 0, smtp.EnhancedCode{}, ""},
			// Under the default limit (16) this one would be filed.
			{"opaque, 5 levels signed", true, 5, 554, invalid, "signed content: MIME nesting deeper than 4 levels"},
		})
	})
}

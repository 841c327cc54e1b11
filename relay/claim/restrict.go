package claim

import (
	"bytes"
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"mssrelay/signing"
)

// RestrictField names the executants who may claim a prescription. It is
// read from the header of the SIGNED entity only, so that the prescriber
// vouches for it; the same field in the outer header (which anyone on the
// path could add) is ignored. Its value is a comma-separated list of
// addresses (RFC 5322 address-list; display names allowed); several
// fields add up.
//
//	X-Ordonnance-Restrict: pharmacie.centrale@mssante.test, Labo <labo@mssante.test>
const RestrictField = "X-Ordonnance-Restrict"

// errUnreadable marks a filed message whose signed content cannot be read
// back: it was verified when filed, so this is damage, not a claimant's
// mistake.
var errUnreadable = errors.New("claim: filed message unreadable")

// signedContent returns the signed MIME entity of a filed message, without
// verifying it again: it was verified before it was filed, and filed
// bytes never change. Verifying now could only fail for reasons that do
// not concern a claim (a certificate expired since, a CRL not yet
// refreshed).
func signedContent(raw []byte) ([]byte, error) {
	content, err := signing.FiledContent(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnreadable, err)
	}
	return content, nil
}

// restriction is the list of addresses a prescription is restricted to;
// restricted is false when the signed entity has no RestrictField.
type restriction struct {
	restricted bool
	allowed    []string
	// bad holds the reason a present field could not be read: the
	// prescription is then claimable by nobody (fail closed).
	bad string
}

// readRestriction reads every RestrictField of the signed entity's header.
func readRestriction(content []byte) restriction {
	var r restriction
	for _, v := range headerValues(content, RestrictField) {
		r.restricted = true
		list, err := mail.ParseAddressList(v)
		if err != nil {
			r.bad = fmt.Sprintf("%s %q: %v", RestrictField, clip(v), err)
			continue
		}
		for _, a := range list {
			r.allowed = append(r.allowed, a.Address)
		}
	}
	return r
}

// allows reports whether account may claim.
func (r restriction) allows(account string) bool {
	if !r.restricted {
		return true
	}
	if r.bad != "" {
		return false
	}
	for _, a := range r.allowed {
		if sameAddress(a, account) {
			return true
		}
	}
	return false
}

// headerValues returns the unfolded values of every field called name in
// the header block that starts content (up to its first empty line).
func headerValues(content []byte, name string) []string {
	var out []string
	var cur []byte
	in := false
	flush := func() {
		if in {
			out = append(out, strings.TrimSpace(string(cur)))
		}
		in, cur = false, cur[:0]
	}
	for len(content) > 0 {
		var line []byte
		line, content, _ = bytes.Cut(content, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if in {
				cur = append(cur, line...) // RFC 5322 §2.2.3: unfolding removes the CRLF only
			}
			continue
		}
		flush()
		colon := bytes.IndexByte(line, ':')
		if colon > 0 && strings.EqualFold(strings.TrimRight(string(line[:colon]), " \t"), name) {
			in = true
			cur = append(cur, line[colon+1:]...)
		}
	}
	flush()
	return out
}

// sameAddress compares addresses with an exact local part and a
// case-insensitive domain (RFC 5321 §2.4), as intake.SameAddress does.
func sameAddress(a, b string) bool {
	i, j := strings.LastIndexByte(a, '@'), strings.LastIndexByte(b, '@')
	return i > 0 && j > 0 && a[:i] == b[:j] && strings.EqualFold(a[i+1:], b[j+1:])
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

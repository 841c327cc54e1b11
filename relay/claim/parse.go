package claim

import (
	"bytes"
	"errors"
	"fmt"
	stdmime "mime"
	"strings"
	"time"

	"mssrelay/mime"
)

// The claim grammar (docs/claim.md), in ABNF (RFC 5234), case-insensitive
// keyword:
//
//	claim-line = *WSP "CLAIM" 1*WSP number 1*WSP ins *WSP
//	number     = 1*64( ALPHA / DIGIT / "." / "_" / "-" )
//	ins        = ins-char 14( *WSP ins-char )    ; 15 characters, spaces allowed
//	ins-char   = DIGIT / "A" / "B" / "a" / "b"   ; 2A/2B: Corsica
//
// The INS may be written in the groups the health card prints
// ("1 84 12 75 123 456 40"); its blanks are dropped and it must then be a
// valid NIR-based INS, key included (mime.ValidINS). Nothing else may
// follow on the line.
const (
	Keyword = "CLAIM"
	// MaxLineBytes bounds a claim line: the keyword, a 64-character
	// number and a spaced INS fit in well under it.
	MaxLineBytes = 256
	// MaxMessageBytes bounds a claim message: a claim is a few lines, and
	// the relay reads no more of it (552 5.3.4 past it).
	MaxMessageBytes = 64 << 10
	maxNumberBytes  = 64
)

// ErrSyntax is matched by every parse failure; the error text says what is
// wrong in words a vendor can act on.
var ErrSyntax = errors.New("claim: syntax")

func syntaxErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSyntax, fmt.Sprintf(format, args...))
}

// Format writes the claim line for a number and an INS (the Subject to
// send).
func Format(number, ins string) string { return Keyword + " " + number + " " + ins }

// Message builds a complete claim message: the header fields a
// submission needs and the claim line as Subject and as the body's first
// line. Vendors can copy its shape (docs/claim.md).
func Message(from, claimAddress, number, ins, messageID string, date time.Time) []byte {
	line := Format(number, ins)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n",
		from, claimAddress, line, date.Format(time.RFC1123Z), messageID, line)
	return b.Bytes()
}

// ParseLine parses one claim line and returns the number and the INS
// without blanks (a Corsican 2a/2b in upper case).
func ParseLine(line string) (number, ins string, err error) {
	if len(line) > MaxLineBytes {
		return "", "", syntaxErr("the claim line is longer than %d characters", MaxLineBytes)
	}
	rest := strings.TrimLeft(line, " \t")
	if len(rest) < len(Keyword) || !strings.EqualFold(rest[:len(Keyword)], Keyword) {
		return "", "", syntaxErr("the line does not start with %s", Keyword)
	}
	rest = rest[len(Keyword):]
	if rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
		return "", "", syntaxErr("%s must be followed by a space, the prescription number, a space and the INS", Keyword)
	}
	rest = strings.TrimLeft(rest, " \t")
	end := strings.IndexAny(rest, " \t")
	if end < 0 {
		return "", "", syntaxErr("the patient's INS is missing after the prescription number")
	}
	number, rest = rest[:end], rest[end:]
	if len(number) > maxNumberBytes || !validNumber(number) {
		return "", "", syntaxErr("the prescription number must be 1 to %d characters among A-Z a-z 0-9 . _ -", maxNumberBytes)
	}
	var b strings.Builder
	for i := 0; i < len(rest); i++ {
		switch c := rest[i]; {
		case c == ' ' || c == '\t':
		case '0' <= c && c <= '9', c == 'A', c == 'B':
			b.WriteByte(c)
		case c == 'a' || c == 'b':
			b.WriteByte(c - 'a' + 'A')
		default:
			return "", "", syntaxErr("the INS may hold only digits (and 2A/2B for Corsica), separated by spaces; nothing may follow it")
		}
	}
	ins = b.String()
	if len(ins) != 15 {
		return "", "", syntaxErr("the INS has %d characters, not 15 (13 digits and the 2-digit key)", len(ins))
	}
	if !mime.ValidINS(ins) {
		return "", "", syntaxErr("the INS is not valid (its key does not match: check the digits)")
	}
	return number, ins, nil
}

func validNumber(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// startsWithKeyword reports whether s, blanks aside, starts with the
// keyword as a word.
func startsWithKeyword(s string) bool {
	s = strings.TrimLeft(s, " \t")
	if len(s) < len(Keyword) || !strings.EqualFold(s[:len(Keyword)], Keyword) {
		return false
	}
	return len(s) == len(Keyword) || s[len(Keyword)] == ' ' || s[len(Keyword)] == '\t'
}

// ParseMessage finds the claim in a message: the Subject when it starts
// with the keyword (RFC 2047 encoded words decoded), otherwise the first
// non-blank line of the body, when the body is plain text without a
// transfer encoding (no Content-Type, or text/plain; 7bit, 8bit or none).
// The first place that starts with the keyword is the claim: a malformed
// Subject is an error even if the body holds a good line.
func ParseMessage(raw []byte) (number, ins string, err error) {
	if len(raw) > MaxMessageBytes {
		return "", "", syntaxErr("a claim message is at most %d bytes", MaxMessageBytes)
	}
	header, body := splitHeader(raw)
	if subj, ok := mime.HeaderField(header, "Subject"); ok {
		if dec, err := new(stdmime.WordDecoder).DecodeHeader(subj); err == nil {
			subj = dec
		}
		if startsWithKeyword(subj) {
			return ParseLine(strings.TrimRight(subj, " \t"))
		}
	}
	if !plainBody(header) {
		return "", "", syntaxErr("no Subject starting with %s (the body is not read: it is not plain text)", Keyword)
	}
	for len(body) > 0 {
		var line []byte
		line, body, _ = bytes.Cut(body, []byte("\n"))
		l := strings.TrimRight(string(bytes.TrimSuffix(line, []byte("\r"))), " \t")
		if strings.TrimLeft(l, " \t") == "" {
			continue
		}
		if !startsWithKeyword(l) {
			break
		}
		return ParseLine(l)
	}
	return "", "", syntaxErr("neither the Subject nor the first line of the body starts with %s", Keyword)
}

// splitHeader cuts a message at the empty line that ends its header (CRLF
// or bare LF line ends).
func splitHeader(raw []byte) (header, body []byte) {
	if bytes.HasPrefix(raw, []byte("\r\n")) || bytes.HasPrefix(raw, []byte("\n")) {
		_, body, _ = bytes.Cut(raw, []byte("\n"))
		return nil, body
	}
	i := bytes.Index(raw, []byte("\n\r\n"))
	j := bytes.Index(raw, []byte("\n\n"))
	switch {
	case i < 0 && j < 0:
		return raw, nil
	case j < 0 || (i >= 0 && i < j):
		return raw[:i+1], raw[i+3:]
	default:
		return raw[:j+1], raw[j+2:]
	}
}

// plainBody reports whether the body can be read as it is: text/plain (or
// no Content-Type, RFC 2045 §5.2) without a transfer encoding that would
// need decoding.
func plainBody(header []byte) bool {
	if ct, ok := mime.HeaderField(header, "Content-Type"); ok {
		media, _, err := stdmime.ParseMediaType(ct)
		if err != nil || media != "text/plain" {
			return false
		}
	}
	if cte, ok := mime.HeaderField(header, "Content-Transfer-Encoding"); ok {
		switch strings.ToLower(strings.TrimSpace(cte)) {
		case "7bit", "8bit", "":
		default:
			return false
		}
	}
	return true
}

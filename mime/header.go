package mime

import (
	"bytes"
	"fmt"
	stdmime "mime"
	"net/mail"
	"strings"
)

// errorf builds a *Error of kind k.
func errorf(k ErrorKind, format string, args ...any) *Error {
	return &Error{Kind: k, Detail: fmt.Sprintf(format, args...)}
}

// nextLine returns the line that starts at pos without its terminator (LF
// or CRLF) and the offset just after the terminator. The last line of b
// may have no terminator. The relay receives CRLF (RFC 5322 §2.1) but the
// opaque form's content and test fixtures may use bare LF, so both count.
func nextLine(b []byte, pos int) (line []byte, next int) {
	i := bytes.IndexByte(b[pos:], '\n')
	if i < 0 {
		return b[pos:], len(b)
	}
	end := pos + i
	next = end + 1
	if end > pos && b[end-1] == '\r' {
		end--
	}
	return b[pos:end], next
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// field is one header field of a raw header block.
type field struct {
	name  []byte // as written
	value []byte // raw bytes after the colon up to the end of the field, folds included
}

// headerBlock is a parsed header block (RFC 5322 §2.2, RFC 2045 §3).
type headerBlock struct {
	fields []field
	// end is the offset just after the empty line that ends the block, or
	// len(b) when the input ended inside the header.
	end        int
	terminated bool
}

// parseHeader reads the header block that starts at pos in b. It refuses
// lines that are neither a field ("name: value", RFC 5322 §2.2) nor a
// continuation (folding, §2.2.3), bare CR and NUL bytes, and
// whitespace-only lines (parsers disagree on whether they end the header:
// a parser differential we do not want under a signature). maxBytes and
// maxFields bound the block; 0 means no bound.
func parseHeader(b []byte, pos, maxBytes, maxFields int) (headerBlock, error) {
	var h headerBlock
	start := pos
	valueStart := 0 // offset in b where the current field's value begins
	for pos < len(b) {
		line, next := nextLine(b, pos)
		if maxBytes > 0 && next-start > maxBytes {
			return h, errorf(KindLimit, "header block larger than %d bytes", maxBytes)
		}
		if len(line) == 0 {
			h.end, h.terminated = next, true
			return h, nil
		}
		if i := bytes.IndexByte(line, '\r'); i >= 0 {
			return h, errorf(KindMalformed, "header line contains a bare CR")
		}
		if i := bytes.IndexByte(line, 0); i >= 0 {
			return h, errorf(KindMalformed, "header line contains a NUL byte")
		}
		if isWSP(line[0]) {
			if len(h.fields) == 0 {
				return h, errorf(KindMalformed, "header block begins with a continuation line")
			}
			if len(bytes.TrimLeft(line, " \t")) == 0 {
				return h, errorf(KindMalformed, "header contains a whitespace-only line")
			}
			// Extend the current field's value to the end of this line.
			h.fields[len(h.fields)-1].value = b[valueStart : pos+len(line)]
			pos = next
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return h, errorf(KindMalformed, "header line is not a field (no name and colon): %q", clip(line))
		}
		if !validFieldName(line[:colon]) {
			return h, errorf(KindMalformed, "header field name %q has characters outside RFC 5322 ftext", clip(line[:colon]))
		}
		if maxFields > 0 && len(h.fields) >= maxFields {
			return h, errorf(KindLimit, "header block has more than %d fields", maxFields)
		}
		valueStart = pos + colon + 1
		h.fields = append(h.fields, field{name: line[:colon], value: line[colon+1:]})
		pos = next
	}
	h.end = len(b)
	return h, nil
}

// validFieldName checks RFC 5322 §3.6.8 ftext: printable US-ASCII except
// colon. A space before the colon (obsolete syntax) is refused too.
func validFieldName(name []byte) bool {
	for _, c := range name {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return len(name) > 0
}

// unfold removes the line breaks of folded lines (RFC 5322 §2.2.3) and
// trims surrounding whitespace.
func unfold(v []byte) string {
	if bytes.IndexByte(v, '\n') < 0 {
		return string(bytes.Trim(v, " \t"))
	}
	out := make([]byte, 0, len(v))
	for _, c := range v {
		if c == '\r' || c == '\n' {
			continue
		}
		out = append(out, c)
	}
	return string(bytes.Trim(out, " \t"))
}

// get returns the unfolded value of the first field called name and how
// many fields carry that name.
func (h *headerBlock) get(name string) (string, int) {
	var v string
	n := 0
	for i := range h.fields {
		if strings.EqualFold(string(h.fields[i].name), name) {
			if n == 0 {
				v = unfold(h.fields[i].value)
			}
			n++
		}
	}
	return v, n
}

// single returns the value of a field that may appear at most once
// (RFC 2045 §3 for MIME fields): a duplicate is a parser differential
// (first or last wins depending on the reader) and is refused.
func (h *headerBlock) single(name string) (string, bool, error) {
	v, n := h.get(name)
	if n > 1 {
		return "", false, errorf(KindMalformed, "more than one %s field", name)
	}
	return v, n == 1, nil
}

// contentType is a parsed Content-Type (RFC 2045 §5.1) with the media
// type and parameter names in lower case.
type contentType struct {
	media  string
	params map[string]string
}

// parseContentType reads the Content-Type and Content-Transfer-Encoding
// of a header block. An absent Content-Type is text/plain (RFC 2045 §5.2).
func parseContentType(h *headerBlock) (contentType, string, error) {
	ct := contentType{media: "text/plain"}
	v, ok, err := h.single("Content-Type")
	if err != nil {
		return ct, "", err
	}
	if ok {
		mt, params, perr := stdmime.ParseMediaType(v)
		if perr != nil {
			return ct, "", errorf(KindMalformed, "invalid Content-Type %q: %v", clip([]byte(v)), perr)
		}
		ct = contentType{media: mt, params: params}
	}
	cte, _, err := h.single("Content-Transfer-Encoding")
	if err != nil {
		return ct, "", err
	}
	return ct, strings.ToLower(cte), nil
}

// HeaderField returns the first value of a header field in a raw header
// block (unfolded, not decoded), and whether it was present. The block ends
// at its first empty line; lines that are not fields are skipped, so this
// never fails on hostile input.
func HeaderField(header []byte, name string) (string, bool) {
	var (
		cur   []byte // value lines of the field being collected
		found bool
		pos   int
	)
	for pos < len(header) {
		line, next := nextLine(header, pos)
		pos = next
		if len(line) == 0 {
			break
		}
		if isWSP(line[0]) {
			if found {
				cur = append(cur, line...)
			}
			continue
		}
		if found {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon > 0 && strings.EqualFold(string(line[:colon]), name) {
			found = true
			cur = append(cur, line[colon+1:]...)
		}
	}
	if !found {
		return "", false
	}
	return unfold(cur), true
}

// Address parses an RFC 5322 mailbox (with optional display name) and
// returns the bare address, lower-casing the domain only: the local part
// is case-sensitive (RFC 5321 §2.4), the domain is not.
func Address(s string) (string, error) {
	// net/mail accepts a group ("name: a@b;") and returns its member; a
	// From: is a mailbox (RFC 5322 §3.6.2), never a group.
	if hasTopLevelColon(s) {
		return "", errorf(KindMalformed, "address %q is a group, not a mailbox", clip([]byte(s)))
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", errorf(KindMalformed, "invalid address %q: %v", clip([]byte(s)), err)
	}
	at := strings.LastIndexByte(a.Address, '@')
	if at <= 0 || at == len(a.Address)-1 {
		return "", errorf(KindMalformed, "address %q has no domain", clip([]byte(s)))
	}
	return a.Address[:at] + "@" + strings.ToLower(a.Address[at+1:]), nil
}

// clip shortens untrusted text quoted in an error message.
func clip(b []byte) string {
	const max = 60
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// parseMediaTypeLoose parses a Content-Type or Content-Disposition value,
// keeping the parameters that did parse when others are invalid (the
// caller only wants a file name, not a verdict on the field).
func parseMediaTypeLoose(v string) (string, map[string]string, error) {
	mt, params, err := stdmime.ParseMediaType(v)
	if err == stdmime.ErrInvalidMediaParameter {
		err = nil
	}
	return mt, params, err
}

// hasTopLevelColon reports a colon outside quoted strings, comments and
// domain literals: the mark of RFC 5322 group syntax (§3.4).
func hasTopLevelColon(s string) bool {
	depth := 0 // comment nesting
	quoted, literal := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && (quoted || depth > 0):
			i++ // quoted-pair
		case quoted:
			quoted = c != '"'
		case depth > 0:
			if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case literal:
			literal = c != ']'
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case c == '[':
			literal = true
		case c == ':':
			return true
		}
	}
	return false
}

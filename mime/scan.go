package mime

import (
	"bytes"
	"strings"
)

// withDefaults replaces zero or negative limits by the defaults, so a
// Limits left partly empty by a configuration never means "unlimited".
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = d.MaxMessageBytes
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = d.MaxHeaders
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxParts <= 0 {
		l.MaxParts = d.MaxParts
	}
	return l
}

// frame is one open container on the scanner's stack: a multipart body
// (dash is "--"+boundary) or the body of a message/rfc822 part (dash nil).
type frame struct {
	dash  []byte
	parts int // body parts opened so far (multipart only)
}

// Scan walks the raw message once and enforces lim. It returns *Error.
//
// Zero fields of lim take their default. The walk is a single forward pass
// over the lines: every header block is parsed once with its byte and field
// caps, multipart boundaries are tracked on a stack no deeper than
// lim.MaxDepth, and each line that starts with "--" is compared with the
// open boundaries only. The cost is O(len(raw) × MaxDepth), linear for a
// fixed limit: a message nested 5,000 levels deep is refused as soon as
// the stack passes MaxDepth.
//
// Parts counted against MaxParts are all entities: the message itself,
// each body part of a multipart, and each message/rfc822 inner message.
// Depth counts both multipart and message/rfc822 nesting, because go-imap
// computes BODYSTRUCTURE through both.
func Scan(raw []byte, lim Limits) error {
	lim = lim.withDefaults()
	if int64(len(raw)) > lim.MaxMessageBytes {
		return errorf(KindTooLarge, "message is %d bytes, the limit is %d", len(raw), lim.MaxMessageBytes)
	}
	var (
		stack []frame
		pos   int
		parts = 1 // the message itself
	)
	for {
		// Header state: an entity starts at pos.
		h, err := parseHeader(raw, pos, lim.MaxHeaderBytes, lim.MaxHeaders)
		if err != nil {
			return err
		}
		pos = h.end
		ct, cte, err := parseContentType(&h)
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(ct.media, "multipart/"):
			// RFC 2045 §6.4: a multipart entity is never encoded; a base64
			// multipart would be read as parts by some parsers, as text by
			// others.
			if cte != "" && cte != "7bit" && cte != "8bit" && cte != "binary" {
				return errorf(KindMalformed, "%s with Content-Transfer-Encoding %s", ct.media, cte)
			}
			b, err := checkBoundary(ct)
			if err != nil {
				return err
			}
			if len(stack) >= lim.MaxDepth {
				return errorf(KindLimit, "MIME nesting deeper than %d levels", lim.MaxDepth)
			}
			if err := checkNestedBoundary(stack, b); err != nil {
				return err
			}
			stack = append(stack, frame{dash: append([]byte("--"), b...)})
		case ct.media == "message/rfc822" && (cte == "" || cte == "7bit" || cte == "8bit" || cte == "binary") && pos < len(raw):
			// RFC 2046 §5.2.1: the body is a whole message, with its own
			// header; it ends where the enclosing part ends.
			if len(stack) >= lim.MaxDepth {
				return errorf(KindLimit, "MIME nesting deeper than %d levels", lim.MaxDepth)
			}
			parts++
			if parts > lim.MaxParts {
				return errorf(KindLimit, "more than %d MIME parts", lim.MaxParts)
			}
			stack = append(stack, frame{})
			continue
		}

		// Body state: read lines until a delimiter of an open multipart.
		next, err := scanBody(raw, pos, &stack)
		if err != nil {
			return err
		}
		if next < 0 {
			return nil
		}
		pos = next
		parts++
		if parts > lim.MaxParts {
			return errorf(KindLimit, "more than %d MIME parts", lim.MaxParts)
		}
	}
}

// scanBody reads body lines from pos. It returns the offset of the next
// body part's header when it meets a delimiter, or -1 when the message
// ended with every multipart closed. Close delimiters pop their multipart
// and reading goes on in its epilogue (RFC 2046 §5.1.1).
func scanBody(raw []byte, pos int, stack *[]frame) (int, error) {
	for {
		if !hasMultipart(*stack) {
			// Nothing left that a delimiter could end: the rest is a leaf
			// body or an epilogue.
			return -1, nil
		}
		if pos >= len(raw) {
			return 0, errorf(KindMalformed, "multipart has no close delimiter (\"%s--\")", (*stack)[innermostMultipart(*stack)].dash)
		}
		line, next := nextLine(raw, pos)
		pos = next
		if len(line) < 2 || line[0] != '-' || line[1] != '-' {
			continue
		}
		idx, closing, err := matchDelimiter(*stack, line)
		if err != nil {
			return 0, err
		}
		if idx < 0 {
			continue
		}
		// An enclosing boundary ends every container inside it. A
		// message/rfc822 body simply ends; a multipart without its close
		// delimiter is truncated (RFC 2046 §5.1.1 requires it).
		for j := len(*stack) - 1; j > idx; j-- {
			if (*stack)[j].dash != nil {
				return 0, errorf(KindMalformed, "multipart ended without its close delimiter (\"%s--\")", (*stack)[j].dash)
			}
		}
		*stack = (*stack)[:idx+1]
		f := &(*stack)[idx]
		if closing {
			// RFC 2046 §5.1.1: body-part *encapsulation: at least one part.
			if f.parts == 0 {
				return 0, errorf(KindMalformed, "multipart has no body part")
			}
			*stack = (*stack)[:idx]
			continue
		}
		f.parts++
		return pos, nil
	}
}

func hasMultipart(stack []frame) bool { return innermostMultipart(stack) >= 0 }

func innermostMultipart(stack []frame) int {
	for i := len(stack) - 1; i >= 0; i-- {
		if stack[i].dash != nil {
			return i
		}
	}
	return -1
}

// matchDelimiter finds the open multipart whose delimiter line is line.
// checkNestedBoundary guarantees that no open boundary is a prefix of
// another, so at most one can match. A line that starts with a delimiter
// but continues with anything other than "--" and transport padding is
// refused: strict parsers read it as content, lenient ones (prefix match)
// as a delimiter, and the two would see different parts.
func matchDelimiter(stack []frame, line []byte) (idx int, closing bool, err error) {
	for i := len(stack) - 1; i >= 0; i-- {
		d := stack[i].dash
		if d == nil || !bytes.HasPrefix(line, d) {
			continue
		}
		closing, ok := delimiterRest(line[len(d):])
		if !ok {
			return -1, false, errorf(KindMalformed, "line begins with the boundary delimiter %q but is not a delimiter", clip(d))
		}
		return i, closing, nil
	}
	return -1, false, nil
}

// delimiterRest checks what follows "--boundary" on a delimiter line:
// nothing or "--" (close delimiter), then optional transport padding
// (RFC 2046 §5.1.1, LWSP).
func delimiterRest(rest []byte) (closing, ok bool) {
	if bytes.HasPrefix(rest, []byte("--")) {
		closing = true
		rest = rest[2:]
	}
	return closing, len(bytes.TrimLeft(rest, " \t")) == 0
}

// checkBoundary returns the boundary parameter of a multipart Content-Type
// after checking RFC 2046 §5.1.1: 1 to 70 characters from bchars, not
// ending with a space.
func checkBoundary(ct contentType) ([]byte, error) {
	b, ok := ct.params["boundary"]
	if !ok {
		return nil, errorf(KindMalformed, "%s without a boundary parameter", ct.media)
	}
	if err := validBoundary(b); err != nil {
		return nil, err
	}
	return []byte(b), nil
}

func validBoundary(b string) error {
	if len(b) == 0 || len(b) > 70 {
		return errorf(KindMalformed, "multipart boundary is %d characters, RFC 2046 allows 1 to 70", len(b))
	}
	for i := 0; i < len(b); i++ {
		if !isBchar(b[i]) {
			return errorf(KindMalformed, "multipart boundary %q has a character outside RFC 2046 bchars", clip([]byte(b)))
		}
	}
	if b[len(b)-1] == ' ' {
		return errorf(KindMalformed, "multipart boundary %q ends with a space", clip([]byte(b)))
	}
	return nil
}

// isBchar reports whether c is in RFC 2046 §5.1.1 bchars.
func isBchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("'()+_,-./:=? ", c) >= 0
}

// checkNestedBoundary refuses a boundary that is a prefix of an enclosing
// one or has an enclosing one as prefix: RFC 2046 §5.1.1 requires that a
// delimiter never appear inside the encapsulated parts, and with a prefix
// relation an inner delimiter line starts with an outer one.
func checkNestedBoundary(stack []frame, b []byte) error {
	for _, f := range stack {
		if f.dash == nil {
			continue
		}
		outer := f.dash[2:]
		if bytes.HasPrefix(outer, b) || bytes.HasPrefix(b, outer) {
			return errorf(KindMalformed, "nested multipart boundary %q collides with the enclosing boundary %q", clip(b), clip(outer))
		}
	}
	return nil
}

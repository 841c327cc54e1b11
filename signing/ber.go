package signing

import (
	"errors"
	"fmt"
)

// BER limits. A CMS SignedData nests about 12 levels deep (ContentInfo →
// SignedData → certificates → Certificate → TBSCertificate → Name → RDN →
// AttributeTypeAndValue …); 32 leaves room for odd extensions and still
// bounds recursion. The element count bounds the memory of the parse tree:
// OpenSSL streams content in chunks of a few KiB, so even a 32 MiB opaque
// message has a few tens of thousands of elements.
const (
	maxBERDepth    = 32
	maxBERElements = 1 << 18
)

// berNode is one element of a parsed BER tree. Children are linked by index
// (first child, next sibling) so the tree is one flat slice.
type berNode struct {
	ident       []byte // identifier octets, verbatim
	constructed bool
	content     []byte // primitive content (nil for constructed)
	first, next int32  // child / sibling indices, -1 for none
	length      int    // DER content length, computed bottom-up
}

type berParser struct {
	in    []byte
	nodes []berNode
}

var errBERTooDeep = errors.New("BER nesting too deep")

// normalizeBER converts a BER encoding (as OpenSSL and Outlook stream it:
// indefinite lengths, constructed OCTET STRINGs) to DER lengths and
// primitive OCTET STRINGs, in linear time, with bounded depth and element
// count. DER input comes out byte for byte identical.
//
// It exists because the PKCS#7 library's own BER converter recurses without
// a depth limit and scans the rest of the input for an end-of-contents
// marker after every element of an indefinite-length value, which is
// quadratic on text content (MIME has no NUL bytes). Handing it DER avoids
// both. Trailing bytes after the outer element are an error (X.690 8.1.1).
func normalizeBER(in []byte) ([]byte, error) {
	if len(in) == 0 {
		return nil, errors.New("empty input")
	}
	// Fast path: most signatures (every detached one we have seen) are DER
	// already; checking that costs no allocation.
	if end, ok := scanDER(in, 0, 0); ok && end == len(in) {
		return in, nil
	}
	p := &berParser{in: in}
	root, end, err := p.parse(0, 0)
	if err != nil {
		return nil, err
	}
	if end != len(in) {
		return nil, fmt.Errorf("%d trailing bytes after the outer element", len(in)-end)
	}
	out := make([]byte, 0, p.encodedSize(root))
	return p.encode(out, root), nil
}

// parse reads the element at off and returns its node index and the offset
// just past it.
func (p *berParser) parse(off, depth int) (int32, int, error) {
	if depth > maxBERDepth {
		return -1, 0, errBERTooDeep
	}
	if len(p.nodes) >= maxBERElements {
		return -1, 0, fmt.Errorf("more than %d BER elements", maxBERElements)
	}
	in := p.in
	start := off
	if off >= len(in) {
		return -1, 0, errors.New("truncated element")
	}
	b0 := in[off]
	off++
	if b0&0x1f == 0x1f {
		// High tag number form (X.690 8.1.2.4): base-128, at most 4 octets here.
		n := 0
		for {
			if off >= len(in) {
				return -1, 0, errors.New("truncated tag")
			}
			b := in[off]
			off++
			n++
			if n > 4 {
				return -1, 0, errors.New("tag number too large")
			}
			if b&0x80 == 0 {
				break
			}
		}
	}
	ident := in[start:off]
	constructed := b0&0x20 != 0
	if off >= len(in) {
		return -1, 0, errors.New("truncated length")
	}
	lb := in[off]
	off++
	indefinite := false
	length := 0
	switch {
	case lb < 0x80:
		length = int(lb)
	case lb == 0x80:
		// X.690 8.1.3.6: indefinite form, constructed only.
		if !constructed {
			return -1, 0, errors.New("indefinite length on a primitive element")
		}
		indefinite = true
	case lb == 0xff:
		return -1, 0, errors.New("reserved length octet 0xff")
	default:
		n := int(lb & 0x7f)
		if n > 4 {
			return -1, 0, errors.New("length too large")
		}
		if off+n > len(in) {
			return -1, 0, errors.New("truncated length")
		}
		for i := 0; i < n; i++ {
			length = length<<8 | int(in[off+i])
		}
		off += n
	}
	if !indefinite && (length < 0 || length > len(in)-off) {
		return -1, 0, errors.New("length exceeds input")
	}

	idx := int32(len(p.nodes))
	p.nodes = append(p.nodes, berNode{ident: ident, constructed: constructed, first: -1, next: -1})
	if !constructed {
		if b0 == 0 && length == 0 {
			return -1, 0, errors.New("unexpected end-of-contents")
		}
		p.nodes[idx].content = in[off : off+length]
		p.nodes[idx].length = length
		return idx, off + length, nil
	}

	end := off + length
	last := int32(-1)
	for {
		if indefinite {
			if off+2 <= len(in) && in[off] == 0 && in[off+1] == 0 {
				off += 2
				break
			}
			if off >= len(in) {
				return -1, 0, errors.New("missing end-of-contents")
			}
		} else if off >= end {
			break
		}
		child, next, err := p.parse(off, depth+1)
		if err != nil {
			return -1, 0, err
		}
		if !indefinite && next > end {
			return -1, 0, errors.New("element overruns its parent")
		}
		if last < 0 {
			p.nodes[idx].first = child
		} else {
			p.nodes[last].next = child
		}
		last = child
		off = next
	}
	if ident[0] == 0x24 && len(ident) == 1 {
		// Constructed universal OCTET STRING (X.690 8.7.3): DER wants the
		// concatenated segments as one primitive value.
		data, err := p.flattenOctets(idx, nil)
		if err != nil {
			return -1, 0, err
		}
		n := &p.nodes[idx]
		n.ident = []byte{0x04}
		n.constructed = false
		n.content = data
		n.first = -1
		n.length = len(data)
		return idx, off, nil
	}
	total := 0
	for c := p.nodes[idx].first; c >= 0; c = p.nodes[c].next {
		total += p.encodedSize(c)
	}
	p.nodes[idx].length = total
	return idx, off, nil
}

// flattenOctets appends the segments of a constructed OCTET STRING.
// Segments are OCTET STRINGs themselves (already flattened when nested).
func (p *berParser) flattenOctets(idx int32, dst []byte) ([]byte, error) {
	for c := p.nodes[idx].first; c >= 0; c = p.nodes[c].next {
		n := &p.nodes[c]
		if len(n.ident) != 1 || n.ident[0] != 0x04 {
			return nil, errors.New("constructed OCTET STRING holds a non-OCTET STRING segment")
		}
		dst = append(dst, n.content...)
	}
	if dst == nil {
		dst = []byte{}
	}
	return dst, nil
}

func derLengthSize(n int) int {
	if n < 0x80 {
		return 1
	}
	s := 1
	for ; n > 0; n >>= 8 {
		s++
	}
	return s
}

func (p *berParser) encodedSize(idx int32) int {
	n := &p.nodes[idx]
	return len(n.ident) + derLengthSize(n.length) + n.length
}

func (p *berParser) encode(out []byte, idx int32) []byte {
	n := &p.nodes[idx]
	out = append(out, n.ident...)
	if n.length < 0x80 {
		out = append(out, byte(n.length))
	} else {
		sz := derLengthSize(n.length) - 1
		out = append(out, 0x80|byte(sz))
		for i := sz - 1; i >= 0; i-- {
			out = append(out, byte(n.length>>(8*i)))
		}
	}
	if !n.constructed {
		return append(out, n.content...)
	}
	for c := n.first; c >= 0; c = p.nodes[c].next {
		out = p.encode(out, c)
	}
	return out
}

// scanDER reports whether the element at off is DER as far as lengths and
// OCTET STRINGs go (definite minimal lengths, no constructed universal
// OCTET STRING), within the same limits as parse, and where it ends. Any
// doubt answers false and the full parser decides (and reports errors).
func scanDER(in []byte, off, depth int) (int, bool) {
	if depth > maxBERDepth || off+2 > len(in) {
		return 0, false
	}
	b0 := in[off]
	if b0&0x1f == 0x1f || b0 == 0x24 || b0 == 0 {
		return 0, false // high tag numbers, constructed OCTET STRING, EOC
	}
	off++
	lb := in[off]
	off++
	length := 0
	switch {
	case lb < 0x80:
		length = int(lb)
	case lb == 0x81:
		if off >= len(in) || in[off] < 0x80 {
			return 0, false
		}
		length = int(in[off])
		off++
	case lb == 0x82:
		if off+2 > len(in) || in[off] == 0 {
			return 0, false
		}
		length = int(in[off])<<8 | int(in[off+1])
		off += 2
	case lb == 0x83:
		if off+3 > len(in) || in[off] == 0 {
			return 0, false
		}
		length = int(in[off])<<16 | int(in[off+1])<<8 | int(in[off+2])
		off += 3
	default:
		return 0, false
	}
	end := off + length
	if end > len(in) {
		return 0, false
	}
	if b0&0x20 == 0 {
		return end, true
	}
	for off < end {
		next, ok := scanDER(in[:end], off, depth+1)
		if !ok {
			return 0, false
		}
		off = next
	}
	return end, true
}

package imapd

import (
	"bytes"
	"io"
	stdmime "mime"
	"strings"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
)

// SEARCH BODY, TEXT and header keys match "strings" in the message as a
// reader sees it (RFC 3501 §6.4.4): a word inside a base64 or
// quoted-printable part, in ISO-8859-1, or in an RFC 2047 encoded header
// word must be found too. The raw bytes are searched first (cheap, and
// what a client typing a Message-ID expects); the decoded text is built
// only when that fails, once per message and SEARCH.

// maxDecodedText bounds the decoded text kept for one message.
const maxDecodedText = 4 << 20

// decodedText returns the decoded header field values and the decoded
// bodies of the message's textual parts (text/*, and JSON or XML such as
// the FHIR Bundle), joined by newlines. The message has passed mime.Scan
// (filing or APPEND), which bounds depth and part count before go-message
// parses it.
func decodedText(raw []byte) (header, body []byte) {
	e, err := message.Read(bytes.NewReader(raw))
	if e == nil {
		return nil, nil
	}
	_ = err // unknown charsets still give a readable entity
	header = decodedHeader(e.Header)
	var buf bytes.Buffer
	_ = e.Walk(func(_ []int, part *message.Entity, err error) error {
		if err != nil || part.MultipartReader() != nil || buf.Len() >= maxDecodedText {
			return nil
		}
		mt, _, _ := part.Header.ContentType()
		if !textual(mt) {
			return nil
		}
		_, _ = io.Copy(&buf, io.LimitReader(part.Body, int64(maxDecodedText-buf.Len())))
		buf.WriteByte('\n')
		return nil
	})
	return header, buf.Bytes()
}

func textual(mediaType string) bool {
	switch {
	case mediaType == "", strings.HasPrefix(mediaType, "text/"):
		return true
	case strings.HasSuffix(mediaType, "json"), strings.HasSuffix(mediaType, "xml"):
		return true
	}
	return false
}

// wordDecoder decodes RFC 2047 encoded words in any charset go-message knows.
var wordDecoder = &stdmime.WordDecoder{CharsetReader: charset.Reader}

func decodeWords(s string) string {
	if d, err := wordDecoder.DecodeHeader(s); err == nil {
		return d
	}
	return s
}

func decodedHeader(h message.Header) []byte {
	var b bytes.Buffer
	for f := h.Fields(); f.Next(); {
		b.WriteString(f.Key())
		b.WriteString(": ")
		b.WriteString(decodeWords(f.Value()))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

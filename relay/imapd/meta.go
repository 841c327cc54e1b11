package imapd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// The ENVELOPE and BODYSTRUCTURE of a message are computed once, when it is
// filed, and kept in the store next to the record: go-imap's extraction
// reads every leaf into memory, far too costly for each FETCH (see
// LIBRARY-NOTES.md). The intake must have run mime.Scan on the bytes first,
// which bounds depth and part count.

// meta is the stored form. BodyStructure is an interface in go-imap, so it
// is mirrored by a concrete recursive struct for JSON.
type meta struct {
	Envelope *imap.Envelope `json:"e"`
	Body     *bodyJSON      `json:"b"`
}

type bodyJSON struct {
	// Multipart when Children is non-nil.
	Children []*bodyJSON `json:"c,omitempty"`
	Multi    bool        `json:"m,omitempty"`

	Type        string            `json:"t,omitempty"`
	Subtype     string            `json:"s,omitempty"`
	Params      map[string]string `json:"p,omitempty"`
	ID          string            `json:"id,omitempty"`
	Description string            `json:"d,omitempty"`
	Encoding    string            `json:"enc,omitempty"`
	Size        uint32            `json:"sz,omitempty"`
	TextLines   *int64            `json:"tl,omitempty"`

	MsgEnvelope *imap.Envelope `json:"me,omitempty"`
	MsgBody     *bodyJSON      `json:"mb,omitempty"`
	MsgLines    int64          `json:"ml,omitempty"`

	Disposition *imap.BodyStructureDisposition `json:"disp,omitempty"`
	Language    []string                       `json:"lang,omitempty"`
	Location    string                         `json:"loc,omitempty"`
}

// ComputeMeta extracts and encodes ENVELOPE and BODYSTRUCTURE of raw.
func ComputeMeta(raw []byte) []byte {
	br := bufio.NewReader(bytes.NewReader(raw))
	h, err := textproto.ReadHeader(br)
	var env *imap.Envelope
	if err == nil {
		env = imapserver.ExtractEnvelope(h)
	} else {
		env = &imap.Envelope{}
	}
	var bs imap.BodyStructure
	if err == nil {
		bs = bodyStructure(h, br, make([]byte, 4096))
	} else {
		bs = imapserver.ExtractBodyStructure(bytes.NewReader(raw))
	}
	b, err := json.Marshal(&meta{Envelope: env, Body: toJSON(bs)})
	if err != nil {
		return nil
	}
	return b
}

// bodyStructure is imapserver.ExtractBodyStructure without its copy of
// every leaf: go-imap reads each part into memory to measure it (a fifth
// of all the bytes the relay allocated per message). A leaf here is only
// read through to count its bytes and lines; the same go-message readers
// split the parts and parse the fields, so the result is the same for
// every input (TestBodyStructureMatchesGoIMAP, FuzzBodyStructure).
// Only message/rfc822 and message/global bodies are kept, since their own
// header and structure are parsed from them. buf is scratch space for
// reading the leaves, shared by the whole walk.
func bodyStructure(h textproto.Header, r io.Reader, buf []byte) imap.BodyStructure {
	header := message.Header{Header: h}
	mediaType, params, _ := header.ContentType()
	primary, sub, _ := strings.Cut(mediaType, "/")
	if primary == "multipart" {
		bs := &imap.BodyStructureMultiPart{Subtype: sub}
		mr := textproto.NewMultipartReader(r, params["boundary"])
		for {
			part, _ := mr.NextPart()
			if part == nil {
				break
			}
			bs.Children = append(bs.Children, bodyStructure(part.Header, part, buf))
		}
		bs.Extended = &imap.BodyStructureMultiPartExt{
			Params:      params,
			Disposition: contentDisposition(header),
			Language:    contentLanguage(header),
			Location:    header.Get("Content-Location"),
		}
		return bs
	}
	bs := &imap.BodyStructureSinglePart{
		Type:        primary,
		Subtype:     sub,
		Params:      params,
		ID:          header.Get("Content-Id"),
		Description: header.Get("Content-Description"),
		Encoding:    header.Get("Content-Transfer-Encoding"),
	}
	var lines int64
	if mediaType == "message/rfc822" || mediaType == "message/global" {
		body, _ := io.ReadAll(r)
		bs.Size = uint32(len(body))
		lines = int64(bytes.Count(body, []byte("\n")))
		br := bufio.NewReader(bytes.NewReader(body))
		childHeader, _ := textproto.ReadHeader(br)
		bs.MessageRFC822 = &imap.BodyStructureMessageRFC822{
			Envelope:      imapserver.ExtractEnvelope(childHeader),
			BodyStructure: bodyStructure(childHeader, br, buf),
			NumLines:      lines,
		}
	} else {
		var size int64
		size, lines = countBody(r, buf)
		bs.Size = uint32(size)
	}
	if primary == "text" {
		bs.Text = &imap.BodyStructureText{NumLines: lines}
	}
	bs.Extended = &imap.BodyStructureSinglePartExt{
		Disposition: contentDisposition(header),
		Language:    contentLanguage(header),
		Location:    header.Get("Content-Location"),
	}
	return bs
}

// countBody reads r to its end (or its first error, as io.ReadAll stops)
// through buf and returns the bytes and the line feeds it held.
func countBody(r io.Reader, buf []byte) (size, lines int64) {
	for {
		n, err := r.Read(buf)
		size += int64(n)
		lines += int64(bytes.Count(buf[:n], []byte("\n")))
		if err != nil {
			return size, lines
		}
	}
}

func contentDisposition(header message.Header) *imap.BodyStructureDisposition {
	disp, params, _ := header.ContentDisposition()
	if disp == "" {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: disp, Params: params}
}

// contentLanguage splits Content-Language (RFC 3282) on commas, as go-imap
// does (no comments or folding whitespace handling).
func contentLanguage(header message.Header) []string {
	v := header.Get("Content-Language")
	if v == "" {
		return nil
	}
	l := strings.Split(v, ",")
	for i, lang := range l {
		l[i] = strings.TrimSpace(lang)
	}
	return l
}

// decodeMeta returns the cached envelope and body structure; ok is false
// when the cache is missing or unreadable (the caller recomputes).
func decodeMeta(b []byte) (*imap.Envelope, imap.BodyStructure, bool) {
	if len(b) == 0 {
		return nil, nil, false
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil || m.Envelope == nil || m.Body == nil {
		return nil, nil, false
	}
	return m.Envelope, fromJSON(m.Body), true
}

func toJSON(bs imap.BodyStructure) *bodyJSON {
	switch bs := bs.(type) {
	case *imap.BodyStructureMultiPart:
		j := &bodyJSON{Multi: true, Subtype: bs.Subtype, Children: []*bodyJSON{}}
		for _, c := range bs.Children {
			j.Children = append(j.Children, toJSON(c))
		}
		if bs.Extended != nil {
			j.Params = bs.Extended.Params
			j.Disposition = bs.Extended.Disposition
			j.Language = bs.Extended.Language
			j.Location = bs.Extended.Location
		}
		return j
	case *imap.BodyStructureSinglePart:
		j := &bodyJSON{
			Type: bs.Type, Subtype: bs.Subtype, Params: bs.Params, ID: bs.ID,
			Description: bs.Description, Encoding: bs.Encoding, Size: bs.Size,
		}
		if bs.Text != nil {
			n := bs.Text.NumLines
			j.TextLines = &n
		}
		if bs.MessageRFC822 != nil {
			j.MsgEnvelope = bs.MessageRFC822.Envelope
			j.MsgBody = toJSON(bs.MessageRFC822.BodyStructure)
			j.MsgLines = bs.MessageRFC822.NumLines
		}
		if bs.Extended != nil {
			j.Disposition = bs.Extended.Disposition
			j.Language = bs.Extended.Language
			j.Location = bs.Extended.Location
		}
		return j
	default:
		return &bodyJSON{Type: "text", Subtype: "plain"}
	}
}

func fromJSON(j *bodyJSON) imap.BodyStructure {
	if j.Multi {
		bs := &imap.BodyStructureMultiPart{Subtype: j.Subtype}
		for _, c := range j.Children {
			bs.Children = append(bs.Children, fromJSON(c))
		}
		bs.Extended = &imap.BodyStructureMultiPartExt{
			Params: j.Params, Disposition: j.Disposition, Language: j.Language, Location: j.Location,
		}
		return bs
	}
	bs := &imap.BodyStructureSinglePart{
		Type: j.Type, Subtype: j.Subtype, Params: j.Params, ID: j.ID,
		Description: j.Description, Encoding: j.Encoding, Size: j.Size,
		Extended: &imap.BodyStructureSinglePartExt{
			Disposition: j.Disposition, Language: j.Language, Location: j.Location,
		},
	}
	if j.TextLines != nil {
		bs.Text = &imap.BodyStructureText{NumLines: *j.TextLines}
	}
	if j.MsgBody != nil {
		bs.MessageRFC822 = &imap.BodyStructureMessageRFC822{
			Envelope: j.MsgEnvelope, BodyStructure: fromJSON(j.MsgBody), NumLines: j.MsgLines,
		}
	}
	return bs
}

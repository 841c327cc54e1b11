package imapd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"mssrelay/mime"
)

// signedPrescription is a multipart/signed prescription as the relay files
// it: trace fields, the outer header, the signed entity (a sample with the
// FHIR Bundle, the IHE_XDM.ZIP and a PDF) and a signature part. The
// signature is dummy bytes: ENVELOPE and BODYSTRUCTURE do not look at it.
func signedPrescription(t testing.TB) []byte {
	t.Helper()
	s := mime.NewSample(7)
	s.XDM, s.PDF = true, true
	header := []byte("From: \"Dr Camille Martin\" <dr.martin@mssante.test>\r\n" +
		"To: Pharmacie Centrale <pharmacie.centrale@mssante.test>\r\n" +
		"Cc: dr.martin@mssante.test\r\n" +
		"Subject: =?utf-8?q?Ordonnance_=C3=A9lectronique?=\r\n" +
		"Date: Mon, 06 Jan 2025 10:00:00 +0100\r\n" +
		"Message-ID: <rx-7@mssante.test>\r\n" +
		"In-Reply-To: <earlier@mssante.test>\r\n")
	msg := mime.BuildDetached(header, s.Content(), bytes.Repeat([]byte{0x30, 0x82, 0x01}, 200))
	trace := "Return-Path: <dr.martin@mssante.test>\r\nReceived: from client by relay; Mon, 06 Jan 2025 10:00:01 +0100\r\n"
	return append([]byte(trace), msg...)
}

// forwardedMessage is a multipart/mixed holding a note and a whole signed
// prescription as message/rfc822, with every single-part field the
// extended BODYSTRUCTURE carries (id, description, disposition, language,
// location).
func forwardedMessage(t testing.TB) []byte {
	t.Helper()
	inner := signedPrescription(t)
	var b bytes.Buffer
	b.WriteString("From: postmaster@mssante.test\r\n" +
		"To: pharmacie.gare@mssante.test\r\n" +
		"Subject: Fwd: Ordonnance\r\n" +
		"Date: Tue, 07 Jan 2025 08:30:00 +0000\r\n" +
		"Message-ID: <fwd-1@mssante.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"outer-b\"\r\n" +
		"Content-Language: fr\r\n\r\n" +
		"preamble\r\n" +
		"--outer-b\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"Content-ID: <note@mssante.test>\r\n" +
		"Content-Description: Note\r\n" +
		"Content-Language: fr, en\r\n" +
		"Content-Location: https://example.org/note\r\n\r\n" +
		"Voici l'ordonnance.\r\nBonne journée.\r\n" +
		"--outer-b\r\n" +
		"Content-Type: message/rfc822\r\n" +
		"Content-Disposition: attachment; filename=\"ordonnance.eml\"\r\n\r\n")
	b.Write(inner)
	b.WriteString("\r\n--outer-b--\r\n")
	return b.Bytes()
}

func libraryMeta(t *testing.T, raw []byte) (*imap.Envelope, imap.BodyStructure) {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("reading header: %v", err)
	}
	return imapserver.ExtractEnvelope(h), imapserver.ExtractBodyStructure(bytes.NewReader(raw))
}

// normEnvelope makes envelopes comparable with reflect.DeepEqual: a date
// that went through JSON has another *time.Location for the same instant.
func normEnvelope(e *imap.Envelope) *imap.Envelope {
	if e == nil {
		return nil
	}
	c := *e
	if !c.Date.IsZero() {
		c.Date = c.Date.UTC()
	}
	return &c
}

// normBody does the same through a body structure, and treats a nil and
// an empty map or slice alike (JSON omits both).
func normBody(bs imap.BodyStructure) imap.BodyStructure {
	switch bs := bs.(type) {
	case *imap.BodyStructureMultiPart:
		c := *bs
		c.Children = nil
		for _, ch := range bs.Children {
			c.Children = append(c.Children, normBody(ch))
		}
		if bs.Extended != nil {
			ext := *bs.Extended
			ext.Params = emptyToNil(ext.Params)
			ext.Disposition = normDisp(ext.Disposition)
			c.Extended = &ext
		}
		return &c
	case *imap.BodyStructureSinglePart:
		c := *bs
		c.Params = emptyToNil(c.Params)
		if bs.MessageRFC822 != nil {
			m := *bs.MessageRFC822
			m.Envelope = normEnvelope(m.Envelope)
			m.BodyStructure = normBody(m.BodyStructure)
			c.MessageRFC822 = &m
		}
		if bs.Extended != nil {
			ext := *bs.Extended
			ext.Disposition = normDisp(ext.Disposition)
			c.Extended = &ext
		}
		return &c
	}
	return bs
}

func normDisp(d *imap.BodyStructureDisposition) *imap.BodyStructureDisposition {
	if d == nil {
		return nil
	}
	c := *d
	c.Params = emptyToNil(c.Params)
	return &c
}

func emptyToNil(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", " ")
	return string(b)
}

// TestMetaRoundTrip: what FETCH serves from the cache is exactly what
// go-imap would have extracted from the bytes.
func TestMetaRoundTrip(t *testing.T) {
	cases := []struct {
		name  string
		raw   []byte
		check func(t *testing.T, env *imap.Envelope, bs imap.BodyStructure)
	}{
		{"signed prescription", signedPrescription(t), func(t *testing.T, env *imap.Envelope, bs imap.BodyStructure) {
			if env.Subject != "Ordonnance électronique" || env.MessageID != "rx-7@mssante.test" ||
				len(env.InReplyTo) != 1 || len(env.From) != 1 || env.From[0].Name != "Dr Camille Martin" ||
				len(env.Cc) != 1 {
				t.Errorf("envelope %s", dump(env))
			}
			mp, ok := bs.(*imap.BodyStructureMultiPart)
			if !ok || mp.Subtype != "signed" || len(mp.Children) != 2 {
				t.Fatalf("body structure %s", dump(bs))
			}
			if mp.Extended.Params["protocol"] != "application/pkcs7-signature" || mp.Extended.Params["micalg"] != "sha-256" {
				t.Errorf("multipart/signed parameters %v", mp.Extended.Params)
			}
			sig, ok := mp.Children[1].(*imap.BodyStructureSinglePart)
			if !ok || sig.Type != "application" || sig.Subtype != "pkcs7-signature" || sig.Extended.Disposition == nil ||
				sig.Extended.Disposition.Params["filename"] != "smime.p7s" {
				t.Errorf("signature part %s", dump(mp.Children[1]))
			}
			content, ok := mp.Children[0].(*imap.BodyStructureMultiPart)
			if !ok || content.Subtype != "mixed" || len(content.Children) < 3 {
				t.Errorf("signed content %s", dump(mp.Children[0]))
			}
		}},
		{"message/rfc822 inside", forwardedMessage(t), func(t *testing.T, env *imap.Envelope, bs imap.BodyStructure) {
			mp, ok := bs.(*imap.BodyStructureMultiPart)
			if !ok || len(mp.Children) != 2 {
				t.Fatalf("body structure %s", dump(bs))
			}
			note := mp.Children[0].(*imap.BodyStructureSinglePart)
			if note.ID != "<note@mssante.test>" || note.Description != "Note" || note.Text == nil ||
				len(note.Extended.Language) != 2 || note.Extended.Location != "https://example.org/note" {
				t.Errorf("note part %s", dump(note))
			}
			fwd := mp.Children[1].(*imap.BodyStructureSinglePart)
			if fwd.MessageRFC822 == nil || fwd.MessageRFC822.Envelope.Subject != "Ordonnance électronique" ||
				fwd.MessageRFC822.NumLines == 0 {
				t.Fatalf("message/rfc822 part %s", dump(fwd))
			}
			if inner, ok := fwd.MessageRFC822.BodyStructure.(*imap.BodyStructureMultiPart); !ok || inner.Subtype != "signed" {
				t.Errorf("inner body structure %s", dump(fwd.MessageRFC822.BodyStructure))
			}
		}},
		{"no MIME header", []byte("Subject: plain\r\n\r\nhello\r\n"), func(t *testing.T, env *imap.Envelope, bs imap.BodyStructure) {
			if env.Subject != "plain" {
				t.Errorf("envelope %s", dump(env))
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantEnv, wantBS := libraryMeta(t, tc.raw)
			env, bs, ok := decodeMeta(ComputeMeta(tc.raw))
			if !ok {
				t.Fatal("decodeMeta of a fresh ComputeMeta: ok=false")
			}
			if !reflect.DeepEqual(normEnvelope(env), normEnvelope(wantEnv)) {
				t.Errorf("envelope differs\n got %s\nwant %s", dump(env), dump(wantEnv))
			}
			if !env.Date.Equal(wantEnv.Date) {
				t.Errorf("date %v, want %v", env.Date, wantEnv.Date)
			}
			if !reflect.DeepEqual(normBody(bs), normBody(wantBS)) {
				t.Errorf("body structure differs\n got %s\nwant %s", dump(bs), dump(wantBS))
			}
			tc.check(t, env, bs)
		})
	}
}

// TestDecodeMetaGarbage: an unreadable cache is reported, never served.
func TestDecodeMetaGarbage(t *testing.T) {
	cases := map[string][]byte{
		"nil":            nil,
		"empty":          {},
		"truncated":      []byte(`{"e":{"Subject":"x"},"b":{"t":"te`),
		"not JSON":       []byte("\x00\xff\x10garbage"),
		"JSON null":      []byte("null"),
		"array":          []byte("[1,2,3]"),
		"no body":        []byte(`{"e":{}}`),
		"no envelope":    []byte(`{"b":{"t":"text","s":"plain"}}`),
		"wrong types":    []byte(`{"e":"x","b":7}`),
		"number":         []byte("42"),
		"truncated real": nil, // filled below
	}
	real := ComputeMeta(signedPrescription(t))
	cases["truncated real"] = real[:len(real)/2]
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if env, bs, ok := decodeMeta(b); ok || env != nil || bs != nil {
				t.Errorf("decodeMeta(%q) = %v, %v, %v; want nil, nil, false", b, env, bs, ok)
			}
		})
	}
}

// FuzzDecodeMeta: whatever the meta bucket holds (a disk error, an older
// format), decoding does not panic, and what it accepts can be written by
// go-imap's FETCH writer without its "non-extended" panic.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(ComputeMeta(signedPrescription(f)))
	f.Add(ComputeMeta(forwardedMessage(f)))
	f.Add([]byte(`{"e":{},"b":{"m":true,"c":[{"me":{},"mb":{}}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, bs, ok := decodeMeta(b)
		if !ok {
			return
		}
		var walk func(imap.BodyStructure)
		walk = func(bs imap.BodyStructure) {
			switch bs := bs.(type) {
			case *imap.BodyStructureMultiPart:
				if bs.Extended == nil {
					t.Fatal("multipart without extension data")
				}
				for _, c := range bs.Children {
					walk(c)
				}
			case *imap.BodyStructureSinglePart:
				if bs.Extended == nil {
					t.Fatal("single part without extension data")
				}
				if bs.MessageRFC822 != nil {
					walk(bs.MessageRFC822.BodyStructure)
				}
			default:
				t.Fatalf("body structure of type %T", bs)
			}
		}
		walk(bs)
	})
}

// TestComputeMetaDate pins the one field JSON could bend: the sent date
// keeps its instant.
func TestComputeMetaDate(t *testing.T) {
	env, _, ok := decodeMeta(ComputeMeta(signedPrescription(t)))
	if !ok {
		t.Fatal("decodeMeta failed")
	}
	want := time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)
	if !env.Date.Equal(want) {
		t.Errorf("date %v, want %v", env.Date, want)
	}
}

// bodyStructureCases are messages whose structures exercise every branch
// of bodyStructure: nested multiparts, text and non-text leaves, a
// message/rfc822 holding a multipart, parameters, dispositions, languages,
// missing and malformed boundaries, a truncated multipart.
func bodyStructureCases(t testing.TB) map[string][]byte {
	cases := map[string][]byte{
		"signed prescription": signedPrescription(t),
		"message/rfc822":      forwardedMessage(t),
		"plain":               []byte("Subject: plain\r\n\r\nhello\r\nworld\r\n"),
		"no body":             []byte("Subject: nothing\r\n\r\n"),
		"bare LF":             []byte("Content-Type: text/plain\n\nline\nline\n"),
		"no boundary":         []byte("Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\na\r\n--x--\r\n"),
		"unclosed multipart":  []byte("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\na\r\n--x\r\n\r\nb"),
		"bad params":          []byte("Content-Type: text/plain; charset\r\nContent-Disposition: attachment; filename*=bad''%\r\n\r\nx\r\n"),
		"message/global":      []byte("Content-Type: message/global\r\n\r\nSubject: inner\r\nContent-Type: text/plain\r\n\r\nhi\r\n"),
	}
	for i := range 4 {
		s := mime.NewSample(i)
		s.XDM, s.PDF = i%2 == 0, i > 1
		cases[fmt.Sprintf("sample %d", i)] = s.Content()
	}
	return cases
}

// TestBodyStructureMatchesGoIMAP: bodyStructure gives exactly what
// go-imap's extraction gives, for every case.
func TestBodyStructureMatchesGoIMAP(t *testing.T) {
	for name, raw := range bodyStructureCases(t) {
		t.Run(name, func(t *testing.T) {
			checkBodyStructure(t, raw)
		})
	}
}

func checkBodyStructure(t *testing.T, raw []byte) {
	t.Helper()
	want := imapserver.ExtractBodyStructure(bytes.NewReader(raw))
	br := bufio.NewReader(bytes.NewReader(raw))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return // ComputeMeta hands such messages to go-imap itself
	}
	if got := bodyStructure(h, br, make([]byte, 4096)); !reflect.DeepEqual(got, want) {
		t.Fatalf("body structure differs from go-imap's\n got %s\nwant %s", dump(got), dump(want))
	}
}

// FuzzBodyStructure: for any input, bodyStructure and go-imap agree.
func FuzzBodyStructure(f *testing.F) {
	for _, raw := range bodyStructureCases(f) {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 64<<10 {
			return
		}
		checkBodyStructure(t, raw)
	})
}

// BenchmarkComputeMeta: ENVELOPE and BODYSTRUCTURE of a signed
// prescription, as computed at every filing.
func BenchmarkComputeMeta(b *testing.B) {
	raw := signedPrescription(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if ComputeMeta(raw) == nil {
			b.Fatal("no meta")
		}
	}
}

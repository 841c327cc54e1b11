package relay_test

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// TestFetchInternalDateAndBodyStructure: over the wire, INTERNALDATE is
// the time the relay filed the message (RFC 3501 §2.3.3) and BODYSTRUCTURE
// (RFC 3501 §7.4.2) describes the multipart/signed of RFC 8551 §3.5.3 as
// go-imap's client decodes it: two parts, the signed multipart/mixed and
// the application/pkcs7-signature, with the protocol and micalg the
// prescriber's client wrote. INTERNALDATE survives a restart.
func TestFetchInternalDateAndBodyStructure(t *testing.T) {
	h := newHarness(t)
	msg, _ := h.prescription()
	before := time.Now()
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
		t.Fatalf("send: %v", err)
	}
	after := time.Now()

	// INTERNALDATE has a resolution of one second (date-time of RFC 3501
	// §9): the window is the send, widened by that rounding and a little
	// clock slack. It bounds correctness, not speed.
	lo, hi := before.Truncate(time.Second).Add(-2*time.Second), after.Add(2*time.Second)
	fetch := func(extended bool) *fetched {
		t.Helper()
		c := h.imap(h.info.Pharmacy, nil)
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatalf("select: %v", err)
		}
		whole := &imap.FetchItemBodySection{Peek: true}
		msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{
			UID: true, InternalDate: true, RFC822Size: true,
			BodyStructure: &imap.FetchItemBodyStructure{Extended: extended},
			BodySection:   []*imap.FetchItemBodySection{whole},
		}).Collect()
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		if len(msgs) != 1 {
			t.Fatalf("fetch returned %d messages, want 1", len(msgs))
		}
		if err := c.Logout().Wait(); err != nil {
			t.Errorf("logout: %v", err)
		}
		m := msgs[0]
		return &fetched{date: m.InternalDate, size: m.RFC822Size, bs: m.BodyStructure, raw: m.FindBodySection(whole)}
	}

	ext := fetch(true)
	if ext.date.Before(lo) || ext.date.After(hi) {
		t.Errorf("INTERNALDATE %s is outside the filing window [%s, %s]", ext.date.Format(time.RFC3339), lo.Format(time.RFC3339), hi.Format(time.RFC3339))
	}
	// The relay adds trace fields above the message and never alters it.
	if !bytes.HasSuffix(ext.raw, msg) || ext.size != int64(len(ext.raw)) {
		t.Fatalf("BODY[] is %d bytes (RFC822.SIZE %d) and does not end with the %d bytes sent", len(ext.raw), ext.size, len(msg))
	}

	top, ok := ext.bs.(*imap.BodyStructureMultiPart)
	if !ok {
		t.Fatalf("BODYSTRUCTURE is %T, want a multipart", ext.bs)
	}
	if got := top.MediaType(); got != "multipart/signed" {
		t.Errorf("BODYSTRUCTURE type %q, want multipart/signed", got)
	}
	if len(top.Children) != 2 {
		t.Fatalf("multipart/signed has %d parts, want 2 (content, signature)", len(top.Children))
	}
	if top.Extended == nil {
		t.Fatal("BODYSTRUCTURE without extension data: no multipart parameters")
	}
	// RFC 8551 §3.5.3: protocol and micalg are required parameters.
	for k, want := range map[string]string{"protocol": "application/pkcs7-signature", "micalg": "sha-256"} {
		if got := top.Extended.Params[k]; !strings.EqualFold(got, want) {
			t.Errorf("multipart/signed parameter %s = %q, want %q (all: %v)", k, got, want, top.Extended.Params)
		}
	}
	if top.Extended.Params["boundary"] == "" {
		t.Errorf("multipart/signed has no boundary parameter: %v", top.Extended.Params)
	}

	content, ok := top.Children[0].(*imap.BodyStructureMultiPart)
	if !ok || content.MediaType() != "multipart/mixed" {
		t.Fatalf("first part is %T %v, want the signed multipart/mixed", top.Children[0], mediaType(top.Children[0]))
	}
	var inner []string
	for _, p := range content.Children {
		inner = append(inner, mediaType(p))
	}
	if want := []string{"text/plain", "application/fhir+json"}; !reflect.DeepEqual(inner, want) {
		t.Errorf("signed content parts %v, want %v", inner, want)
	}

	sig, ok := top.Children[1].(*imap.BodyStructureSinglePart)
	if !ok {
		t.Fatalf("second part is %T, want a single part", top.Children[1])
	}
	if got := sig.MediaType(); got != "application/pkcs7-signature" {
		t.Errorf("signature part type %q, want application/pkcs7-signature", got)
	}
	if !strings.EqualFold(sig.Encoding, "base64") || sig.Params["name"] != "smime.p7s" || sig.Size == 0 {
		t.Errorf("signature part: encoding %q, params %v, size %d; want base64, name=smime.p7s, non-empty", sig.Encoding, sig.Params, sig.Size)
	}
	if d := sig.Disposition(); d == nil || !strings.EqualFold(d.Value, "attachment") || d.Params["filename"] != "smime.p7s" {
		t.Errorf("signature part disposition %+v, want attachment; filename=smime.p7s", d)
	}

	// What the client decoded off the wire is what go-imap computes from
	// the fetched bytes themselves: nothing was lost in the relay's cached
	// form (relay/imapd/meta.go) nor in the encoding.
	if want := imapserver.ExtractBodyStructure(bytes.NewReader(ext.raw)); !reflect.DeepEqual(ext.bs, want) {
		t.Errorf("BODYSTRUCTURE over the wire differs from the message's own:\n got %s\nwant %s", dumpBS(ext.bs), dumpBS(want))
	}

	// BODY (no extension data) gives the same tree of types.
	basic := fetch(false)
	if got, want := dumpTypes(basic.bs), dumpTypes(ext.bs); got != want {
		t.Errorf("BODY tree %s, BODYSTRUCTURE tree %s", got, want)
	}

	// INTERNALDATE is stored, not computed at fetch time: a restart
	// returns the same instant.
	h.restart()
	again := fetch(true)
	if !again.date.Equal(ext.date) {
		t.Errorf("INTERNALDATE after restart %s, before %s", again.date.Format(time.RFC3339), ext.date.Format(time.RFC3339))
	}
}

type fetched struct {
	date time.Time
	size int64
	bs   imap.BodyStructure
	raw  []byte
}

func mediaType(bs imap.BodyStructure) string {
	if bs == nil {
		return "<nil>"
	}
	return bs.MediaType()
}

// dumpTypes renders a body structure as its tree of media types.
func dumpTypes(bs imap.BodyStructure) string {
	mp, ok := bs.(*imap.BodyStructureMultiPart)
	if !ok {
		return mediaType(bs)
	}
	parts := make([]string, len(mp.Children))
	for i, c := range mp.Children {
		parts[i] = dumpTypes(c)
	}
	return mp.MediaType() + "(" + strings.Join(parts, " ") + ")"
}

// dumpBS renders a body structure in full for a failure message.
func dumpBS(bs imap.BodyStructure) string {
	mp, ok := bs.(*imap.BodyStructureMultiPart)
	if !ok {
		return fmt.Sprintf("%+v", bs)
	}
	parts := make([]string, len(mp.Children))
	for i, c := range mp.Children {
		parts[i] = dumpBS(c)
	}
	return fmt.Sprintf("%s %+v (%s)", mp.MediaType(), mp.Extended, strings.Join(parts, " "))
}

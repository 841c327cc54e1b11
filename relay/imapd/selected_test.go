package imapd

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/emersion/go-imap/v2"

	"mssrelay/store"
)

// view returns a selected mailbox whose entries have the given UIDs.
func view(uids ...uint32) *selected {
	sel := &selected{name: "INBOX"}
	for _, u := range uids {
		sel.entries = append(sel.entries, store.Entry{UID: u, RecordID: uint64(u)})
	}
	return sel
}

// seqs and uidSet build sets as go-imap's decoder does (through AddRange,
// which keeps them sorted and merged); 0 is "*".
func seqs(ranges ...[2]uint32) imap.SeqSet {
	var s imap.SeqSet
	for _, r := range ranges {
		s.AddRange(r[0], r[1])
	}
	return s
}

func uids(ranges ...[2]uint32) imap.UIDSet {
	var s imap.UIDSet
	for _, r := range ranges {
		s.AddRange(imap.UID(r[0]), imap.UID(r[1]))
	}
	return s
}

func TestResolve(t *testing.T) {
	const star = 0
	full := view(3, 5, 9, 12)
	cases := []struct {
		name string
		sel  *selected
		set  imap.NumSet
		want []int
	}{
		{"seq 1:*", full, seqs([2]uint32{1, star}), []int{0, 1, 2, 3}},
		{"seq *", full, seqs([2]uint32{star, star}), []int{3}},
		{"seq 2", full, seqs([2]uint32{2, 2}), []int{1}},
		{"seq 2:3", full, seqs([2]uint32{2, 3}), []int{1, 2}},
		{"seq 3:2 (reversed)", full, seqs([2]uint32{3, 2}), []int{1, 2}},
		{"seq beyond the end", full, seqs([2]uint32{5, 5}), nil},
		// RFC 3501 §6.4.8 / RFC 9051 §6.4.9: "n:*" with n past the end
		// is "*:n", which holds the last message.
		{"seq 9:*, n > max", full, seqs([2]uint32{9, star}), []int{3}},
		{"seq *:2", full, seqs([2]uint32{star, 2}), []int{1, 2, 3}},
		// A static number past the end beside "*": after "*" becomes 4
		// the ranges are no longer in order; "*" must still match.
		{"seq 7,*", full, seqs([2]uint32{7, 7}, [2]uint32{star, star}), []int{3}},
		{"seq 1,6:*", full, seqs([2]uint32{1, 1}, [2]uint32{6, star}), []int{0, 3}},
		{"seq 1:* on empty", view(), seqs([2]uint32{1, star}), nil},
		{"seq * on empty", view(), seqs([2]uint32{star, star}), nil},

		{"uid 1:*", full, uids([2]uint32{1, star}), []int{0, 1, 2, 3}},
		{"uid *", full, uids([2]uint32{star, star}), []int{3}},
		{"uid 5", full, uids([2]uint32{5, 5}), []int{1}},
		{"uid 4 (no such uid)", full, uids([2]uint32{4, 4}), nil},
		{"uid 4:10", full, uids([2]uint32{4, 10}), []int{1, 2}},
		// RFC 3501 §6.4.8: "a UID range of 559:* always includes the UID
		// of the last message in the mailbox, even if 559 is higher".
		{"uid 100:*, n > max", full, uids([2]uint32{100, star}), []int{3}},
		{"uid 13:*, n = max+1", full, uids([2]uint32{13, star}), []int{3}},
		{"uid 20,*", full, uids([2]uint32{20, 20}, [2]uint32{star, star}), []int{3}},
		{"uid 1:4,10:*", full, uids([2]uint32{1, 4}, [2]uint32{10, star}), []int{0, 3}},
		{"uid 1:* on empty", view(), uids([2]uint32{1, star}), nil},
		{"uid * on empty", view(), uids([2]uint32{star, star}), nil},
		{"uid 5:* on empty", view(), uids([2]uint32{5, star}), nil},
		// SEARCHRES (RFC 5182) is not advertised: "$" matches nothing.
		{"SEARCHRES marker", full, imap.SearchRes(), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.sel.resolve(tc.set); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("resolve(%v) = %v, want %v", tc.set, got, tc.want)
			}
		})
	}
}

// TestResolveKeepsSet: resolve must not change the caller's set (SEARCH
// resolves the same criteria for every message).
func TestResolveKeepsSet(t *testing.T) {
	set := uids([2]uint32{5, 0})
	before := set.String()
	view(1, 2, 3).resolve(set)
	if set.String() != before {
		t.Errorf("set changed from %s to %s", before, set.String())
	}
}

func TestDropUIDs(t *testing.T) {
	cases := []struct {
		name     string
		uids     []uint32
		removed  []uint32
		reported []uint32
		left     []uint32
	}{
		// RFC 3501 §7.4.1: each EXPUNGE renumbers what follows, so
		// removing UIDs 2 and 4 of 1..5 reports 2, then 3.
		{"two apart", []uint32{1, 2, 3, 4, 5}, []uint32{2, 4}, []uint32{2, 3}, []uint32{1, 3, 5}},
		{"first three", []uint32{1, 2, 3, 4, 5}, []uint32{1, 2, 3}, []uint32{1, 1, 1}, []uint32{4, 5}},
		{"last", []uint32{1, 2, 3}, []uint32{3}, []uint32{3}, []uint32{1, 2}},
		{"all", []uint32{7, 8}, []uint32{8, 7}, []uint32{1, 1}, nil},
		{"unknown uids are not reported", []uint32{1, 2}, []uint32{5, 6}, nil, []uint32{1, 2}},
		{"nothing", []uint32{1, 2}, nil, nil, []uint32{1, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sel := view(tc.uids...)
			var got []uint32
			if err := sel.dropUIDs(tc.removed, func(seq uint32) error { got = append(got, seq); return nil }); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.reported) {
				t.Errorf("reported %v, want %v", got, tc.reported)
			}
			var left []uint32
			for _, e := range sel.entries {
				left = append(left, e.UID)
			}
			if !reflect.DeepEqual(left, tc.left) {
				t.Errorf("view left with %v, want %v", left, tc.left)
			}
		})
	}
	t.Run("write error stops", func(t *testing.T) {
		boom := errors.New("connection lost")
		sel := view(1, 2, 3)
		if err := sel.dropUIDs([]uint32{1, 2}, func(uint32) error { return boom }); !errors.Is(err, boom) {
			t.Errorf("got %v, want the write error", err)
		}
	})
}

func TestHeaderContains(t *testing.T) {
	header := []byte("Return-Path: <dr.martin@mssante.test>\r\n" +
		"From: \"Dr Camille Martin\" <dr.martin@mssante.test>\r\n" +
		"Subject: Ordonnance pour\r\n" +
		"\tMme DUPONT\r\n" +
		"X-MSS-INS: O\r\n" +
		"x-empty:\r\n" +
		"To: pharmacie.centrale@mssante.test,\r\n" +
		"  pharmacie.gare@mssante.test\r\n" +
		"\r\n")
	cases := []struct {
		key, value string
		want       bool
	}{
		{"From", "dr.martin", true},
		{"from", "DR.MARTIN", true},          // field names and values case-insensitive
		{"Subject", "pour Mme dupont", true}, // across a folded line
		{"Subject", "DUPONT", true},          // on the continuation line
		{"To", "pharmacie.gare", true},       // second line of a folded field
		{"To", "dr.martin", false},           // in another field
		{"Subject", "", true},                // present, any value
		{"X-Empty", "", true},                // present with an empty value
		{"Cc", "", false},                    // absent
		{"X-MSS-INS", "o", true},
		{"Return", "", false}, // a field name is matched whole
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s=%q", tc.key, tc.value), func(t *testing.T) {
			if got := headerContains(header, tc.key, tc.value); got != tc.want {
				t.Errorf("headerContains(%q, %q) = %v, want %v", tc.key, tc.value, got, tc.want)
			}
		})
	}
	// LF-only line endings (an APPENDed message from a careless client).
	if !headerContains([]byte("Subject: a\n b\n\n"), "subject", "a b") {
		t.Error("LF-folded field not unfolded")
	}
}

func TestBodySection(t *testing.T) {
	header := "From: a@mssante.test\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	text := "--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--b--\r\n"
	raw := []byte(header + text)
	sec := func(spec imap.PartSpecifier, p *imap.SectionPartial, part ...int) *imap.FetchItemBodySection {
		return &imap.FetchItemBodySection{Specifier: spec, Partial: p, Part: part}
	}
	cases := []struct {
		name string
		raw  []byte
		sec  *imap.FetchItemBodySection
		want string
	}{
		{"BODY[]", raw, sec(imap.PartSpecifierNone, nil), string(raw)},
		{"BODY[HEADER]", raw, sec(imap.PartSpecifierHeader, nil), header},
		{"BODY[TEXT]", raw, sec(imap.PartSpecifierText, nil), text},
		{"BODY[]<0.4>", raw, sec(imap.PartSpecifierNone, &imap.SectionPartial{Offset: 0, Size: 4}), "From"},
		{"BODY[TEXT]<2.1>", raw, sec(imap.PartSpecifierText, &imap.SectionPartial{Offset: 2, Size: 1}), "b"},
		// RFC 3501 §6.4.5: a partial past the end is truncated; starting
		// past the end gives the empty string.
		{"BODY[]<n.huge>", raw, sec(imap.PartSpecifierNone, &imap.SectionPartial{Offset: int64(len(raw)) - 3, Size: 1 << 30}), "-\r\n"},
		{"BODY[]<end.10>", raw, sec(imap.PartSpecifierNone, &imap.SectionPartial{Offset: int64(len(raw)), Size: 10}), ""},
		{"BODY[HEADER]<past.10>", raw, sec(imap.PartSpecifierHeader, &imap.SectionPartial{Offset: 10_000, Size: 10}), ""},
		{"BODY[1]", raw, sec(imap.PartSpecifierNone, nil, 1), "one"},
		{"BODY[2]", raw, sec(imap.PartSpecifierNone, nil, 2), "two"},
		{"BODY[HEADER.FIELDS (Subject)]", raw, &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}}, "Subject: x\r\n\r\n"},
		{"LF-only BODY[HEADER]", []byte("Subject: y\n\nbody\n"), sec(imap.PartSpecifierHeader, nil), "Subject: y\n\n"},
		{"LF-only BODY[TEXT]", []byte("Subject: y\n\nbody\n"), sec(imap.PartSpecifierText, nil), "body\n"},
		{"no body", []byte("Subject: y\r\n"), sec(imap.PartSpecifierText, nil), ""},
		// RFC 5322 §2.1: the header may be empty; the body then starts
		// after the first line, and a blank line inside it is not the
		// end of a header.
		{"empty header, BODY[HEADER]", []byte("\r\nline one\r\n\r\nline two\r\n"), sec(imap.PartSpecifierHeader, nil), "\r\n"},
		{"empty header, BODY[TEXT]", []byte("\r\nline one\r\n\r\nline two\r\n"), sec(imap.PartSpecifierText, nil), "line one\r\n\r\nline two\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := bodySection(tc.raw, tc.sec)
			if !bytes.Equal(got, []byte(tc.want)) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBodySectionSharesBytes: BODY[] is the stored slice itself, not a
// re-serialisation (the signature must verify over it).
func TestBodySectionSharesBytes(t *testing.T) {
	raw := signedPrescription(t)
	got := bodySection(raw, &imap.FetchItemBodySection{})
	if len(got) != len(raw) || &got[0] != &raw[0] {
		t.Error("BODY[] is not the stored bytes")
	}
}

// FuzzBodySection: message bytes come from senders and APPEND. Serving
// sections and searching headers never panic, HEADER and TEXT split
// BODY[] exactly, and a partial is a slice of the whole.
func FuzzBodySection(f *testing.F) {
	f.Add(signedPrescription(f), int64(3), int64(10), "Subject", "ordonnance")
	f.Add([]byte("\r\nno header\r\n\r\nx"), int64(0), int64(1), "", "")
	f.Add([]byte("Subject: a\n b\n\nbody"), int64(100), int64(5), "subject", "a b")
	f.Fuzz(func(t *testing.T, raw []byte, off, size int64, key, value string) {
		if off < 0 || size < 0 {
			return
		}
		whole := bodySection(raw, &imap.FetchItemBodySection{})
		hdr := bodySection(raw, &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader})
		text := bodySection(raw, &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText})
		if !bytes.Equal(whole, raw) || !bytes.Equal(append(append([]byte(nil), hdr...), text...), raw) {
			t.Fatalf("HEADER %q + TEXT %q is not BODY[]", hdr, text)
		}
		p := bodySection(raw, &imap.FetchItemBodySection{Partial: &imap.SectionPartial{Offset: off, Size: size}})
		if int64(len(p)) > size || (len(p) > 0 && !bytes.Equal(p, raw[off:off+int64(len(p))])) {
			t.Fatalf("partial <%d.%d> = %q", off, size, p)
		}
		_ = headerContains(hdr, key, value)
	})
}

package store

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Mailbox names come straight from IMAP clients.
func FuzzCanonName(f *testing.F) {
	for _, s := range []string{"INBOX", "inbox/a", "a/b/c", "/a", "a//b", "é/ü", "a*", "\x00", "\xff", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		n, err := canonName(name)
		if err != nil {
			return
		}
		if !utf8.ValidString(n) || len(n) > MaxMailboxNameBytes || n == "" ||
			strings.HasPrefix(n, "/") || strings.HasSuffix(n, "/") || strings.Contains(n, "//") {
			t.Fatalf("canonName(%q) = %q accepted", name, n)
		}
		again, err := canonName(n)
		if err != nil || again != n {
			t.Fatalf("not idempotent: %q → %q → %q, %v", name, n, again, err)
		}
		if !strings.EqualFold(n, name) {
			t.Fatalf("canonName(%q) = %q changed more than case", name, n)
		}
	})
}

// Flags come from IMAP STORE and APPEND.
func FuzzNormFlags(f *testing.F) {
	f.Add(`\Seen`, "$Label1", `\recent`)
	f.Add("a b", `\Bogus`, "")
	f.Add("KW", "kw", `\DELETED`)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		out, err := normFlags([]string{a, b, c})
		if err != nil {
			return
		}
		for i, fl := range out {
			if fl == "" || strings.EqualFold(fl, flagRecent) {
				t.Fatalf("stored %q", fl)
			}
			for _, g := range out[i+1:] {
				if strings.EqualFold(fl, g) {
					t.Fatalf("duplicate %q %q", fl, g)
				}
			}
		}
		again, err := normFlags(out)
		if err != nil || !sameFlags(again, out) {
			t.Fatalf("not idempotent: %v → %v, %v", out, again, err)
		}
		for _, op := range []FlagOp{FlagsSet, FlagsAdd, FlagsRemove} {
			if r := applyFlags(out, op, out); op == FlagsRemove && len(r) != 0 || op != FlagsRemove && !sameFlags(r, out) {
				t.Fatalf("applyFlags(%v, %d) = %v", out, op, r)
			}
		}
	})
}

// Stored values are ours, but a damaged file must give errors, not panics.
func FuzzDecode(f *testing.F) {
	rec := encodeRecord(&Record{Received: time.Unix(1e9, 5), Size: 3, Sender: "s", Recipients: []string{"a", "b"}, Number: "n", Owner: "o"})
	f.Add(rec)
	f.Add(encodeEntry(&entryVal{RecordID: 9, InternalDate: time.Unix(1, 0), Size: 2, Flags: []string{`\Seen`}}))
	f.Add(encodeInfo(&boxInfo{UIDValidity: 1, UIDNext: 2, SpecialUse: `\Sent`}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeRecord(1, b); err == nil {
			if r2, err := decodeRecord(1, encodeRecord(r)); err != nil || r2.Number != r.Number || len(r2.Recipients) != len(r.Recipients) {
				t.Fatalf("record round trip: %+v → %+v, %v", r, r2, err)
			}
		}
		if e, err := decodeEntry(b); err == nil {
			if e2, err := decodeEntry(encodeEntry(&e)); err != nil || e2.RecordID != e.RecordID || len(e2.Flags) != len(e.Flags) {
				t.Fatalf("entry round trip: %+v → %+v, %v", e, e2, err)
			}
		}
		if in, err := decodeInfo(b); err == nil {
			if in2, err := decodeInfo(encodeInfo(&in)); err != nil || in2 != in {
				t.Fatalf("info round trip: %+v → %+v, %v", in, in2, err)
			}
		}
		_, _, _ = decodeIdx(b)
	})
}

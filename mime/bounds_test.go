package mime

import (
	"bytes"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestExtractConfiguredLimits: the limits passed to ExtractPrescriptionWith
// apply to the signed entity itself. For an opaque signature that entity
// was inside the PKCS#7, so the scan of the outer message never saw it:
// a configured depth or part count stricter than the default must still
// hold there.
func TestExtractConfiguredLimits(t *testing.T) {
	json := bundleJSON("RX1", goodINS, goodIDNPS, medEntry)
	// The FHIR part at the bottom of depth multipart levels (the outermost
	// is the entity itself).
	deep := func(depth int) []byte {
		// Fixed-width boundaries: none is a prefix of another.
		var b strings.Builder
		for i := range depth {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"lvl%03d\"\n\n--lvl%03d\n", i, i)
		}
		b.WriteString("Content-Type: application/fhir+json\n\n" + json + "\n")
		for i := depth - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "--lvl%03d--\n", i)
		}
		return crlf(b.String())
	}
	text := testPart{"Content-Type: text/plain\n", "Ordonnance"}
	fiveParts := entity("", text, text, text, fhirPart("", json)) // the entity and its four parts

	tests := []struct {
		name    string
		content []byte
		lim     Limits
		detail  string // "" when accepted
	}{
		{"depth 5 under the defaults", deep(5), Limits{}, ""},
		{"depth 5 under a depth of 5", deep(5), Limits{MaxDepth: 5}, ""},
		{"depth 5 under a depth of 4", deep(5), Limits{MaxDepth: 4}, "signed content: MIME nesting deeper than 4"},
		{"depth 17 under the defaults", deep(17), Limits{}, "signed content: MIME nesting deeper than 16"},
		{"5 parts under the defaults", fiveParts, Limits{}, ""},
		{"5 parts under a limit of 4", fiveParts, Limits{MaxParts: 4}, "more than 4 MIME parts"},
		{"header fields under a limit of 1", entity("X-A: 1\n", fhirPart("", json)), Limits{MaxHeaders: 1}, "more than 1 fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rx, err := ExtractPrescriptionWith(tt.content, tt.lim)
			if tt.detail != "" {
				wantError(t, err, KindPrescription, tt.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rx.Number != "RX1" {
				t.Fatalf("number %q", rx.Number)
			}
		})
	}
	// ExtractPrescription is ExtractPrescriptionWith under the defaults.
	if _, err := ExtractPrescription(deep(16)); err != nil {
		t.Fatalf("depth 16 under the defaults: %v", err)
	}
}

// heapBytes returns the bytes f allocates on the heap: the least of a few
// runs, because runtime.MemStats.TotalAlloc counts the whole process and
// the minimum discards what another goroutine allocated meanwhile.
func heapBytes(f func()) uint64 {
	best := ^uint64(0)
	var before, after runtime.MemStats
	for range 5 {
		runtime.GC()
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		best = min(best, after.TotalAlloc-before.TotalAlloc)
	}
	return best
}

// boundedMemory is what refusing one hostile message may allocate: the
// copies a parser needs of the message itself (base64 decoding, header
// blocks), far below what the bombs below would expand to (4 MiB to
// 64 MiB, or 5,000 levels of stack).
const boundedMemory = 1 << 20

// xdmBombs are the archives that would cost memory if inflated: a high
// ratio, a large declared total, and METADATA.XML declaring 200 bytes
// while it inflates to 16 MiB (archive/zip and the LimitReader stop at
// the declared size).
func xdmBombs(t testing.TB) map[string][]byte {
	s := NewSample(3)
	s.XDM = true
	ratio, total := s, s
	ratio.XDMBomb, total.XDMBomb = 4<<20, 64<<20

	meta := metadataXML(extrinsic("RX1", goodPID, goodAuthor))
	padded := append(bytes.Repeat([]byte(" "), 16<<20), meta...)
	lying := zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", padded)
	// The uncompressed size of the central directory header (offset 24
	// after PK\x01\x02) says 200 bytes.
	cd := bytes.Index(lying, []byte("PK\x01\x02"))
	lying[cd+24], lying[cd+25], lying[cd+26], lying[cd+27] = 200, 0, 0, 0
	return map[string][]byte{
		"ratio":              ratio.Content(),
		"declared total":     total.Content(),
		"lying metadata":     entity("", fhirPart("", bundleJSON("RX1", goodINS, goodIDNPS, medEntry)), xdmPart(lying)),
		"ratio without FHIR": entity("", xdmPart(ratio.xdmZip([]byte("%PDF"), "application/pdf", "DOC0001.PDF"))),
	}
}

// TestHostileInputsBoundedMemory: zip bombs and 5,000 nested multipart
// levels are refused while allocating little. The bound is on memory,
// never on time.
func TestHostileInputsBoundedMemory(t *testing.T) {
	details := map[string]string{
		"ratio":              "compression ratio over 100",
		"declared total":     "expands to more than",
		"lying metadata":     "reading IHE_XDM/SUBSET01/METADATA.XML",
		"ratio without FHIR": "compression ratio over 100",
	}
	for name, content := range xdmBombs(t) {
		t.Run("XDM "+name, func(t *testing.T) {
			_, err := ExtractPrescription(content)
			wantError(t, err, KindPrescription, details[name])
			n := heapBytes(func() { _, _ = ExtractPrescription(content) })
			t.Logf("%d bytes allocated for a %d-byte entity", n, len(content))
			if n > boundedMemory {
				t.Errorf("refusing the bomb allocated %d bytes, bound %d", n, boundedMemory)
			}
		})
	}

	deep := nested(5000)
	for name, f := range map[string]func() error{
		"Scan":                func() error { return Scan(deep, DefaultLimits()) },
		"ExtractPrescription": func() error { _, err := ExtractPrescription(deep); return err },
	} {
		t.Run("5000 levels "+name, func(t *testing.T) {
			if f() == nil {
				t.Fatal("accepted")
			}
			n := heapBytes(func() { _ = f() })
			t.Logf("%d bytes allocated for %d bytes of nesting", n, len(deep))
			if n > boundedMemory {
				t.Errorf("refusing 5,000 levels allocated %d bytes, bound %d", n, boundedMemory)
			}
		})
	}
}

// BenchmarkXDMBomb: the cost of refusing a prescription whose XDM archive
// is a zip bomb (run with -benchmem: the bytes per operation stay far
// below the 4 MiB the bomb expands to).
func BenchmarkXDMBomb(b *testing.B) {
	content := xdmBombs(b)["ratio"]
	b.SetBytes(int64(len(content)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ExtractPrescription(content); err == nil {
			b.Fatal("accepted")
		}
	}
}

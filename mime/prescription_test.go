package mime

import (
	"archive/zip"
	"bytes"
	"fmt"
	"mime/quotedprintable"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExtractSamples(t *testing.T) {
	for n := 0; n < 12; n++ {
		s := NewSample(n)
		s.XDM, s.PDF = n%2 == 0, n%3 == 0
		s.Delivery = []string{"", DeliveryMessagingOnly, DeliveryPaper}[n%3]
		rx, err := ExtractPrescription(s.Content())
		if err != nil {
			t.Fatalf("sample %d: %v", n, err)
		}
		want := &Prescription{
			Number: s.Number, PatientINS: s.PatientINS, IDNPS: "8" + s.RPPS,
			AuthoredOn: s.Authored.Format(time.RFC3339), Delivery: s.Delivery, Items: s.Items,
		}
		if !reflect.DeepEqual(rx, want) {
			t.Fatalf("sample %d:\n got %+v\nwant %+v", n, rx, want)
		}
	}
}

func TestSampleContentShape(t *testing.T) {
	s := sample(5)
	s.Delivery = DeliveryMessagingOnly
	c := s.Content()
	if !bytes.Equal(c, s.Content()) {
		t.Fatal("Content is not deterministic")
	}
	if bytes.Contains(bytes.ReplaceAll(c, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatal("bare LF in generated content")
	}
	if v, ok := HeaderField(c, "X-Ordonnance-Delivery"); !ok || v != DeliveryMessagingOnly {
		t.Fatalf("X-Ordonnance-Delivery %q %v", v, ok)
	}
	msg := signedMessage(5)
	if len(msg) < 10<<10 || len(msg) > 30<<10 {
		t.Fatalf("full sample message is %d bytes, the load tool wants 10-30 KiB", len(msg))
	}
	for _, want := range []string{"Content-Type: application/pdf", "filename=IHE_XDM.ZIP", "Content-Type: application/fhir+json", "Content-Type: text/plain; charset=utf-8"} {
		if !bytes.Contains(c, []byte(want)) {
			t.Fatalf("content lacks %q", want)
		}
	}
	pdf := s.pdf()
	if !bytes.HasPrefix(pdf, []byte("%PDF-1.4")) || !bytes.HasSuffix(pdf, []byte("%%EOF\n")) {
		t.Fatal("PDF lacks its header or trailer")
	}
	// The xref offsets point at the objects.
	for i := 1; i <= 6; i++ {
		marker := []byte(fmt.Sprintf("%d 0 obj\n", i))
		off := bytes.Index(pdf, marker)
		if off < 0 || !bytes.Contains(pdf, []byte(fmt.Sprintf("%010d 00000 n \n", off))) {
			t.Fatalf("object %d not in the xref table at %d", i, off)
		}
	}
	if h := NewSample(1); h.XDM || h.PDF || h.Delivery != "" {
		t.Fatal("NewSample sets options")
	}
}

func TestNewSampleDistinctAndValid(t *testing.T) {
	numbers, ins := map[string]bool{}, map[string]bool{}
	corsica := 0
	for n := 0; n < 2000; n++ {
		s := NewSample(n)
		if numbers[s.Number] || ins[s.PatientINS] {
			t.Fatalf("sample %d repeats a number or INS", n)
		}
		numbers[s.Number], ins[s.PatientINS] = true, true
		if !ValidINS(s.PatientINS) {
			t.Fatalf("SampleINS(%d) = %q is invalid", n, s.PatientINS)
		}
		if d := s.PatientINS[5:7]; d == "2A" || d == "2B" {
			corsica++
		}
	}
	if corsica == 0 {
		t.Fatal("no Corsican INS among the samples")
	}
}

func TestValidINS(t *testing.T) {
	// Keys computed independently: 97 - (N mod 97), 2A→19, 2B→18.
	tests := []struct {
		ins  string
		want bool
	}{
		{"184127512345640", true},
		{"175029912304584", true},
		{"180017511602225", true},
		{"290052A00401266", true}, // Corse-du-Sud
		{"155122B00101223", true}, // Haute-Corse
		{"290052a00401266", true}, // lower case department letter
		{"184127512345641", false},
		{"290052A00401267", false},
		{"290052B00401266", false}, // 2B is not 2A
		{"290052C00401266", false},
		{"18412751234564", false},
		{"1841275123456400", false},
		{"18412751234564X", false},
		{"1841275123456-0", false},
		{"", false},
		{"ABCDEFGHIJKLMNO", false},
	}
	for _, tt := range tests {
		if got := ValidINS(tt.ins); got != tt.want {
			t.Errorf("ValidINS(%q) = %v, want %v", tt.ins, got, tt.want)
		}
	}
	if k, err := ComputeINSKey("290052A004012"); err != nil || k != "66" {
		t.Fatalf("ComputeINSKey = %q, %v", k, err)
	}
	for _, bad := range []string{"29005", "29005XA004012", "2900529004012x"} {
		if _, err := ComputeINSKey(bad); err == nil {
			t.Errorf("ComputeINSKey(%q) accepted", bad)
		}
	}
}

// bundleJSON is a Bundle with the given identifier, patient and
// practitioner identifiers and entries (raw JSON fragments).
func bundleJSON(number, ins, idnps string, entries ...string) string {
	e := []string{
		`{"resource":{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.250.1.213.1.4.8","value":"` + ins + `"}]}}`,
		`{"resource":{"resourceType":"Practitioner","identifier":[{"system":"urn:oid:1.2.250.1.71.4.2.1","value":"` + idnps + `"}]}}`,
	}
	e = append(e, entries...)
	id := ""
	if number != "" {
		id = `"identifier":{"value":"` + number + `"},`
	}
	return `{"resourceType":"Bundle",` + id + `"type":"collection","timestamp":"2025-01-06T09:00:00Z","entry":[` + strings.Join(e, ",") + `]}`
}

const (
	goodINS   = "184127512345640"
	goodIDNPS = "810101201234"
	medEntry  = `{"resource":{"resourceType":"MedicationRequest","authoredOn":"2025-01-06","medicationCodeableConcept":{"coding":[{"display":"Amoxicilline 1 g"}]},"dosageInstruction":[{"text":"matin"},{"text":"soir"}]}}`
	actEntry  = `{"resource":{"resourceType":"ServiceRequest","code":{"text":"Pansement"},"patientInstruction":"tous les 2 jours"}}`
)

func fhirPart(cte, json string) testPart {
	body := json
	switch cte {
	case "base64":
		body = unCRLF(appendBase64Lines(nil, []byte(json)))
	case "quoted-printable":
		var b bytes.Buffer
		w := quotedprintable.NewWriter(&b)
		w.Write([]byte(json))
		w.Close()
		body = unCRLF(b.Bytes())
	}
	h := "Content-Type: application/fhir+json; charset=utf-8\n"
	if cte != "" {
		h += "Content-Transfer-Encoding: " + cte + "\n"
	}
	return testPart{h, body}
}

func TestExtractEncodings(t *testing.T) {
	json := bundleJSON("RX.1_a-B", goodINS, goodIDNPS, medEntry, actEntry)
	want := &Prescription{Number: "RX.1_a-B", PatientINS: goodINS, IDNPS: goodIDNPS, AuthoredOn: "2025-01-06",
		Items: []Item{{"MedicationRequest", "Amoxicilline 1 g", "matin; soir"}, {"ServiceRequest", "Pansement", "tous les 2 jours"}}}
	text := testPart{"Content-Type: text/plain\n", "Ordonnance"}
	tests := map[string][]byte{
		"7bit":             entity("", text, fhirPart("7bit", json)),
		"no CTE":           entity("", fhirPart("", json)),
		"8bit":             entity("", fhirPart("8bit", json)),
		"base64":           entity("", fhirPart("base64", json)),
		"quoted-printable": entity("", text, fhirPart("quoted-printable", json)),
		"LF line endings":  bytes.ReplaceAll(entity("", text, fhirPart("base64", json)), []byte("\r\n"), []byte("\n")),
		"single part":      crlf("Content-Type: application/fhir+json\n\n" + json + "\n"),
		"nested multipart": entity("", testPart{"Content-Type: multipart/alternative; boundary=in\n",
			"--in\nContent-Type: text/plain\n\nx\n--in\n" + fhirPart("7bit", json).header + "\n" + json + "\n--in--"}),
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			rx, err := ExtractPrescription(content)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(rx, want) {
				t.Fatalf("got %+v", rx)
			}
		})
	}
}

func xdmPart(zipData []byte) testPart {
	return testPart{"Content-Type: application/octet-stream; name=IHE_XDM.ZIP\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"ihe_xdm.zip\"\n",
		unCRLF(appendBase64Lines(nil, zipData))}
}

// unCRLF undoes CRLF so that entity() can apply it once.
func unCRLF(b []byte) string { return strings.ReplaceAll(string(b), "\r\n", "\n") }

func TestExtractXDMOnly(t *testing.T) {
	s := NewSample(4)
	content := entity("X-Ordonnance-Delivery: Paper\n", testPart{"Content-Type: text/plain\n", "voir PDF"}, xdmPart(s.xdmZip([]byte("%PDF"), "application/pdf", "DOC0001.PDF")))
	rx, err := ExtractPrescription(content)
	if err != nil {
		t.Fatal(err)
	}
	want := &Prescription{Number: s.Number, PatientINS: s.PatientINS, IDNPS: "8" + s.RPPS, Delivery: DeliveryPaper}
	if !reflect.DeepEqual(rx, want) {
		t.Fatalf("got %+v", rx)
	}
}

func TestExtractRefusals(t *testing.T) {
	good := NewSample(8)
	variant := func(f func(*Sample)) []byte {
		s := good
		s.XDM = true
		f(&s)
		return s.Content()
	}
	disagree := func(f func(*Sample)) []byte {
		x := good
		f(&x)
		return variant(func(s *Sample) { s.XDMSample = &x })
	}
	one := func(json string) []byte { return entity("", fhirPart("base64", json)) }
	zipOf := func(s Sample) []byte { return s.xdmZip([]byte("doc"), "application/pdf", "DOC0001.PDF") }
	tests := []struct {
		name    string
		content []byte
		detail  string
	}{
		{"number missing", variant(func(s *Sample) { s.Number, s.XDM = "", false }), "prescription number missing"},
		{"number too long", variant(func(s *Sample) { s.Number = strings.Repeat("9", 65) }), "longer than 64"},
		{"number bad characters", variant(func(s *Sample) { s.Number = "RX 1/2" }), "outside [A-Za-z0-9._-]"},
		{"INS bad key", variant(func(s *Sample) { s.PatientINS = "184127512345641" }), "patient INS has an invalid key"},
		{"INS length", variant(func(s *Sample) { s.PatientINS = "1841275123456" }), "patient INS is not 15 characters"},
		{"INS characters", variant(func(s *Sample) { s.PatientINS = "18412751234X640" }), "patient INS has invalid characters"},
		{"INS key not digits", one(bundleJSON("RX1", "18412751234564X", goodIDNPS, medEntry)), "key is not two digits"},
		{"INS missing", one(bundleJSON("RX1", "", goodIDNPS, medEntry)), "patient INS missing"},
		{"IDNPS missing", one(strings.Replace(bundleJSON("RX1", goodINS, goodIDNPS, medEntry), "1.2.250.1.71.4.2.1", "1.2.3", 1)), "prescriber IDNPS missing"},
		{"IDNPS bad", variant(func(s *Sample) { s.RPPS = "1234" }), "not 8 followed by the 11-digit RPPS"},
		{"no item", variant(func(s *Sample) { s.Items = nil }), "no item"},
		{"item without text", one(bundleJSON("RX1", goodINS, goodIDNPS, `{"resource":{"resourceType":"MedicationRequest"}}`)), "MedicationRequest without a text"},
		{"two patients", one(bundleJSON("RX1", goodINS, goodIDNPS, medEntry, `{"resource":{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.250.1.213.1.4.8","value":"175029912304584"}]}}`)), "more than one patient INS"},
		{"two prescribers", one(bundleJSON("RX1", goodINS, goodIDNPS, medEntry, `{"resource":{"resourceType":"Practitioner","identifier":[{"system":"urn:oid:1.2.250.1.71.4.2.1","value":"810101209999"}]}}`)), "more than one prescriber IDNPS"},
		{"not JSON", one("{nope"), "not valid JSON"},
		{"not a Bundle", one(`{"resourceType":"Patient"}`), "not a Bundle"},
		{"wrong field type", one(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"MedicationRequest","dosageInstruction":"x"}}]}`), "entry 0"},
		{"FHIR bad base64", entity("", testPart{"Content-Type: application/fhir+json\nContent-Transfer-Encoding: base64\n", "@@@@"}), "invalid base64"},
		{"FHIR unknown CTE", entity("", testPart{"Content-Type: application/fhir+json\nContent-Transfer-Encoding: x-uuencode\n", "{}"}), "unknown Content-Transfer-Encoding"},
		{"FHIR too large", entity("", testPart{"Content-Type: application/fhir+json\n", strings.Repeat(" ", maxFHIRBytes+1)}), "larger than"},
		{"two FHIR parts", entity("", fhirPart("", bundleJSON("RX1", goodINS, goodIDNPS, medEntry)), fhirPart("", bundleJSON("RX1", goodINS, goodIDNPS, medEntry))), "more than one FHIR part"},
		{"nothing", entity("", testPart{"Content-Type: text/plain\n", "hello"}), "no prescription found"},
		{"XDM wrong type", entity("", testPart{"Content-Type: text/plain; name=IHE_XDM.ZIP\n", "x"}), "expected application/zip"},
		{"two XDM", entity("", xdmPart(zipOf(good)), xdmPart(zipOf(good))), "more than one IHE_XDM.ZIP"},
		{"delivery unknown", variant(func(s *Sample) { s.Delivery = "email" }), "X-Ordonnance-Delivery \"email\""},
		{"delivery twice", entity("X-Ordonnance-Delivery: paper\nX-Ordonnance-Delivery: paper\n", fhirPart("", bundleJSON("RX1", goodINS, goodIDNPS, medEntry))), "more than one X-Ordonnance-Delivery"},
		{"disagree on number", disagree(func(s *Sample) { s.Number = "RX-OTHER" }), "disagree on the prescription number"},
		{"disagree on INS", disagree(func(s *Sample) { s.PatientINS = SampleINS(99) }), "disagree on the patient INS"},
		{"disagree on IDNPS", disagree(func(s *Sample) { s.RPPS = "10101209999" }), "disagree on the prescriber IDNPS"},
		{"XDM zip bomb (ratio)", variant(func(s *Sample) { s.XDMBomb = 4 << 20 }), "compression ratio over 100"},
		{"XDM zip bomb (size)", variant(func(s *Sample) { s.XDMBomb = 9 << 20 }), "expands to more than"},
		{"malformed content", crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n"), "signed content: multipart has no close delimiter"},
		{"too deep content", nested(17), "signed content: MIME nesting deeper than 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ExtractPrescription(tt.content)
			wantError(t, err, KindPrescription, tt.detail)
		})
	}
}

// zipWith builds an archive from name/data pairs (deflated).
func zipWith(t testing.TB, entries ...any) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for i := 0; i < len(entries); i += 2 {
		w, err := zw.Create(entries[i].(string))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(entries[i+1].([]byte)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func metadataXML(eos ...string) []byte {
	return []byte(`<?xml version="1.0"?><SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"><RegistryObjectList xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">` +
		strings.Join(eos, "") + `</RegistryObjectList></SubmitObjectsRequest>`)
}

func extrinsic(uid, pid, author string) string {
	return `<ExtrinsicObject id="d"><Classification classificationScheme="urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"><Slot name="authorPerson"><ValueList><Value>` + author + `</Value></ValueList></Slot></Classification>` +
		`<ExternalIdentifier identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" value="` + pid + `"/>` +
		`<ExternalIdentifier identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="` + uid + `"/></ExtrinsicObject>`
}

const (
	goodPID    = goodINS + "^^^&amp;1.2.250.1.213.1.4.8&amp;ISO"
	goodAuthor = goodIDNPS + "^MARTIN^Camille^^^^^^&amp;1.2.250.1.71.4.2.1&amp;ISO"
)

func TestParseXDM(t *testing.T) {
	md, err := parseXDM(zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", metadataXML(extrinsic("RX1", goodPID, goodAuthor), extrinsic("RX1.pdf", goodPID, ""))))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(md, &xdmMetadata{uniqueIDs: []string{"RX1", "RX1.pdf"}, ins: goodINS, idnps: goodIDNPS}) {
		t.Fatalf("got %+v", md)
	}
	// Several documents: the FHIR number picks one; without FHIR it is ambiguous.
	if _, err := merge(&Prescription{Number: "RX1.pdf", PatientINS: goodINS, IDNPS: goodIDNPS}, md); err != nil {
		t.Fatal(err)
	}
	_, err = merge(nil, md)
	wantError(t, err, KindPrescription, "holds 2 documents")
}

func TestXDMRefusals(t *testing.T) {
	meta := metadataXML(extrinsic("RX1", goodPID, goodAuthor))
	var lines bytes.Buffer
	for i := 0; lines.Len() < 1<<20+100; i++ {
		fmt.Fprintf(&lines, "line %d of a large but not so compressible file\n", i*7919%100003)
	}
	many := []any{"IHE_XDM/SUBSET01/METADATA.XML", meta}
	for i := 0; i < 64; i++ {
		many = append(many, fmt.Sprintf("IHE_XDM/SUBSET01/F%d", i), []byte("x"))
	}
	big := []any{"IHE_XDM/SUBSET01/METADATA.XML", meta}
	for i := 0; i < 8; i++ {
		big = append(big, fmt.Sprintf("IHE_XDM/SUBSET01/BIG%d", i), lines.Bytes())
	}
	tests := []struct {
		name   string
		data   []byte
		detail string
	}{
		{"not a zip", []byte("PK nothing"), "not a valid zip"},
		{"high ratio (zip bomb)", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", meta, "IHE_XDM/SUBSET01/ZEROS", make([]byte, 4<<20)), "compression ratio over 100"},
		{"total too large", zipWith(t, big...), "expands to more than"},
		{"too many entries", zipWith(t, many...), "65 entries"},
		{"dot-dot", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", meta, "IHE_XDM/../../etc/passwd", []byte("x")), `".." in name`},
		{"leading dot-dot", zipWith(t, "../x", []byte("x"), "IHE_XDM/SUBSET01/METADATA.XML", meta), `".." in name`},
		{"absolute", zipWith(t, "/etc/passwd", []byte("x"), "IHE_XDM/SUBSET01/METADATA.XML", meta), "absolute name"},
		{"backslash", zipWith(t, "IHE_XDM\\SUBSET01\\METADATA.XML", meta), "backslash"},
		{"drive letter", zipWith(t, "C:/x", []byte("x"), "IHE_XDM/SUBSET01/METADATA.XML", meta), "drive letter"},
		{"no metadata", zipWith(t, "IHE_XDM/SUBSET01/DOC.PDF", []byte("x")), "has no IHE_XDM/SUBSET01/METADATA.XML"},
		{"two metadata", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", meta, "ihe_xdm/subset01/metadata.xml", meta), "two IHE_XDM/SUBSET01/METADATA.XML"},
		{"bad XML", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", []byte("<a><b></a>")), "not valid XML"},
		{"XML entity", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", []byte(`<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>`)), "not valid XML"},
		{"no document", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", metadataXML()), "describes no document"},
		{"no uniqueId", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", metadataXML(strings.Replace(extrinsic("RX1", goodPID, goodAuthor), "2e82c1f6", "00000000", 1))), "no XDSDocumentEntry.uniqueId"},
		{"no patientId", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", metadataXML(extrinsic("RX1", "", goodAuthor))), "no XDSDocumentEntry.patientId"},
		{"patientId not an INS", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", metadataXML(extrinsic("RX1", goodINS+"^^^&amp;1.2.250.1.213.1.4.9&amp;ISO", goodAuthor))), "not an INS"},
		{"two patients", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", metadataXML(extrinsic("RX1", goodPID, goodAuthor), extrinsic("RX2", "175029912304584^^^&amp;1.2.250.1.213.1.4.8&amp;ISO", goodAuthor))), "different patients"},
		{"two authors", zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", metadataXML(extrinsic("RX1", goodPID, goodAuthor), extrinsic("RX2", goodPID, "810101209999^X^Y^^^^^^&amp;1.2.250.1.71.4.2.1&amp;ISO"))), "more than one author IDNPS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseXDM(tt.data)
			wantError(t, err, KindPrescription, tt.detail)
		})
	}
}

// TestXDMLyingSizes: an entry whose central directory under-declares its
// size is caught when it is inflated, not trusted.
func TestXDMLyingSizes(t *testing.T) {
	real := metadataXML(extrinsic("RX1", goodPID, goodAuthor))
	data := zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", real)
	// Patch the uncompressed size (offset 24 of the central directory
	// header, signature PK\x01\x02) to 10 bytes.
	cd := bytes.Index(data, []byte("PK\x01\x02"))
	data[cd+24], data[cd+25], data[cd+26], data[cd+27] = 10, 0, 0, 0
	_, err := parseXDM(data)
	wantError(t, err, KindPrescription, "reading IHE_XDM/SUBSET01/METADATA.XML")
}

func BenchmarkExtract(b *testing.B) {
	c := sample(7).Content()
	b.SetBytes(int64(len(c)))
	for b.Loop() {
		if _, err := ExtractPrescription(c); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzExtractPrescription(f *testing.F) {
	f.Add(sample(1).Content())
	f.Add(NewSample(2).Content())
	f.Add(entity("", fhirPart("quoted-printable", bundleJSON("RX1", goodINS, goodIDNPS, medEntry, actEntry))))
	f.Add(crlf("Content-Type: application/fhir+json\n\n" + bundleJSON("RX1", goodINS, goodIDNPS, medEntry)))
	f.Fuzz(func(t *testing.T, content []byte) {
		rx, err := ExtractPrescription(content)
		if err != nil {
			if e, ok := err.(*Error); !ok || e.Kind != KindPrescription {
				t.Fatalf("got %v (%T), want *Error KindPrescription", err, err)
			}
			return
		}
		if !ValidINS(rx.PatientINS) || !ValidIDNPS(rx.IDNPS) || rx.Number == "" {
			t.Fatalf("accepted an invalid prescription: %+v", rx)
		}
	})
}

func FuzzXDM(f *testing.F) {
	f.Add(NewSample(1).xdmZip([]byte("%PDF-1.4"), "application/pdf", "DOC0001.PDF"))
	f.Add(zipWith(f, "IHE_XDM/SUBSET01/METADATA.XML", metadataXML(extrinsic("RX1", goodPID, goodAuthor))))
	f.Add(zipWith(f, "../x", []byte("x")))
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	f.Fuzz(func(t *testing.T, data []byte) {
		md, err := parseXDM(data)
		if err != nil {
			if e, ok := err.(*Error); !ok || e.Kind != KindPrescription {
				t.Fatalf("got %v (%T), want *Error KindPrescription", err, err)
			}
			return
		}
		if len(md.uniqueIDs) == 0 || md.ins == "" {
			t.Fatalf("accepted metadata without document or patient: %+v", md)
		}
	})
}

func TestExtractOpposition(t *testing.T) {
	part := fhirPart("", bundleJSON("RX1", goodINS, goodIDNPS, medEntry))
	tests := []struct {
		name   string
		top    string
		want   bool
		detail string // refusal, "" when accepted
	}{
		{"absent", "", false, ""},
		{"execution", "X-Ordonnance-Opposition: execution\n", true, ""},
		{"case and spaces", "x-ordonnance-opposition:   Execution \n", true, ""},
		{"unknown value", "X-Ordonnance-Opposition: none\n", false, `X-Ordonnance-Opposition "none" is not "execution"`},
		{"empty value", "X-Ordonnance-Opposition:\n", false, `X-Ordonnance-Opposition "" is not`},
		{"twice", "X-Ordonnance-Opposition: execution\nX-Ordonnance-Opposition: execution\n", false, "more than one X-Ordonnance-Opposition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rx, err := ExtractPrescription(entity(tt.top, part))
			if tt.detail != "" {
				wantError(t, err, KindPrescription, tt.detail)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rx.Opposition != tt.want {
				t.Fatalf("Opposition %v, want %v", rx.Opposition, tt.want)
			}
		})
	}
	s := NewSample(7)
	s.Opposition, s.XDM = true, true
	c := s.Content()
	if v, ok := HeaderField(c, "X-Ordonnance-Opposition"); !ok || v != OppositionExecution {
		t.Fatalf("sample header %q %v", v, ok)
	}
	if rx, err := ExtractPrescription(c); err != nil || !rx.Opposition || rx.HiddenFromPatient {
		t.Fatalf("sample: %+v %v", rx, err)
	}
}

func TestExtractHiddenFromPatient(t *testing.T) {
	base := NewSample(9)
	hidden := base
	hidden.HiddenFromPatient = true
	xdmOnly := func(s Sample) []byte {
		return entity("", testPart{"Content-Type: text/plain\n", "voir PDF"}, xdmPart(s.xdmZip([]byte("%PDF"), "application/pdf", "DOC0001.PDF")))
	}
	both := func(fhir, xdm Sample) []byte { fhir.XDM = true; return fhir.render(xdm) }
	withMeta := func(meta string) []byte {
		return entity("", fhirPart("", strings.Replace(bundleJSON("RX1", goodINS, goodIDNPS, medEntry), `"type":`, `"meta":`+meta+`,"type":`, 1)))
	}
	classified := func(scheme, node string) []byte {
		eo := strings.Replace(extrinsic("RX1", goodPID, goodAuthor), "<ExternalIdentifier",
			`<Classification classificationScheme="`+scheme+`" nodeRepresentation="`+node+`"/><ExternalIdentifier`, 1)
		return entity("", xdmPart(zipWith(t, "IHE_XDM/SUBSET01/METADATA.XML", metadataXML(eo))))
	}
	tests := []struct {
		name    string
		content []byte
		want    bool
	}{
		{"FHIR only, visible", base.Content(), false},
		{"FHIR only, hidden", hidden.Content(), true},
		{"XDM only, visible", xdmOnly(base), false},
		{"XDM only, hidden", xdmOnly(hidden), true},
		{"both hidden", both(hidden, hidden), true},
		{"hidden in FHIR only", both(hidden, base), true},
		{"hidden in XDM only", both(base, hidden), true},
		{"both visible", both(base, base), false},
		{"other security code", withMeta(`{"security":[{"code":"N"},{"code":"MASQUE_PS"}]}`), false},
		{"security code among others", withMeta(`{"security":[{"code":"N"},{"system":"x","code":" INVISIBLE_PATIENT "}]}`), true},
		{"meta without security", withMeta(`{"versionId":"1"}`), false},
		{"code case differs", withMeta(`{"security":[{"code":"invisible_patient"}]}`), false},
		{"XDM other confidentiality code", classified(schemeConfidentiality, "N"), false},
		{"XDM code under another scheme", classified("urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a", CodeInvisiblePatient), false},
		{"XDM confidentiality code", classified(schemeConfidentiality, CodeInvisiblePatient), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rx, err := ExtractPrescription(tt.content)
			if err != nil {
				t.Fatal(err)
			}
			if rx.HiddenFromPatient != tt.want {
				t.Fatalf("HiddenFromPatient %v, want %v", rx.HiddenFromPatient, tt.want)
			}
		})
	}
	for name, meta := range map[string]string{
		"security not an array": `{"security":{"code":"INVISIBLE_PATIENT"}}`,
		"code not a string":     `{"security":[{"code":1}]}`,
		"meta not an object":    `"INVISIBLE_PATIENT"`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ExtractPrescription(withMeta(meta))
			wantError(t, err, KindPrescription, "FHIR part is not valid JSON")
		})
	}
	// The generator writes what the DMP writes.
	if j := string(hidden.fhirBundle()); !strings.Contains(j, `"meta": {`) || !strings.Contains(j, `"code": "INVISIBLE_PATIENT"`) {
		t.Fatalf("bundle lacks meta.security:\n%s", j)
	}
	md := string(hidden.xdmMetadata([]byte("%PDF"), "application/pdf", "DOC0001.PDF"))
	if !strings.Contains(md, `classificationScheme="urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f" classifiedObject="Document01" nodeRepresentation="INVISIBLE_PATIENT"`) {
		t.Fatalf("metadata lacks the confidentiality code:\n%s", md)
	}
}

// TestSampleNewFieldsOnlyWhenSet: the zero values of the new Sample fields
// leave the rendering unchanged (other tests compare bytes).
func TestSampleNewFieldsOnlyWhenSet(t *testing.T) {
	s := sample(11)
	c := s.Content()
	for _, absent := range []string{"X-Ordonnance-Opposition", "X-MSS-INS", "INVISIBLE_PATIENT", `"meta"`} {
		if bytes.Contains(c, []byte(absent)) || bytes.Contains(s.fhirBundle(), []byte(absent)) {
			t.Fatalf("zero sample renders %s", absent)
		}
	}
	s.MSSINS = "O"
	if v, ok := HeaderField(s.Content(), "X-MSS-INS"); !ok || v != "O" {
		t.Fatalf("X-MSS-INS %q %v", v, ok)
	}
	if rx, err := ExtractPrescription(s.Content()); err != nil || rx.Opposition || rx.HiddenFromPatient {
		t.Fatalf("%+v %v", rx, err)
	}
}

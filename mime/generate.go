package mime

import (
	"archive/zip"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"mime/quotedprintable"
	"strings"
	"time"
)

// Sample describes a prescription to generate (tests, demo, load tool).
type Sample struct {
	Number     string
	PatientINS string
	Patient    string // display name
	RPPS       string
	Prescriber string // display name
	Authored   time.Time
	Delivery   string // "" (header absent), "messaging-only" or "paper"
	Items      []Item

	// XDM adds an IHE_XDM.ZIP attachment whose METADATA.XML names the
	// same number, patient and prescriber as the FHIR Bundle.
	XDM bool
	// PDF adds a one-page PDF rendering of the prescription (also placed
	// in the XDM archive as its document when XDM is set).
	PDF bool

	// Opposition writes "X-Ordonnance-Opposition: execution" in the
	// signed entity's header.
	Opposition bool
	// HiddenFromPatient marks the document INVISIBLE_PATIENT: in the FHIR
	// Bundle's meta.security and, with XDM, as the confidentialityCode of
	// the METADATA.XML document entry.
	HiddenFromPatient bool
	// MSSINS, when set, writes "X-MSS-INS: <value>" in the signed entity's
	// header (the relay reads the signed value before the outer one).
	MSSINS string

	// Invalid variants, for the tests of the refusals: the relay must
	// refuse a sample with either set. The demo and the load tool leave
	// them zero.
	//
	// XDMSample, with XDM set, is the sample the IHE_XDM.ZIP metadata
	// describes instead of this one: a different number, patient or
	// prescriber makes the FHIR Bundle and the archive disagree.
	XDMSample *Sample
	// XDMBomb, with XDM set, adds to the archive an entry of that many
	// zero bytes, deflated about 1000 to 1: a zip bomb, refused for its
	// compression ratio (or, above 8 MiB, its expanded size) before
	// anything is inflated.
	XDMBomb int64
}

// confidentialityCodeSystem is the code system of INVISIBLE_PATIENT in
// the DMP's XDS metadata and FHIR meta.security (ANS CI-SIS).
const confidentialityCodeSystem = "1.2.250.1.213.1.1.4.13"

// DefaultRPPS is the prescriber NewSample uses (IDNPS 810101201234, the
// example of MISSION.md).
const DefaultRPPS = "10101201234"

// Content renders the signed MIME entity: multipart/mixed holding a
// text/plain summary and the FHIR R4 Bundle as application/fhir+json,
// CRLF line endings, with X-Ordonnance-Delivery when set.
//
// The output is deterministic (the boundary is derived from the sample),
// so rendering a sample twice gives the same bytes, as a resent message
// would. With XDM and PDF set a message is about 20 KiB.
func (s Sample) Content() []byte {
	x := s
	if s.XDMSample != nil {
		x = *s.XDMSample
		x.XDMBomb = s.XDMBomb
	}
	return s.render(x)
}

// render is Content with the XDM archive rendered from x (XDMSample).
func (s Sample) render(x Sample) []byte {
	bundle := s.fhirBundle()
	var pdf []byte
	if s.PDF {
		pdf = s.pdf()
	}
	parts := []entityPart{
		{"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n", qpEncode(s.summary())},
		{"Content-Type: application/fhir+json; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n" +
			"Content-Disposition: attachment; filename=prescription.json\r\n", appendBase64Lines(nil, bundle)},
	}
	if s.PDF {
		parts = append(parts, entityPart{"Content-Type: application/pdf; name=ordonnance.pdf\r\nContent-Transfer-Encoding: base64\r\n" +
			"Content-Disposition: attachment; filename=ordonnance.pdf\r\n", appendBase64Lines(nil, pdf)})
	}
	if s.XDM {
		doc, docType, docName := bundle, MediaTypeFHIR, "DOC0001.JSON"
		if s.PDF {
			doc, docType, docName = pdf, "application/pdf", "DOC0001.PDF"
		}
		parts = append(parts, entityPart{"Content-Type: application/zip; name=" + XDMName + "\r\nContent-Transfer-Encoding: base64\r\n" +
			"Content-Disposition: attachment; filename=" + XDMName + "\r\n", appendBase64Lines(nil, x.xdmZip(doc, docType, docName))})
	}

	boundary := pickBoundary("=_rx_", s.Number+"\x00"+s.PatientINS+"\x00"+s.RPPS, parts)

	var b bytes.Buffer
	if s.Delivery != "" {
		b.WriteString("X-Ordonnance-Delivery: " + s.Delivery + "\r\n")
	}
	if s.Opposition {
		b.WriteString("X-Ordonnance-Opposition: " + OppositionExecution + "\r\n")
	}
	if s.MSSINS != "" {
		b.WriteString("X-MSS-INS: " + s.MSSINS + "\r\n")
	}
	b.WriteString("Content-Type: multipart/mixed; boundary=\"" + boundary + "\"\r\n\r\n")
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p.header + "\r\n")
		b.Write(p.body)
		b.WriteString("\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes()
}

// summary is the human-readable text part (French, as the patient and the
// executant read it).
func (s Sample) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Ordonnance numérique n° %s\n", s.Number)
	if !s.Authored.IsZero() {
		fmt.Fprintf(&b, "Date : %s\n", s.Authored.Format("02/01/2006"))
	}
	fmt.Fprintf(&b, "Prescripteur : %s (RPPS %s)\n", s.Prescriber, s.RPPS)
	fmt.Fprintf(&b, "Patient : %s (INS %s)\n\n", s.Patient, s.PatientINS)
	for i, it := range s.Items {
		fmt.Fprintf(&b, "%d. %s\n", i+1, it.Text)
		if it.Dosage != "" {
			fmt.Fprintf(&b, "   %s\n", it.Dosage)
		}
	}
	b.WriteString("\nLe document de référence est l'ordonnance signée jointe (FHIR).\n")
	return b.String()
}

// qpEncode encodes text as quoted-printable with CRLF line breaks
// (RFC 2045 §6.7).
func qpEncode(text string) []byte {
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(text)) // writes to a bytes.Buffer cannot fail
	w.Close()
	out := b.Bytes()
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

// The FHIR structures written by the generator (field order as in the
// FHIR R4 specification's examples).
type (
	genRef struct {
		Reference string `json:"reference"`
	}
	genName struct {
		Text string `json:"text"`
	}
	genText struct {
		Text string `json:"text"`
	}
	genIdentifier struct {
		System string `json:"system,omitempty"`
		Value  string `json:"value"`
	}
	genResource struct {
		ResourceType              string          `json:"resourceType"`
		ID                        string          `json:"id"`
		Identifier                []genIdentifier `json:"identifier,omitempty"`
		Name                      []genName       `json:"name,omitempty"`
		Status                    string          `json:"status,omitempty"`
		Intent                    string          `json:"intent,omitempty"`
		MedicationCodeableConcept *genText        `json:"medicationCodeableConcept,omitempty"`
		Code                      *genText        `json:"code,omitempty"`
		Subject                   *genRef         `json:"subject,omitempty"`
		AuthoredOn                string          `json:"authoredOn,omitempty"`
		Requester                 *genRef         `json:"requester,omitempty"`
		GroupIdentifier           *genIdentifier  `json:"groupIdentifier,omitempty"`
		DosageInstruction         []genText       `json:"dosageInstruction,omitempty"`
		PatientInstruction        string          `json:"patientInstruction,omitempty"`
	}
	genEntry struct {
		FullURL  string      `json:"fullUrl"`
		Resource genResource `json:"resource"`
	}
	genCoding struct {
		System string `json:"system,omitempty"`
		Code   string `json:"code"`
	}
	genMeta struct {
		Security []genCoding `json:"security,omitempty"`
	}
	genBundle struct {
		ResourceType string         `json:"resourceType"`
		ID           string         `json:"id"`
		Meta         *genMeta       `json:"meta,omitempty"`
		Identifier   *genIdentifier `json:"identifier,omitempty"`
		Type         string         `json:"type"`
		Timestamp    string         `json:"timestamp,omitempty"`
		Entry        []genEntry     `json:"entry"`
	}
)

// fhirBundle renders the HL7 FHIR R4 Bundle read by parseFHIR.
func (s Sample) fhirBundle() []byte {
	authored := ""
	if !s.Authored.IsZero() {
		authored = s.Authored.UTC().Format(time.RFC3339)
	}
	patientURL, practURL := s.uuid("patient"), s.uuid("practitioner")
	b := genBundle{
		ResourceType: "Bundle",
		ID:           strings.TrimPrefix(s.uuid("bundle"), "urn:uuid:"),
		Type:         "collection",
		Timestamp:    authored,
		Entry: []genEntry{
			{patientURL, genResource{ResourceType: "Patient", ID: "patient",
				Identifier: []genIdentifier{{System: SystemINS, Value: s.PatientINS}},
				Name:       []genName{{s.Patient}}}},
			{practURL, genResource{ResourceType: "Practitioner", ID: "prescriber",
				Identifier: []genIdentifier{{System: SystemIDNPS, Value: "8" + s.RPPS}},
				Name:       []genName{{s.Prescriber}}}},
		},
	}
	if s.HiddenFromPatient {
		b.Meta = &genMeta{Security: []genCoding{{System: "urn:oid:" + confidentialityCodeSystem, Code: CodeInvisiblePatient}}}
	}
	if s.Number != "" {
		b.Identifier = &genIdentifier{Value: s.Number}
	}
	for i, it := range s.Items {
		r := genResource{
			ResourceType: it.Kind, ID: fmt.Sprintf("item-%d", i+1), Status: "active", Intent: "order",
			Subject: &genRef{patientURL}, AuthoredOn: authored, Requester: &genRef{practURL},
		}
		if s.Number != "" {
			r.GroupIdentifier = &genIdentifier{Value: s.Number}
		}
		if it.Kind == "ServiceRequest" {
			r.Code = &genText{it.Text}
			r.PatientInstruction = it.Dosage
		} else {
			r.ResourceType = "MedicationRequest"
			r.MedicationCodeableConcept = &genText{it.Text}
			if it.Dosage != "" {
				r.DosageInstruction = []genText{{it.Dosage}}
			}
		}
		b.Entry = append(b.Entry, genEntry{s.uuid(r.ID), r})
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		// Only strings and slices of them: Marshal cannot fail.
		panic(fmt.Sprintf("mime: marshal sample bundle: %v", err))
	}
	return append(out, '\n')
}

// uuid derives a stable urn:uuid (RFC 9562 layout, version 8) from the
// sample and a label.
func (s Sample) uuid(label string) string {
	h := sha256.Sum256([]byte(s.Number + "\x00" + s.PatientINS + "\x00" + label))
	h[6] = h[6]&0x0f | 0x80
	h[8] = h[8]&0x3f | 0x80
	x := hex.EncodeToString(h[:16])
	return "urn:uuid:" + x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

// xdmZip renders an IHE XDM archive (IHE ITI TF-1 §16): README.TXT,
// INDEX.HTM and IHE_XDM/SUBSET01 with METADATA.XML and the document.
func (s Sample) xdmZip(doc []byte, docType, docName string) []byte {
	mod := s.Authored
	if mod.IsZero() {
		mod = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	files := []struct {
		name string
		data []byte
	}{
		{"README.TXT", []byte("Ordonnance numérique " + s.Number + "\r\nArchive IHE XDM produite par mssrelay (exemple).\r\n")},
		{"INDEX.HTM", []byte("<html><body><a href=\"IHE_XDM/SUBSET01/" + docName + "\">Ordonnance " +
			xmlEscape(s.Number) + "</a></body></html>\r\n")},
		{xdmMetadataPath, s.xdmMetadata(doc, docType, docName)},
		{"IHE_XDM/SUBSET01/" + docName, doc},
	}
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Deflate, Modified: mod})
		if err == nil {
			_, err = w.Write(f.data)
		}
		if err != nil {
			panic(fmt.Sprintf("mime: write sample zip: %v", err)) // in-memory writer
		}
	}
	if s.XDMBomb > 0 {
		// Written in chunks: the bomb is large only once inflated.
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "IHE_XDM/SUBSET01/BOMB.BIN", Method: zip.Deflate, Modified: mod})
		zeros := make([]byte, 64<<10)
		for left := s.XDMBomb; err == nil && left > 0; left -= int64(len(zeros)) {
			_, err = w.Write(zeros[:min(left, int64(len(zeros)))])
		}
		if err != nil {
			panic(fmt.Sprintf("mime: write sample zip bomb: %v", err)) // in-memory writer
		}
	}
	if err := zw.Close(); err != nil {
		panic(fmt.Sprintf("mime: close sample zip: %v", err))
	}
	return b.Bytes()
}

// xdmMetadata renders METADATA.XML: one XDSDocumentEntry (ebRIM
// ExtrinsicObject) with patientId, uniqueId and the author.
func (s Sample) xdmMetadata(doc []byte, docType, docName string) []byte {
	family, given := splitName(s.Prescriber)
	digest := sha1.Sum(doc) // XDSDocumentEntry.hash is SHA-1 (IHE ITI TF-3 §4.2.3.2.11)
	created := s.Authored.UTC().Format("20060102150405")
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\r\n")
	b.WriteString(`<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">` + "\r\n")
	b.WriteString(" <rim:RegistryObjectList>\r\n")
	fmt.Fprintf(&b, `  <rim:ExtrinsicObject id="Document01" mimeType="%s" objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">`+"\r\n", docType)
	slot := func(name, value string) {
		fmt.Fprintf(&b, `   <rim:Slot name="%s"><rim:ValueList><rim:Value>%s</rim:Value></rim:ValueList></rim:Slot>`+"\r\n", name, xmlEscape(value))
	}
	slot("creationTime", created)
	slot("languageCode", "fr-FR")
	slot("URI", docName)
	slot("size", fmt.Sprint(len(doc)))
	slot("hash", hex.EncodeToString(digest[:]))
	slot("sourcePatientId", s.PatientINS+"^^^&"+OIDINS+"&ISO")
	b.WriteString(`   <rim:Name><rim:LocalizedString value="Ordonnance"/></rim:Name>` + "\r\n")
	fmt.Fprintf(&b, `   <rim:Classification id="cl01" classificationScheme="%s" classifiedObject="Document01" nodeRepresentation="">`+"\r\n", schemeAuthor)
	fmt.Fprintf(&b, `    <rim:Slot name="authorPerson"><rim:ValueList><rim:Value>%s</rim:Value></rim:ValueList></rim:Slot>`+"\r\n",
		xmlEscape("8"+s.RPPS+"^"+family+"^"+given+"^^^^^^&"+OIDIDNPS+"&ISO"))
	b.WriteString("   </rim:Classification>\r\n")
	if s.HiddenFromPatient {
		fmt.Fprintf(&b, `   <rim:Classification id="cl02" classificationScheme="%s" classifiedObject="Document01" nodeRepresentation="%s">`+"\r\n",
			schemeConfidentiality, CodeInvisiblePatient)
		slot("codingScheme", confidentialityCodeSystem)
		b.WriteString(`    <rim:Name><rim:LocalizedString value="Non visible par le patient"/></rim:Name>` + "\r\n")
		b.WriteString("   </rim:Classification>\r\n")
	}
	ext := func(id, scheme, value, name string) {
		fmt.Fprintf(&b, `   <rim:ExternalIdentifier id="%s" registryObject="Document01" identificationScheme="%s" value="%s">`+"\r\n", id, scheme, xmlEscape(value))
		fmt.Fprintf(&b, `    <rim:Name><rim:LocalizedString value="%s"/></rim:Name>`+"\r\n", name)
		b.WriteString("   </rim:ExternalIdentifier>\r\n")
	}
	ext("ei01", schemePatientID, s.PatientINS+"^^^&"+OIDINS+"&ISO", "XDSDocumentEntry.patientId")
	ext("ei02", schemeUniqueID, s.Number, "XDSDocumentEntry.uniqueId")
	b.WriteString("  </rim:ExtrinsicObject>\r\n </rim:RegistryObjectList>\r\n</lcm:SubmitObjectsRequest>\r\n")
	return []byte(b.String())
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}

// splitName turns "Dr Camille Martin" into ("MARTIN", "Camille").
func splitName(display string) (family, given string) {
	words := strings.Fields(display)
	if len(words) > 0 && strings.EqualFold(strings.TrimSuffix(words[0], "."), "dr") {
		words = words[1:]
	}
	if len(words) == 0 {
		return "", ""
	}
	return strings.ToUpper(words[len(words)-1]), strings.Join(words[:len(words)-1], " ")
}

// pdf renders a one-page PDF 1.4 of the prescription: Helvetica text and
// a QR-like pattern derived from the number (it looks like the printed
// prescription's code but is not a decodable QR code).
func (s Sample) pdf() []byte {
	var c bytes.Buffer
	c.WriteString("BT /F1 16 Tf 56 780 Td (" + pdfText("Ordonnance numerique") + ") Tj ET\n")
	y := 750
	line := func(size int, text string) {
		fmt.Fprintf(&c, "BT /F1 %d Tf 56 %d Td (%s) Tj ET\n", size, y, pdfText(text))
		y -= size + 6
	}
	line(11, "Numero : "+s.Number)
	if !s.Authored.IsZero() {
		line(11, "Date : "+s.Authored.Format("02/01/2006"))
	}
	line(11, "Prescripteur : "+s.Prescriber+" - RPPS "+s.RPPS)
	line(11, "Patient : "+s.Patient+" - INS "+s.PatientINS)
	y -= 12
	for i, it := range s.Items {
		line(11, fmt.Sprintf("%d. %s", i+1, it.Text))
		if it.Dosage != "" {
			line(10, "    "+it.Dosage)
		}
	}
	y -= 12
	line(8, "Document genere pour test ; la version de reference est l'ordonnance signee.")
	// 29x29 modules of 4 points in the top-right corner.
	seed := sha256.Sum256([]byte("qr\x00" + s.Number))
	c.WriteString("0 0 0 rg\n")
	for r := 0; r < 29; r++ {
		for col := 0; col < 29; col++ {
			h := seed[(r*29+col)%32] >> uint((r+col)%8)
			finder := (r < 7 && col < 7) || (r < 7 && col > 21) || (r > 21 && col < 7)
			if (finder && (r%6 == 0 || col%6 == 0 || r%22 == 0 || col%22 == 0)) || (!finder && h&1 == 1) {
				fmt.Fprintf(&c, "%d %d 4 4 re f\n", 420+col*4, 800-r*4)
			}
		}
	}

	var b bytes.Buffer
	offsets := make([]int, 0, 6)
	obj := func(body string) {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", len(offsets), body)
	}
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	obj("<< /Type /Catalog /Pages 2 0 R >>")
	obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
	obj("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>")
	obj("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
	obj(fmt.Sprintf("<< /Length %d >>\nstream\n%sendstream", c.Len(), c.String()))
	obj("<< /Title (" + pdfText("Ordonnance "+s.Number) + ") /Producer (mssrelay) /CreationDate (D:" +
		s.Authored.UTC().Format("20060102150405") + "Z) >>")
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(offsets)+1)
	for _, o := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", o)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(offsets)+1, xref)
	return b.Bytes()
}

// pdfText makes a PDF literal string: ASCII only (accents dropped, the
// standard Helvetica encoding is not UTF-8), with \ ( ) escaped.
func pdfText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\' || r == '(' || r == ')':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		default:
			b.WriteByte(asciiFold(r))
		}
	}
	return b.String()
}

func asciiFold(r rune) byte {
	switch {
	case strings.ContainsRune("àâä", r):
		return 'a'
	case strings.ContainsRune("éèêë", r):
		return 'e'
	case strings.ContainsRune("îï", r):
		return 'i'
	case strings.ContainsRune("ôö", r):
		return 'o'
	case strings.ContainsRune("ùûü", r):
		return 'u'
	case r == 'ç':
		return 'c'
	case strings.ContainsRune("ÉÈÊ", r):
		return 'E'
	}
	return '?'
}

// corsica and the other departments SampleINS cycles through.
var sampleDepartments = [...]string{"75", "69", "13", "2A", "33", "2B", "59", "67", "31", "44"}

// SampleINS returns a valid, synthetic INS derived from seed; distinct
// seeds in [0, 10^9) give distinct values. Some fall in Corsica (2A/2B).
func SampleINS(seed int) string {
	v := uint64(seed)
	sex := 1 + v%2
	v /= 2
	dept := sampleDepartments[v%uint64(len(sampleDepartments))]
	v /= uint64(len(sampleDepartments))
	month := 1 + v%12
	v /= 12
	year := v % 100
	v /= 100
	commune := 1 + v%999
	v /= 999
	order := 1 + v%999
	first13 := fmt.Sprintf("%d%02d%02d%s%03d%03d", sex, year, month, dept, commune, order)
	key, err := ComputeINSKey(first13)
	if err != nil {
		panic(fmt.Sprintf("mime: SampleINS built %q: %v", first13, err)) // digits only by construction
	}
	return first13 + key
}

var (
	samplePatients    = [...]string{"Marie Dupont", "Jean Lefèvre", "Aïcha Benali", "Lucas Moreau", "Chloé Girard", "Paul Santoni"}
	sampleMedications = [...]Item{
		{"MedicationRequest", "Amoxicilline 1 g, comprimé", "1 comprimé matin et soir pendant 6 jours"},
		{"MedicationRequest", "Paracétamol 500 mg, gélule", "1 à 2 gélules toutes les 6 heures si douleur, 8 par jour au plus"},
		{"MedicationRequest", "Ibuprofène 200 mg, comprimé", "1 comprimé 3 fois par jour au cours des repas, 5 jours"},
		{"MedicationRequest", "Lévothyroxine 50 µg, comprimé", "1 comprimé le matin à jeun, 3 mois"},
	}
	sampleActs = [...]Item{
		{"ServiceRequest", "Soins infirmiers : pansement simple à domicile", "Tous les 2 jours pendant 10 jours"},
		{"ServiceRequest", "Kinésithérapie : 10 séances de rééducation du genou", ""},
		{"ServiceRequest", "Biologie : NFS, ionogramme sanguin, créatininémie", "À jeun"},
	}
)

// NewSample returns a valid sample, distinct for each n (number, INS,
// items, time), prescribed by DefaultRPPS, without XDM, PDF or delivery
// header (set those fields as needed).
func NewSample(n int) Sample {
	v := uint64(n)
	items := []Item{sampleMedications[v%uint64(len(sampleMedications))]}
	if v%2 == 1 {
		// An offset of 1 to 3 never picks the first medication again.
		items = append(items, sampleMedications[(v+1+(v/4)%3)%uint64(len(sampleMedications))])
	}
	if v%3 == 0 {
		items = append(items, sampleActs[(v/3)%uint64(len(sampleActs))])
	}
	return Sample{
		Number:     fmt.Sprintf("RX-%010d", v%10_000_000_000),
		PatientINS: SampleINS(n),
		Patient:    samplePatients[v%uint64(len(samplePatients))],
		RPPS:       DefaultRPPS,
		Prescriber: "Dr Camille Martin",
		Authored:   time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC).Add(time.Duration(v%1_000_000) * time.Minute),
		Items:      items,
	}
}

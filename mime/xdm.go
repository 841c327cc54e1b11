package mime

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
)

// Limits of the IHE_XDM.ZIP reader. The archive is untrusted: a zip bomb
// (tiny archive, huge entries) or a path escaping the extraction directory
// (zip slip) must be refused before any executant's software unpacks it.
const (
	xdmMaxEntries       = 64
	xdmMaxTotal         = 8 << 20 // declared uncompressed bytes, all entries
	xdmMaxRatio         = 100     // uncompressed / compressed, per entry …
	xdmRatioFloor       = 64 << 10
	xdmMaxMetadataBytes = 1 << 20
	xdmMaxDocuments     = 64
	xdmMetadataPath     = "IHE_XDM/SUBSET01/METADATA.XML"
)

// IHE ITI TF-3 §4.2.3.2 identification schemes of XDSDocumentEntry.
const (
	schemeUniqueID  = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" // XDSDocumentEntry.uniqueId
	schemePatientID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" // XDSDocumentEntry.patientId
	schemeAuthor    = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d" // XDSDocumentEntry.author
	// XDSDocumentEntry.confidentialityCode (IHE ITI TF-3 §4.2.5.1).
	schemeConfidentiality = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
)

// xdmMetadata is what the relay reads from METADATA.XML.
type xdmMetadata struct {
	uniqueIDs []string // one per document (ExtrinsicObject)
	ins       string
	idnps     string
	hidden    bool // a document has confidentialityCode INVISIBLE_PATIENT
}

// parseXDM opens the archive with its limits and reads
// IHE_XDM/SUBSET01/METADATA.XML.
func parseXDM(data []byte) (*xdmMetadata, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	// With GODEBUG zipinsecurepath=0, archive/zip flags unsafe names but
	// still returns the reader: the loop below says which name and why.
	insecure := errors.Is(err, zip.ErrInsecurePath) && zr != nil
	if err != nil && !insecure {
		return nil, rxError("%s is not a valid zip archive: %v", XDMName, err)
	}
	if len(zr.File) > xdmMaxEntries {
		return nil, rxError("%s has %d entries, the limit is %d", XDMName, len(zr.File), xdmMaxEntries)
	}
	var (
		total uint64
		meta  *zip.File
	)
	for _, f := range zr.File {
		if p := unsafeZipPath(f.Name); p != "" {
			return nil, rxError("%s entry %q: %s", XDMName, clip([]byte(f.Name)), p)
		}
		total += f.UncompressedSize64
		if total > xdmMaxTotal {
			return nil, rxError("%s expands to more than %d bytes", XDMName, xdmMaxTotal)
		}
		// The ratio is checked above a floor: a small, repetitive file
		// compresses well and is no bomb; the total cap bounds the rest.
		if f.UncompressedSize64 > xdmRatioFloor &&
			(f.CompressedSize64 == 0 || f.UncompressedSize64/f.CompressedSize64 > xdmMaxRatio) {
			return nil, rxError("%s entry %q has a compression ratio over %d", XDMName, clip([]byte(f.Name)), xdmMaxRatio)
		}
		if strings.EqualFold(f.Name, xdmMetadataPath) {
			if meta != nil {
				return nil, rxError("%s has two %s entries", XDMName, xdmMetadataPath)
			}
			meta = f
		}
	}
	if insecure {
		return nil, rxError("%s has an entry with an unsafe path", XDMName)
	}
	if meta == nil {
		return nil, rxError("%s has no %s", XDMName, xdmMetadataPath)
	}
	if meta.UncompressedSize64 > xdmMaxMetadataBytes {
		return nil, rxError("%s: %s larger than %d bytes", XDMName, xdmMetadataPath, xdmMaxMetadataBytes)
	}
	rc, err := meta.Open()
	if err != nil {
		return nil, rxError("%s: %s: %v", XDMName, xdmMetadataPath, err)
	}
	defer rc.Close()
	// The declared size may lie; archive/zip checks it against what it
	// inflates, and the LimitReader bounds memory whatever happens.
	xmlData, err := readAllSized(io.LimitReader(rc, xdmMaxMetadataBytes+1), min(meta.UncompressedSize64, xdmMaxMetadataBytes))
	if err != nil {
		return nil, rxError("%s: reading %s: %v", XDMName, xdmMetadataPath, err)
	}
	if len(xmlData) > xdmMaxMetadataBytes {
		return nil, rxError("%s: %s larger than %d bytes", XDMName, xdmMetadataPath, xdmMaxMetadataBytes)
	}
	return parseMetadata(xmlData)
}

// unsafeZipPath says why an entry name could escape the directory it is
// extracted to, or "" when it is safe.
func unsafeZipPath(name string) string {
	switch {
	case name == "":
		return "empty name"
	case strings.ContainsRune(name, '\\'):
		return "backslash in name"
	case strings.HasPrefix(name, "/"):
		return "absolute name"
	case len(name) >= 2 && name[1] == ':':
		return "drive letter in name"
	case strings.ContainsRune(name, 0):
		return "NUL in name"
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == ".." {
			return `".." in name`
		}
	}
	return ""
}

// ebRIM 3.0 structures (OASIS regrep-rim), matched by local name only:
// encoding/xml ignores the namespace when a tag names none, so rim:, the
// default namespace and other prefixes all match.
type rimSlot struct {
	Name   string   `xml:"name,attr"`
	Values []string `xml:"ValueList>Value"`
}

type rimClassification struct {
	Scheme string    `xml:"classificationScheme,attr"`
	Node   string    `xml:"nodeRepresentation,attr"`
	Slots  []rimSlot `xml:"Slot"`
}

type rimExternalIdentifier struct {
	Scheme string `xml:"identificationScheme,attr"`
	Value  string `xml:"value,attr"`
}

type rimExtrinsicObject struct {
	Classifications     []rimClassification     `xml:"Classification"`
	ExternalIdentifiers []rimExternalIdentifier `xml:"ExternalIdentifier"`
}

// parseMetadata reads every ExtrinsicObject (one per document) wherever it
// sits (SubmitObjectsRequest, ProvideAndRegisterDocumentSetRequest…).
// All documents must belong to one patient (an INS, HL7 CX with the INS
// authority) and name at most one author IDNPS (HL7 XCN authorPerson).
func parseMetadata(data []byte) (*xdmMetadata, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	md := &xdmMetadata{}
	docs := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, rxError("%s: %s is not valid XML: %v", XDMName, xdmMetadataPath, err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "ExtrinsicObject" {
			continue
		}
		docs++
		if docs > xdmMaxDocuments {
			return nil, rxError("%s: more than %d documents", XDMName, xdmMaxDocuments)
		}
		var eo rimExtrinsicObject
		if err := d.DecodeElement(&eo, &se); err != nil {
			return nil, rxError("%s: %s: %v", XDMName, xdmMetadataPath, err)
		}
		if err := md.add(&eo); err != nil {
			return nil, err
		}
	}
	if docs == 0 {
		return nil, rxError("%s: %s describes no document", XDMName, xdmMetadataPath)
	}
	return md, nil
}

func (md *xdmMetadata) add(eo *rimExtrinsicObject) error {
	var uid, pid string
	for _, ei := range eo.ExternalIdentifiers {
		switch ei.Scheme {
		case schemeUniqueID:
			uid = strings.TrimSpace(ei.Value)
		case schemePatientID:
			pid = strings.TrimSpace(ei.Value)
		}
	}
	if uid == "" {
		return rxError("%s: a document has no XDSDocumentEntry.uniqueId", XDMName)
	}
	md.uniqueIDs = append(md.uniqueIDs, uid)

	// patientId is an HL7 v2 CX: ID^^^&OID&ISO (IHE ITI TF-3 §4.2.3.2.16).
	id, authority := cxID(pid)
	if id == "" {
		return rxError("%s: a document has no XDSDocumentEntry.patientId", XDMName)
	}
	if authority != OIDINS {
		return rxError("%s: patientId is not an INS (assigning authority %q, expected %s)", XDMName, clip([]byte(authority)), OIDINS)
	}
	if md.ins != "" && md.ins != id {
		return rxError("%s: documents name different patients", XDMName)
	}
	md.ins = id

	for _, c := range eo.Classifications {
		if c.Scheme == schemeConfidentiality && strings.TrimSpace(c.Node) == CodeInvisiblePatient {
			md.hidden = true
		}
		if c.Scheme != schemeAuthor {
			continue
		}
		for _, s := range c.Slots {
			if s.Name != "authorPerson" {
				continue
			}
			for _, v := range s.Values {
				id, authority := xcnID(v)
				if authority != OIDIDNPS || id == "" {
					continue
				}
				if md.idnps != "" && md.idnps != id {
					return rxError("%s: documents name more than one author IDNPS", XDMName)
				}
				md.idnps = id
			}
		}
	}
	return nil
}

// cxID splits an HL7 v2 CX value "ID^^^&OID&ISO" into the ID and the
// assigning authority's universal ID (component 4, sub-component 2).
func cxID(v string) (id, authority string) {
	comps := strings.Split(v, "^")
	id = comps[0]
	if len(comps) >= 4 {
		authority = hdUniversalID(comps[3])
	}
	return id, authority
}

// xcnID splits an HL7 v2 XCN value "ID^Family^Given^^^^^^&OID&ISO" into
// the ID and the assigning authority (component 9).
func xcnID(v string) (id, authority string) {
	comps := strings.Split(v, "^")
	id = comps[0]
	if len(comps) >= 9 {
		authority = hdUniversalID(comps[8])
	}
	return id, authority
}

// hdUniversalID returns sub-component 2 of an HL7 HD "&OID&ISO".
func hdUniversalID(hd string) string {
	sub := strings.Split(hd, "&")
	if len(sub) >= 2 {
		return sub[1]
	}
	return ""
}

// readAllSized is io.ReadAll starting with room for the size the archive
// declares (and the read that finds EOF): the same reads of the same
// reader, without growing the buffer from 512 bytes. The declared size is
// only a hint (the caller bounds it and the reader): a lying archive just
// grows the buffer as io.ReadAll would.
func readAllSized(r io.Reader, size uint64) ([]byte, error) {
	b := make([]byte, 0, size+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

package mime

import (
	"bytes"
	"encoding/json"
	"strings"
)

// The FHIR R4 structures below hold only the fields the relay reads
// (docs/message-format.md); encoding/json ignores the rest.

type fhirIdentifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type fhirCodeableConcept struct {
	Text   string `json:"text"`
	Coding []struct {
		Display string `json:"display"`
	} `json:"coding"`
}

// label is the human text of a CodeableConcept: its text, else the first
// coding's display (FHIR R4 §2.24.0.1 CodeableConcept).
func (c *fhirCodeableConcept) label() string {
	if c == nil {
		return ""
	}
	if t := strings.TrimSpace(c.Text); t != "" {
		return t
	}
	for _, cd := range c.Coding {
		if d := strings.TrimSpace(cd.Display); d != "" {
			return d
		}
	}
	return ""
}

type fhirBundle struct {
	ResourceType string `json:"resourceType"`
	Meta         *struct {
		Security []struct {
			Code string `json:"code"`
		} `json:"security"`
	} `json:"meta"`
	Identifier *fhirIdentifier `json:"identifier"`
	Timestamp  string          `json:"timestamp"`
	Entry      []struct {
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

type fhirResourceType struct {
	ResourceType string `json:"resourceType"`
}

type fhirIdentified struct {
	Identifier []fhirIdentifier `json:"identifier"`
}

type fhirMedicationRequest struct {
	AuthoredOn                string               `json:"authoredOn"`
	MedicationCodeableConcept *fhirCodeableConcept `json:"medicationCodeableConcept"`
	DosageInstruction         []struct {
		Text string `json:"text"`
	} `json:"dosageInstruction"`
}

type fhirServiceRequest struct {
	AuthoredOn         string               `json:"authoredOn"`
	Code               *fhirCodeableConcept `json:"code"`
	PatientInstruction string               `json:"patientInstruction"`
}

// parseFHIR reads an HL7 FHIR R4 Bundle: Bundle.identifier.value is the
// prescription number, the Patient's INS identifier (system
// urn:oid:1.2.250.1.213.1.4.8) the patient, the Practitioner's IDNPS
// identifier (urn:oid:1.2.250.1.71.4.2.1) the prescriber, and every
// MedicationRequest and ServiceRequest an item. A Bundle naming two
// different patients or prescribers is refused: the relay could not tell
// whose prescription it is.
func parseFHIR(data []byte) (*Prescription, error) {
	var b fhirBundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, rxError("FHIR part is not valid JSON: %v", err)
	}
	if b.ResourceType != "Bundle" {
		return nil, rxError("FHIR part is a %q resource, not a Bundle", clip([]byte(b.ResourceType)))
	}
	if len(b.Entry) > maxEntries {
		return nil, rxError("FHIR Bundle has more than %d entries", maxEntries)
	}
	rx := &Prescription{}
	if b.Meta != nil {
		// Bundle.meta.security (FHIR R4 §2.23.0.4 Meta): the DMP's
		// INVISIBLE_PATIENT hides the document from the patient.
		for _, c := range b.Meta.Security {
			if strings.TrimSpace(c.Code) == CodeInvisiblePatient {
				rx.HiddenFromPatient = true
			}
		}
	}
	if b.Identifier != nil {
		rx.Number = strings.TrimSpace(b.Identifier.Value)
	}
	for i, e := range b.Entry {
		if len(bytes.TrimSpace(e.Resource)) == 0 {
			continue
		}
		var rt fhirResourceType
		if err := json.Unmarshal(e.Resource, &rt); err != nil {
			return nil, rxError("FHIR Bundle entry %d: %v", i, err)
		}
		var err error
		switch rt.ResourceType {
		case "Patient":
			err = takeIdentifier(e.Resource, SystemINS, "patient INS", &rx.PatientINS)
		case "Practitioner":
			err = takeIdentifier(e.Resource, SystemIDNPS, "prescriber IDNPS", &rx.IDNPS)
		case "MedicationRequest":
			var m fhirMedicationRequest
			if err = json.Unmarshal(e.Resource, &m); err == nil {
				var dosage []string
				for _, d := range m.DosageInstruction {
					if t := strings.TrimSpace(d.Text); t != "" {
						dosage = append(dosage, t)
					}
				}
				err = rx.addItem(i, "MedicationRequest", m.MedicationCodeableConcept.label(), strings.Join(dosage, "; "), m.AuthoredOn)
			}
		case "ServiceRequest":
			var s fhirServiceRequest
			if err = json.Unmarshal(e.Resource, &s); err == nil {
				err = rx.addItem(i, "ServiceRequest", s.Code.label(), strings.TrimSpace(s.PatientInstruction), s.AuthoredOn)
			}
		}
		if err != nil {
			if _, ok := err.(*Error); ok {
				return nil, err
			}
			return nil, rxError("FHIR Bundle entry %d (%s): %v", i, clip([]byte(rt.ResourceType)), err)
		}
	}
	if rx.AuthoredOn == "" {
		rx.AuthoredOn = strings.TrimSpace(b.Timestamp)
	}
	return rx, nil
}

func (rx *Prescription) addItem(entry int, kind, text, dosage, authored string) error {
	if text == "" {
		return rxError("FHIR Bundle entry %d: %s without a text (what is prescribed)", entry, kind)
	}
	if len(rx.Items) >= maxItems {
		return rxError("FHIR Bundle has more than %d items", maxItems)
	}
	rx.Items = append(rx.Items, Item{Kind: kind, Text: text, Dosage: dosage})
	if rx.AuthoredOn == "" {
		rx.AuthoredOn = strings.TrimSpace(authored)
	}
	return nil
}

// takeIdentifier stores the value of the resource's identifier with the
// given system in *dst, refusing a second, different value.
func takeIdentifier(raw json.RawMessage, system, what string, dst *string) error {
	var r fhirIdentified
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	for _, id := range r.Identifier {
		if id.System != system {
			continue
		}
		v := strings.TrimSpace(id.Value)
		if *dst != "" && *dst != v {
			return rxError("FHIR Bundle names more than one %s", what)
		}
		*dst = v
	}
	return nil
}

package mime

import (
	"bytes"
	"errors"
	"io"
	stdmime "mime"
	"net/mail"
	"reflect"
	"strings"
	"testing"
	"time"

	message "github.com/emersion/go-message"
)

var (
	paris   = time.FixedZone("CET", 3600)
	rptDate = time.Date(2025, 1, 6, 10, 0, 0, 0, paris)
)

func goodDSN() *DSN {
	return &DSN{
		ReportingMTA:      "relay.example.fr",
		From:              "Relais MSS <notifications@Relay.Example.fr>",
		To:                "dr.martin@hopital.mssante.fr",
		MessageID:         "<dsn.1@relay.example.fr>",
		Date:              rptDate,
		Arrival:           rptDate.Add(-time.Hour),
		OriginalMessageID: "<rx1@hopital.mssante.fr>",
		Number:            "RX-0000000001",
		Recipients: []DSNRecipient{{
			FinalRecipient: "184127512345640@patient.mssante.fr",
			Action:         StatusFailed,
			Status:         "5.1.1",
			RemoteMTA:      "dns; mx.patient.mssante.fr",
			DiagnosticCode: "smtp; 550 5.1.1 mailbox unknown",
			LastAttempt:    rptDate.Add(-time.Minute),
		}},
		OriginalHeader:  crlf("From: dr.martin@hopital.mssante.fr\nTo: 184127512345640@patient.mssante.fr\nSubject: Ordonnance\n\nbody, not copied\n"),
		PaperCopyNeeded: true,
		Reason:          "l'identité du patient n'est pas qualifiée (X-MSS-INS)",
	}
}

func goodMDN() *MDN {
	return &MDN{
		ReportingUA:       "relay.example.fr; mssrelay",
		From:              "notifications@relay.example.fr",
		To:                "dr.martin@hopital.mssante.fr",
		MessageID:         "<mdn.1@relay.example.fr>",
		Date:              rptDate,
		OriginalRecipient: "pharmacie@officine.mssante.fr",
		FinalRecipient:    "pharmacie@officine.mssante.fr",
		OriginalMessageID: "<rx1@hopital.mssante.fr>",
		Number:            "RX-0000000001",
	}
}

func goodExecution() *Execution {
	return &Execution{
		From:              "notifications@relay.example.fr",
		To:                "dr.martin@hopital.mssante.fr",
		MessageID:         "<exec.1@relay.example.fr>",
		Date:              rptDate,
		Number:            "RX-0000000001",
		OriginalMessageID: "<rx1@hopital.mssante.fr>",
		ExecutedBy:        "Pharmacie du Centre <pharmacie@Officine.mssante.fr>",
		ExecutedAt:        rptDate.Add(-2 * time.Hour),
	}
}

// checkWireFormat asserts what every notification must satisfy: CRLF only,
// 7-bit, lines of at most 998 bytes (header lines at most 76 here), a
// header without its empty line, and header + entity one valid message.
func checkWireFormat(t *testing.T, header, entity []byte) {
	t.Helper()
	if !bytes.HasSuffix(header, []byte("\r\n")) || bytes.HasSuffix(header, []byte("\r\n\r\n")) || bytes.Contains(header, []byte("\r\n\r\n")) {
		t.Fatalf("header must end with one CRLF and hold no empty line:\n%s", header)
	}
	for name, b := range map[string][]byte{"header": header, "entity": entity} {
		if bytes.Contains(bytes.ReplaceAll(b, []byte("\r\n"), nil), []byte("\n")) || bytes.Contains(bytes.ReplaceAll(b, []byte("\r\n"), nil), []byte("\r")) {
			t.Fatalf("%s has a bare LF or CR", name)
		}
		if !isASCII(string(b)) {
			t.Fatalf("%s is not 7-bit", name)
		}
		for _, l := range bytes.Split(b, []byte("\r\n")) {
			if len(l) > 998 {
				t.Fatalf("%s line of %d bytes", name, len(l))
			}
			if name == "header" && len(l) > foldWidth {
				t.Fatalf("header line of %d bytes: %q", len(l), l)
			}
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(append(append([]byte{}, header...), entity...)))
	if err != nil {
		t.Fatalf("net/mail: %v", err)
	}
	for _, f := range []string{"From", "To", "Date", "Subject", "Message-ID", "MIME-Version", "Auto-Submitted", "Content-Type", "X-Ordonnance-Number", "X-Ordonnance-Status"} {
		if len(msg.Header[textprotoKey(f)]) != 1 {
			t.Fatalf("field %s appears %d times, want 1", f, len(msg.Header[textprotoKey(f)]))
		}
	}
	if msg.Header.Get("Auto-Submitted") != "auto-replied" || msg.Header.Get("MIME-Version") != "1.0" {
		t.Fatal("Auto-Submitted or MIME-Version wrong")
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Fatalf("Date: %v", err)
	}
	// BuildDetached keeps the fields and the entity byte for byte.
	s, err := Split(BuildDetached(header, entity, fakeSig))
	if err != nil {
		t.Fatalf("signed form: %v", err)
	}
	if !bytes.Equal(s.Content, entity) {
		t.Fatal("signed content differs from the entity")
	}
	if !IsAutomatic(s.Header) || !IsAutomatic(header) {
		t.Fatal("a notification's header is not recognised as automatic")
	}
	if ct, _ := HeaderField(entity, "Content-Type"); strings.HasPrefix(ct, "multipart/report") != IsAutomatic(entity) {
		t.Fatalf("IsAutomatic(entity) wrong for %q", ct)
	}
}

// textprotoKey canonicalises a field name as net/mail stores it.
func textprotoKey(s string) string {
	b := []byte(strings.ToLower(s))
	up := true
	for i, c := range b {
		if up && 'a' <= c && c <= 'z' {
			b[i] = c - 32
		}
		up = c == '-'
	}
	return string(b)
}

func decodedSubject(t *testing.T, header []byte) string {
	t.Helper()
	v, ok := HeaderField(header, "Subject")
	if !ok {
		t.Fatal("no Subject")
	}
	s, err := new(stdmime.WordDecoder).DecodeHeader(v)
	if err != nil {
		t.Fatalf("Subject %q: %v", v, err)
	}
	return s
}

func TestBuildDSN(t *testing.T) {
	delayed := func(d *DSN) {
		d.Recipients[0].Action, d.Recipients[0].Status = StatusDelayed, "4.4.7"
		d.Recipients[0].WillRetryUntil = rptDate.Add(48 * time.Hour)
	}
	tests := []struct {
		name       string
		edit       func(*DSN)
		status     string
		subject    string
		recipients []map[string]string
		fields     map[string]string
		human      []string // substrings of the human part
		noHuman    []string
	}{
		{
			name: "failed", edit: func(*DSN) {}, status: StatusFailed,
			subject: "Ordonnance RX-0000000001 non remise / Prescription not delivered",
			fields:  map[string]string{"reporting-mta": "dns; relay.example.fr", "arrival-date": "Mon, 06 Jan 2025 09:00:00 +0100"},
			recipients: []map[string]string{{
				"final-recipient": "rfc822; 184127512345640@patient.mssante.fr", "action": "failed", "status": "5.1.1",
				"remote-mta": "dns; mx.patient.mssante.fr", "diagnostic-code": "smtp; 550 5.1.1 mailbox unknown",
				"last-attempt-date": "Mon, 06 Jan 2025 09:59:00 +0100",
			}},
			human: []string{"L'ordonnance n° RX-0000000001 n'a pas pu être remise", "Prescription no. RX-0000000001 could not be delivered",
				"Le patient doit recevoir une copie papier de l'ordonnance.", "The patient must receive a paper copy of the prescription.",
				"Motif : l'identité du patient n'est pas qualifiée (X-MSS-INS)", "Reason: l'identité"},
		},
		{
			name: "delayed, no paper copy, no reason", status: StatusDelayed,
			edit:    func(d *DSN) { delayed(d); d.PaperCopyNeeded, d.Reason, d.Arrival = false, "", time.Time{} },
			subject: "Ordonnance RX-0000000001 : remise retardée / Prescription delivery delayed",
			fields:  map[string]string{"reporting-mta": "dns; relay.example.fr"},
			recipients: []map[string]string{{
				"final-recipient": "rfc822; 184127512345640@patient.mssante.fr", "action": "delayed", "status": "4.4.7",
				"remote-mta": "dns; mx.patient.mssante.fr", "diagnostic-code": "smtp; 550 5.1.1 mailbox unknown",
				"last-attempt-date": "Mon, 06 Jan 2025 09:59:00 +0100", "will-retry-until": "Wed, 08 Jan 2025 10:00:00 +0100",
			}},
			human:   []string{"est retardée", "is delayed"},
			noHuman: []string{"copie papier", "paper copy", "Motif", "Reason"},
		},
		{
			name: "worst action wins", status: StatusFailed,
			edit: func(d *DSN) {
				d.Recipients = append([]DSNRecipient{{FinalRecipient: "b@x.fr", Action: StatusDelayed, Status: "4.2.2"}}, d.Recipients...)
				d.OriginalHeader = nil
			},
			subject: "Ordonnance RX-0000000001 non remise / Prescription not delivered",
			fields:  map[string]string{"reporting-mta": "dns; relay.example.fr", "arrival-date": "Mon, 06 Jan 2025 09:00:00 +0100"},
			recipients: []map[string]string{
				{"final-recipient": "rfc822; b@x.fr", "action": "delayed", "status": "4.2.2"},
				{
					"final-recipient": "rfc822; 184127512345640@patient.mssante.fr", "action": "failed", "status": "5.1.1",
					"remote-mta": "dns; mx.patient.mssante.fr", "diagnostic-code": "smtp; 550 5.1.1 mailbox unknown",
					"last-attempt-date": "Mon, 06 Jan 2025 09:59:00 +0100",
				},
			},
			human: []string{"Destinataire : b@x.fr (retardée, statut 4.2.2)", "Recipient: 184127512345640@patient.mssante.fr (failed, status 5.1.1)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := goodDSN()
			tt.edit(d)
			header, entity, err := BuildDSN(d)
			if err != nil {
				t.Fatal(err)
			}
			checkWireFormat(t, header, entity)
			h2, e2, _ := BuildDSN(d)
			if !bytes.Equal(header, h2) || !bytes.Equal(entity, e2) {
				t.Fatal("BuildDSN is not deterministic")
			}
			if got := decodedSubject(t, header); got != tt.subject {
				t.Fatalf("Subject %q, want %q", got, tt.subject)
			}
			for f, want := range map[string]string{"From": "<notifications@relay.example.fr>", "In-Reply-To": d.OriginalMessageID, "References": d.OriginalMessageID} {
				if v, _ := HeaderField(header, f); v != want {
					t.Fatalf("%s %q, want %q", f, v, want)
				}
			}
			r, err := ParseReport(entity)
			if err != nil {
				t.Fatal(err)
			}
			if r.Type != ReportDeliveryStatus || r.Number != d.Number || r.Status != tt.status {
				t.Fatalf("got type %q number %q status %q", r.Type, r.Number, r.Status)
			}
			if !reflect.DeepEqual(r.Fields, tt.fields) {
				t.Fatalf("fields %v, want %v", r.Fields, tt.fields)
			}
			if !reflect.DeepEqual(r.Recipients, tt.recipients) {
				t.Fatalf("recipients\n %v\nwant %v", r.Recipients, tt.recipients)
			}
			fr := strings.Index(r.HumanText, "Ceci est un avis")
			en := strings.Index(r.HumanText, "This is an automatic notice")
			if fr < 0 || en < fr {
				t.Fatalf("human text is not French then English:\n%s", r.HumanText)
			}
			for _, s := range tt.human {
				if !strings.Contains(r.HumanText, s) {
					t.Fatalf("human text lacks %q:\n%s", s, r.HumanText)
				}
			}
			for _, s := range tt.noHuman {
				if strings.Contains(r.HumanText, s) {
					t.Fatalf("human text has %q:\n%s", s, r.HumanText)
				}
			}
			hasHeaders := bytes.Contains(entity, []byte("Content-Type: text/rfc822-headers"))
			if hasHeaders != (d.OriginalHeader != nil) {
				t.Fatalf("text/rfc822-headers part present %v, want %v", hasHeaders, d.OriginalHeader != nil)
			}
		})
	}
}

// TestDSNWithGoMessage reads a DSN with net/mail and go-message, as a
// prescriber's mail client would: multipart/report with its three parts.
func TestDSNWithGoMessage(t *testing.T) {
	header, entity, err := BuildDSN(goodDSN())
	if err != nil {
		t.Fatal(err)
	}
	raw := append(append([]byte{}, header...), entity...)
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := stdmime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("net/mail Content-Type %q %v: %v", mt, params, err)
	}
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mr := e.MultipartReader()
	if mr == nil {
		t.Fatal("go-message sees no multipart")
	}
	wantTypes := []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}
	var bodies [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct, _, err := p.Header.ContentType()
		if err != nil {
			t.Fatal(err)
		}
		if len(bodies) >= len(wantTypes) || ct != wantTypes[len(bodies)] {
			t.Fatalf("part %d is %s", len(bodies)+1, ct)
		}
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	if len(bodies) != 3 {
		t.Fatalf("%d parts, want 3", len(bodies))
	}
	if !strings.Contains(string(bodies[0]), "copie papier") {
		t.Fatal("go-message did not decode the human part")
	}
	if !bytes.Contains(bodies[1], []byte("Status: 5.1.1\r\n")) {
		t.Fatalf("delivery-status part:\n%s", bodies[1])
	}
	if !bytes.HasPrefix(bodies[2], []byte("From: dr.martin@hopital.mssante.fr\r\n")) || bytes.Contains(bodies[2], []byte("not copied")) {
		t.Fatalf("rfc822-headers part:\n%s", bodies[2])
	}
}

func TestDSNDiagnosticSanitized(t *testing.T) {
	tests := []struct{ in, want string }{
		{"smtp; 550 5.1.1 unknown", "smtp; 550 5.1.1 unknown"},
		{"550 5.1.1 unknown\r\nBcc: victim@example.org", "smtp; 550 5.1.1 unknown Bcc: victim@example.org"},
		{"x-local;  boîte\tpleine ", "x-local; bo??te pleine"},
		{strings.Repeat("a ", 500), "smtp; " + strings.TrimSpace(strings.Repeat("a ", 197))},
		{" \r\n ", ""},
	}
	for _, tt := range tests {
		d := goodDSN()
		d.Recipients[0].DiagnosticCode = tt.in
		_, entity, err := BuildDSN(d)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseReport(entity)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Recipients[0]["diagnostic-code"]; got != tt.want {
			t.Fatalf("%q: got %q, want %q", tt.in, got, tt.want)
		}
		if len(tt.want) > maxDiagnosticChars {
			t.Fatalf("test wants %d characters", len(tt.want))
		}
		if bytes.Contains(entity, []byte("\r\nBcc:")) {
			t.Fatal("diagnostic text started a field")
		}
	}
}

func TestDSNOriginalHeader(t *testing.T) {
	var big strings.Builder
	for i := 0; big.Len() < 100<<10; i++ {
		big.WriteString("Received: from relay" + strings.Repeat("x", 60) + "\n\tby relay.example.fr; Mon, 6 Jan 2025 09:00:00 +0100\n")
	}
	tests := []struct {
		name     string
		in       []byte
		want     string // exact part body, "" when no part
		qp, part bool
	}{
		{"LF normalised, body dropped", []byte("From: a@b.fr\nSubject: x\n folded\n\nbody\n"), "From: a@b.fr\r\nSubject: x\r\n folded\r\n", false, true},
		{"bad fields dropped", []byte("From: a@b.fr\r\nnot a field\r\n cont\r\nX-Bad: a\rb\r\nX-Nul: \x00\r\n" + "X-Long: " + strings.Repeat("y", 1000) + "\r\nTo: c@d.fr\r\n"), "From: a@b.fr\r\nTo: c@d.fr\r\n", false, true},
		{"leading continuation dropped", []byte(" orphan\r\nTo: c@d.fr\r\n"), "To: c@d.fr\r\n", false, true},
		{"nothing usable", []byte("garbage line\r\n"), "", false, false},
		{"8-bit", []byte("Subject: Ordonnance é\r\n"), "Subject: Ordonnance =C3=A9\r\n", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := originalHeaderPart(tt.in)
			if ok != (tt.want != "") {
				t.Fatalf("ok %v", ok)
			}
			if string(p.body) != tt.want {
				t.Fatalf("got %q, want %q", p.body, tt.want)
			}
			if ok && strings.Contains(p.header, "quoted-printable") != tt.qp {
				t.Fatalf("header %q", p.header)
			}
		})
	}
	p, ok := originalHeaderPart([]byte(big.String()))
	if !ok || len(p.body) > maxOriginalHeader || len(p.body) < maxOriginalHeader-200 {
		t.Fatalf("capped part is %d bytes", len(p.body))
	}
	if !bytes.HasSuffix(p.body, []byte("+0100\r\n")) || !bytes.HasPrefix(p.body, []byte("Received: ")) {
		t.Fatal("cap did not cut at a field boundary")
	}
	d := goodDSN()
	d.OriginalHeader = []byte(big.String())
	if _, entity, err := BuildDSN(d); err != nil || len(entity) > maxOriginalHeader+8<<10 {
		t.Fatalf("DSN with a large original header: %d bytes, %v", len(entity), err)
	}
}

func TestBuildMDN(t *testing.T) {
	m := goodMDN()
	header, entity, err := BuildMDN(m)
	if err != nil {
		t.Fatal(err)
	}
	checkWireFormat(t, header, entity)
	if got := decodedSubject(t, header); got != "Ordonnance RX-0000000001 reçue / Prescription received" {
		t.Fatalf("Subject %q", got)
	}
	r, err := ParseReport(entity)
	if err != nil {
		t.Fatal(err)
	}
	want := &Report{
		Type: ReportDisposition, Number: m.Number, Status: StatusProcessed,
		Fields: map[string]string{
			"reporting-ua":        "relay.example.fr; mssrelay",
			"original-recipient":  "rfc822; pharmacie@officine.mssante.fr",
			"final-recipient":     "rfc822; pharmacie@officine.mssante.fr",
			"original-message-id": "<rx1@hopital.mssante.fr>",
			"disposition":         "automatic-action/MDN-sent-automatically; processed",
		},
	}
	human := r.HumanText
	r.HumanText = ""
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	for _, s := range []string{"L'ordonnance n° RX-0000000001 a été reçue et classée.", "Prescription no. RX-0000000001 was received and filed."} {
		if !strings.Contains(human, s) {
			t.Fatalf("human text lacks %q:\n%s", s, human)
		}
	}
	// Optional fields left out.
	m.OriginalRecipient, m.OriginalMessageID = "", ""
	_, entity, err = BuildMDN(m)
	if err != nil {
		t.Fatal(err)
	}
	if r, err = ParseReport(entity); err != nil || len(r.Fields) != 3 {
		t.Fatalf("fields %v, %v", r, err)
	}
}

func TestBuildExecutionNotice(t *testing.T) {
	e := goodExecution()
	header, entity, err := BuildExecutionNotice(e)
	if err != nil {
		t.Fatal(err)
	}
	checkWireFormat(t, header, entity)
	if got := decodedSubject(t, header); got != "Ordonnance RX-0000000001 exécutée / Prescription executed" {
		t.Fatalf("Subject %q", got)
	}
	r, err := ParseReport(entity)
	if err != nil {
		t.Fatal(err)
	}
	wantFields := map[string]string{"executed-by": "pharmacie@officine.mssante.fr", "executed-at": "2025-01-06T08:00:00+01:00"}
	if r.Type != "" || r.Number != e.Number || r.Status != StatusExecuted || !reflect.DeepEqual(r.Fields, wantFields) || r.Recipients != nil {
		t.Fatalf("got %+v", r)
	}
	for _, s := range []string{"a été exécutée (délivrée) le 06/01/2025 à 08:00", "was executed (dispensed) on 2025-01-06 at 08:00", "par pharmacie@officine.mssante.fr"} {
		if !strings.Contains(r.HumanText, s) {
			t.Fatalf("human text lacks %q:\n%s", s, r.HumanText)
		}
	}
}

// TestNotificationRefusals: every input that could break the message, or
// inject a header field, is refused with KindMalformed.
func TestNotificationRefusals(t *testing.T) {
	type build func() ([]byte, []byte, error)
	dsn := func(f func(*DSN)) build {
		return func() ([]byte, []byte, error) { d := goodDSN(); f(d); return BuildDSN(d) }
	}
	mdn := func(f func(*MDN)) build {
		return func() ([]byte, []byte, error) { m := goodMDN(); f(m); return BuildMDN(m) }
	}
	exe := func(f func(*Execution)) build {
		return func() ([]byte, []byte, error) { e := goodExecution(); f(e); return BuildExecutionNotice(e) }
	}
	const inj = "\r\nBcc: victim@example.org"
	tests := []struct {
		name   string
		build  build
		detail string
	}{
		{"DSN nil", func() ([]byte, []byte, error) { return BuildDSN(nil) }, "nil"},
		{"MDN nil", func() ([]byte, []byte, error) { return BuildMDN(nil) }, "nil"},
		{"execution nil", func() ([]byte, []byte, error) { return BuildExecutionNotice(nil) }, "nil"},
		{"From injection", dsn(func(d *DSN) { d.From += inj }), "From contains a control character"},
		{"To injection", mdn(func(m *MDN) { m.To += inj }), "To contains a control character"},
		{"To LF only", exe(func(e *Execution) { e.To = "a@b.fr\nBcc: c@d.fr" }), "To contains a control character"},
		{"From missing", exe(func(e *Execution) { e.From = "" }), "From missing"},
		{"From a group", dsn(func(d *DSN) { d.From = "g: a@b.fr;" }), "is a group"},
		{"From two addresses", dsn(func(d *DSN) { d.From = "a@b.fr, c@d.fr" }), "From: invalid address"},
		{"To not ASCII", dsn(func(d *DSN) { d.To = "médecin@hopital.fr" }), "not ASCII"},
		{"Message-ID injection", dsn(func(d *DSN) { d.MessageID = "<a@b>" + inj }), "Message-ID"},
		{"Message-ID no brackets", mdn(func(m *MDN) { m.MessageID = "a@b" }), "is not <id@host>"},
		{"Message-ID space", exe(func(e *Execution) { e.MessageID = "<a b@c>" }), "outside visible ASCII"},
		{"Message-ID no @", exe(func(e *Execution) { e.MessageID = "<abcd>" }), "has no @"},
		{"Message-ID too long", exe(func(e *Execution) { e.MessageID = "<" + strings.Repeat("a", 300) + "@b>" }), "is not <id@host>"},
		{"original Message-ID injection", dsn(func(d *DSN) { d.OriginalMessageID = "<a@b>\r\nX: y" }), "OriginalMessageID"},
		{"MDN original Message-ID injection", mdn(func(m *MDN) { m.OriginalMessageID = "<a@b>\nX: y" }), "OriginalMessageID"},
		{"number injection", dsn(func(d *DSN) { d.Number = "RX1" + inj }), "prescription number"},
		{"number missing", mdn(func(m *MDN) { m.Number = "" }), "prescription number missing"},
		{"number too long", exe(func(e *Execution) { e.Number = strings.Repeat("9", 65) }), "prescription number"},
		{"reason injection", dsn(func(d *DSN) { d.Reason = "x" + inj }), "Reason contains a control character"},
		{"reason too long", dsn(func(d *DSN) { d.Reason = strings.Repeat("x", 401) }), "Reason longer than 400"},
		{"reason bad UTF-8", dsn(func(d *DSN) { d.Reason = "\xff" }), "not valid UTF-8"},
		{"reporting MTA injection", dsn(func(d *DSN) { d.ReportingMTA = "relay" + inj }), "Reporting-MTA"},
		{"reporting MTA missing", dsn(func(d *DSN) { d.ReportingMTA = "" }), "Reporting-MTA missing"},
		{"remote MTA injection", dsn(func(d *DSN) { d.Recipients[0].RemoteMTA = "dns; mx" + inj }), "RemoteMTA"},
		{"final recipient injection", dsn(func(d *DSN) { d.Recipients[0].FinalRecipient += inj }), "FinalRecipient contains a control character"},
		{"final recipient missing", dsn(func(d *DSN) { d.Recipients[0].FinalRecipient = "" }), "FinalRecipient missing"},
		{"no recipient", dsn(func(d *DSN) { d.Recipients = nil }), "no recipient"},
		{"too many recipients", dsn(func(d *DSN) { d.Recipients = make([]DSNRecipient, 101) }), "more than 100 recipients"},
		{"action unknown", dsn(func(d *DSN) { d.Recipients[0].Action = "delivered" }), `Action "delivered"`},
		{"action injection", dsn(func(d *DSN) { d.Recipients[0].Action = "failed" + inj }), "Action"},
		{"status syntax", dsn(func(d *DSN) { d.Recipients[0].Status = "5.1" }), "not an RFC 3463 code"},
		{"status class", dsn(func(d *DSN) { d.Recipients[0].Status = "3.1.1" }), "not an RFC 3463 code"},
		{"status digits", dsn(func(d *DSN) { d.Recipients[0].Status = "5.1234.1" }), "not an RFC 3463 code"},
		{"status injection", dsn(func(d *DSN) { d.Recipients[0].Status = "5.1.1" + inj }), "not an RFC 3463 code"},
		{"failed with 4.x.x", dsn(func(d *DSN) { d.Recipients[0].Status = "4.4.7" }), "does not match Action failed"},
		{"delayed with 5.x.x", dsn(func(d *DSN) { d.Recipients[0].Action = StatusDelayed }), "does not match Action delayed"},
		{"retry on failed", dsn(func(d *DSN) { d.Recipients[0].WillRetryUntil = rptDate }), "only for a delayed"},
		{"date missing", dsn(func(d *DSN) { d.Date = time.Time{} }), "DSN Date missing"},
		{"date year", mdn(func(m *MDN) { m.Date = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }), "outside 1900-9999"},
		{"last attempt year", dsn(func(d *DSN) { d.Recipients[0].LastAttempt = time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC) }), "outside 1900-9999"},
		{"reporting UA injection", mdn(func(m *MDN) { m.ReportingUA = "ua" + inj }), "ReportingUA contains a control character"},
		{"reporting UA missing", mdn(func(m *MDN) { m.ReportingUA = "" }), "non-empty ASCII"},
		{"reporting UA not ASCII", mdn(func(m *MDN) { m.ReportingUA = "relais; mssrelay é" }), "non-empty ASCII"},
		{"MDN final recipient missing", mdn(func(m *MDN) { m.FinalRecipient = "" }), "FinalRecipient missing"},
		{"MDN original recipient bad", mdn(func(m *MDN) { m.OriginalRecipient = "nobody" }), "OriginalRecipient"},
		{"executed by injection", exe(func(e *Execution) { e.ExecutedBy += inj }), "ExecutedBy contains a control character"},
		{"executed at missing", exe(func(e *Execution) { e.ExecutedAt = time.Time{} }), "ExecutedAt missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, e, err := tt.build()
			wantError(t, err, KindMalformed, tt.detail)
			if h != nil || e != nil {
				t.Fatal("output returned with an error")
			}
		})
	}
}

func TestParseReportRefusals(t *testing.T) {
	_, dsn, err := BuildDSN(goodDSN())
	if err != nil {
		t.Fatal(err)
	}
	_, mdn, err := BuildMDN(goodMDN())
	if err != nil {
		t.Fatal(err)
	}
	_, exe, err := BuildExecutionNotice(goodExecution())
	if err != nil {
		t.Fatal(err)
	}
	rep := func(b []byte, old, new string) []byte {
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("fixture lacks %q", old)
		}
		return bytes.Replace(b, []byte(old), []byte(new), 1)
	}
	manyRcpts := rep(dsn, "Action: failed\r\n", "Action: failed\r\n"+strings.Repeat("\r\nFinal-Recipient: rfc822; a@b.fr\r\nAction: failed\r\nStatus: 5.0.0\r\n", 101))
	tests := []struct {
		name   string
		in     []byte
		kind   ErrorKind
		detail string
	}{
		{"too large", append(dsn, make([]byte, maxReportBytes)...), KindTooLarge, "limit is"},
		{"no number", rep(dsn, "X-Ordonnance-Number: RX-0000000001\r\n", ""), KindMalformed, "no X-Ordonnance-Number"},
		{"two numbers", rep(dsn, "X-Ordonnance-Number:", "X-Ordonnance-Number: RX2\r\nX-Ordonnance-Number:"), KindMalformed, "more than one X-Ordonnance-Number"},
		{"bad number", rep(dsn, "X-Ordonnance-Number: RX-0000000001", "X-Ordonnance-Number: RX 1"), KindMalformed, "prescription number"},
		{"no status", rep(mdn, "X-Ordonnance-Status: processed\r\n", ""), KindMalformed, "no X-Ordonnance-Status"},
		{"DSN status processed", rep(dsn, "X-Ordonnance-Status: failed", "X-Ordonnance-Status: processed"), KindMalformed, "delivery-status report with X-Ordonnance-Status"},
		{"MDN status failed", rep(mdn, "X-Ordonnance-Status: processed", "X-Ordonnance-Status: failed"), KindMalformed, "disposition-notification report with"},
		{"execution status", rep(exe, "X-Ordonnance-Status: executed", "X-Ordonnance-Status: failed"), KindMalformed, "want \"executed\""},
		{"execution no executant", rep(exe, "X-Ordonnance-Executed-By: pharmacie@officine.mssante.fr\r\n", ""), KindMalformed, "no X-Ordonnance-Executed-By"},
		{"execution bad executant", rep(exe, "X-Ordonnance-Executed-By: pharmacie@officine.mssante.fr", "X-Ordonnance-Executed-By: nobody"), KindMalformed, "Executed-By"},
		{"execution bad time", rep(exe, "X-Ordonnance-Executed-At: 2025", "X-Ordonnance-Executed-At: x2025"), KindMalformed, "not RFC 3339"},
		{"other type", rep(dsn, "multipart/report", "multipart/mixed"), KindMalformed, "want multipart/report or text/plain"},
		{"report type", rep(dsn, "report-type=delivery-status", "report-type=other"), KindMalformed, "report-type \"other\""},
		{"wrong second part", rep(dsn, "Content-Type: message/delivery-status", "Content-Type: text/plain"), KindMalformed, "second part is text/plain"},
		{"first part not text", rep(dsn, "Content-Type: text/plain; charset=utf-8", "Content-Type: application/octet-stream"), KindMalformed, "first part is application/octet-stream"},
		{"charset", rep(mdn, "charset=utf-8", "charset=iso-8859-1"), KindMalformed, "charset"},
		{"no reporting MTA", rep(dsn, "Reporting-MTA: dns; relay.example.fr\r\n", "X-Other: 1\r\n"), KindMalformed, "lacks reporting-mta"},
		{"no recipient block", rep(dsn, "\r\n\r\nFinal-Recipient", "\r\nFinal-Recipient"), KindMalformed, "no recipient block"},
		{"recipient lacks status", rep(dsn, "Status: 5.1.1\r\n", ""), KindMalformed, "lacks status"},
		{"repeated field", rep(dsn, "Action: failed\r\n", "Action: failed\r\nAction: delayed\r\n"), KindMalformed, "repeated in one group"},
		{"MDN no disposition", rep(mdn, "Disposition: automatic-action/MDN-sent-automatically; processed\r\n", ""), KindMalformed, "lacks disposition"},
		{"MDN two groups", rep(mdn, "Disposition:", "\r\nDisposition:"), KindMalformed, "field groups"},
		{"one part", rep(mdn, "--=_rpt_", "--=_rpt_x"), KindMalformed, ""},
		{"not closed", dsn[:len(dsn)-10], KindMalformed, "close delimiter"},
		{"bad status field", rep(dsn, "Action: failed\r\n", "Action failed\r\n"), KindMalformed, "not a field"},
		{"too many recipients", manyRcpts, KindLimit, "more than 100 recipient blocks"},
		{"bad base64", rep(dsn, "Content-Type: message/delivery-status\r\n", "Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n"), KindMalformed, "invalid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseReport(tt.in)
			if r != nil {
				t.Fatalf("got a report %+v", r)
			}
			wantError(t, err, tt.kind, tt.detail)
		})
	}
}

func TestIsAutomatic(t *testing.T) {
	tests := []struct {
		header string
		want   bool
	}{
		{"From: a@b.fr\nSubject: hi\n", false},
		{"Content-Type: text/plain\n", false},
		{"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"\n", false},
		{"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n", true},
		{"Content-Type: Multipart/Report; report-type=disposition-notification; boundary=x\n", true},
		{"Content-Type: multipart/report; report-type=other\n", true},
		{"Content-Type: multipart/report\n", true},
		{"Content-Type: message/delivery-status\n", true},
		{"Content-Type: message/disposition-notification\n", true},
		{"Content-Type: message/global-delivery-status\n", true},
		{"Content-Type: multipart/report; boundary=\"unterminated\n", true},
		{"Content-Type:\n multipart/report;\n report-type=delivery-status\n", true},
		{"Content-Type: text/plain\nContent-Type: multipart/report\n", true},
		{"Auto-Submitted: no\n", false},
		{"Auto-Submitted: NO (a person wrote this)\n", false},
		{"Auto-Submitted: auto-replied\n", true},
		{"Auto-Submitted: auto-generated\n", true},
		{"Auto-Submitted: auto-notified; owner-email=\"a@b.fr\"\n", true},
		{"Auto-Submitted:\n", true},
		{"auto-submitted : auto-replied\n", true},
		{"Auto-Submitted: no\nAuto-Submitted: auto-replied\n", true},
		{"From: a@b.fr\n\nAuto-Submitted: auto-replied\n", false}, // in the body
		{"garbage\nAuto-Submitted: auto-generated\n", true},
		{"", false},
	}
	for _, tt := range tests {
		if got := IsAutomatic(crlf(tt.header)); got != tt.want {
			t.Errorf("IsAutomatic(%q) = %v, want %v", tt.header, got, tt.want)
		}
	}
}

func TestDispositionNotificationTo(t *testing.T) {
	tests := []struct {
		header string
		want   string // "" means ok=false
	}{
		{"From: a@b.fr\n", ""},
		{"Disposition-Notification-To: dr@Hopital.MSSANTE.fr\n", "dr@hopital.mssante.fr"},
		{"disposition-notification-to: \"Dr Martin\" <Dr@hopital.fr>\n", "Dr@hopital.fr"},
		{"Disposition-Notification-To: =?utf-8?q?Dr_M=C3=A9decin?= <dr@h.fr>\n", "dr@h.fr"},
		{"Disposition-Notification-To:\n <dr@h.fr>\n", "dr@h.fr"},
		{"Disposition-Notification-To: a@b.fr, c@d.fr\n", ""},
		{"Disposition-Notification-To: a@b.fr\nDisposition-Notification-To: a@b.fr\n", ""},
		{"Disposition-Notification-To: group: a@b.fr;\n", ""},
		{"Disposition-Notification-To: not an address\n", ""},
		{"Disposition-Notification-To:\n", ""},
		{"Disposition-Notification-To: <@b.fr>\n", ""},
		{"From: x@y.fr\n\nDisposition-Notification-To: a@b.fr\n", ""},
	}
	for _, tt := range tests {
		got, ok := DispositionNotificationTo(crlf(tt.header))
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("DispositionNotificationTo(%q) = %q, %v; want %q", tt.header, got, ok, tt.want)
		}
	}
}

func TestQualifiedIdentity(t *testing.T) {
	tests := []struct {
		name          string
		outer, signed string
		qualified     bool
		value         string
	}{
		{"absent", "From: a@b.fr\n", "Content-Type: text/plain\n", false, ""},
		{"outer O", "X-MSS-INS: O\n", "Content-Type: text/plain\n", true, "O"},
		{"outer lower, spaces", "X-MSS-INS:   o  \n", "", true, "o"},
		{"signed O", "", "X-MSS-INS: O\nContent-Type: text/plain\n", true, "O"},
		{"signed wins over outer O", "X-MSS-INS: O\n", "X-MSS-INS: N\nContent-Type: text/plain\n", false, "N"},
		{"signed O wins over outer N", "X-MSS-INS: N\n", "x-mss-ins: O\n", true, "O"},
		{"not qualified", "X-MSS-INS: N\n", "", false, "N"},
		{"other value", "X-MSS-INS: OUI\n", "", false, "OUI"},
		{"empty signed wins", "X-MSS-INS: O\n", "X-MSS-INS:\n", false, ""},
		{"duplicate in signed", "", "X-MSS-INS: O\nX-MSS-INS: O\n", false, "O"},
		{"duplicate in outer", "X-MSS-INS: O\nX-MSS-INS: N\n", "", false, "O"},
		{"in the body only", "", "Content-Type: text/plain\n\nX-MSS-INS: O\n", false, ""},
	}
	for _, tt := range tests {
		q, v := QualifiedIdentity(crlf(tt.outer), crlf(tt.signed))
		if q != tt.qualified || v != tt.value {
			t.Errorf("%s: got %v %q, want %v %q", tt.name, q, v, tt.qualified, tt.value)
		}
	}
	// The generator's X-MSS-INS is read from the signed entity.
	s := NewSample(3)
	s.MSSINS = "O"
	if q, v := QualifiedIdentity(crlf("X-MSS-INS: N\n"), s.Content()); !q || v != "O" {
		t.Fatalf("sample: got %v %q", q, v)
	}
}

func TestFold(t *testing.T) {
	long := "Subject: " + strings.Repeat("word ", 40) + "end"
	out := fold(long)
	for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
		if len(l) > foldWidth {
			t.Fatalf("line of %d: %q", len(l), l)
		}
	}
	if unfold([]byte(strings.TrimPrefix(strings.TrimSuffix(out, "\r\n"), "Subject:"))) != strings.TrimPrefix(long, "Subject: ") {
		t.Fatal("fold does not unfold to the original")
	}
	if got := fold("Subject: " + strings.Repeat("x", 100)); got != "Subject: "+strings.Repeat("x", 100)+"\r\n" {
		t.Fatalf("field name left alone on its line: %q", got)
	}
}

func TestEncodeSubject(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Ordonnance RX-1 non remise / Prescription not delivered", "Ordonnance RX-1 non remise / Prescription not delivered"},
		{"Ordonnance RX-1 exécutée / Prescription executed", "Ordonnance RX-1 =?utf-8?q?ex=C3=A9cut=C3=A9e?= / Prescription executed"},
		{"remise retardée reçue ok", "remise =?utf-8?q?retard=C3=A9e_re=C3=A7ue?= ok"},
		{strings.Repeat("é", 60), ""},
	}
	dec := new(stdmime.WordDecoder)
	for _, tt := range tests {
		got := encodeSubject(tt.in)
		if tt.want != "" && got != tt.want {
			t.Errorf("encodeSubject(%q) = %q, want %q", tt.in, got, tt.want)
		}
		folded := fold("Subject: " + got)
		for _, l := range strings.Split(strings.TrimSuffix(folded, "\r\n"), "\r\n") {
			if len(l) > 76 {
				t.Errorf("%q: line of %d characters", tt.in, len(l))
			}
		}
		back, err := dec.DecodeHeader(unfold([]byte(strings.TrimPrefix(strings.TrimSuffix(folded, "\r\n"), "Subject:"))))
		if err != nil || back != tt.in {
			t.Errorf("%q decodes to %q, %v", tt.in, back, err)
		}
	}
}

func FuzzParseReport(f *testing.F) {
	seeds := [][]byte{}
	if _, e, err := BuildDSN(goodDSN()); err == nil {
		seeds = append(seeds, e)
	}
	if _, e, err := BuildMDN(goodMDN()); err == nil {
		seeds = append(seeds, e)
	}
	if _, e, err := BuildExecutionNotice(goodExecution()); err == nil {
		seeds = append(seeds, e)
	}
	if len(seeds) != 3 {
		f.Fatal("a builder failed on its fixture")
	}
	for _, s := range seeds {
		f.Add(s)
		f.Add(bytes.ReplaceAll(s, []byte("\r\n"), []byte("\n")))
		f.Add(s[:len(s)/2])
		f.Add(bytes.Replace(s, []byte("\r\n\r\n"), []byte("\r\n"), 2))
		f.Add(append([]byte("Auto-Submitted: no\r\nDisposition-Notification-To: a@b.fr\r\nX-MSS-INS: O\r\n"), s...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseReport(data)
		// The header readers take the same untrusted bytes: no panic, and
		// what they return cannot carry a line break.
		IsAutomatic(data)
		if a, ok := DispositionNotificationTo(data); ok && (strings.ContainsAny(a, "\r\n") || !strings.Contains(a, "@")) {
			t.Fatalf("DispositionNotificationTo returned %q", a)
		}
		if q, v := QualifiedIdentity(data, data); q && !strings.EqualFold(v, "O") || strings.ContainsAny(v, "\r\n") {
			t.Fatalf("QualifiedIdentity returned %v %q", q, v)
		}
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || r != nil {
				t.Fatalf("got %v (%T) and %v, want *Error and no report", err, err, r)
			}
			return
		}
		if checkNumber(r.Number) != nil {
			t.Fatalf("accepted number %q", r.Number)
		}
		switch {
		case r.Type == ReportDeliveryStatus && (r.Status == StatusFailed || r.Status == StatusDelayed) && len(r.Recipients) > 0 && r.Fields["reporting-mta"] != "":
		case r.Type == ReportDisposition && r.Status == StatusProcessed && r.Recipients == nil && r.Fields["disposition"] != "":
		case r.Type == "" && r.Status == StatusExecuted && r.Fields["executed-by"] != "":
		default:
			t.Fatalf("accepted an inconsistent report %+v", r)
		}
		// Parsing is a function of the bytes.
		r2, err := ParseReport(data)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("second parse differs: %v", err)
		}
	})
}

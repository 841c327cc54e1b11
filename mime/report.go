package mime

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	stdmime "mime"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"
)

// Notifications the relay sends to a prescriber: a delivery status
// notification (DSN, RFC 3464) when a prescription could not be delivered
// to the patient, a message disposition notification (MDN, RFC 8098) when
// it was filed, and an execution notice (our own format, below) when it
// was dispensed.
//
// Each builder returns two pieces: header, the message's top-level fields
// (each ending CRLF, no blank line after the last one), and entity, the
// MIME entity the relay signs (its own header, a blank line, its body).
// Signed, the message is BuildDetached(header, entity, sig); unsigned, it
// is header followed by entity. The machine-readable X-Ordonnance-* fields
// sit in the entity's header, so the signature covers them.
//
// The output is deterministic: boundaries derive from the Message-ID, so
// building the same notification twice gives the same bytes (a retry
// resends an identical message). Every field is validated: a CR or LF in
// any input is refused, so no input can add a header field.

// X-Ordonnance-Status values of the notifications.
const (
	StatusFailed    = "failed"    // DSN: the prescription could not be delivered
	StatusDelayed   = "delayed"   // DSN: delivery is delayed, retries go on
	StatusProcessed = "processed" // MDN: the prescription was received and filed
	StatusExecuted  = "executed"  // execution notice: the prescription was dispensed
)

// report-type values of multipart/report (RFC 6522 §3).
const (
	ReportDeliveryStatus = "delivery-status"          // RFC 3464
	ReportDisposition    = "disposition-notification" // RFC 8098
)

// Limits of the notification builders and of ParseReport.
const (
	maxOriginalHeader   = 64 << 10 // text/rfc822-headers part of a DSN
	maxDiagnosticChars  = 400      // Diagnostic-Code text kept from a remote server
	maxReasonBytes      = 400      // DSN.Reason
	maxMsgIDChars       = 250      // Message-ID with its brackets
	maxAddressChars     = 254      // RFC 5321 §4.5.3.1.3 path less the brackets
	maxHostChars        = 253      // RFC 1035 §2.3.4
	maxUAChars          = 200      // MDN Reporting-UA
	maxDSNRecipients    = 100      // recipients in one DSN (built or parsed)
	maxReportBytes      = 1 << 20  // ParseReport input
	maxReportHeader     = 16 << 10 // ParseReport: entity and part header blocks
	maxReportFields     = 64       // ParseReport: fields per header block or group
	maxReportParts      = 8        // ParseReport: body parts of the multipart/report
	maxHumanTextBytes   = 64 << 10 // ParseReport: decoded human-readable part
	maxStatusGroupBytes = 256 << 10
	foldWidth           = 76 // RFC 5322 §2.1.1 (78) and RFC 2047 §2 (76, lines with encoded-words)
)

// DSNRecipient is one per-recipient block of a DSN (RFC 3464 §2.3).
type DSNRecipient struct {
	FinalRecipient string    // address, written "rfc822; addr" (§2.3.2)
	Action         string    // "failed" or "delayed" (§2.3.3)
	Status         string    // RFC 3463 code: 5.x.x for failed, 4.x.x for delayed (§2.3.4)
	RemoteMTA      string    // optional host name, "dns; host" accepted (§2.3.5)
	DiagnosticCode string    // optional, e.g. "smtp; 550 5.1.1 unknown"; sanitized (§2.3.6)
	LastAttempt    time.Time // optional (§2.3.7)
	WillRetryUntil time.Time // optional, delayed only (§2.3.8)
}

// DSN describes a delivery status notification to the prescriber.
type DSN struct {
	ReportingMTA      string // our host name (Reporting-MTA, RFC 3464 §2.2.2)
	From, To          string // the relay's notification address and the prescriber
	MessageID         string // of this DSN, with angle brackets
	Date              time.Time
	Arrival           time.Time // Arrival-Date (§2.2.5); optional
	OriginalMessageID string    // optional; written as In-Reply-To and References
	Number            string    // prescription number (an identifier, never clinical content)
	Recipients        []DSNRecipient
	// OriginalHeader is the header block of the original message, returned
	// as a text/rfc822-headers part (RFC 6522 §4); optional. It is cut at a
	// field boundary to 64 KiB; fields with a NUL, a bare CR or a line over
	// 998 bytes are left out; when nothing is left, so is the part.
	OriginalHeader []byte
	// PaperCopyNeeded adds to the human part (French and English) that the
	// patient must receive a paper copy of the prescription.
	PaperCopyNeeded bool
	// Reason is a short human reason, one line, optional (UTF-8 allowed).
	Reason string
}

// MDN describes a message disposition notification (RFC 8098) saying that
// the prescription was received and filed.
type MDN struct {
	ReportingUA       string // e.g. "relay.example; mssrelay" (§3.2.1)
	From, To          string
	MessageID         string
	Date              time.Time
	OriginalRecipient string // optional (§3.2.3)
	FinalRecipient    string // (§3.2.4)
	OriginalMessageID string // optional but recommended (§3.2.5)
	Number            string
}

// Execution describes an execution notice: the prescription was executed
// (dispensed). The format is ours: a signed text/plain entity whose header
// carries X-Ordonnance-Number, X-Ordonnance-Status: executed,
// X-Ordonnance-Executed-By (the executant's address) and
// X-Ordonnance-Executed-At (RFC 3339). The caller decides whether one may
// be sent at all (Prescription.Opposition).
type Execution struct {
	From, To, MessageID string
	Date                time.Time
	Number              string
	OriginalMessageID   string // optional
	ExecutedBy          string // executant address
	ExecutedAt          time.Time
}

// Report is a notification read back by ParseReport.
type Report struct {
	Type   string // ReportDeliveryStatus, ReportDisposition, or "" for the execution notice
	Number string // X-Ordonnance-Number of the entity header
	Status string // X-Ordonnance-Status of the entity header
	// Fields holds the per-message fields of the machine-readable part, by
	// lower-case name (e.g. "reporting-mta", "disposition"). For the
	// execution notice: "executed-by" and "executed-at".
	Fields map[string]string
	// Recipients holds the per-recipient blocks of a DSN, lower-case names.
	Recipients []map[string]string
	// HumanText is the decoded first text/plain part, with LF line ends.
	HumanText string
}

func reportError(format string, args ...any) *Error {
	return errorf(KindMalformed, format, args...)
}

// BuildDSN builds a multipart/report; report-type=delivery-status (RFC 3464,
// RFC 6522): a text/plain part in French then English, the
// message/delivery-status part, and text/rfc822-headers when
// OriginalHeader is set. X-Ordonnance-Status is the worst action: failed
// when any recipient failed, else delayed.
func BuildDSN(d *DSN) (header, entity []byte, err error) {
	if d == nil {
		return nil, nil, reportError("DSN: nil")
	}
	mta, err := hostName("DSN Reporting-MTA", d.ReportingMTA)
	if err != nil {
		return nil, nil, err
	}
	if err := checkTime("DSN Date", d.Date, true); err != nil {
		return nil, nil, err
	}
	if err := checkTime("DSN Arrival", d.Arrival, false); err != nil {
		return nil, nil, err
	}
	if err := checkNumber(d.Number); err != nil {
		return nil, nil, err
	}
	if err := checkLine("DSN Reason", d.Reason, maxReasonBytes); err != nil {
		return nil, nil, err
	}
	if len(d.Recipients) == 0 {
		return nil, nil, reportError("DSN: no recipient")
	}
	if len(d.Recipients) > maxDSNRecipients {
		return nil, nil, reportError("DSN: more than %d recipients", maxDSNRecipients)
	}

	// Per-message fields (RFC 3464 §2.2), then one block per recipient
	// (§2.3), blocks separated by an empty line (§2.1).
	var st bytes.Buffer
	st.WriteString("Reporting-MTA: dns; " + mta + "\r\n")
	if !d.Arrival.IsZero() {
		st.WriteString("Arrival-Date: " + d.Arrival.Format(time.RFC1123Z) + "\r\n")
	}
	status := StatusDelayed
	type line struct{ addr, action, code string }
	var lines []line
	for i := range d.Recipients {
		r := &d.Recipients[i]
		what := fmt.Sprintf("DSN recipient %d", i+1)
		addr, err := address(what+" FinalRecipient", r.FinalRecipient)
		if err != nil {
			return nil, nil, err
		}
		if err := checkStatus(what, r.Action, r.Status); err != nil {
			return nil, nil, err
		}
		if r.Action == StatusFailed {
			status = StatusFailed
		}
		st.WriteString("\r\nFinal-Recipient: rfc822; " + addr + "\r\n")
		st.WriteString("Action: " + r.Action + "\r\n")
		st.WriteString("Status: " + r.Status + "\r\n")
		if r.RemoteMTA != "" {
			host, err := hostName(what+" RemoteMTA", strings.TrimSpace(strings.TrimPrefix(strings.ToLower(r.RemoteMTA), "dns;")))
			if err != nil {
				return nil, nil, err
			}
			st.WriteString("Remote-MTA: dns; " + host + "\r\n")
		}
		if dc := sanitizeDiagnostic(r.DiagnosticCode); dc != "" {
			st.WriteString(fold("Diagnostic-Code: " + dc))
		}
		if err := checkTime(what+" LastAttempt", r.LastAttempt, false); err != nil {
			return nil, nil, err
		}
		if !r.LastAttempt.IsZero() {
			st.WriteString("Last-Attempt-Date: " + r.LastAttempt.Format(time.RFC1123Z) + "\r\n")
		}
		if err := checkTime(what+" WillRetryUntil", r.WillRetryUntil, false); err != nil {
			return nil, nil, err
		}
		if !r.WillRetryUntil.IsZero() {
			if r.Action != StatusDelayed {
				return nil, nil, reportError("%s: WillRetryUntil is only for a delayed delivery (RFC 3464 §2.3.8)", what)
			}
			st.WriteString("Will-Retry-Until: " + r.WillRetryUntil.Format(time.RFC1123Z) + "\r\n")
		}
		lines = append(lines, line{addr, r.Action, r.Status})
	}

	subject := "Ordonnance " + d.Number + " non remise / Prescription not delivered"
	if status == StatusDelayed {
		subject = "Ordonnance " + d.Number + " : remise retardée / Prescription delivery delayed"
	}
	header, err = topHeader(d.From, d.To, d.MessageID, d.OriginalMessageID, subject, d.Date)
	if err != nil {
		return nil, nil, fmt.Errorf("DSN: %w", err)
	}

	var fr, en strings.Builder
	fr.WriteString("Ceci est un avis automatique du relais de messagerie sécurisée de santé.\n\n")
	en.WriteString("This is an automatic notice from the secure health messaging relay.\n\n")
	if status == StatusFailed {
		fmt.Fprintf(&fr, "L'ordonnance n° %s n'a pas pu être remise à son destinataire.\n", d.Number)
		fmt.Fprintf(&en, "Prescription no. %s could not be delivered to its recipient.\n", d.Number)
	} else {
		fmt.Fprintf(&fr, "La remise de l'ordonnance n° %s est retardée ; le relais fait de nouvelles tentatives.\n", d.Number)
		fmt.Fprintf(&en, "Delivery of prescription no. %s is delayed; the relay keeps trying.\n", d.Number)
	}
	if d.Reason != "" {
		fmt.Fprintf(&fr, "Motif : %s\n", d.Reason)
		fmt.Fprintf(&en, "Reason: %s\n", d.Reason)
	}
	for _, l := range lines {
		frAction, enAction := "échec", "failed"
		if l.action == StatusDelayed {
			frAction, enAction = "retardée", "delayed"
		}
		fmt.Fprintf(&fr, "Destinataire : %s (%s, statut %s)\n", l.addr, frAction, l.code)
		fmt.Fprintf(&en, "Recipient: %s (%s, status %s)\n", l.addr, enAction, l.code)
	}
	if d.PaperCopyNeeded {
		fr.WriteString("\nLe patient doit recevoir une copie papier de l'ordonnance.\n")
		en.WriteString("\nThe patient must receive a paper copy of the prescription.\n")
	}

	parts := []entityPart{
		humanPart(fr.String(), en.String()),
		{"Content-Type: message/delivery-status\r\n", st.Bytes()},
	}
	if len(d.OriginalHeader) > 0 {
		if p, ok := originalHeaderPart(d.OriginalHeader); ok {
			parts = append(parts, p)
		}
	}
	entity = reportEntity([]string{
		"X-Ordonnance-Number: " + d.Number,
		"X-Ordonnance-Status: " + status,
	}, ReportDeliveryStatus, d.MessageID, parts)
	return header, entity, nil
}

// BuildMDN builds a multipart/report; report-type=disposition-notification
// (RFC 8098 §3) with the disposition
// "automatic-action/MDN-sent-automatically; processed" (§3.2.6): the relay
// received and filed the prescription, no person saw it.
func BuildMDN(m *MDN) (header, entity []byte, err error) {
	if m == nil {
		return nil, nil, reportError("MDN: nil")
	}
	if err := checkNumber(m.Number); err != nil {
		return nil, nil, err
	}
	if err := checkLine("MDN ReportingUA", m.ReportingUA, maxUAChars); err != nil {
		return nil, nil, err
	}
	if m.ReportingUA == "" || !isASCII(m.ReportingUA) {
		return nil, nil, reportError("MDN ReportingUA must be a non-empty ASCII line")
	}
	if err := checkTime("MDN Date", m.Date, true); err != nil {
		return nil, nil, err
	}
	final, err := address("MDN FinalRecipient", m.FinalRecipient)
	if err != nil {
		return nil, nil, err
	}
	var st bytes.Buffer
	st.WriteString(fold("Reporting-UA: " + m.ReportingUA))
	if m.OriginalRecipient != "" {
		orig, err := address("MDN OriginalRecipient", m.OriginalRecipient)
		if err != nil {
			return nil, nil, err
		}
		st.WriteString("Original-Recipient: rfc822; " + orig + "\r\n")
	}
	st.WriteString("Final-Recipient: rfc822; " + final + "\r\n")
	if m.OriginalMessageID != "" {
		if err := checkMsgID("MDN OriginalMessageID", m.OriginalMessageID); err != nil {
			return nil, nil, err
		}
		st.WriteString("Original-Message-ID: " + m.OriginalMessageID + "\r\n")
	}
	st.WriteString("Disposition: automatic-action/MDN-sent-automatically; processed\r\n")

	header, err = topHeader(m.From, m.To, m.MessageID, m.OriginalMessageID,
		"Ordonnance "+m.Number+" reçue / Prescription received", m.Date)
	if err != nil {
		return nil, nil, fmt.Errorf("MDN: %w", err)
	}
	fr := fmt.Sprintf("Ceci est un avis automatique du relais de messagerie sécurisée de santé.\n\n"+
		"L'ordonnance n° %s a été reçue et classée.\n", m.Number)
	en := fmt.Sprintf("This is an automatic notice from the secure health messaging relay.\n\n"+
		"Prescription no. %s was received and filed.\n", m.Number)
	parts := []entityPart{
		humanPart(fr, en),
		{"Content-Type: message/disposition-notification\r\n", st.Bytes()},
	}
	entity = reportEntity([]string{
		"X-Ordonnance-Number: " + m.Number,
		"X-Ordonnance-Status: " + StatusProcessed,
	}, ReportDisposition, m.MessageID, parts)
	return header, entity, nil
}

// BuildExecutionNotice builds the execution notice: a text/plain entity,
// French then English, whose header carries the machine-readable fields
// described at Execution.
func BuildExecutionNotice(e *Execution) (header, entity []byte, err error) {
	if e == nil {
		return nil, nil, reportError("execution notice: nil")
	}
	if err := checkNumber(e.Number); err != nil {
		return nil, nil, err
	}
	by, err := address("execution notice ExecutedBy", e.ExecutedBy)
	if err != nil {
		return nil, nil, err
	}
	if err := checkTime("execution notice ExecutedAt", e.ExecutedAt, true); err != nil {
		return nil, nil, err
	}
	if err := checkTime("execution notice Date", e.Date, true); err != nil {
		return nil, nil, err
	}
	header, err = topHeader(e.From, e.To, e.MessageID, e.OriginalMessageID,
		"Ordonnance "+e.Number+" exécutée / Prescription executed", e.Date)
	if err != nil {
		return nil, nil, fmt.Errorf("execution notice: %w", err)
	}
	at := e.ExecutedAt
	fr := fmt.Sprintf("Ceci est un avis automatique du relais de messagerie sécurisée de santé.\n\n"+
		"L'ordonnance n° %s a été exécutée (délivrée) le %s à %s (UTC%s) par %s.\n",
		e.Number, at.Format("02/01/2006"), at.Format("15:04"), at.Format("-07:00"), by)
	en := fmt.Sprintf("This is an automatic notice from the secure health messaging relay.\n\n"+
		"Prescription no. %s was executed (dispensed) on %s at %s (UTC%s) by %s.\n",
		e.Number, at.Format("2006-01-02"), at.Format("15:04"), at.Format("-07:00"), by)
	p := humanPart(fr, en)
	var b bytes.Buffer
	b.WriteString("X-Ordonnance-Number: " + e.Number + "\r\n")
	b.WriteString("X-Ordonnance-Status: " + StatusExecuted + "\r\n")
	b.WriteString("X-Ordonnance-Executed-By: " + by + "\r\n")
	b.WriteString("X-Ordonnance-Executed-At: " + at.Format(time.RFC3339) + "\r\n")
	b.WriteString(p.header + "\r\n")
	b.Write(p.body)
	return header, b.Bytes(), nil
}

// entityPart is one body part of an entity this package builds (a
// notification, a sample prescription).
type entityPart struct {
	header string // fields, each ending CRLF
	body   []byte // ends with CRLF
}

// pickBoundary is a multipart boundary derived from seed (the same entity
// renders the same bytes) and lengthened until no part's body contains it
// (RFC 2046 §5.1.1).
func pickBoundary(prefix, seed string, parts []entityPart) string {
	sum := sha256.Sum256([]byte(seed))
	boundary := prefix + hex.EncodeToString(sum[:12])
	for {
		clash := false
		for _, p := range parts {
			clash = clash || bytes.Contains(p.body, []byte(boundary))
		}
		if !clash {
			return boundary
		}
		boundary += "_"
	}
}

// humanPart is the text/plain part: French, then English, UTF-8 in
// quoted-printable (RFC 2045 §6.7) so the signed entity is 7-bit and its
// lines short.
func humanPart(fr, en string) entityPart {
	return entityPart{
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n",
		qpEncode(fr + "\n----\n\n" + en),
	}
}

// reportEntity assembles the multipart/report entity (RFC 6522 §3). The
// boundary derives from the Message-ID (deterministic output) and is
// lengthened until no part contains it.
func reportEntity(fields []string, reportType, msgID string, parts []entityPart) []byte {
	boundary := pickBoundary("=_rpt_", "report\x00"+reportType+"\x00"+msgID, parts)
	var b bytes.Buffer
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("Content-Type: multipart/report; report-type=" + reportType + ";\r\n\tboundary=\"" + boundary + "\"\r\n\r\n")
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p.header + "\r\n")
		b.Write(p.body)
		b.WriteString("\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes()
}

// originalHeaderPart renders the text/rfc822-headers part (RFC 6522 §4)
// from an untrusted header block: it stops at the first empty line, keeps
// whole fields only, up to maxOriginalHeader bytes, drops fields with a
// NUL, a bare CR or a line over 998 bytes (RFC 5322 §2.1.1) and lines that
// are neither a field nor a continuation, and rewrites line ends as CRLF.
// Non-ASCII bytes are sent quoted-printable to keep the entity 7-bit.
func originalHeaderPart(h []byte) (entityPart, bool) {
	var out, cur []byte
	bad := false
	flush := func() bool {
		if len(cur) > 0 && !bad {
			if len(out)+len(cur) > maxOriginalHeader {
				return false
			}
			out = append(out, cur...)
		}
		cur, bad = cur[:0], false
		return true
	}
	for pos := 0; pos < len(h); {
		line, next := nextLine(h, pos)
		pos = next
		if len(line) == 0 {
			break
		}
		if !isWSP(line[0]) {
			if !flush() {
				break
			}
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 || !validFieldName(line[:colon]) {
				bad = true
			}
		} else if len(cur) == 0 {
			continue // continuation of a dropped or absent field
		}
		if len(line) > 998 || bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 ||
			len(bytes.Trim(line, " \t")) == 0 {
			bad = true
		}
		cur = append(cur, line...)
		cur = append(cur, '\r', '\n')
	}
	flush()
	if len(out) == 0 {
		return entityPart{}, false
	}
	if isASCII(string(out)) {
		return entityPart{"Content-Type: text/rfc822-headers\r\n", out}, true
	}
	return entityPart{"Content-Type: text/rfc822-headers; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n",
		qpEncode(string(out))}, true
}

// topHeader writes the message's top-level fields, each ending CRLF and
// without the empty line that ends the header: BuildDetached appends its
// own fields after them (and drops MIME-Version, writing its own).
func topHeader(from, to, msgID, origID, subject string, date time.Time) ([]byte, error) {
	f, err := address("From", from)
	if err != nil {
		return nil, err
	}
	t, err := address("To", to)
	if err != nil {
		return nil, err
	}
	if err := checkMsgID("Message-ID", msgID); err != nil {
		return nil, err
	}
	if origID != "" {
		if err := checkMsgID("OriginalMessageID", origID); err != nil {
			return nil, err
		}
	}
	var b bytes.Buffer
	b.WriteString("From: " + angle(f) + "\r\n")
	b.WriteString("To: " + angle(t) + "\r\n")
	b.WriteString("Date: " + date.Format(time.RFC1123Z) + "\r\n")
	b.WriteString(fold("Subject: " + encodeSubject(subject)))
	b.WriteString("Message-ID: " + msgID + "\r\n")
	if origID != "" {
		// RFC 5322 §3.6.4: threads the notice under the prescription in
		// the prescriber's mail client.
		b.WriteString("In-Reply-To: " + origID + "\r\n")
		b.WriteString("References: " + origID + "\r\n")
	}
	b.WriteString("MIME-Version: 1.0\r\n")
	// RFC 3834 §5: an automatic response; RFC 3834 §2 makes every
	// compliant responder (vacation, other relays) leave it unanswered.
	b.WriteString("Auto-Submitted: auto-replied\r\n")
	return b.Bytes(), nil
}

// angle writes a bare address as an RFC 5322 angle-addr, quoting the
// local part when it is not a dot-atom.
func angle(addr string) string { return (&mail.Address{Address: addr}).String() }

// encodeSubject writes a subject with RFC 2047 encoded-words (Q, UTF-8)
// for its non-ASCII words only, so a mail client without RFC 2047 still
// shows the number. A run of such words is encoded as one chunk: the
// space between two adjacent encoded-words is dropped on decoding
// (RFC 2047 §6.2), the one inside a chunk is kept. Subjects are our own
// templates around a validated number, so no ASCII word looks like an
// encoded-word.
func encodeSubject(s string) string {
	words := strings.Split(s, " ")
	out := make([]string, 0, len(words))
	for i := 0; i < len(words); {
		if isASCII(words[i]) {
			out = append(out, words[i])
			i++
			continue
		}
		j := i + 1
		for j < len(words) && !isASCII(words[j]) {
			j++
		}
		// The encoder splits long text into encoded-words of at most 75
		// characters separated by spaces (RFC 2047 §2), where fold breaks.
		out = append(out, stdmime.QEncoding.Encode("utf-8", strings.Join(words[i:j], " ")))
		i = j
	}
	return strings.Join(out, " ")
}

// fold writes "Name: value" with CRLF, breaking at spaces so lines stay
// within 76 characters where the value allows it: RFC 5322 §2.2.3 asks for
// 78, RFC 2047 §2 for 76 on lines holding encoded-words. A word longer
// than the width stays whole: callers bound their values well under the
// 998-byte line limit.
func fold(f string) string {
	var b strings.Builder
	lineLen := 0
	for i, w := range strings.Split(f, " ") {
		switch {
		case i == 0:
		// The name stays alone on its line only before an encoded-word,
		// which must fit within 76 characters.
		case (i > 1 || strings.HasPrefix(w, "=?")) && w != "" && lineLen+1+len(w) > foldWidth:
			b.WriteString("\r\n")
			lineLen = 0
			fallthrough
		default:
			b.WriteByte(' ')
			lineLen++
		}
		b.WriteString(w)
		lineLen += len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}

// checkLine refuses control characters (CR and LF above all: a line break
// would let a value start a new header field) and values over max bytes.
func checkLine(what, v string, max int) error {
	if len(v) > max {
		return reportError("%s longer than %d bytes", what, max)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c == 0x7f {
			return reportError("%s contains a control character (0x%02x)", what, c)
		}
	}
	if !utf8.ValidString(v) {
		return reportError("%s is not valid UTF-8", what)
	}
	return nil
}

// address validates a mailbox with Address and returns the bare address.
// Notifications stay ASCII: an internationalized address (RFC 6532) is
// refused rather than written raw into a header.
func address(what, v string) (string, error) {
	if v == "" {
		return "", reportError("%s missing", what)
	}
	if err := checkLine(what, v, 2*maxAddressChars); err != nil {
		return "", err
	}
	a, err := Address(v)
	if err != nil {
		return "", reportError("%s: %s", what, strings.TrimPrefix(err.Error(), "mime: "))
	}
	if len(a) > maxAddressChars || !isASCII(a) {
		return "", reportError("%s %q is longer than %d characters or not ASCII", what, clip([]byte(a)), maxAddressChars)
	}
	return a, nil
}

// checkMsgID checks "<id-left@id-right>" (RFC 5322 §3.6.4) loosely: visible
// ASCII, no brackets inside, an @ with text on both sides.
func checkMsgID(what, v string) error {
	if len(v) < 5 || len(v) > maxMsgIDChars || v[0] != '<' || v[len(v)-1] != '>' {
		return reportError("%s %q is not <id@host> of at most %d characters", what, clip([]byte(v)), maxMsgIDChars)
	}
	in := v[1 : len(v)-1]
	for i := 0; i < len(in); i++ {
		if c := in[i]; c <= 0x20 || c >= 0x7f || c == '<' || c == '>' {
			return reportError("%s %q has a character outside visible ASCII or a bracket", what, clip([]byte(v)))
		}
	}
	at := strings.LastIndexByte(in, '@')
	if at <= 0 || at == len(in)-1 {
		return reportError("%s %q has no @ between two parts", what, clip([]byte(v)))
	}
	return nil
}

// hostName checks a DNS name or an address literal ("[192.0.2.1]").
func hostName(what, v string) (string, error) {
	if v == "" {
		return "", reportError("%s missing", what)
	}
	if len(v) > maxHostChars {
		return "", reportError("%s longer than %d characters", what, maxHostChars)
	}
	literal := v[0] == '[' && v[len(v)-1] == ']'
	for i := 0; i < len(v); i++ {
		c := v[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' ||
			literal && (c == ':' || c == '[' && i == 0 || c == ']' && i == len(v)-1)
		if !ok {
			return "", reportError("%s %q is not a host name", what, clip([]byte(v)))
		}
	}
	return v, nil
}

func checkNumber(n string) error {
	switch {
	case n == "":
		return reportError("prescription number missing")
	case len(n) > maxNumberChars || !validNumber(n):
		return reportError("prescription number %q is not 1 to %d characters of [A-Za-z0-9._-]", clip([]byte(n)), maxNumberChars)
	}
	return nil
}

// checkTime refuses a missing required time and years a RFC 5322 date
// cannot carry as written (4 digits, 1900 or later, §3.3).
func checkTime(what string, t time.Time, required bool) error {
	if t.IsZero() {
		if required {
			return reportError("%s missing", what)
		}
		return nil
	}
	if y := t.Year(); y < 1900 || y > 9999 {
		return reportError("%s has year %d, outside 1900-9999", what, y)
	}
	return nil
}

// checkStatus checks an action and its RFC 3463 status code: class.subject.detail,
// subject and detail of 1 to 3 digits; failed takes a permanent (5) code,
// delayed a transient (4) one (RFC 3464 §2.3.4).
func checkStatus(what, action, status string) error {
	var class byte
	switch action {
	case StatusFailed:
		class = '5'
	case StatusDelayed:
		class = '4'
	default:
		return reportError("%s: Action %q is not %q or %q", what, clip([]byte(action)), StatusFailed, StatusDelayed)
	}
	if !validStatusCode(status) {
		return reportError("%s: Status %q is not an RFC 3463 code", what, clip([]byte(status)))
	}
	if status[0] != class {
		return reportError("%s: Status %s does not match Action %s (want %c.x.x)", what, status, action, class)
	}
	return nil
}

func validStatusCode(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.ContainsAny(parts[0], "245") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 || !allDigits(p) {
			return false
		}
	}
	return true
}

// sanitizeDiagnostic makes a remote server's text safe for one header
// line: control characters become spaces, non-ASCII becomes '?', runs of
// spaces collapse, and the result is cut at maxDiagnosticChars. A value
// without a diagnostic-type gets "smtp; " (RFC 3464 §2.3.6).
func sanitizeDiagnostic(s string) string {
	var b strings.Builder
	space := false
	for i := 0; i < len(s) && b.Len() < maxDiagnosticChars; i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f || c == ' ':
			space = b.Len() > 0
			continue
		case c >= 0x80:
			c = '?'
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteByte(c)
	}
	out := b.String()
	if out == "" {
		return ""
	}
	if typ, _, ok := strings.Cut(out, ";"); !ok || !isAtom(strings.TrimSpace(typ)) {
		out = "smtp; " + out
	}
	if len(out) > maxDiagnosticChars {
		out = strings.TrimRight(out[:maxDiagnosticChars], " ")
	}
	return out
}

func isAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// ParseReport reads a notification entity as the builders produce it
// (untrusted input: it may come from another relay). It refuses input over
// 1 MiB, header blocks over 16 KiB or 64 fields, more than 8 parts, and
// more than 100 recipient blocks; it returns *Error.
//
// It checks the structure, not the sender: the caller verifies the
// signature and that the entity is the signed one.
func ParseReport(entity []byte) (*Report, error) {
	if len(entity) > maxReportBytes {
		return nil, errorf(KindTooLarge, "report is %d bytes, the limit is %d", len(entity), maxReportBytes)
	}
	if err := Scan(entity, Limits{MaxMessageBytes: maxReportBytes, MaxHeaderBytes: maxReportHeader,
		MaxHeaders: maxReportFields, MaxDepth: 4, MaxParts: 2 * maxReportParts}); err != nil {
		return nil, wrapDetail(err, "report: ")
	}
	h, err := parseHeader(entity, 0, maxReportHeader, maxReportFields)
	if err != nil {
		return nil, wrapDetail(err, "report: ")
	}
	r := &Report{Fields: map[string]string{}}
	if r.Number, err = requiredSingle(&h, "X-Ordonnance-Number"); err != nil {
		return nil, err
	}
	if err := checkNumber(r.Number); err != nil {
		return nil, reportError("report: %s", strings.TrimPrefix(err.Error(), "mime: "))
	}
	if r.Status, err = requiredSingle(&h, "X-Ordonnance-Status"); err != nil {
		return nil, err
	}
	ct, cte, err := parseContentType(&h)
	if err != nil {
		return nil, wrapDetail(err, "report: ")
	}
	body := entity[h.end:]

	if ct.media == "text/plain" {
		// The execution notice.
		if r.Status != StatusExecuted {
			return nil, reportError("report: text/plain notice with X-Ordonnance-Status %q, want %q", clip([]byte(r.Status)), StatusExecuted)
		}
		for _, f := range [...]struct{ name, key string }{
			{"X-Ordonnance-Executed-By", "executed-by"},
			{"X-Ordonnance-Executed-At", "executed-at"},
		} {
			v, err := requiredSingle(&h, f.name)
			if err != nil {
				return nil, err
			}
			r.Fields[f.key] = v
		}
		if _, err := Address(r.Fields["executed-by"]); err != nil {
			return nil, reportError("report: X-Ordonnance-Executed-By: %s", strings.TrimPrefix(err.Error(), "mime: "))
		}
		if _, err := time.Parse(time.RFC3339, r.Fields["executed-at"]); err != nil {
			return nil, reportError("report: X-Ordonnance-Executed-At %q is not RFC 3339", clip([]byte(r.Fields["executed-at"])))
		}
		if r.HumanText, err = humanText(ct, cte, body); err != nil {
			return nil, err
		}
		return r, nil
	}

	if ct.media != "multipart/report" {
		return nil, reportError("report: Content-Type %s, want multipart/report or text/plain", clip([]byte(ct.media)))
	}
	r.Type = strings.ToLower(ct.params["report-type"])
	var statusMedia string
	switch r.Type {
	case ReportDeliveryStatus:
		statusMedia = "message/delivery-status"
		if r.Status != StatusFailed && r.Status != StatusDelayed {
			return nil, reportError("report: delivery-status report with X-Ordonnance-Status %q", clip([]byte(r.Status)))
		}
	case ReportDisposition:
		statusMedia = "message/disposition-notification"
		if r.Status != StatusProcessed {
			return nil, reportError("report: disposition-notification report with X-Ordonnance-Status %q", clip([]byte(r.Status)))
		}
	default:
		return nil, reportError("report: report-type %q is not %s or %s", clip([]byte(r.Type)), ReportDeliveryStatus, ReportDisposition)
	}
	boundary, err := checkBoundary(ct)
	if err != nil {
		return nil, wrapDetail(err, "report: ")
	}
	spans, err := splitParts(body, boundary, maxReportParts+1)
	if err != nil {
		return nil, wrapDetail(err, "report: ")
	}
	// RFC 6522 §3: the human-readable part, the machine-readable part,
	// and optionally the original message or its header.
	if len(spans) < 2 || len(spans) > 3 {
		return nil, reportError("report: multipart/report has %d parts, want 2 or 3", len(spans))
	}
	var parts [2]struct {
		ct   contentType
		cte  string
		body []byte
	}
	for i := range parts {
		p := body[spans[i][0]:spans[i][1]]
		ph, err := parseHeader(p, 0, maxReportHeader, maxReportFields)
		if err != nil {
			return nil, wrapDetail(err, fmt.Sprintf("report part %d: ", i+1))
		}
		if parts[i].ct, parts[i].cte, err = parseContentType(&ph); err != nil {
			return nil, wrapDetail(err, fmt.Sprintf("report part %d: ", i+1))
		}
		parts[i].body = p[ph.end:]
	}
	if parts[0].ct.media != "text/plain" {
		return nil, reportError("report: first part is %s, want text/plain", clip([]byte(parts[0].ct.media)))
	}
	if r.HumanText, err = humanText(parts[0].ct, parts[0].cte, parts[0].body); err != nil {
		return nil, err
	}
	if parts[1].ct.media != statusMedia {
		return nil, reportError("report: second part is %s, want %s", clip([]byte(parts[1].ct.media)), statusMedia)
	}
	data, err := decodeBody(parts[1].cte, parts[1].body, maxStatusGroupBytes)
	if err != nil {
		return nil, reportError("report: %s part: %v", statusMedia, err)
	}
	groups, err := statusGroups(data)
	if err != nil {
		return nil, err
	}
	if len(groups) == 0 {
		return nil, reportError("report: %s part is empty", statusMedia)
	}
	r.Fields = groups[0]
	if r.Type == ReportDisposition {
		if len(groups) != 1 {
			return nil, reportError("report: disposition notification has %d field groups, want 1", len(groups))
		}
		if err := requireFields(r.Fields, "disposition notification", "final-recipient", "disposition"); err != nil {
			return nil, err
		}
		return r, nil
	}
	r.Recipients = groups[1:]
	if len(r.Recipients) == 0 {
		return nil, reportError("report: delivery status has no recipient block")
	}
	if err := requireFields(r.Fields, "delivery status", "reporting-mta"); err != nil {
		return nil, err
	}
	for i, rc := range r.Recipients {
		if err := requireFields(rc, fmt.Sprintf("delivery status recipient %d", i+1), "final-recipient", "action", "status"); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// requiredSingle returns the value of a field that must appear exactly once.
func requiredSingle(h *headerBlock, name string) (string, error) {
	v, n := h.get(name)
	switch {
	case n == 0:
		return "", reportError("report: no %s field", name)
	case n > 1:
		return "", reportError("report: more than one %s field", name)
	}
	return v, nil
}

func requireFields(m map[string]string, what string, names ...string) error {
	for _, n := range names {
		if m[n] == "" {
			return reportError("report: %s lacks %s", what, n)
		}
	}
	return nil
}

// humanText decodes a text/plain part: transfer encoding removed, line
// ends as LF, invalid UTF-8 replaced (the builders write UTF-8 only).
func humanText(ct contentType, cte string, body []byte) (string, error) {
	if cs := strings.ToLower(ct.params["charset"]); cs != "" && cs != "utf-8" && cs != "us-ascii" {
		return "", reportError("report: human-readable part in charset %q, want utf-8", clip([]byte(cs)))
	}
	data, err := decodeBody(cte, body, maxHumanTextBytes)
	if err != nil {
		return "", reportError("report: human-readable part: %v", err)
	}
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	return strings.ToValidUTF8(s, "\uFFFD"), nil
}

// statusGroups reads the body of message/delivery-status or
// message/disposition-notification: groups of header fields separated by
// empty lines (RFC 3464 §2.1, RFC 8098 §3.1). Names are lower-cased; a
// field repeated within a group is refused (readers would disagree on
// which value counts).
func statusGroups(data []byte) ([]map[string]string, error) {
	var groups []map[string]string
	pos := 0
	for pos < len(data) {
		line, next := nextLine(data, pos)
		if len(bytes.Trim(line, " \t")) == 0 {
			pos = next
			continue
		}
		if len(groups) > maxDSNRecipients {
			return nil, errorf(KindLimit, "report: more than %d recipient blocks", maxDSNRecipients)
		}
		h, err := parseHeader(data, pos, maxReportHeader, maxReportFields)
		if err != nil {
			return nil, wrapDetail(err, "report: status fields: ")
		}
		g := make(map[string]string, len(h.fields))
		for _, f := range h.fields {
			name := strings.ToLower(string(f.name))
			if _, dup := g[name]; dup {
				return nil, reportError("report: field %s repeated in one group", clip([]byte(name)))
			}
			g[name] = unfold(f.value)
		}
		groups = append(groups, g)
		if h.end <= pos {
			break // cannot happen: a non-empty line was consumed
		}
		pos = h.end
	}
	return groups, nil
}

// headerValues returns the unfolded values of every field called name in
// a raw header block, skipping lines that are not fields: it never fails
// on hostile input. The block ends at its first empty line.
func headerValues(header []byte, name string, max int) []string {
	var (
		vals []string
		cur  []byte
		in   bool
	)
	end := func() {
		if in {
			vals = append(vals, unfold(cur))
			cur, in = nil, false
		}
	}
	for pos := 0; pos < len(header) && len(vals) < max; {
		line, next := nextLine(header, pos)
		pos = next
		if len(line) == 0 {
			break
		}
		if isWSP(line[0]) {
			if in {
				cur = append(cur, line...)
			}
			continue
		}
		end()
		colon := bytes.IndexByte(line, ':')
		if colon > 0 && strings.EqualFold(string(bytes.TrimRight(line[:colon], " \t")), name) {
			in = true
			cur = append(cur[:0], line[colon+1:]...)
		}
	}
	end()
	return vals
}

// IsAutomatic reports whether a message must never be answered with an
// MDN or a DSN: it is itself a report (multipart/report of any
// report-type, message/delivery-status, message/disposition-notification
// or their RFC 6533 global forms: RFC 3464 §1 and RFC 8098 §2.1 forbid
// answering a report), or it carries Auto-Submitted with a value other
// than "no" (RFC 3834 §2, §5.1). Every Content-Type and Auto-Submitted
// field counts, not only the first.
//
// A signed report's outer Content-Type is multipart/signed: call it on
// the outer header and on the signed entity.
func IsAutomatic(header []byte) bool {
	for _, v := range headerValues(header, "Content-Type", maxReportFields) {
		mt, _, err := parseMediaTypeLoose(v)
		if err != nil {
			mt, _, _ = strings.Cut(strings.ToLower(v), ";")
			mt = strings.TrimSpace(mt)
		}
		switch mt {
		case "multipart/report", "message/delivery-status", "message/disposition-notification",
			"message/global-delivery-status", "message/global-disposition-notification":
			return true
		}
	}
	for _, v := range headerValues(header, "Auto-Submitted", maxReportFields) {
		// auto-submitted-field = "Auto-Submitted:" [CFWS] auto-submitted
		// *(";" parameter) [CFWS]; comments are dropped before comparing.
		kw, _, _ := strings.Cut(stripComments(v), ";")
		if !strings.EqualFold(strings.TrimSpace(kw), "no") {
			return true
		}
	}
	return false
}

// stripComments removes RFC 5322 comments "(…)", nested or not.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// DispositionNotificationTo returns the single address of
// Disposition-Notification-To (RFC 8098 §2.1), domain lower-cased, or
// ok=false when the field is absent, repeated, invalid, a group, or names
// more than one address. RFC 8098 §2.1 also asks the caller to compare
// it with the Return-Path before answering automatically.
func DispositionNotificationTo(header []byte) (addr string, ok bool) {
	vals := headerValues(header, "Disposition-Notification-To", 2)
	if len(vals) != 1 || hasTopLevelColon(vals[0]) {
		return "", false
	}
	list, err := mail.ParseAddressList(vals[0])
	if err != nil || len(list) != 1 {
		return "", false
	}
	a := list[0].Address
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 || len(a) > maxAddressChars || strings.ContainsAny(a, "\r\n\x00") {
		return "", false
	}
	return a[:at] + "@" + strings.ToLower(a[at+1:]), true
}

// QualifiedIdentity reads X-MSS-INS: the signed entity's value wins when
// present (the prescriber vouches for it), else the outer header's. The
// identity is qualified only when the value is "O" (case-insensitive,
// trimmed). value is what was found, "" when absent. A header that
// carries the field twice is not qualified: readers would disagree on
// which one counts.
func QualifiedIdentity(outer, signed []byte) (qualified bool, value string) {
	vals := headerValues(signed, "X-MSS-INS", 2)
	if len(vals) == 0 {
		vals = headerValues(outer, "X-MSS-INS", 2)
	}
	switch len(vals) {
	case 0:
		return false, ""
	case 1:
		return strings.EqualFold(vals[0], "O"), vals[0]
	default:
		return false, vals[0]
	}
}

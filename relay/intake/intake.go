// Package intake is the path every received prescription takes, in order:
// scan (limits) → split (S/MIME) → verify (signature, chain, signer) →
// extract (the prescription) → policy (sender = signer = registered
// prescriber) → file (one durable transaction). Each step refuses with a
// *Refusal; nothing is filed unless every step passed.
package intake

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay/claim"
	"mssrelay/relay/metrics"
	"mssrelay/signing"
	"mssrelay/store"
)

// Intake holds what the path needs. It is safe for concurrent use.
type Intake struct {
	Store    *store.Store
	Trust    *signing.Trust
	Limits   mime.Limits
	Hostname string
	Log      *slog.Logger
	// Meta computes the IMAP cache (ENVELOPE, BODYSTRUCTURE) once at filing.
	Meta func(raw []byte) []byte
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Audit records resends and refusals (nil: not audited); acceptances
	// are committed with the filing itself.
	Audit func(store.AuditEvent)
	// Metrics records verification time (nil: none).
	Metrics *metrics.Metrics
	// Claims answers messages to the claim address instead of this path
	// (nil: no claim address; executants cannot submit at all).
	Claims *claim.Service

	// forwarding is the patient forwarding policy (forward.go); swapped
	// whole on reload.
	forwarding atomic.Pointer[Forwarding]
}

// Envelope is what the SMTP session knows about a transaction.
type Envelope struct {
	// Account is the authenticated sender on submission; nil for mail
	// from another operator (Peer set), whose sender is MailFrom.
	Account    *configs.Account
	MailFrom   string
	Recipients []*configs.Account
	// Patients are patients' secure addresses (<INS>@patient domain) the
	// prescriber wrote to directly: each asks for forwarding (forward.go).
	Patients []string
	// Remotes are addresses at other operators (whitelisted domains) a
	// local prescriber wrote to: relayed through the outbound queue.
	Remotes []string
	// Peer is the whitelisted operator domain (from its client
	// certificate) that delivered this message on smtp.relay; "" on
	// submission.
	Peer       string
	RemoteAddr string
	Helo       string
	TLS        string // e.g. "TLS1.3 TLS_AES_128_GCM_SHA256"
	SessionID  string
}

// Result is a filed (or recognised duplicate) prescription.
type Result struct {
	Filed  *store.Filed
	Signer *signing.Signer
	Rx     *mime.Prescription
}

// Sender is the address the message is filed under: the authenticated
// account on submission, the envelope sender from another operator.
func (env *Envelope) Sender() string {
	if env.Account != nil {
		return env.Account.Address
	}
	return env.MailFrom
}

func (in *Intake) now() time.Time {
	if in.Now != nil {
		return in.Now()
	}
	return time.Now()
}

// Accept runs the whole path on raw (the DATA as received) and files it.
// A non-nil error is always a *Refusal. Every outcome is audited: an
// acceptance in the filing's own transaction (so a 250 always has its
// record), a resend or a refusal through the Audit hook.
func (in *Intake) Accept(ctx context.Context, env *Envelope, raw []byte) (*Result, error) {
	var number string
	res, err := in.accept(ctx, env, raw, &number)
	subject := fmt.Sprintf("rx=%s size=%d", orDash(number), len(raw))
	if err != nil {
		ref, _ := err.(*Refusal)
		in.audit(store.AuditEvent{Kind: store.AuditSMTPRefuse, Actor: env.Sender(), Remote: env.RemoteAddr,
			Subject: subject, Outcome: ref.outcome(), Detail: ref.Message})
		return nil, err
	}
	if res.Filed.Duplicate {
		in.audit(store.AuditEvent{Kind: store.AuditSMTPDuplicate, Actor: env.Sender(), Remote: env.RemoteAddr,
			Subject: fmt.Sprintf("%s record=%d", subject, res.Filed.ID), Outcome: "250"})
	}
	return res, nil
}

func (in *Intake) audit(ev store.AuditEvent) {
	if in.Audit != nil {
		in.Audit(ev)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// accept is Accept without the auditing of resends and refusals; it sets
// *number as soon as the prescription number is known.
func (in *Intake) accept(ctx context.Context, env *Envelope, raw []byte, number *string) (*Result, error) {
	if err := mime.Scan(raw, in.Limits); err != nil {
		return nil, fromMIME(err)
	}
	signed, err := mime.Split(raw)
	if err != nil {
		return nil, fromMIME(err)
	}

	from, err := fromAddress(signed.Header)
	if err != nil {
		return nil, err
	}
	// RFC 6409 §8.1 lets a submission server check the sender; for a
	// prescription the author is legally bound to it, so From: must be the
	// authenticated account itself. From another operator, From: must be
	// the envelope sender that operator vouches for.
	if !SameAddress(from, env.Sender()) {
		return nil, refuse(550, [3]int{5, 7, 1}, "from_mismatch",
			"From: address must be your authenticated account address (from another operator: the envelope sender)", nil)
	}
	rpps := ""
	if env.Account != nil {
		rpps = env.Account.RPPS
	}

	verifyStart := time.Now() // metrics: the real clock, not in.now()
	res, err := in.Trust.Verify(signing.Request{
		PKCS7:   signed.PKCS7,
		Content: signed.Content,
		From:    from,
		RPPS:    rpps,
		Now:     in.now(),
	})
	in.Metrics.ObserveVerify(time.Since(verifyStart))
	if err != nil {
		return nil, fromSigning(err)
	}

	// The configured limits, not the defaults: for an opaque signature the
	// signed entity was inside the PKCS#7 and Scan above never saw it.
	rx, err := mime.ExtractPrescriptionWith(res.Content, in.Limits)
	if err != nil {
		return nil, fromMIME(err)
	}
	*number = rx.Number
	if env.Account == nil && res.Signer.IDNPS == "" {
		// No account vouches for a remote sender: the signer's
		// certificate must name a health professional.
		return nil, refuse(554, [3]int{5, 7, 1}, "rx_signer_not_professional",
			"The signing certificate names no health professional (IDNPS)", nil)
	}
	if r := checkPrescriber(rx, res.Signer, env.Account); r != nil {
		return nil, r
	}

	received := in.now()
	stored := append(in.traceHeaders(env, received), raw...)
	recipients := make([]string, 0, len(env.Recipients))
	for _, a := range env.Recipients {
		recipients = append(recipients, a.Address)
	}
	messageID, _ := mime.HeaderField(signed.Header, "Message-Id")
	jobs, events := in.plan(env, signed.Header, res.Content, rx)
	f := &store.Filing{
		Raw:        stored,
		Received:   received,
		Sender:     env.Sender(),
		Recipients: recipients,
		Number:     rx.Number,
		Digest:     sha256.Sum256(res.Content),
		MessageID:  strings.TrimSpace(messageID),
		Signer:     from,
		IDNPS:      res.Signer.IDNPS,
		PatientINS: rx.PatientINS,
		Delivery:   rx.Delivery,
		Opposition: rx.Opposition,
		Jobs:       jobs,
		Events:     events,
		// The acceptance commits with the filing; the store prefixes the
		// subject with the record id it assigns.
		Audit: []store.AuditEvent{{Kind: store.AuditSMTPAccept, Actor: env.Sender(), Remote: env.RemoteAddr,
			Subject: fmt.Sprintf("rx=%s size=%d to=%s jobs=%d", rx.Number, len(raw), strings.Join(recipients, ","), len(jobs)), Outcome: "250"}},
	}
	if in.Meta != nil {
		f.Meta = in.Meta(stored)
	}
	filed, err := in.Store.File(ctx, f)
	if err != nil {
		return nil, fromStore(err)
	}
	return &Result{Filed: filed, Signer: res.Signer, Rx: rx}, nil
}

// fromAddress reads the single From: mailbox of the outer header.
func fromAddress(header []byte) (string, error) {
	v, ok := mime.HeaderField(header, "From")
	if !ok || strings.TrimSpace(v) == "" {
		return "", refuse(554, [3]int{5, 6, 0}, "no_from", "Message has no From: header", nil)
	}
	addr, err := mime.Address(v)
	if err != nil {
		return "", refuse(554, [3]int{5, 6, 0}, "bad_from", "From: must hold exactly one valid address", err)
	}
	return addr, nil
}

// checkPrescriber binds the prescription to its signer and to the account:
// the IDNPS written in the prescription must be the one in the signer's
// certificate and the one registered for the account.
func checkPrescriber(rx *mime.Prescription, s *signing.Signer, acct *configs.Account) *Refusal {
	if s.IDNPS != "" && rx.IDNPS != s.IDNPS {
		return refuse(554, [3]int{5, 7, 1}, "rx_signer_mismatch",
			"The prescriber identifier (IDNPS) in the prescription is not the signer's", nil)
	}
	if acct != nil && acct.RPPS != "" && rx.IDNPS != "8"+acct.RPPS {
		return refuse(554, [3]int{5, 7, 1}, "rx_account_mismatch",
			"The prescriber identifier (IDNPS) in the prescription is not the one registered for your account", nil)
	}
	return nil
}

// traceHeaders builds the Return-Path and Received fields prepended to the
// message (RFC 5321 §4.4). They go above the signed part and never into it.
func (in *Intake) traceHeaders(env *Envelope, now time.Time) []byte {
	// RFC 3848: ESMTPSA = ESMTP with STARTTLS/TLS and AUTH; ESMTPS
	// without AUTH (another operator, authenticated by its certificate).
	with, peer := "ESMTPSA", ""
	if env.Account == nil {
		with, peer = "ESMTPS", " operator "+sanitize(env.Peer)
	}
	return fmt.Appendf(nil, "Return-Path: <%s>\r\nReceived: from %s (%s%s)\r\n\tby %s (mssrelay) with %s id %s\r\n\t(%s);\r\n\t%s\r\n",
		env.MailFrom, sanitize(env.Helo), sanitize(env.RemoteAddr), peer, in.Hostname, with, env.SessionID,
		sanitize(env.TLS), now.UTC().Format(time.RFC1123Z))
}

// sanitize keeps client-supplied text from breaking the header syntax.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e || r == '(' || r == ')' || r == '\\' {
			if r == ' ' {
				return ' '
			}
			return '_'
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// SameAddress compares addresses with an exact local part and a
// case-insensitive domain (RFC 5321 §2.4).
func SameAddress(a, b string) bool {
	la, da, okA := strings.Cut(a, "@")
	lb, db, okB := strings.Cut(b, "@")
	return okA && okB && la == lb && strings.EqualFold(da, db)
}

// Package claim lets an executant retrieve a prescription it was not sent.
//
// A prescriber rarely knows which pharmacy or laboratory the patient will
// walk into; the patient's copy carries the prescription number (as a QR
// code) and the patient's health card the INS. An authenticated executant
// account sends a short message to the claim address (server.claim_address)
// whose Subject reads "CLAIM <number> <INS>"; when the number exists, the
// INS matches, the prescription is not restricted to other executants and
// not executed beyond the allowance, the relay files the original signed
// message, byte for byte, into the executant's INBOX: a new mailbox entry
// pointing at the same legal record (store.Deliver). The claim itself is
// answered and never stored as mail. docs/claim.md is the vendors' guide.
//
// Every claim, accepted or refused, is audited (store.AuditSMTPClaim),
// with the number but never the INS. An unknown number and a wrong INS get
// the same reply, so that numbers cannot be probed; claims are limited per
// account and failures answered later and later (limit.go).
package claim

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"mssrelay/configs"
	"mssrelay/store"
)

// KeywordDispensed is the IMAP keyword an executant sets on its copy of a
// prescription it executed (docs/imap.md); claims count it.
const KeywordDispensed = "$Dispensed"

// Config is the claim policy (configs: server.claim_address and [claim]).
type Config struct {
	Address           string        // the claim address
	MaxPerHour        int           // claims per account in any hour
	FailureDelay      time.Duration // first delay after a failure, doubling up to 32×
	ExecutionsAllowed int           // a claim is refused once this many accounts marked it $Dispensed
}

// ConfigFrom maps the configuration.
func ConfigFrom(c *configs.Config) Config {
	return Config{
		Address:           c.Server.ClaimAddress,
		MaxPerHour:        c.Claim.MaxPerHour,
		FailureDelay:      c.Claim.FailureDelay.Duration,
		ExecutionsAllowed: c.Claim.ExecutionsAllowed,
	}
}

// Options build a Service.
type Options struct {
	Config
	Store *store.Store
	Log   *slog.Logger
	// Audit records refused claims and repeated ones (nil: not audited);
	// a claim that files an entry commits its audit record with it.
	Audit func(store.AuditEvent)
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Sleep holds a reply back (time.Sleep when nil; tests record).
	Sleep func(time.Duration)
}

// Service handles claims. Safe for concurrent use.
type Service struct {
	cfg   Config
	store *store.Store
	log   *slog.Logger
	audit func(store.AuditEvent)
	sleep func(time.Duration)
	lim   *limiter
}

// New returns a claim service. A zero MaxPerHour or ExecutionsAllowed
// takes the configuration's default.
func New(o Options) *Service {
	now, sleep, log := o.Now, o.Sleep, o.Log
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = time.Sleep
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := o.Config
	if cfg.MaxPerHour <= 0 {
		cfg.MaxPerHour = configs.DefaultClaimMaxPerHour
	}
	if cfg.ExecutionsAllowed <= 0 {
		cfg.ExecutionsAllowed = configs.DefaultClaimExecutionsAllowed
	}
	return &Service{cfg: cfg, store: o.Store, log: log, audit: o.Audit, sleep: sleep,
		lim: newLimiter(cfg.MaxPerHour, cfg.FailureDelay, now)}
}

// Address is the claim address.
func (s *Service) Address() string { return s.cfg.Address }

// IsClaimAddress reports whether a recipient is the claim address (local
// part exact, domain without regard to case, RFC 5321 §2.4).
func (s *Service) IsClaimAddress(addr string) bool {
	return s.cfg.Address != "" && sameAddress(addr, s.cfg.Address)
}

// Request is one claim message as the SMTP session received it.
type Request struct {
	Account *configs.Account // authenticated sender
	Remote  string           // client ip:port
	Raw     []byte           // the message (DATA)
}

// Reply is the answer to a claim: an SMTP reply, with what the audit
// trail and the logs need.
type Reply struct {
	Code     int    // 250, 4xx, 5xx
	Enhanced [3]int // RFC 3463
	Message  string // shown to the client
	Reason   string // label: ok, existing, no_match, syntax, …
	// Delay is how long the SMTP session holds the reply back (a failure
	// of a guesser); Hold does it.
	Delay     time.Duration
	Number    string           // prescription number, when it could be read
	RecordID  uint64           // the record claimed, when it matched
	Delivered *store.Delivered // on success: the new INBOX entry, or the existing entry (any mailbox)
}

// OK reports whether the claim succeeded.
func (r *Reply) OK() bool { return r.Code == 250 }

// Outcome is the reply as the audit trail records it: "250", or code,
// enhanced code and reason label ("550 5.7.1 no_match").
func (r *Reply) Outcome() string {
	if r.OK() {
		return "250"
	}
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Reason)
}

// Every reply a claim can get (docs/claim.md lists them; a test keeps the
// two in step). RFC 3463: X.7.1 delivery not authorized, X.6.0 other media
// error, X.2.2 mailbox full, X.3.0 mail system, X.3.4 message too big.
var (
	replyRole       = Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Reason: "role", Message: "Only executant accounts may claim prescriptions"}
	replyRate       = Reply{Code: 451, Enhanced: [3]int{4, 7, 1}, Reason: "rate_limited", Message: "Too many claims from your account in the last hour, try again later"}
	replyTooLarge   = Reply{Code: 552, Enhanced: [3]int{5, 3, 4}, Reason: "too_large", Message: fmt.Sprintf("A claim is a short message of at most %d bytes", MaxMessageBytes)}
	replySyntax     = Reply{Code: 554, Enhanced: [3]int{5, 6, 0}, Reason: "syntax", Message: "Claim not understood, write \"CLAIM <prescription number> <INS>\" as the Subject"}
	replyNoMatch    = Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Reason: "no_match", Message: "No prescription matches this number and INS"}
	replyRestricted = Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Reason: "restricted", Message: "This prescription is reserved by its prescriber for other executants"}
	replyExecuted   = Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Reason: "executed", Message: "This prescription has already been executed"}
	replyFull       = Reply{Code: 452, Enhanced: [3]int{4, 2, 2}, Reason: "over_quota", Message: "Your mailbox is full: make room, then claim again"}
	replyTemp       = Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Reason: "store_error", Message: "Temporary failure, try again later"}
	replyOK         = Reply{Code: 250, Enhanced: [3]int{2, 0, 0}, Reason: "ok"}
	replyExisting   = Reply{Code: 250, Enhanced: [3]int{2, 0, 0}, Reason: "existing"}
)

// Replies lists every reply template, for the documentation test.
func Replies() []Reply {
	return []Reply{replyRole, replyRate, replyTooLarge, replySyntax, replyNoMatch, replyRestricted,
		replyExecuted, replyFull, replyTemp, replyOK, replyExisting}
}

// CheckSender is the check at RCPT TO: only an executant account may
// claim. It returns nil for an executant; otherwise the refusal, audited.
func (s *Service) CheckSender(acct *configs.Account, remote string) *Reply {
	if acct != nil && acct.Role == configs.RoleExecutant {
		return nil
	}
	return s.refuse(request(acct, remote), replyRole, "-", 0, "role "+roleOf(acct))
}

// TooLarge answers, and audits, a claim message over MaxMessageBytes (the
// session stops reading it there).
func (s *Service) TooLarge(acct *configs.Account, remote string) *Reply {
	return s.refuse(request(acct, remote), replyTooLarge, "-", 0, "")
}

func request(acct *configs.Account, remote string) Request {
	return Request{Account: acct, Remote: remote}
}

func roleOf(acct *configs.Account) string {
	if acct == nil {
		return "none"
	}
	return string(acct.Role)
}

// Hold waits r.Delay: the SMTP session calls it before sending a refusal,
// outside its in-flight accounting so that a shutdown does not wait for it.
func (s *Service) Hold(r *Reply) {
	if r.Delay > 0 {
		s.sleep(r.Delay)
	}
}

// Claim runs one claim to its reply. The checks, in order (the first that
// fails is the reply):
//
//  1. the account is an executant (also checked at RCPT TO);
//  2. the account is under its hourly limit;
//  3. the message holds a well-formed claim line (ParseMessage);
//  4. a prescription is filed under the number and its INS is the one
//     given (compared in constant time); an unknown number and a wrong
//     INS get the same reply;
//  5. when the account already holds it in any of its mailboxes (an
//     earlier claim, or it was addressed to the account; kept in INBOX or
//     moved since to Archive or elsewhere): 250 with that entry, nothing
//     filed; checked again by store.Deliver in its write transaction;
//  6. the prescription is not restricted to other executants
//     (RestrictField; its recipients are never restricted);
//  7. fewer than ExecutionsAllowed accounts marked their copy $Dispensed;
//  8. the entry is filed (store.Deliver) with its audit record.
//
// Failures of 3 and 4 count for the growing delay (Reply.Delay).
func (s *Service) Claim(ctx context.Context, req Request) *Reply {
	acct := req.Account
	if acct == nil || acct.Role != configs.RoleExecutant {
		return s.refuse(req, replyRole, "-", 0, "role "+roleOf(acct))
	}
	if ok, retry := s.lim.allow(acct.Address); !ok {
		return s.refuse(req, replyRate, "-", 0, fmt.Sprintf("%d claims in the last hour; next possible in %s", s.cfg.MaxPerHour, retry.Round(time.Second)))
	}
	if len(req.Raw) > MaxMessageBytes {
		return s.refuse(req, replyTooLarge, "-", 0, "")
	}
	number, ins, err := ParseMessage(req.Raw)
	if err != nil {
		r := replySyntax
		r.Message = "Claim not understood: " + strings.TrimPrefix(err.Error(), ErrSyntax.Error()+": ") +
			"; write \"CLAIM <prescription number> <INS>\" as the Subject"
		r.Delay = s.lim.fail(acct.Address)
		return s.refuse(req, r, "-", 0, "")
	}
	rec, err := s.store.RecordByNumber(number)
	if errors.Is(err, store.ErrNotFound) {
		return s.noMatch(req, number, "unknown number")
	}
	if err != nil {
		return s.temporary(req, number, 0, err)
	}
	// crypto/subtle: the time taken does not depend on where the INS
	// given differs from the one filed.
	if subtle.ConstantTimeCompare([]byte(ins), []byte(strings.ToUpper(rec.PatientINS))) != 1 {
		return s.noMatch(req, number, "INS mismatch")
	}

	entries, err := s.store.RecordEntries(rec.ID)
	if err != nil {
		return s.temporary(req, number, rec.ID, err)
	}
	// Already yours, in any folder: read in the same transaction as the
	// executions counted below. store.Deliver checks again, atomically
	// with the filing, for a claim or a MOVE racing this one.
	if d := held(entries, acct.Address); d != nil {
		s.lim.succeed(acct.Address)
		return s.existing(req, number, rec.ID, d)
	}

	if !isRecipient(rec, acct.Address) {
		raw, err := s.store.Bytes(rec.ID)
		if err != nil {
			return s.temporary(req, number, rec.ID, err)
		}
		content, err := signedContent(raw)
		if err != nil {
			return s.temporary(req, number, rec.ID, err)
		}
		if rs := readRestriction(content); !rs.allows(acct.Address) {
			if rs.bad != "" {
				s.log.Warn("claim: unreadable restriction, nobody may claim", "record", rec.ID, "detail", rs.bad)
			}
			s.lim.succeed(acct.Address) // number and INS were right: not a guesser
			return s.refuse(req, replyRestricted, number, rec.ID, rs.bad)
		}
	}

	if n := executions(entries); n >= s.cfg.ExecutionsAllowed {
		s.lim.succeed(acct.Address)
		return s.refuse(req, replyExecuted, number, rec.ID, fmt.Sprintf("%d execution(s), %d allowed", n, s.cfg.ExecutionsAllowed))
	}

	ev := store.AuditEvent{Kind: store.AuditSMTPClaim, Actor: acct.Address, Remote: req.Remote,
		Subject: "rx=" + number, Outcome: "250", Detail: "filed in INBOX"}
	d, existing, err := s.store.Deliver(ctx, rec.ID, acct.Address, []store.AuditEvent{ev})
	switch {
	case errors.Is(err, store.ErrOverQuota):
		return s.refuse(req, replyFull, number, rec.ID, err.Error())
	case err != nil:
		return s.temporary(req, number, rec.ID, err)
	}
	s.lim.succeed(acct.Address)
	if existing {
		// Another session of the account claimed it in between (the
		// write transaction checked all its mailboxes again).
		return s.existing(req, number, rec.ID, d)
	}
	r := replyOK
	r.Message = fmt.Sprintf("Prescription %s filed in your INBOX (UID %d)", number, d.UID)
	r.Number, r.RecordID, r.Delivered = number, rec.ID, d
	s.log.Info("claim filed", "account", acct.Address, "record", rec.ID, "uid", d.UID)
	return &r
}

// isRecipient reports whether the prescription was addressed to account.
func isRecipient(rec *store.Record, account string) bool {
	for _, r := range rec.Recipients {
		if sameAddress(r, account) {
			return true
		}
	}
	return false
}

// held returns the entry of account among a record's entries, in any of
// its mailboxes: INBOX first, else the first other (entries come sorted
// by account, mailbox and UID). nil when the account holds none.
func held(entries []store.RecordEntry, account string) *store.Delivered {
	var found *store.RecordEntry
	for i := range entries {
		e := &entries[i]
		if e.Account != account {
			continue
		}
		if e.Mailbox == store.Inbox {
			found = e
			break
		}
		if found == nil {
			found = e
		}
	}
	if found == nil {
		return nil
	}
	return &store.Delivered{Account: found.Account, Mailbox: found.Mailbox, UIDValidity: found.UIDValidity, UID: found.UID}
}

// executions counts the accounts holding an entry of the record marked
// $Dispensed: a copy kept in two folders of one account counts once.
func executions(entries []store.RecordEntry) int {
	done := map[string]bool{}
	for _, e := range entries {
		for _, f := range e.Flags {
			// RFC 3501 §2.3.2: keywords are case-insensitive.
			if strings.EqualFold(f, KeywordDispensed) {
				done[e.Account] = true
			}
		}
	}
	return len(done)
}

// noMatch answers an unknown number and a wrong INS alike; only the audit
// trail (for the operator) says which.
func (s *Service) noMatch(req Request, number, detail string) *Reply {
	r := replyNoMatch
	r.Delay = s.lim.fail(req.Account.Address)
	return s.refuse(req, r, number, 0, detail)
}

func (s *Service) temporary(req Request, number string, record uint64, err error) *Reply {
	s.log.Error("claim failed", "account", req.Account.Address, "record", record, "err", err)
	return s.refuse(req, replyTemp, number, record, "")
}

// existing answers a claim of what the account already holds, in INBOX
// or in any other of its mailboxes (it moved its copy to Archive): 250,
// as for the first claim, naming the mailbox and the UID to fetch.
func (s *Service) existing(req Request, number string, record uint64, d *store.Delivered) *Reply {
	r := replyExisting
	where := "your INBOX"
	if d.Mailbox != store.Inbox {
		where = "your mailbox " + mailboxText(d.Mailbox)
	}
	r.Message = fmt.Sprintf("Prescription %s is already in %s (UID %d), not filed twice", number, where, d.UID)
	r.Number, r.RecordID, r.Delivered = number, record, d
	s.record(req, &r, fmt.Sprintf("record=%d rx=%s mbox=%s uid=%d", record, number, mailboxText(d.Mailbox), d.UID),
		"already in "+mailboxText(d.Mailbox)+", not filed twice")
	s.log.Info("claim repeated", "account", req.Account.Address, "record", record, "uid", d.UID)
	return &r
}

// mailboxText writes a mailbox name for an SMTP reply and an audit field:
// as is when it is one token of printable US-ASCII (RFC 5321 §4.2: reply
// text is US-ASCII without SMTPUTF8); otherwise Go-quoted with \u escapes
// (a UTF-8 name, or one holding blanks or quotes), so that the reply stays
// ASCII and the name stays unambiguous.
func mailboxText(name string) string {
	for _, c := range name {
		if c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return strconv.QuoteToASCII(name)
		}
	}
	return name
}

// refuse audits and logs a refusal built from template t.
func (s *Service) refuse(req Request, t Reply, number string, record uint64, detail string) *Reply {
	r := t
	r.Number, r.RecordID = number, record
	subject := "rx=" + number
	if record != 0 {
		subject = fmt.Sprintf("record=%d %s", record, subject)
	}
	if detail == "" {
		detail = r.Message
	}
	s.record(req, &r, subject, detail)
	lvl := slog.LevelInfo
	if r.Code/100 == 4 {
		lvl = slog.LevelWarn
	}
	s.log.Log(context.Background(), lvl, "claim refused", "account", accountOf(req.Account), "reason", r.Reason, "code", r.Code, "record", record)
	return &r
}

func (s *Service) record(req Request, r *Reply, subject, detail string) {
	if s.audit == nil {
		return
	}
	s.audit(store.AuditEvent{Kind: store.AuditSMTPClaim, Actor: accountOf(req.Account), Remote: req.Remote,
		Subject: subject, Outcome: r.Outcome(), Detail: detail})
}

func accountOf(a *configs.Account) string {
	if a == nil {
		return "-"
	}
	return a.Address
}

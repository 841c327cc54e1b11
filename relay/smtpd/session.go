package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay/auth"
	"mssrelay/relay/claim"
	"mssrelay/relay/intake"
	"mssrelay/relay/metrics"
	"mssrelay/store"
)

// session is one SMTP connection's state.
//
// go-smtp runs Data in another goroutine when the client uses BDAT
// (CHUNKING), so RSET or a closing connection can call Reset/Logout while
// Data runs: mu guards the transaction fields, and Data works on a copy.
type session struct {
	svc    *Service
	conn   *smtp.Conn
	id     string
	remote string
	log    *slog.Logger

	// peer: a session on smtp.relay, from another operator (peer.go);
	// peerDomain is its whitelisted domain, known after MAIL.
	peer       bool
	peerDomain string

	mu         sync.Mutex
	account    *configs.Account
	mailFrom   string
	mailSet    bool     // MAIL was accepted (mailFrom may be "" from a peer: <>)
	remotes    []string // addresses at other operators (relayed)
	recipients []*configs.Account
	patients   []string // patients' addresses (<INS>@patient domain)
	inData     bool
	// refused counts refusals in this session (messages, recipients);
	// past maxRefusals every new transaction is refused up front, so a
	// client cannot make the relay verify signatures or probe addresses
	// without end on one connection.
	refused int
	// claim marks a transaction to the claim address (relay/claim): its
	// DATA is a claim, answered and never filed as mail.
	claim bool
}

func (ss *session) busy() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.inData
}

// maxPatients bounds the patients' addresses of one message, maxRemotes
// the addresses at other operators.
const (
	maxPatients = 5
	maxRemotes  = 20
)

// maxRefusals is how many refused messages or recipients one session may
// collect before the relay stops taking transactions on it.
const maxRefusals = 10

// Errors sent as bare *smtp.SMTPError: go-smtp reads the reply code with a
// type assertion, so a wrapped error would go out as 554 5.0.0.
var (
	// RFC 4954 §6: 454 4.7.0 temporary authentication failure.
	errLockedOut  = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed logins from your address, try again later"}
	errAuthFailed = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	// RFC 4954 §6: 530 5.7.0 Authentication required (go-smtp's own
	// ErrAuthRequired says 502).
	errAuthFirst  = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errNullSender = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "A null reverse-path is not accepted for submission"}
	errNotYou     = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "MAIL FROM must be your authenticated account address"}
	errNotPrescr  = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Only prescriber accounts may submit prescriptions"}
	errNoMail     = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL FROM first"}
	errUnknownRcp = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such local mailbox"}
	errBadPatient = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "A patient's address is <INS>@ the patients' domain, with a valid 15-character INS"}
	// RFC 5321 §4.5.3.1.8: 452 for too many recipients; a prescription
	// is for one patient.
	errTooManyPatients = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many patient addresses in one message"}
	errTooManyRemotes  = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients at other operators in one message"}
	// RFC 5321 §3.8 / RFC 3463 X.7.0: refused up front after too many
	// refusals; 421 tells the client to close and try later.
	errTooManyRefusals = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many refused messages or recipients in this session, closing"}
	errShutdown        = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
	errTooLarge        = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message too large"}
	errReadFailed      = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error reading message data, try again"}
)

// errMailboxFull refuses one recipient over quota at RCPT: RFC 3463 X.2.2
// mailbox full, transient, so the sender retries later (RFC 5321
// §4.5.3.1.10 lets a server refuse a single recipient with 452).
var errMailboxFull = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full, try again later"}

// AuthMechanisms implements smtp.AuthSession. Only PLAIN: with TLS required
// it is as safe as any challenge scheme and every client supports it.
func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain} }

// Auth implements smtp.AuthSession. go-smtp refuses AUTH before TLS
// (AllowInsecureAuth is false), RFC 4954 §4.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if identity != "" && identity != username {
			ss.svc.cfg.Metrics.AuthFailed(metrics.SMTP)
			ss.audit(store.AuditAuthFail, username, errAuthFailed, "authorization identity differs")
			return errAuthFailed
		}
		acct, err := ss.svc.cfg.Auth.Authenticate(username, password, auth.RemoteIP(ss.conn.Conn().RemoteAddr()))
		if errors.Is(err, auth.ErrLockedOut) {
			ss.svc.cfg.Metrics.AuthFailed(metrics.SMTP)
			ss.log.Warn("smtp auth refused: address locked out", "user", username)
			ss.audit(store.AuditAuthFail, username, errLockedOut, "address locked out")
			return errLockedOut
		}
		if err != nil {
			ss.svc.cfg.Metrics.AuthFailed(metrics.SMTP)
			ss.log.Info("smtp auth failed", "user", username)
			ss.audit(store.AuditAuthFail, username, errAuthFailed, "")
			return errAuthFailed
		}
		ss.audit(store.AuditAuthOK, acct.Address, nil, "")
		ss.mu.Lock()
		ss.account = acct
		ss.mu.Unlock()
		ss.log = ss.log.With("account", acct.Address)
		ss.log.Info("smtp auth ok")
		return nil
	}), nil
}

// Mail implements smtp.Session.
func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.account == nil {
		return errAuthFirst
	}
	if ss.refused >= maxRefusals {
		return errTooManyRefusals
	}
	if from == "" {
		return ss.refuseEnvelope(errNullSender, "from=<>")
	}
	if !intake.SameAddress(from, ss.account.Address) {
		return ss.refuseEnvelope(errNotYou, "from="+from)
	}
	// An executant may only claim: its MAIL goes on and RCPT decides.
	if ss.account.Role != configs.RolePrescriber && (ss.claims() == nil || ss.account.Role != configs.RoleExecutant) {
		return ss.refuseEnvelope(errNotPrescr, "from="+from)
	}
	ss.mailFrom = from
	ss.mailSet = true
	ss.recipients = nil
	ss.patients = nil
	ss.remotes = nil
	ss.claim = false
	return nil
}

// Rcpt implements smtp.Session. Recipients must be local accounts; go-smtp
// enforces MaxRecipients (452 4.5.3, RFC 5321 §4.5.3.1.8).
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.account == nil {
		return errAuthFirst
	}
	if ss.mailFrom == "" {
		return errNoMail
	}
	if ss.refused >= maxRefusals {
		return errTooManyRefusals
	}
	if c := ss.claims(); c != nil && c.IsClaimAddress(to) {
		if r := c.CheckSender(ss.account, ss.remote); r != nil {
			return claimError(r) // a prescriber: audited as a refused claim
		}
		ss.claim = true
		return nil
	}
	if ss.account.Role != configs.RolePrescriber {
		// An executant past MAIL: the claim address is all it may write to.
		return ss.refuseEnvelope(errNotPrescr, "to="+to)
	}
	if ins, ok := ss.svc.cfg.Intake.PatientAddress(to); ok {
		// A patient's secure address: the prescription is forwarded to
		// it through the outbound queue if policy allows (intake/forward.go).
		if !mime.ValidINS(ins) {
			return ss.refuseEnvelope(errBadPatient, "to=patient")
		}
		if len(ss.patients) >= maxPatients {
			return errTooManyPatients
		}
		if !slices.Contains(ss.patients, to) {
			ss.patients = append(ss.patients, to)
		}
		return nil
	}
	acct, ok := ss.svc.cfg.Auth.Lookup(to)
	if !ok {
		if ss.isRemote(to) {
			// An address at another operator: relayed through the
			// outbound queue with our client certificate.
			if len(ss.remotes) >= maxRemotes {
				return errTooManyRemotes
			}
			if !slices.Contains(ss.remotes, to) {
				ss.remotes = append(ss.remotes, to)
			}
			return nil
		}
		return ss.refuseEnvelope(errUnknownRcp, "to="+to)
	}
	for _, r := range ss.recipients {
		if r == acct {
			return nil
		}
	}
	// Quota pre-check (store/quota.go): refuse a full mailbox now, for
	// this recipient only (RFC 5321 §4.5.3.1.10, 452 4.2.2), rather than
	// the whole message after DATA. A read only: store.File checks again
	// in its transaction, and that check decides. A store error here is
	// left for the filing to report.
	if err := ss.svc.cfg.Intake.Store.CheckQuota(acct.Address, 1); errors.Is(err, store.ErrOverQuota) {
		return ss.refuseEnvelope(errMailboxFull, "to="+to)
	}
	ss.recipients = append(ss.recipients, acct)
	return nil
}

// audit records a login or envelope event (nil hook: not audited). A nil
// reply means success.
func (ss *session) audit(kind, actor string, reply *smtp.SMTPError, detail string) {
	if ss.svc.cfg.Audit == nil {
		return
	}
	outcome := "235" // RFC 4954 §6: authentication succeeded
	if reply != nil {
		outcome = fmt.Sprintf("%d %d.%d.%d", reply.Code, reply.EnhancedCode[0], reply.EnhancedCode[1], reply.EnhancedCode[2])
	}
	ss.svc.cfg.Audit(store.AuditEvent{Kind: kind, Actor: actor, Remote: ss.remote, Subject: "proto=smtp", Outcome: outcome, Detail: detail})
}

// actor names who acts in this session for the audit trail: the account,
// or the other operator; the caller holds ss.mu.
func (ss *session) actor() string {
	switch {
	case ss.account != nil:
		return ss.account.Address
	case ss.peerDomain != "":
		return "operator:" + ss.peerDomain
	}
	return "-"
}

// refuseEnvelope audits a MAIL or RCPT refusal and returns it; the caller
// holds ss.mu.
func (ss *session) refuseEnvelope(reply *smtp.SMTPError, subject string) error {
	ss.refused++
	if ss.svc.cfg.Audit != nil {
		ss.svc.cfg.Audit(store.AuditEvent{Kind: store.AuditSMTPRefuse, Actor: ss.actor(), Remote: ss.remote,
			Subject: subject, Outcome: fmt.Sprintf("%d %d.%d.%d", reply.Code, reply.EnhancedCode[0], reply.EnhancedCode[1], reply.EnhancedCode[2]),
			Detail: reply.Message})
	}
	return reply
}

// Data implements smtp.Session: read the message, run the intake path,
// reply 250 only once the message is durably filed.
func (ss *session) Data(r io.Reader) error {
	ss.mu.Lock()
	claimTx := ss.claim
	ss.mu.Unlock()
	if claimTx {
		return ss.claimData(r)
	}
	// metrics: time from DATA to our reply, and how it ended; each refusal
	// path below sets reason (intake's Refusal.Reason or a label of ours).
	start, outcome, reason := time.Now(), metrics.Refused, "no_transaction"
	defer func() { ss.svc.cfg.Metrics.SMTPData(outcome, reason, time.Since(start)) }()

	ss.mu.Lock()
	env := &intake.Envelope{
		Account:    ss.account,
		MailFrom:   ss.mailFrom,
		Recipients: append([]*configs.Account(nil), ss.recipients...),
		Patients:   append([]string(nil), ss.patients...),
		Remotes:    append([]string(nil), ss.remotes...),
		Peer:       ss.peerDomain,
		RemoteAddr: ss.remote,
		Helo:       ss.conn.Hostname(),
		TLS:        tlsSummary(ss.conn),
		SessionID:  ss.id,
	}
	ss.mu.Unlock()
	if env.Account == nil && env.Peer == "" {
		return errAuthFirst
	}
	if env.MailFrom == "" || len(env.Recipients)+len(env.Patients)+len(env.Remotes) == 0 {
		return errNoMail
	}
	// Busy from the first byte of data: a shutdown lets a message being
	// received finish rather than cutting it off mid-transfer.
	if !ss.svc.beginData(ss) {
		reason = "shutting_down" // metrics
		return errShutdown
	}
	defer ss.svc.endData(ss)

	raw, err := ss.svc.readAll(r, ss.svc.cfg.MaxMessageBytes)
	if err != nil {
		reason = "read_error" // metrics
		if errors.Is(err, errTooLarge) {
			reason = "too_large"
		}
		return err
	}

	res, err := ss.svc.cfg.Intake.Accept(context.Background(), env, raw)
	if err != nil {
		var ref *intake.Refusal
		if !errors.As(err, &ref) {
			reason = "internal" // metrics
			ss.log.Error("intake failed", "err", err)
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Internal error, try again later"}
		}
		reason = ref.Reason // metrics
		if !ref.Temporary() {
			ss.mu.Lock()
			ss.refused++
			ss.mu.Unlock()
		}
		lvl := slog.LevelInfo
		if ref.Temporary() {
			lvl = slog.LevelWarn
		}
		ss.log.Log(context.Background(), lvl, "message refused", "reason", ref.Reason, "code", ref.Code, "detail", errString(ref.Err))
		return &smtp.SMTPError{
			Code:         ref.Code,
			EnhancedCode: smtp.EnhancedCode{ref.Enhanced[0], ref.Enhanced[1], ref.Enhanced[2]},
			Message:      ref.Message,
		}
	}
	ss.log.Info("message filed", "record", res.Filed.ID, "duplicate", res.Filed.Duplicate,
		"recipients", len(env.Recipients), "patients", len(env.Patients), "size", len(raw))
	outcome, reason = metrics.Accepted, "" // metrics
	msg := fmt.Sprintf("Prescription filed as record %d", res.Filed.ID)
	if res.Filed.Duplicate {
		outcome = metrics.Duplicate // metrics
		// A client that lost our first 250 and resent: RFC 5321 §6.1 asks us
		// to neither lose nor duplicate it.
		msg = fmt.Sprintf("Already filed as record %d (not filed twice)", res.Filed.ID)
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: msg}
}

func (ss *session) setInData(v bool) {
	ss.mu.Lock()
	ss.inData = v
	ss.mu.Unlock()
}

// Reset implements smtp.Session.
func (ss *session) Reset() {
	ss.mu.Lock()
	ss.mailFrom = ""
	ss.mailSet = false
	ss.recipients = nil
	ss.patients = nil
	ss.remotes = nil
	ss.claim = false
	ss.peerDomain = ""
	ss.mu.Unlock()
}

// claims is the claim service (nil: no claim address).
func (ss *session) claims() *claim.Service {
	if ss.svc.cfg.Intake == nil {
		return nil
	}
	return ss.svc.cfg.Intake.Claims
}

// claimData answers a claim (relay/claim). The claim message is read (at
// most claim.MaxMessageBytes), checked and answered; it is never filed as
// mail. A refusal that must be held back (a failed guess) waits after the
// transaction is over, so that a shutdown does not wait for it.
func (ss *session) claimData(r io.Reader) error {
	ss.mu.Lock()
	acct, mailFrom := ss.account, ss.mailFrom
	ss.mu.Unlock()
	if acct == nil {
		return errAuthFirst
	}
	if mailFrom == "" {
		return errNoMail
	}
	c := ss.claims()
	if !ss.svc.beginData(ss) {
		return errShutdown
	}
	var reply *claim.Reply
	raw, err := ss.svc.readAll(r, claim.MaxMessageBytes)
	switch {
	case errors.Is(err, errTooLarge):
		reply = c.TooLarge(acct, ss.remote)
	case err == nil:
		reply = c.Claim(context.Background(), claim.Request{Account: acct, Remote: ss.remote, Raw: raw})
	}
	ss.svc.endData(ss)
	if reply == nil {
		return err
	}
	c.Hold(reply)
	return claimError(reply)
}

// claimError turns a claim's reply into the bare *smtp.SMTPError go-smtp
// needs (250 included: it carries our text).
func claimError(r *claim.Reply) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode{r.Enhanced[0], r.Enhanced[1], r.Enhanced[2]}, Message: r.Message}
}

// Logout implements smtp.Session.
func (ss *session) Logout() error {
	ss.svc.forget(ss)
	return nil
}

// readAll reads the message, refusing past max bytes. go-smtp's own limit
// (MaxMessageBytes) surfaces as smtp.ErrDataTooLarge.
//
// DATA carries no size, so the message is read into a reused scratch
// buffer and copied out once at its exact size: growing a fresh buffer by
// doubling left about three times the message in garbage, and the
// garbage collector's share of the CPU fell by half without it. The copy
// is the caller's to keep: nothing refers to the scratch buffer after.
func (s *Service) readAll(r io.Reader, max int64) ([]byte, error) {
	buf, _ := s.scratch.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer func() {
		if buf.Cap() <= maxPooledScratch {
			buf.Reset()
			s.scratch.Put(buf)
		}
	}()
	n, err := buf.ReadFrom(io.LimitReader(r, max+1))
	if errors.Is(err, smtp.ErrDataTooLarge) || n > max {
		return nil, errTooLarge
	}
	if err != nil {
		return nil, errReadFailed
	}
	return bytes.Clone(buf.Bytes()), nil
}

// maxPooledScratch bounds the scratch buffers kept for reuse: prescriptions
// are tens of KiB; a rare large message's buffer is left to the collector.
const maxPooledScratch = 1 << 20

func tlsSummary(c *smtp.Conn) string {
	st, ok := c.TLSConnectionState()
	if !ok {
		return "no TLS"
	}
	return tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func sprintf(format string, v ...any) string { return fmt.Sprintf(format, v...) }
func sprintln(v ...any) string               { return strings.TrimSuffix(fmt.Sprintln(v...), "\n") }

var _ smtp.AuthSession = (*session)(nil)

package smtpd

// Mail between operators (smtp.relay, port 25).
//
// Another MSSanté operator's server connects, upgrades with STARTTLS
// (RFC 3207) presenting a client certificate that chains to the trust
// anchors, for a host in a domain on the operators' whitelist. There is no
// AUTH: the certificate is the authentication. Recipients must be local
// accounts (no relaying for anyone), the sender's domain must be
// whitelisted too, and a message then takes the same path as a submitted
// one (intake: verification, filing, audit). The null reverse-path is
// accepted for reports (DSN, MDN) only, one recipient per transaction.

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"slices"
	"strings"

	"github.com/emersion/go-smtp"

	"mssrelay/relay/intake"
	"mssrelay/signing"
	"mssrelay/store"
)

var (
	// RFC 3207 §4: 530 5.7.0 Must issue a STARTTLS command first.
	errTLSFirst = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
	// RFC 3463 X.7.1: delivery not authorized.
	errNoClientCert   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "A client certificate from the health PKI is required (mutual TLS between operators)"}
	errNotWhitelisted = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Your certificate names no domain on the MSSanté operators' whitelist"}
	errSenderDomain   = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender domain is not on the MSSanté operators' whitelist"}
	errPeerRevoked    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Your client certificate is revoked"}
	// RFC 3463 X.7.5: cryptographic failure, transient: a CRL is missing
	// or stale here.
	errPeerRevocationUnknown = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 5}, Message: "Revocation status of your certificate unknown, try again later"}
	errRelayDenied           = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied: no such local mailbox"}
	// A report is filed for one recipient at a time, so that a failure
	// cannot leave it filed for some and retried for all.
	errOneReportRcpt = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "One recipient per report, send the others in another transaction"}
)

// ServeRelay runs a listener for other operators until Shutdown.
func (s *Service) ServeRelay(l net.Listener) error {
	srv := s.newServer(peerBackend{s})
	srv.TLSConfig = s.cfg.PeerTLS
	return s.run(srv, s.withLifetime(l))
}

// peerBackend makes peer sessions: they do not implement
// smtp.AuthSession, so go-smtp offers no AUTH on this listener.
type peerBackend struct{ s *Service }

func (b peerBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	ss, err := b.s.newSession(c, true)
	if err != nil {
		return nil, err
	}
	return peerSession{ss}, nil
}

type peerSession struct{ ss *session }

func (p peerSession) Mail(from string, _ *smtp.MailOptions) error { return p.ss.peerMail(from) }
func (p peerSession) Rcpt(to string, _ *smtp.RcptOptions) error   { return p.ss.peerRcpt(to) }
func (p peerSession) Reset()                                      { p.ss.Reset() }
func (p peerSession) Logout() error                               { return p.ss.Logout() }
func (p peerSession) Data(r io.Reader) error {
	p.ss.mu.Lock()
	report := p.ss.mailSet && p.ss.mailFrom == ""
	p.ss.mu.Unlock()
	if report {
		return p.ss.peerReport(r)
	}
	return p.ss.Data(r)
}

// peerMail checks the other operator before its first transaction.
func (ss *session) peerMail(from string) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.refused >= maxRefusals {
		return errTooManyRefusals
	}
	cs, ok := ss.conn.TLSConnectionState()
	if !ok {
		return errTLSFirst
	}
	// VerifiedChains is set only when the certificate chained to the
	// trust anchors (tls.VerifyClientCertIfGiven): a refusal here can say
	// why, where a handshake failure would say nothing.
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return ss.refuseEnvelope(errNoClientCert, "peer=none")
	}
	domain, ok := whitelistedPeer(cs.PeerCertificates[0], ss.svc.cfg.Operators)
	if !ok {
		return ss.refuseEnvelope(errNotWhitelisted, "peer="+certName(cs.PeerCertificates[0]))
	}
	if check := ss.svc.cfg.CheckPeer; check != nil {
		// crypto/tls checked the chain, not revocation: the CRLs decide,
		// as for message signatures (a missing or stale CRL is "later").
		var serr *signing.Error
		if err := check(cs.VerifiedChains[0]); errors.As(err, &serr) && serr.Reason == signing.ReasonRevocationUnknown {
			return ss.refuseEnvelope(errPeerRevocationUnknown, "peer="+domain)
		} else if err != nil {
			return ss.refuseEnvelope(errPeerRevoked, "peer="+domain)
		}
	}
	ss.peerDomain = domain
	ss.log = ss.log.With("operator", domain)
	if from != "" {
		_, d, _ := strings.Cut(from, "@")
		if !ss.svc.cfg.Operators.Allows(strings.ToLower(d)) {
			return ss.refuseEnvelope(errSenderDomain, "from="+from)
		}
	}
	ss.mailFrom = from
	ss.mailSet = true
	ss.recipients = nil
	ss.patients = nil
	ss.remotes = nil
	return nil
}

// peerRcpt accepts local accounts only.
func (ss *session) peerRcpt(to string) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.mailSet {
		return errNoMail
	}
	if ss.refused >= maxRefusals {
		return errTooManyRefusals
	}
	acct, ok := ss.svc.cfg.Auth.Lookup(to)
	if !ok {
		return ss.refuseEnvelope(errRelayDenied, "to="+to)
	}
	if slices.Contains(ss.recipients, acct) {
		return nil
	}
	if ss.mailFrom == "" && len(ss.recipients) > 0 {
		return errOneReportRcpt
	}
	if err := ss.svc.cfg.Intake.Store.CheckQuota(acct.Address, 1); errors.Is(err, store.ErrOverQuota) {
		return ss.refuseEnvelope(errMailboxFull, "to="+to)
	}
	ss.recipients = append(ss.recipients, acct)
	return nil
}

// peerReport files a report (null reverse-path) from another operator.
func (ss *session) peerReport(r io.Reader) error {
	ss.mu.Lock()
	env := &intake.Envelope{
		Recipients: append(ss.recipients[:0:0], ss.recipients...),
		RemoteAddr: ss.remote, Helo: ss.conn.Hostname(), TLS: tlsSummary(ss.conn),
		SessionID: ss.id, Peer: ss.peerDomain,
	}
	ss.mu.Unlock()
	if len(env.Recipients) != 1 {
		return errNoMail
	}
	if !ss.svc.beginData(ss) {
		return errShutdown
	}
	defer ss.svc.endData(ss)
	raw, err := ss.svc.readAll(r, ss.svc.cfg.MaxMessageBytes)
	if err != nil {
		return err
	}
	if err := ss.svc.cfg.Intake.AcceptReport(context.Background(), env, raw); err != nil {
		var ref *intake.Refusal
		if !errors.As(err, &ref) {
			ss.log.Error("filing a report", "err", err)
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Internal error, try again later"}
		}
		if !ref.Temporary() {
			ss.mu.Lock()
			ss.refused++
			ss.mu.Unlock()
		}
		return &smtp.SMTPError{Code: ref.Code, EnhancedCode: smtp.EnhancedCode{ref.Enhanced[0], ref.Enhanced[1], ref.Enhanced[2]}, Message: ref.Message}
	}
	ss.log.Info("report filed", "size", len(raw))
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Report filed"}
}

// whitelistedPeer returns the whitelisted domain a peer certificate's
// host belongs to: one of its DNS names (the subject CN when it has none),
// or a parent domain of it, on the whitelist (an operator's servers are
// named under its domain: mx1.operateur.fr for operateur.fr).
func whitelistedPeer(cert *x509.Certificate, wl interface{ Allows(string) bool }) (string, bool) {
	if wl == nil {
		return "", false
	}
	names := cert.DNSNames
	if len(names) == 0 && cert.Subject.CommonName != "" {
		names = []string{cert.Subject.CommonName}
	}
	for _, n := range names {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		for strings.Contains(n, ".") {
			if wl.Allows(n) {
				return n, true
			}
			_, n, _ = strings.Cut(n, ".")
		}
	}
	return "", false
}

func certName(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.Subject.CommonName
}

// isRemote reports whether a submission recipient is an address at
// another operator: a domain on the whitelist that is not ours.
func (ss *session) isRemote(addr string) bool {
	if ss.svc.cfg.Operators == nil {
		return false
	}
	_, d, ok := strings.Cut(addr, "@")
	d = strings.ToLower(d)
	return ok && d != "" && !strings.EqualFold(d, ss.svc.cfg.LocalDomain) && ss.svc.cfg.Operators.Allows(d)
}

package configs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// Defaults, applied when a key is absent. A key that is present is checked
// as written: "max_recipients = 0" is an error, not a request for the
// default.
const (
	DefaultMinTLSVersion   = "1.2"
	DefaultMaxMessageBytes = 32 << 20
	DefaultMaxRecipients   = 50
	DefaultMaxHeaderBytes  = 64 << 10
	DefaultMaxHeaders      = 1000
	DefaultMaxMIMEDepth    = 16
	DefaultMaxMIMEParts    = 256
	DefaultReadTimeout     = 60 * time.Second
	DefaultWriteTimeout    = 60 * time.Second
	DefaultShutdownTimeout = 15 * time.Second
	DefaultMaxConnections  = 1000
	DefaultMaxConnsPerIP   = 100
	// DefaultMaxConnRatePerIP (new connections a minute from one client
	// network): mox uses the same 300 a minute for its SMTP and IMAP
	// listeners. A mail client reconnects a few times a minute at most,
	// and a practice of many workstations behind one NAT address stays
	// well under it, while a reconnect loop or handshake flood is cut to
	// five connections a second.
	DefaultMaxConnRatePerIP = 300
	// DefaultMaxSMTPSession: longer than any submission client needs for
	// a batch, short enough that a NOOP loop does not hold a slot for days.
	DefaultMaxSMTPSession = time.Hour
	// DefaultMaxIMAPSessionsPerAccount: a mail client opens a few
	// connections per account (Thunderbird up to 5 by default, plus one
	// per IDLE'd folder); a practice with several workstations on one
	// account needs some more. 20 leaves room for that and keeps one
	// account from taking the listener's max_connections.
	DefaultMaxIMAPSessionsPerAccount = 20
	// MaxQuotaBytes and MaxQuotaMessages bound the quota keys: 1 PiB,
	// and the largest count an int holds on every platform.
	MaxQuotaBytes    = 1 << 50
	MaxQuotaMessages = 1<<31 - 1

	DefaultAuthCacheTTL     = 5 * time.Minute
	DefaultAuthFailureDelay = 250 * time.Millisecond
	DefaultAuthMaxFailures  = 10
	DefaultAuthLockout      = 15 * time.Minute
	// DefaultTrustReloadInterval: CRLs are published daily or more often;
	// checking the files (a stat each) every minute costs nothing and puts
	// a new CRL in force within a minute of its arrival.
	DefaultTrustReloadInterval = 60 * time.Second
	// DefaultSignerLocalPart is the local part of the notifications' From:
	// when signer.address is absent (RFC 5321 4.5.1: every domain has a
	// postmaster).
	DefaultSignerLocalPart = "postmaster"
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "text"
)

// Claim defaults (docs/claim.md). 60 claims an hour is more than a busy
// pharmacy serves; with the failure delay (1s doubling to 32s) an account
// that guesses patients' INS gets at most that many tries an hour, each
// one audited.
const (
	DefaultClaimLocalPart         = "claim"
	DefaultClaimMaxPerHour        = 60
	DefaultClaimFailureDelay      = time.Second
	DefaultClaimExecutionsAllowed = 1
)

// MinBcryptCost is the lowest bcrypt cost accepted in password_hash: cost
// 10 takes tens of milliseconds per guess, enough to make an offline attack
// on a leaked config expensive. MaxBcryptCost bounds the other side: every
// cost step doubles the work of each login, and cost 15 and above would let
// a few clients with wrong passwords keep the CPU busy for seconds each.
const (
	MinBcryptCost = 10
	MaxBcryptCost = 14
)

// Size bounds of the files the config names.
const (
	maxPEMFileBytes   = 1 << 20  // TLS certificate chain or key
	maxTrustFileBytes = 16 << 20 // a bundle of anchors or intermediates
)

// validator checks the meaning of a decoded Config, applies defaults and
// resolves paths. Every problem is reported at the key that causes it.
type validator struct {
	cfg  *Config
	defs map[string]def
	bad  map[string]bool // keys the schema walk refused and blanked
	errs *collector
	dir  string
}

func (v *validator) run() {
	v.server()
	v.tls()
	v.listeners()
	v.trust()
	v.signer()
	v.limits()
	v.quota()
	v.auth()
	v.log()
	v.admin()
	v.accounts()
	v.claim() // after accounts: the claim address must not be one
	v.retention()
	v.patients() // after server: patients.domain must not be mail_domain
	v.outbound() // after tls and trust: their files are the defaults
	v.operators()
}

// has reports whether key is written in the file.
func (v *validator) has(key string) bool {
	_, ok := v.defs[key]
	return ok
}

// at is where key is written or, for a key that is absent, where its
// nearest written parent is (the [server] header for a missing
// server.hostname); the zero position when no parent is written either.
func (v *validator) at(key string) position {
	for k := key; k != ""; k = parentKey(k) {
		if d, ok := v.defs[k]; ok {
			return d.pos
		}
	}
	return position{}
}

// parentKey strips the last part of a key path: "account[2].role" →
// "account[2]" → "account" → "".
func parentKey(key string) string {
	if strings.HasSuffix(key, "]") {
		if i := strings.LastIndexByte(key, '['); i > 0 {
			return key[:i]
		}
		return ""
	}
	if i := strings.LastIndexByte(key, '.'); i > 0 {
		return key[:i]
	}
	return ""
}

func (v *validator) fail(key, format string, args ...any) {
	// A key the schema walk refused has been reported already; its value
	// was blanked, and "required" or "out of range" would only repeat it.
	for k := key; k != ""; k = parentKey(k) {
		if v.bad[k] {
			return
		}
	}
	v.errs.add(v.at(key), key, format, args...)
}

// path resolves p against the config file's directory.
func (v *validator) path(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(v.dir, p)
}

func (v *validator) server() {
	s := &v.cfg.Server
	switch {
	case s.Hostname == "":
		v.fail("server.hostname", "required: the name the relay gives in its SMTP greeting and EHLO (RFC 5321 §4.1.1.1)")
	default:
		if err := checkDNSName(s.Hostname); err != nil {
			v.fail("server.hostname", "%q: %v", s.Hostname, err)
		}
		s.Hostname = strings.ToLower(s.Hostname)
	}
	if !v.has("server.mail_domain") {
		s.MailDomain = s.Hostname
	} else if err := checkDNSName(s.MailDomain); err != nil {
		v.fail("server.mail_domain", "%q: %v", s.MailDomain, err)
	} else {
		s.MailDomain = strings.ToLower(s.MailDomain)
	}
	if s.DataDir == "" {
		v.fail("server.data_dir", "required: the directory that holds the message store")
		return
	}
	s.DataDir = v.path(s.DataDir)
	// The store creates the directory when it is missing; an existing
	// non-directory is a mistake worth reporting here, at its line.
	if fi, err := os.Stat(s.DataDir); err == nil && !fi.IsDir() {
		v.fail("server.data_dir", "%s exists and is not a directory", s.DataDir)
	}
}

func (v *validator) tls() {
	t := &v.cfg.TLS
	var certPEM, keyPEM []byte
	if t.Cert == "" {
		v.fail("tls.cert", "required: the PEM certificate chain of this server, leaf first")
	} else {
		t.Cert = v.path(t.Cert)
		data, err := readFileLimited(t.Cert, maxPEMFileBytes)
		switch {
		case err != nil:
			v.fail("tls.cert", "%v", err)
		default:
			if n, err := countCertificates(data); err != nil {
				v.fail("tls.cert", "%s: %v", t.Cert, err)
			} else if n == 0 {
				v.fail("tls.cert", "%s: no PEM CERTIFICATE block", t.Cert)
			} else {
				certPEM = data
			}
		}
	}
	if t.Key == "" {
		v.fail("tls.key", "required: the PEM private key of tls.cert")
	} else {
		t.Key = v.path(t.Key)
		data, err := readFileLimited(t.Key, maxPEMFileBytes)
		if err != nil {
			v.fail("tls.key", "%v", err)
		} else {
			keyPEM = data
		}
	}
	if certPEM != nil && keyPEM != nil {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			v.fail("tls.key", "%s does not go with %s: %v", t.Key, t.Cert, err)
		}
	}

	// MSSanté requires TLS 1.2 at least on every connection.
	if !v.has("tls.min_version") {
		t.MinVersion = DefaultMinTLSVersion
	}
	switch t.MinVersion {
	case "1.2", "1.3":
	case "1.0", "1.1":
		v.fail("tls.min_version", "%q is refused: TLS 1.2 is the minimum for secure health messaging; use \"1.2\" or \"1.3\"", t.MinVersion)
	default:
		v.fail("tls.min_version", "%q: must be \"1.2\" or \"1.3\"", t.MinVersion)
	}
}

// countCertificates counts the CERTIFICATE blocks of a PEM file and checks
// that each parses.
func countCertificates(data []byte) (int, error) {
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return n, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return n, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
}

// listener is one configured listening address.
type listener struct {
	key  string // smtp.submission[0]
	host string // lower case, "" for every interface
	port int
}

func (v *validator) listeners() {
	lists := []struct {
		key    string
		addrs  []string
		scalar bool // a single address, not a list: no [i] in the key
	}{
		{"smtp.submission", v.cfg.SMTP.Submission, false},
		{"smtp.submission_tls", v.cfg.SMTP.SubmissionTLS, false},
		{"smtp.relay", v.cfg.SMTP.Relay, false},
		{"imap.tls", v.cfg.IMAP.TLS, false},
		{"imap.starttls", v.cfg.IMAP.STARTTLS, false},
		{"admin.listen", nil, true},
	}
	if v.cfg.Admin.Listen != "" {
		lists[len(lists)-1].addrs = []string{v.cfg.Admin.Listen}
	}
	var seen []listener
	for _, l := range lists {
		for i, a := range l.addrs {
			key := fmt.Sprintf("%s[%d]", l.key, i)
			if l.scalar {
				key = l.key
			}
			ln, err := parseListener(a)
			if err != nil {
				v.fail(key, "%q: %v", a, err)
				continue
			}
			ln.key = key
			for _, o := range seen {
				if ln.port != 0 && o.port == ln.port && (o.host == ln.host || isWildcard(o.host) || isWildcard(ln.host)) {
					v.fail(key, "%q clashes with %s (line %d): both would listen on port %d", a, o.key, v.at(o.key).line, ln.port)
					break
				}
			}
			seen = append(seen, ln)
		}
	}
	if len(v.cfg.SMTP.Submission)+len(v.cfg.SMTP.SubmissionTLS) == 0 {
		v.fail("smtp", "no SMTP listener: set smtp.submission (port 587) and/or smtp.submission_tls (port 465)")
	}
	if len(v.cfg.IMAP.TLS)+len(v.cfg.IMAP.STARTTLS) == 0 {
		v.fail("imap", "no IMAP listener: set imap.tls (port 993) and/or imap.starttls (port 143)")
	}
}

func parseListener(a string) (listener, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return listener{}, fmt.Errorf("not host:port: %w", err)
	}
	// A numeric port only: a service name ("smtp") depends on the host's
	// /etc/services.
	p, err := strconv.Atoi(port)
	// Port 0 asks the kernel for a free port: tests and throwaway
	// instances use it; the bound address is logged at start.
	if err != nil || p < 0 || p > 65535 || port[0] == '+' || port[0] == '-' {
		return listener{}, fmt.Errorf("port %q: must be a number from 0 to 65535", port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			if err := checkDNSName(host); err != nil {
				return listener{}, fmt.Errorf("host %q is neither an IP address nor a host name", host)
			}
		}
	}
	return listener{host: strings.ToLower(host), port: p}, nil
}

// isWildcard reports whether host means every interface. On Linux a
// dual-stack [::] listener also takes the IPv4 port, so any wildcard clashes
// with every other listener on its port.
func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified()
}

func (v *validator) trust() {
	t := &v.cfg.Trust
	if len(t.Anchors) == 0 {
		v.fail("trust.anchors", "at least one trust anchor is required: signatures are accepted only from the configured PKI")
	}
	for i := range t.Anchors {
		v.caFile(fmt.Sprintf("trust.anchors[%d]", i), &t.Anchors[i])
	}
	for i := range t.Intermediates {
		v.caFile(fmt.Sprintf("trust.intermediates[%d]", i), &t.Intermediates[i])
	}
	for i := range t.CRLOptionalIssuers {
		v.caFile(fmt.Sprintf("trust.crl_optional_issuers[%d]", i), &t.CRLOptionalIssuers[i])
	}
	for i := range t.CRLs {
		key := fmt.Sprintf("trust.crls[%d]", i)
		if t.CRLs[i] == "" {
			v.fail(key, "empty path")
			continue
		}
		t.CRLs[i] = v.path(t.CRLs[i])
		// Only checked for presence: the signing package parses CRLs and
		// owns their freshness; reading a large CRL twice at start is waste.
		fi, err := os.Stat(t.CRLs[i])
		switch {
		case err != nil:
			v.fail(key, "%v", fileError(err))
		case !fi.Mode().IsRegular():
			v.fail(key, "%s: not a regular file", t.CRLs[i])
		case fi.Size() == 0:
			v.fail(key, "%s: empty file", t.CRLs[i])
		default:
			f, err := os.Open(t.CRLs[i])
			if err != nil {
				v.fail(key, "%v", fileError(err))
			} else {
				f.Close()
			}
		}
	}
	durationRange(v, "trust.reload_interval", &t.ReloadInterval, DefaultTrustReloadInterval, time.Second, time.Hour)
}

// caFile resolves *p and checks it holds at least one certificate and only
// CA certificates (basic constraints cA): the trust store refuses anything
// else, and saying so here gives the line.
func (v *validator) caFile(key string, p *string) {
	if *p == "" {
		v.fail(key, "empty path")
		return
	}
	*p = v.path(*p)
	data, err := readFileLimited(*p, maxTrustFileBytes)
	if err != nil {
		v.fail(key, "%v", err)
		return
	}
	certs, err := parseCertificates(data)
	switch {
	case err != nil:
		v.fail(key, "%s: %v", *p, err)
	case len(certs) == 0:
		v.fail(key, "%s: no PEM CERTIFICATE block", *p)
	default:
		for i, c := range certs {
			if !c.IsCA {
				v.fail(key, "%s: certificate %d (%s) is not a CA certificate", *p, i+1, c.Subject)
				return
			}
		}
	}
}

// parseCertificates returns the CERTIFICATE blocks of a PEM file, parsed.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
}

// signer checks the relay's notification signer. The certificate must be
// able to make signatures receivers accept (docs/security-model.md, the
// same rules as signing.CheckNotificationSigner): key usage allowing
// digitalSignature or nonRepudiation (RFC 8550 4.4.2), extended key usage
// emailProtection (RFC 8550 4.4.4), an RSA (2048 bits at least) or ECDSA
// P-256/P-384 key, and the From: address among its SAN rfc822Names
// (RFC 8550 3). configs does not import signing, so the checks are
// repeated here, where they can name the line.
func (v *validator) signer() {
	s := &v.cfg.Signer
	addrOK := true
	if !v.has("signer.address") {
		s.Address = DefaultSignerLocalPart + "@" + v.cfg.Server.MailDomain
		// A bad mail_domain was reported at its own line.
		_, err := checkAddress(s.Address)
		addrOK = err == nil
	} else if addr, err := checkAddress(s.Address); err != nil {
		v.fail("signer.address", "%q: %v", s.Address, err)
		addrOK = false
	} else {
		s.Address = addr
	}

	for _, k := range []struct {
		key string
		val *string
	}{{"signer.cert", &s.Cert}, {"signer.key", &s.Key}} {
		if v.has(k.key) && *k.val == "" {
			v.fail(k.key, "empty path: remove the key to send notifications unsigned")
		}
	}
	switch {
	case s.Cert == "" && s.Key == "":
		return
	case s.Cert == "":
		if !v.has("signer.cert") {
			v.fail("signer.cert", "required when signer.key is set: the PEM certificate chain of the relay's organisation certificate")
		}
		return
	case s.Key == "":
		if !v.has("signer.key") {
			v.fail("signer.key", "required when signer.cert is set: the PEM private key of signer.cert")
		}
		return
	}
	s.Cert, s.Key = v.path(s.Cert), v.path(s.Key)
	certPEM, err := readFileLimited(s.Cert, maxPEMFileBytes)
	if err != nil {
		v.fail("signer.cert", "%v", err)
	}
	keyPEM, kerr := readFileLimited(s.Key, maxPEMFileBytes)
	if kerr != nil {
		v.fail("signer.key", "%v", kerr)
	}
	if err != nil || kerr != nil {
		return
	}
	if certs, err := parseCertificates(certPEM); err != nil || len(certs) == 0 {
		if err == nil {
			err = errors.New("no PEM CERTIFICATE block")
		}
		v.fail("signer.cert", "%s: %v", s.Cert, err)
		return
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		v.fail("signer.key", "%s does not go with %s: %v", s.Key, s.Cert, err)
		return
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		v.fail("signer.cert", "%s: %v", s.Cert, err)
		return
	}
	if err := checkSMIMESigner(leaf); err != nil {
		v.fail("signer.cert", "%s: %v", s.Cert, err)
		return
	}
	if addrOK && !sanHasAddress(leaf.EmailAddresses, s.Address) {
		have := "no e-mail address (SAN rfc822Name)"
		if len(leaf.EmailAddresses) > 0 {
			have = strings.Join(leaf.EmailAddresses, ", ")
		}
		key, which := "signer.address", "signer.address"
		if !v.has(key) {
			key, which = "signer.cert", "the default signer.address"
		}
		v.fail(key, "the certificate %s is for %s, not for %s %s: receivers check that the From: address is in the certificate",
			s.Cert, have, which, s.Address)
	}
}

// checkSMIMESigner checks the usages and key of a certificate that is to
// sign S/MIME.
func checkSMIMESigner(c *x509.Certificate) error {
	if c.KeyUsage != 0 && c.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return errors.New("its key usage allows neither digitalSignature nor nonRepudiation")
	}
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) {
		return errors.New("its extended key usage lacks emailProtection: it is not an e-mail signing certificate")
	}
	switch pub := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < 2048 || bits > 8192 {
			return fmt.Errorf("its RSA key has %d bits: 2048 to 8192 required", bits)
		}
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384() {
			return fmt.Errorf("its elliptic curve %s is not accepted: P-256 or P-384 required", pub.Curve.Params().Name)
		}
	default:
		return fmt.Errorf("its key type (%T) cannot sign S/MIME here: RSA or ECDSA required", c.PublicKey)
	}
	return nil
}

// sanHasAddress compares addresses as RFC 5321 2.4 says: the local part
// exactly, the domain without regard to case.
func sanHasAddress(sans []string, addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	for _, s := range sans {
		i := strings.LastIndexByte(s, '@')
		if i > 0 && at > 0 && s[:i] == addr[:at] && strings.EqualFold(s[i+1:], addr[at+1:]) {
			return true
		}
	}
	return false
}

// intRange applies the default when key is absent and checks the bounds
// otherwise; it reports whether the value is usable.
func intRange[T int | int64](v *validator, key string, p *T, def, lo, hi T, unit string) bool {
	if !v.has(key) {
		*p = def
		return true
	}
	if *p < lo || *p > hi {
		v.fail(key, "%d is out of range: must be from %d to %d%s", *p, lo, hi, unit)
		return false
	}
	return true
}

// durationRange is intRange for durations.
func durationRange(v *validator, key string, p *Duration, def, lo, hi time.Duration) bool {
	if !v.has(key) {
		p.Duration = def
		return true
	}
	if p.Duration < lo || p.Duration > hi {
		v.fail(key, "%s is out of range: must be from %s to %s", p.Duration, lo, hi)
		return false
	}
	return true
}

func (v *validator) limits() {
	l := &v.cfg.Limits
	msgOK := intRange(v, "limits.max_message_bytes", &l.MaxMessageBytes, DefaultMaxMessageBytes, 1<<10, 1<<30, " bytes (1 KiB to 1 GiB)")
	intRange(v, "limits.max_recipients", &l.MaxRecipients, DefaultMaxRecipients, 1, 1000, "")
	hdrOK := intRange(v, "limits.max_header_bytes", &l.MaxHeaderBytes, DefaultMaxHeaderBytes, 1<<10, 1<<20, " bytes (1 KiB to 1 MiB)")
	intRange(v, "limits.max_headers", &l.MaxHeaders, DefaultMaxHeaders, 1, 10000, "")
	// go-message parses nested multiparts in quadratic time: keep depth and
	// part counts small (see LIBRARY-NOTES.md).
	intRange(v, "limits.max_mime_depth", &l.MaxMIMEDepth, DefaultMaxMIMEDepth, 1, 64, "")
	intRange(v, "limits.max_mime_parts", &l.MaxMIMEParts, DefaultMaxMIMEParts, 1, 10000, "")
	durationRange(v, "limits.read_timeout", &l.ReadTimeout, DefaultReadTimeout, time.Second, time.Hour)
	durationRange(v, "limits.write_timeout", &l.WriteTimeout, DefaultWriteTimeout, time.Second, time.Hour)
	durationRange(v, "limits.shutdown_timeout", &l.ShutdownTimeout, DefaultShutdownTimeout, time.Second, 10*time.Minute)
	intRange(v, "limits.max_connections", &l.MaxConnections, DefaultMaxConnections, 1, 100000, "")
	intRange(v, "limits.max_connections_per_ip", &l.MaxConnectionsPerIP, DefaultMaxConnsPerIP, 1, 100000, "")
	intRange(v, "limits.max_connection_rate_per_ip", &l.MaxConnectionRatePerIP, DefaultMaxConnRatePerIP, 1, 100000, " a minute")
	durationRange(v, "limits.max_smtp_session", &l.MaxSMTPSession, DefaultMaxSMTPSession, time.Minute, 24*time.Hour)
	intRange(v, "limits.max_imap_sessions_per_account", &l.MaxIMAPSessionsPerAccount, DefaultMaxIMAPSessionsPerAccount, 1, 10000, "")
	if msgOK && hdrOK && int64(l.MaxHeaderBytes) > l.MaxMessageBytes {
		v.fail("limits.max_header_bytes", "%d is larger than limits.max_message_bytes (%d)", l.MaxHeaderBytes, l.MaxMessageBytes)
	}
}

// quota checks the default quota; quotaBytes is shared with the
// accounts' overrides.
func (v *validator) quota() {
	q := &v.cfg.Quota
	v.quotaBytes("quota.max_bytes", q.MaxBytes)
	intRange(v, "quota.max_messages", &q.MaxMessages, 0, 0, MaxQuotaMessages, " (0: no limit)")
}

// quotaBytes checks a byte quota: 0 (no limit, or for an account: use
// [quota]) or at least one message of limits.max_message_bytes, or the
// largest message accepted could never be filed and its sender would be
// told to retry (452 4.2.2) forever.
func (v *validator) quotaBytes(key string, n int64) {
	if !v.has(key) || n == 0 {
		return
	}
	if n < 0 || n > MaxQuotaBytes {
		v.fail(key, "%d is out of range: must be 0 (no limit) or from limits.max_message_bytes to %d bytes (1 PiB)", n, int64(MaxQuotaBytes))
		return
	}
	if m := v.cfg.Limits.MaxMessageBytes; m > 0 && n < m {
		v.fail(key, "%d bytes is less than limits.max_message_bytes (%d): a message of the largest size accepted could never be filed; "+
			"raise it, or use 0 for no limit", n, m)
	}
}

func (v *validator) auth() {
	a := &v.cfg.Auth
	durationRange(v, "auth.cache_ttl", &a.CacheTTL, DefaultAuthCacheTTL, 0, time.Hour)
	durationRange(v, "auth.failure_delay", &a.FailureDelay, DefaultAuthFailureDelay, 0, 10*time.Second)
	intRange(v, "auth.max_failures", &a.MaxFailures, DefaultAuthMaxFailures, 1, 1000, "")
	durationRange(v, "auth.lockout", &a.Lockout, DefaultAuthLockout, time.Second, 24*time.Hour)
}

func (v *validator) log() {
	l := &v.cfg.Log
	if !v.has("log.level") {
		l.Level = DefaultLogLevel
	}
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		v.fail("log.level", "%q: must be one of debug, info, warn, error", l.Level)
	}
	if !v.has("log.format") {
		l.Format = DefaultLogFormat
	}
	switch l.Format {
	case "text", "json":
	default:
		v.fail("log.format", "%q: must be text or json", l.Format)
	}
}

// admin checks the monitoring endpoint. Its address was parsed and
// checked for clashes with the mail listeners in listeners(). Metrics name
// accounts' activity and pprof exposes the process's memory profile and
// command line: neither may face the internet by mistake, so an address
// other than loopback needs admin.allow_remote.
func (v *validator) admin() {
	a := &v.cfg.Admin
	if a.Listen == "" {
		// Absent or written empty: the endpoint is off. pprof and
		// allow_remote then have nothing to apply to, which is harmless.
		return
	}
	ln, err := parseListener(a.Listen)
	if err != nil || a.AllowRemote || isLoopbackHost(ln.host) {
		return
	}
	why := "is not a loopback address"
	if isWildcard(ln.host) {
		why = "listens on every interface"
	} else if _, err := netip.ParseAddr(ln.host); err != nil {
		why = "is a host name other than localhost, which may resolve to a public address"
	}
	v.fail("admin.listen", "%q %s: the admin endpoint has no authentication, and metrics and profiles must not face the internet; "+
		"listen on 127.0.0.1 or [::1] (reach it through a reverse proxy or an SSH tunnel), or set admin.allow_remote = true "+
		"if a firewall restricts who reaches this address", a.Listen, why)
}

// isLoopbackHost reports whether a listen host is on the loopback
// interface only: 127.0.0.0/8, ::1 (also IPv4-mapped), or "localhost",
// which RFC 6761 §6.3 reserves for it.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func (v *validator) accounts() {
	v.cfg.byAddress = make(map[string]int, len(v.cfg.Accounts))
	// folded catches two accounts that differ only in the case of the
	// local part: lookups keep the local part exact (RFC 5321 §2.4), but
	// such a pair is certainly a mistake and would confuse people.
	folded := make(map[string]int, len(v.cfg.Accounts))
	for i := range v.cfg.Accounts {
		a := &v.cfg.Accounts[i]
		base := fmt.Sprintf("account[%d]", i)

		switch addr, err := checkAddress(a.Address); {
		case a.Address == "":
			v.fail(base+".address", "required")
		case err != nil:
			v.fail(base+".address", "%q: %v", a.Address, err)
		default:
			a.Address = addr
			f := strings.ToLower(addr)
			if j, dup := folded[f]; dup {
				v.fail(base+".address", "%q is already the address of account[%d] (line %d)", a.Address, j, v.at(fmt.Sprintf("account[%d].address", j)).line)
			} else {
				folded[f] = i
				v.cfg.byAddress[addr] = i
			}
		}

		switch a.Role {
		case RolePrescriber, RoleExecutant:
		case "":
			v.fail(base+".role", "required: prescriber or executant")
		default:
			v.fail(base+".role", "%q: must be prescriber or executant", a.Role)
		}

		if a.PasswordHash == "" {
			v.fail(base+".password_hash", "required: a bcrypt hash, as printed by `mssrelay hash-password`")
		} else if err := checkPasswordHash(a.PasswordHash); err != nil {
			v.fail(base+".password_hash", "%v", err)
		}

		switch {
		case a.Role == RolePrescriber && a.RPPS == "":
			v.fail(base+".rpps", "required for a prescriber: the 11-digit RPPS number their signing certificate carries")
		case a.Role == RoleExecutant && v.has(base+".rpps"):
			v.fail(base+".rpps", "only prescribers have an rpps here; remove it from this executant")
		case a.RPPS != "" && !isRPPS(a.RPPS):
			v.fail(base+".rpps", "%q: must be exactly 11 digits", a.RPPS)
		}

		if err := checkDisplayName(a.Name); err != nil {
			v.fail(base+".name", "%v", err)
		}

		v.quotaBytes(base+".quota_bytes", a.QuotaBytes)
		intRange(v, base+".quota_messages", &a.QuotaMessages, 0, 0, MaxQuotaMessages, " (0: use quota.max_messages)")
	}
}

// checkAddress validates a bare mailbox address and returns it with its
// domain in lower case (domains are case-insensitive, RFC 5321 §2.4; the
// local part is kept as written).
func checkAddress(s string) (string, error) {
	// RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the
	// angle brackets.
	if len(s) > 254 {
		return "", errors.New("longer than 254 characters")
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("not an e-mail address: %w", err)
	}
	if a.Name != "" || a.Address != s {
		return "", errors.New("write the bare address, such as dr.martin@example.org, without name, brackets, quotes or spaces")
	}
	at := strings.LastIndexByte(s, '@')
	local, domain := s[:at], s[at+1:]
	if len(local) > 64 { // RFC 5321 §4.5.3.1.1
		return "", errors.New("local part longer than 64 characters")
	}
	if err := checkDNSName(domain); err != nil {
		return "", fmt.Errorf("domain %q: %w", domain, err)
	}
	return local + "@" + strings.ToLower(domain), nil
}

// checkDNSName checks a host name (RFC 1123 §2.1): dot-separated labels of
// letters, digits and hyphens, 1 to 63 characters, not starting or ending
// with a hyphen, 253 characters in all, and not all-numeric at the top
// level (RFC 3696 §2), which rules out IP addresses.
func checkDNSName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > 253 {
		return errors.New("longer than 253 characters")
	}
	if strings.HasSuffix(s, ".") {
		return errors.New("remove the trailing dot")
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty label (two dots in a row, or a leading dot)")
		}
		if len(l) > 63 {
			return fmt.Errorf("label %q is longer than 63 characters", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("label %q has a character other than a letter, digit or hyphen (use punycode for international names)", l)
			}
		}
	}
	top := labels[len(labels)-1]
	if strings.Trim(top, "0123456789") == "" {
		return errors.New("looks like an IP address; a DNS name is required")
	}
	return nil
}

func checkPasswordHash(h string) error {
	if !strings.HasPrefix(h, "$2a$") && !strings.HasPrefix(h, "$2b$") && !strings.HasPrefix(h, "$2y$") {
		return errors.New("not a bcrypt hash (it starts with $2a$, $2b$ or $2y$); generate one with `mssrelay hash-password`")
	}
	cost, err := bcrypt.Cost([]byte(h))
	if err != nil {
		return fmt.Errorf("not a valid bcrypt hash: %w", err)
	}
	// A bcrypt hash is 60 characters: 7 of prefix and cost, 53 of salt and
	// digest. bcrypt.Cost reads only the prefix.
	if len(h) != 60 {
		return fmt.Errorf("not a valid bcrypt hash: %d characters instead of 60", len(h))
	}
	if cost < MinBcryptCost {
		return fmt.Errorf("bcrypt cost %d is too low: at least %d, so that a leaked hash resists offline guessing", cost, MinBcryptCost)
	}
	if cost > MaxBcryptCost {
		return fmt.Errorf("bcrypt cost %d is too high: at most %d, or each login costs the server seconds of CPU", cost, MaxBcryptCost)
	}
	return nil
}

func isRPPS(s string) bool {
	if len(s) != 11 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkDisplayName refuses names that could break a header they are put
// in: control characters (CR and LF above all) and invalid UTF-8.
func checkDisplayName(s string) error {
	if len(s) > 200 {
		return errors.New("longer than 200 bytes")
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("contains the control character %U", r)
		}
	}
	return nil
}

// claim checks the claim address and the [claim] section. The claim
// address is not an account: mail to it is a command to the relay, and an
// account with the same address could never receive its mail.
func (v *validator) claim() {
	s := &v.cfg.Server
	if !v.has("server.claim_address") {
		s.ClaimAddress = DefaultClaimLocalPart + "@" + s.MailDomain
		if _, err := checkAddress(s.ClaimAddress); err != nil {
			s.ClaimAddress = "" // a bad mail_domain was reported at its own line
		}
	} else if addr, err := checkAddress(s.ClaimAddress); err != nil {
		v.fail("server.claim_address", "%q: %v", s.ClaimAddress, err)
		s.ClaimAddress = ""
	} else {
		s.ClaimAddress = addr
	}
	if s.ClaimAddress != "" {
		for i := range v.cfg.Accounts {
			if !strings.EqualFold(v.cfg.Accounts[i].Address, s.ClaimAddress) {
				continue
			}
			what := fmt.Sprintf("%q", s.ClaimAddress)
			if !v.has("server.claim_address") {
				what = fmt.Sprintf("the default claim address %q (claim@ + mail_domain)", s.ClaimAddress)
			}
			v.fail("server.claim_address", "%s is also the address of account[%d] (line %d): mail to it is a claim, so that account could never receive mail; "+
				"set server.claim_address to another address or rename the account", what, i, v.at(fmt.Sprintf("account[%d].address", i)).line)
			break
		}
	}
	c := &v.cfg.Claim
	intRange(v, "claim.max_per_hour", &c.MaxPerHour, DefaultClaimMaxPerHour, 1, 100000, "")
	durationRange(v, "claim.failure_delay", &c.FailureDelay, DefaultClaimFailureDelay, 0, 10*time.Second)
	intRange(v, "claim.executions_allowed", &c.ExecutionsAllowed, DefaultClaimExecutionsAllowed, 1, 1000, "")
}

// Package configs loads and validates mssrelay's configuration: strict TOML
// where an unknown key or a bad value is an error naming file and line.
package configs

import "time"

// Config is the whole configuration, validated. Relative paths in it have
// been resolved against the directory of the file they came from.
type Config struct {
	File     string    `toml:"-"` // path it was loaded from
	Server   Server    `toml:"server"`
	TLS      TLS       `toml:"tls"`
	SMTP     SMTP      `toml:"smtp"`
	IMAP     IMAP      `toml:"imap"`
	Trust    Trust     `toml:"trust"`
	Signer   Signer    `toml:"signer"`
	Limits   Limits    `toml:"limits"`
	Quota    Quota     `toml:"quota"`
	Auth     Auth      `toml:"auth"`
	Log      Log       `toml:"log"`
	Admin    Admin     `toml:"admin"`
	Claim    Claim     `toml:"claim"`
	Accounts []Account `toml:"account"`

	// Retention of filed messages (retention.go).
	Retention Retention `toml:"retention"`

	// Patients' secure mailboxes and the registry of patients who chose
	// messaging-only delivery (registry.go).
	Patients Patients `toml:"patients"`
	// Outbound is the queue that forwards prescriptions to other
	// operators, patients' mailboxes first (outbound.go).
	Outbound Outbound `toml:"outbound"`
	// Operators: the whitelist of other operators (operators.go).
	Operators Operators `toml:"operators"`

	// byAddress indexes Accounts by normalised address (see Account); built
	// by Parse. A Config built by hand has none and is searched linearly.
	byAddress map[string]int
	// registry is the patient registry read from Patients.Registry by
	// Parse; nil when there is none (see PatientRegistry).
	registry *Registry
}

// Server is the relay's identity and storage.
type Server struct {
	Hostname   string `toml:"hostname"`    // EHLO/greeting name, required
	MailDomain string `toml:"mail_domain"` // local domain (default: hostname)
	DataDir    string `toml:"data_dir"`    // bbolt file lives here, required
	// ClaimAddress receives executants' claims of prescriptions
	// (docs/claim.md); default "claim@" + MailDomain.
	ClaimAddress string `toml:"claim_address"`
}

// TLS is the server certificate used by every listener.
type TLS struct {
	Cert       string `toml:"cert"`        // PEM chain, leaf first
	Key        string `toml:"key"`         // PEM private key
	MinVersion string `toml:"min_version"` // "1.2" (default) or "1.3"
}

// SMTP lists the SMTP listeners (host:port).
type SMTP struct {
	Submission    []string `toml:"submission"`     // STARTTLS required before AUTH (RFC 6409, port 587)
	SubmissionTLS []string `toml:"submission_tls"` // implicit TLS (RFC 8314, port 465)
	// Relay receives mail from other operators (port 25): STARTTLS and a
	// client certificate from a whitelisted operator required, no AUTH,
	// local recipients only ([operators]).
	Relay []string `toml:"relay"`
}

// IMAP lists the IMAP listeners (host:port).
type IMAP struct {
	TLS      []string `toml:"tls"`      // implicit TLS (RFC 8314, port 993)
	STARTTLS []string `toml:"starttls"` // STARTTLS required before LOGIN (port 143)
}

// Trust is the PKI the relay accepts signatures from.
type Trust struct {
	Anchors       []string `toml:"anchors"`       // PEM files of root certificates, at least one
	Intermediates []string `toml:"intermediates"` // PEM files
	CRLs          []string `toml:"crls"`          // PEM or DER CRL files
	// CRLOptionalIssuers are PEM files of CA certificates whose issued
	// certificates need no CRL; every other issuer of a chain needs a
	// fresh one (signing.LoadTrustOptions).
	CRLOptionalIssuers []string `toml:"crl_optional_issuers"`
	// ReloadInterval is how often the relay checks the trust files for
	// changes (signing.Trust.Changed) and reloads them; default 60s.
	ReloadInterval Duration `toml:"reload_interval"`
}

// Signer is the relay's own organisation certificate, used to sign the
// notifications it emits (DSN, MDN). The section is optional: without cert
// and key the relay sends its notifications unsigned.
type Signer struct {
	Cert    string `toml:"cert"`    // PEM chain, leaf first; EKU emailProtection, Address in its SAN
	Key     string `toml:"key"`     // PEM private key of Cert
	Address string `toml:"address"` // From: of notifications; default "postmaster@" + server.mail_domain
}

// Signs reports whether notifications are to be signed (cert and key set).
func (s Signer) Signs() bool { return s.Cert != "" && s.Key != "" }

// Limits bound sizes, counts and times.
type Limits struct {
	MaxMessageBytes int64    `toml:"max_message_bytes"` // default 32 MiB
	MaxRecipients   int      `toml:"max_recipients"`    // default 50
	MaxHeaderBytes  int      `toml:"max_header_bytes"`  // default 64 KiB
	MaxHeaders      int      `toml:"max_headers"`       // default 1000
	MaxMIMEDepth    int      `toml:"max_mime_depth"`    // default 16
	MaxMIMEParts    int      `toml:"max_mime_parts"`    // default 256
	ReadTimeout     Duration `toml:"read_timeout"`      // per command, default 60s
	WriteTimeout    Duration `toml:"write_timeout"`     // default 60s
	ShutdownTimeout Duration `toml:"shutdown_timeout"`  // drain deadline, default 15s
	MaxConnections  int      `toml:"max_connections"`   // per listener, default 1000
	// MaxConnectionsPerIP caps one client address's simultaneous
	// connections on each listener (default 100).
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// MaxConnectionRatePerIP caps the new connections one client network
	// (an IPv4 address, an IPv6 /64) may open a minute on each listener,
	// in bursts of as many (default 300).
	MaxConnectionRatePerIP int `toml:"max_connection_rate_per_ip"`
	// MaxSMTPSession bounds an SMTP session's length (default 1h): past
	// it the session gets 421 at its next command.
	MaxSMTPSession Duration `toml:"max_smtp_session"`
	// MaxIMAPSessionsPerAccount bounds one account's simultaneous
	// authenticated IMAP sessions (default 20): a LOGIN beyond it gets
	// NO [LIMIT] (RFC 5530).
	MaxIMAPSessionsPerAccount int `toml:"max_imap_sessions_per_account"`
}

// Quota is the default per-account quota: what all of an account's
// mailboxes may hold together. 0 means no limit. [[account]] quota_bytes
// and quota_messages override it for one account. Filing over quota is
// refused with SMTP 452 4.2.2, IMAP APPEND/COPY with NO [OVERQUOTA].
type Quota struct {
	MaxBytes    int64 `toml:"max_bytes"`    // default 0: no limit
	MaxMessages int   `toml:"max_messages"` // default 0: no limit
}

// Auth tunes login checks shared by SMTP and IMAP.
type Auth struct {
	// CacheTTL is how long a successful password check is remembered
	// (default 5m; 0 disables the cache).
	CacheTTL Duration `toml:"cache_ttl"`
	// FailureDelay holds back the answer to a failed login; it doubles
	// with each failure from the same address, up to 32 times (default
	// 250ms).
	FailureDelay Duration `toml:"failure_delay"`
	// MaxFailures failed logins from one address within 15 minutes lock
	// it out for Lockout (default 10).
	MaxFailures int `toml:"max_failures"`
	// Lockout is how long an address stays locked out (default 15m).
	Lockout Duration `toml:"lockout"`
}

// Log configures structured logging.
type Log struct {
	Level  string `toml:"level"`  // debug, info (default), warn, error
	Format string `toml:"format"` // text (default) or json
}

// Admin is the HTTP endpoint for monitoring: Prometheus metrics, liveness
// and readiness, and optionally Go profiles (relay/metrics). It has no
// authentication, so it listens on loopback unless AllowRemote says
// otherwise.
type Admin struct {
	Listen      string `toml:"listen"`       // host:port; "" (default) disables the endpoint
	AllowRemote bool   `toml:"allow_remote"` // permit a Listen address that is not loopback
	Pprof       bool   `toml:"pprof"`        // serve net/http/pprof under /debug/pprof/
}

// Claim tunes claims: an executant retrieving a prescription from its
// number and the patient's INS by writing to server.claim_address
// (relay/claim, docs/claim.md).
type Claim struct {
	// MaxPerHour is how many claims one account may send in any hour,
	// refused or not (default 60).
	MaxPerHour int `toml:"max_per_hour"`
	// FailureDelay holds back the answer to a claim that matched no
	// prescription; it doubles with each such failure of the account
	// within 15 minutes, up to 32 times (default 1s).
	FailureDelay Duration `toml:"failure_delay"`
	// ExecutionsAllowed is how many executions a prescription may have:
	// a claim is refused once that many accounts have marked their copy
	// $Dispensed (default 1: an executed prescription cannot be claimed).
	ExecutionsAllowed int `toml:"executions_allowed"`
}

// Role is what an account may do.
type Role string

const (
	RolePrescriber Role = "prescriber"
	RoleExecutant  Role = "executant"
)

// Account is a local mailbox and login.
type Account struct {
	Address      string `toml:"address"`       // login and mailbox address, lower case
	Role         Role   `toml:"role"`          // prescriber or executant
	PasswordHash string `toml:"password_hash"` // bcrypt ($2a$/$2b$/$2y$, cost >= 10)
	RPPS         string `toml:"rpps"`          // 11 digits, required for prescribers
	Name         string `toml:"name"`          // display name, optional
	// QuotaBytes and QuotaMessages override [quota] for this account;
	// 0 (the default) uses [quota].
	QuotaBytes    int64 `toml:"quota_bytes"`
	QuotaMessages int   `toml:"quota_messages"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

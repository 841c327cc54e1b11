package configs

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	dir := fixtureDir(t)
	cfg, err := Parse("mssrelay.toml", dir, []byte(base(t)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"File", cfg.File, "mssrelay.toml"},
		{"mail_domain defaults to hostname", cfg.Server.MailDomain, "relay.test.example"},
		{"data_dir resolved", cfg.Server.DataDir, filepath.Join(dir, "data")},
		{"cert resolved", cfg.TLS.Cert, filepath.Join(dir, "cert.pem")},
		{"key resolved", cfg.TLS.Key, filepath.Join(dir, "key.pem")},
		{"anchor resolved", cfg.Trust.Anchors[0], filepath.Join(dir, "anchor.pem")},
		{"intermediate resolved", cfg.Trust.Intermediates[0], filepath.Join(dir, "inter.pem")},
		{"crl resolved", cfg.Trust.CRLs[0], filepath.Join(dir, "ca.crl")},
		{"min_version default", cfg.TLS.MinVersion, "1.2"},
		{"max_message_bytes default", cfg.Limits.MaxMessageBytes, int64(32 << 20)},
		{"max_recipients default", cfg.Limits.MaxRecipients, 50},
		{"max_header_bytes default", cfg.Limits.MaxHeaderBytes, 64 << 10},
		{"max_headers default", cfg.Limits.MaxHeaders, 1000},
		{"max_mime_depth default", cfg.Limits.MaxMIMEDepth, 16},
		{"max_mime_parts default", cfg.Limits.MaxMIMEParts, 256},
		{"read_timeout default", cfg.Limits.ReadTimeout.Duration, 60 * time.Second},
		{"write_timeout default", cfg.Limits.WriteTimeout.Duration, 60 * time.Second},
		{"shutdown_timeout default", cfg.Limits.ShutdownTimeout.Duration, 15 * time.Second},
		{"max_connections default", cfg.Limits.MaxConnections, 1000},
		{"log level default", cfg.Log.Level, "info"},
		{"log format default", cfg.Log.Format, "text"},
		{"accounts", len(cfg.Accounts), 2},
		{"address domain lower-cased", cfg.Accounts[0].Address, "dr.martin@example.org"},
		{"role", cfg.Accounts[0].Role, RolePrescriber},
		{"rpps", cfg.Accounts[0].RPPS, "10101201234"},
		{"name", cfg.Accounts[0].Name, "Dr Martin"},
		{"TLS.Version", cfg.TLS.Version(), uint16(0x0303)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

func TestParseExplicitValues(t *testing.T) {
	dir := fixtureDir(t)
	text := base(t) + `
[limits]
max_message_bytes = 1_048_576
max_recipients = 10
max_header_bytes = 0x8000
max_headers = 200
max_mime_depth = 8
max_mime_parts = 64
read_timeout = "2m"
write_timeout = "30s"
shutdown_timeout = "1m30s"
max_connections = 50

[log]
level = "debug"
format = "json"
`
	text = strings.Replace(text, `data_dir = "data"`, "data_dir = \"/srv/mss\"\nmail_domain = \"Mail.Example.ORG\"", 1)
	text = strings.Replace(text, "[tls]\n", "[tls]\nmin_version = \"1.3\"\n", 1)
	cfg, err := Parse("x.toml", dir, []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	l := cfg.Limits
	got := fmt.Sprintln(l.MaxMessageBytes, l.MaxRecipients, l.MaxHeaderBytes, l.MaxHeaders, l.MaxMIMEDepth,
		l.MaxMIMEParts, l.ReadTimeout, l.WriteTimeout, l.ShutdownTimeout, l.MaxConnections,
		cfg.Log.Level, cfg.Log.Format, cfg.Log.SlogLevel(), cfg.TLS.MinVersion, cfg.TLS.Version(),
		cfg.Server.DataDir, cfg.Server.MailDomain)
	want := "1048576 10 32768 200 8 64 2m0s 30s 1m30s 50 debug json DEBUG 1.3 772 /srv/mss mail.example.org\n"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// wantErr asserts that err is an Errors holding a problem at line with key
// and a message containing msg, and that its text names file:line.
func wantErr(t *testing.T, err error, file string, line int, key, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %s:%d: %s: …%s…", file, line, key, msg)
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, not Errors: %v", err, err)
	}
	for _, e := range errs {
		if e.Line == line && e.Key == key && strings.Contains(e.Msg, msg) && e.File == file {
			prefix := file + ": "
			if line > 0 {
				prefix = fmt.Sprintf("%s:%d:%d: ", file, line, e.Col)
			}
			if key != "" {
				prefix += key + ": "
			}
			if !strings.HasPrefix(e.Error(), prefix) || !strings.Contains(err.Error(), e.Error()) {
				t.Errorf("error text lacks %q:\n%s", prefix, err)
			}
			return
		}
	}
	t.Errorf("want %s:%d: %s: …%s…; got:\n%v", file, line, key, msg, err)
}

func TestParseRefusals(t *testing.T) {
	dir := fixtureDir(t)
	writeFile(t, filepath.Join(dir, "notadir"), []byte("x"))
	cases := []struct {
		name     string
		old, new string // replace old by new in the base config ("" old: append new)
		line     int
		key      string
		msg      string
	}{
		// Shape: unknown keys and types.
		{"unknown top-level key", "[server]\n", "listen = 1\n[server]\n", 1, "listen", "unknown key; known keys here: server, tls"},
		{"unknown key after last account", "", "\nlisten = 1\n", 34, "account[1].listen", "unknown key"},
		{"unknown section", "", "\n[smpt]\nsubmission = []\n", 34, "smpt", "did you mean smtp?"},
		{"unknown nested key", "submission_tls =", "submision =", 11, "smtp.submision", "did you mean submission?"},
		{"unknown key wrong case", "hostname =", "Hostname =", 2, "server.Hostname", "did you mean hostname?"},
		{"unknown key in account", `rpps = "10101201234"`, `rpp = "10101201234"`, 26, "account[0].rpp", "did you mean rpps?"},
		{"unknown key in second account", `role = "executant"`, `rol = "executant"`, 31, "account[1].rol", "unknown key"},
		{"unknown dotted key", "[server]\n", "tls.chain = \"x\"\n[server]\n", 1, "tls.chain", "unknown key"},
		{"dotted key into array of tables", "[server]\n", "account.address = \"x\"\n[server]\n", 1, "account", "array of tables"},
		{"inline table unknown key", "[server]\n", "log = { level = \"info\", colour = true }\n[server]\n", 1, "log.colour", "unknown key"},
		{"inline account unknown key", "[server]\n", "account = [{ address = \"a@example.org\", pwd = \"x\" }]\n[server]\n", 1, "account[0].pwd", "unknown key"},
		{"inline account then header", "[server]\n", "account = []\n[server]\n", 23, "account", "already defined as an array at line 1"},
		{"string for integer", "", "[limits]\nmax_recipients = \"10\"\n", 34, "limits.max_recipients", "expected an integer, got a string"},
		{"integer for string", `hostname = "relay.test.example"`, "hostname = 42", 2, "server.hostname", "expected a string, got an integer"},
		{"string for list", `anchors = ["anchor.pem"]`, `anchors = "anchor.pem"`, 18, "trust.anchors", "expected an array of strings, got a string"},
		{"integer in list", `submission = ["127.0.0.1:2587"]`, `submission = ["127.0.0.1:2587", 587]`, 10, "smtp.submission[1]", "expected a string, got an integer"},
		{"duration without unit", "", "[limits]\nread_timeout = \"60\"\n", 34, "limits.read_timeout", "missing unit"},
		{"duration as integer", "", "[limits]\nread_timeout = 60\n", 34, "limits.read_timeout", "expected a quoted duration"},
		{"section as scalar", "[server]\n", "log = \"info\"\n[server]\n", 1, "log", "expected a table, got a string"},
		{"array of tables as table", "", "\n[account]\n", 34, "account", "write [[account]]"},
		{"table twice", "", "\n[tls]\n", 34, "tls", "table defined twice (first at line 5)"},
		{"key twice", `key = "key.pem"`, "key = \"key.pem\"\nkey = \"key.pem\"", 8, "tls.key", "defined twice (first at line 7)"},
		{"syntax error", `role = "executant"`, `role = executant`, 31, "", "invalid TOML"},

		// Server.
		{"hostname missing", `hostname = "relay.test.example"`, "", 1, "server.hostname", "required"},
		{"hostname invalid", `hostname = "relay.test.example"`, `hostname = "relay_1.example"`, 2, "server.hostname", "other than a letter"},
		{"hostname is IP", `hostname = "relay.test.example"`, `hostname = "192.0.2.1"`, 2, "server.hostname", "IP address"},
		{"hostname trailing dot", `hostname = "relay.test.example"`, `hostname = "relay.example."`, 2, "server.hostname", "trailing dot"},
		{"mail_domain invalid", `data_dir = "data"`, "data_dir = \"data\"\nmail_domain = \"-x.example\"", 4, "server.mail_domain", "hyphen"},
		{"data_dir missing", `data_dir = "data"`, "", 1, "server.data_dir", "required"},
		{"data_dir is a file", `data_dir = "data"`, `data_dir = "notadir"`, 3, "server.data_dir", "not a directory"},

		// TLS.
		{"cert missing", `cert = "cert.pem"`, "", 5, "tls.cert", "required"},
		{"cert unreadable", `cert = "cert.pem"`, `cert = "nope.pem"`, 6, "tls.cert", "no such file"},
		{"cert is a directory", `cert = "cert.pem"`, `cert = "."`, 6, "tls.cert", "not a regular file"},
		{"cert not PEM", `cert = "cert.pem"`, `cert = "garbage.pem"`, 6, "tls.cert", "no PEM CERTIFICATE"},
		{"key missing", `key = "key.pem"`, "", 5, "tls.key", "required"},
		{"key unreadable", `key = "key.pem"`, `key = "nope.pem"`, 7, "tls.key", "no such file"},
		{"key mismatch", `key = "key.pem"`, `key = "other-key.pem"`, 7, "tls.key", "does not match"},
		{"min_version 1.1", "[tls]\n", "[tls]\nmin_version = \"1.1\"\n", 6, "tls.min_version", "TLS 1.2 is the minimum"},
		{"min_version empty", "[tls]\n", "[tls]\nmin_version = \"\"\n", 6, "tls.min_version", `must be "1.2" or "1.3"`},

		// Listeners.
		{"listener without port", `"127.0.0.1:2587"`, `"127.0.0.1"`, 10, "smtp.submission[0]", "not host:port"},
		{"listener port negative", `"127.0.0.1:2587"`, `"127.0.0.1:-1"`, 10, "smtp.submission[0]", "from 0 to 65535"},
		{"listener port too big", `"127.0.0.1:2587"`, `"127.0.0.1:65536"`, 10, "smtp.submission[0]", "from 0 to 65535"},
		{"listener service name", `"127.0.0.1:2587"`, `"127.0.0.1:smtp"`, 10, "smtp.submission[0]", "must be a number"},
		{"listener bad host", `"127.0.0.1:2587"`, `"bad_host:2587"`, 10, "smtp.submission[0]", "neither an IP address nor a host name"},
		{"listener twice", `tls = ["127.0.0.1:2993"]`, `tls = ["127.0.0.1:2587"]`, 14, "imap.tls[0]", "clashes with smtp.submission[0] (line 10)"},
		{"listener twice in one list", `["127.0.0.1:2587"]`, `["127.0.0.1:2587", "127.0.0.1:2587"]`, 10, "smtp.submission[1]", "clashes with smtp.submission[0]"},
		{"wildcard clashes", `tls = ["127.0.0.1:2993"]`, `tls = [":2465"]`, 14, "imap.tls[0]", "clashes with smtp.submission_tls[0] (line 11)"},
		{"no SMTP listener", "submission = [\"127.0.0.1:2587\"]\nsubmission_tls = [\"127.0.0.1:2465\"]", "submission = []", 9, "smtp", "no SMTP listener"},
		{"no IMAP listener", "[imap]\ntls = [\"127.0.0.1:2993\"]\nstarttls = [\"127.0.0.1:2143\"]\n", "", 0, "imap", "no IMAP listener"},

		// Trust.
		{"no anchors", `anchors = ["anchor.pem"]`, `anchors = []`, 18, "trust.anchors", "at least one trust anchor"},
		{"anchors absent", `anchors = ["anchor.pem"]`, ``, 17, "trust.anchors", "at least one trust anchor"},
		{"anchor unreadable", `anchors = ["anchor.pem"]`, `anchors = ["anchor.pem", "missing.pem"]`, 18, "trust.anchors[1]", "no such file"},
		{"anchor not a certificate", `anchors = ["anchor.pem"]`, `anchors = ["garbage.pem"]`, 18, "trust.anchors[0]", "no PEM CERTIFICATE"},
		{"intermediate unreadable", `intermediates = ["inter.pem"]`, `intermediates = ["missing.pem"]`, 19, "trust.intermediates[0]", "no such file"},
		{"crl unreadable", `crls = ["ca.crl"]`, `crls = ["missing.crl"]`, 20, "trust.crls[0]", "no such file"},
		{"crl empty", `crls = ["ca.crl"]`, `crls = ["empty.crl"]`, 20, "trust.crls[0]", "empty file"},
		{"anchor is not a CA", `anchors = ["anchor.pem"]`, `anchors = ["cert.pem"]`, 18, "trust.anchors[0]", "certificate 1 (CN=relay.test.example) is not a CA certificate"},
		{"crl_optional_issuers unreadable", `crls = ["ca.crl"]`, "crls = [\"ca.crl\"]\ncrl_optional_issuers = [\"anchor.pem\", \"missing.pem\"]", 21, "trust.crl_optional_issuers[1]", "no such file"},
		{"crl_optional_issuers leaf", `crls = ["ca.crl"]`, "crls = [\"ca.crl\"]\ncrl_optional_issuers = [\"cert.pem\"]", 21, "trust.crl_optional_issuers[0]", "is not a CA certificate"},
		{"crl_optional_issuers not PEM", `crls = ["ca.crl"]`, "crls = [\"ca.crl\"]\ncrl_optional_issuers = [\"garbage.pem\"]", 21, "trust.crl_optional_issuers[0]", "no PEM CERTIFICATE"},
		{"crl_optional_issuers empty path", `crls = ["ca.crl"]`, "crls = [\"ca.crl\"]\ncrl_optional_issuers = [\"\"]", 21, "trust.crl_optional_issuers[0]", "empty path"},
		{"crl_optional_issuers a string", `crls = ["ca.crl"]`, "crls = [\"ca.crl\"]\ncrl_optional_issuers = \"anchor.pem\"", 21, "trust.crl_optional_issuers", "expected an array of strings"},
		{"reload_interval zero", `crls = ["ca.crl"]`, "crls = [\"ca.crl\"]\nreload_interval = \"0s\"", 21, "trust.reload_interval", "must be from 1s to 1h0m0s"},
		{"reload_interval under a second", `crls = ["ca.crl"]`, "crls = [\"ca.crl\"]\nreload_interval = \"500ms\"", 21, "trust.reload_interval", "out of range"},
		{"reload_interval over an hour", `crls = ["ca.crl"]`, "crls = [\"ca.crl\"]\nreload_interval = \"2h\"", 21, "trust.reload_interval", "out of range"},
		{"reload_interval integer", `crls = ["ca.crl"]`, "crls = [\"ca.crl\"]\nreload_interval = 60", 21, "trust.reload_interval", "expected a quoted duration"},

		// Signer (the section starts at line 33 when appended).
		{"signer cert without key", "", "[signer]\ncert = \"signer.pem\"\n", 33, "signer.key", "required when signer.cert is set"},
		{"signer key without cert", "", "[signer]\nkey = \"signer-key.pem\"\n", 33, "signer.cert", "required when signer.key is set"},
		{"signer cert empty path", "", "[signer]\ncert = \"\"\nkey = \"signer-key.pem\"\n", 34, "signer.cert", "empty path"},
		{"signer key empty path", "", "[signer]\ncert = \"signer.pem\"\nkey = \"\"\n", 35, "signer.key", "empty path"},
		{"signer cert unreadable", "", "[signer]\ncert = \"nope.pem\"\nkey = \"signer-key.pem\"\n", 34, "signer.cert", "no such file"},
		{"signer key unreadable", "", "[signer]\ncert = \"signer.pem\"\nkey = \"nope.pem\"\n", 35, "signer.key", "no such file"},
		{"signer cert not PEM", "", "[signer]\ncert = \"garbage.pem\"\nkey = \"signer-key.pem\"\n", 34, "signer.cert", "no PEM CERTIFICATE"},
		{"signer key mismatch", "", "[signer]\ncert = \"signer.pem\"\nkey = \"key.pem\"\n", 35, "signer.key", "does not go with"},
		{"signer TLS certificate", "", "[signer]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n", 34, "signer.cert", "lacks emailProtection"},
		{"signer encipherment only", "", "[signer]\ncert = \"signer-enc.pem\"\nkey = \"signer-key.pem\"\n", 34, "signer.cert", "neither digitalSignature nor nonRepudiation"},
		{"signer Ed25519", "", "[signer]\ncert = \"signer-ed25519.pem\"\nkey = \"signer-ed25519-key.pem\"\n", 34, "signer.cert", "RSA or ECDSA required"},
		{"signer address not in certificate", "", "[signer]\ncert = \"signer.pem\"\nkey = \"signer-key.pem\"\naddress = \"mdn@relay.test.example\"\n", 36, "signer.address", "not for signer.address mdn@relay.test.example"},
		{"signer address local part case", "", "[signer]\ncert = \"signer.pem\"\nkey = \"signer-key.pem\"\naddress = \"Postmaster@relay.test.example\"\n", 36, "signer.address", "not for signer.address"},
		{"signer default address not in certificate", "", "[signer]\ncert = \"signer-other.pem\"\nkey = \"signer-key.pem\"\n", 34, "signer.cert", "is for notifications@relay.test.example, not for the default signer.address postmaster@relay.test.example"},
		{"signer address with display name", "", "[signer]\naddress = \"Relay <postmaster@relay.test.example>\"\n", 34, "signer.address", "bare address"},
		{"signer unknown key", "", "[signer]\ncrt = \"signer.pem\"\n", 34, "signer.crt", "did you mean cert?"},

		// Limits.
		{"max_message_bytes zero", "", "[limits]\nmax_message_bytes = 0\n", 34, "limits.max_message_bytes", "out of range"},
		{"max_message_bytes too big", "", "[limits]\nmax_message_bytes = 2_000_000_000\n", 34, "limits.max_message_bytes", "1 KiB to 1 GiB"},
		{"max_recipients negative", "", "[limits]\nmax_recipients = -1\n", 34, "limits.max_recipients", "out of range"},
		{"max_header_bytes over message", "", "[limits]\nmax_message_bytes = 2048\nmax_header_bytes = 4096\n", 35, "limits.max_header_bytes", "larger than limits.max_message_bytes"},
		{"max_headers zero", "", "[limits]\nmax_headers = 0\n", 34, "limits.max_headers", "out of range"},
		{"max_mime_depth too deep", "", "[limits]\nmax_mime_depth = 1000\n", 34, "limits.max_mime_depth", "out of range"},
		{"max_mime_parts zero", "", "[limits]\nmax_mime_parts = 0\n", 34, "limits.max_mime_parts", "out of range"},
		{"read_timeout zero", "", "[limits]\nread_timeout = \"0s\"\n", 34, "limits.read_timeout", "out of range"},
		{"write_timeout negative", "", "[limits]\nwrite_timeout = \"-5s\"\n", 34, "limits.write_timeout", "out of range"},
		{"shutdown_timeout too long", "", "[limits]\nshutdown_timeout = \"1h\"\n", 34, "limits.shutdown_timeout", "out of range"},
		{"max_connections zero", "", "[limits]\nmax_connections = 0\n", 34, "limits.max_connections", "out of range"},

		// Log.
		{"log level unknown", "", "[log]\nlevel = \"verbose\"\n", 34, "log.level", "debug, info, warn, error"},
		{"log format unknown", "", "[log]\nformat = \"xml\"\n", 34, "log.format", "text or json"},

		// Accounts.
		{"address missing", `address = "pharma@example.org"`, "", 29, "account[1].address", "required"},
		{"address with display name", `"pharma@example.org"`, `"Pharma <pharma@example.org>"`, 30, "account[1].address", "bare address"},
		{"address not an address", `"pharma@example.org"`, `"pharma"`, 30, "account[1].address", "not an e-mail address"},
		{"address IP domain", `"pharma@example.org"`, `"pharma@[192.0.2.1]"`, 30, "account[1].address", ""},
		{"address duplicate", `"pharma@example.org"`, `"dr.martin@example.org"`, 30, "account[1].address", "already the address of account[0] (line 23)"},
		{"address duplicate by case", `"pharma@example.org"`, `"DR.MARTIN@example.org"`, 30, "account[1].address", "already the address of account[0]"},
		{"role missing", `role = "executant"`, "", 29, "account[1].role", "required"},
		{"role unknown", `role = "executant"`, `role = "nurse"`, 31, "account[1].role", "prescriber or executant"},
		{"password_hash missing", "role = \"executant\"\npassword_hash", "role = \"executant\"\nx_password_hash", 32, "account[1].x_password_hash", "did you mean password_hash?"},
		{"password_hash plain text", "role = \"executant\"\npassword_hash = \"$", "role = \"executant\"\npassword_hash = \"hunter2\"\n#", 32, "account[1].password_hash", "not a bcrypt hash"},
		{"rpps missing for prescriber", `rpps = "10101201234"`, "", 22, "account[0].rpps", "required for a prescriber"},
		{"rpps too short", `rpps = "10101201234"`, `rpps = "1010120123"`, 26, "account[0].rpps", "exactly 11 digits"},
		{"rpps not digits", `rpps = "10101201234"`, `rpps = "1010120123X"`, 26, "account[0].rpps", "exactly 11 digits"},
		{"rpps on executant", `role = "executant"`, "role = \"executant\"\nrpps = \"10101201234\"", 32, "account[1].rpps", "only prescribers"},
		{"name with newline", `name = "Dr Martin"`, `name = "Dr Martin\r\nBcc: x@example.org"`, 27, "account[0].name", "control character"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := base(t)
			if c.old == "" {
				text += c.new
			} else {
				if !strings.Contains(text, c.old) {
					t.Fatalf("base config lacks %q", c.old)
				}
				text = strings.Replace(text, c.old, c.new, 1)
			}
			_, err := Parse("mssrelay.toml", dir, []byte(text))
			wantErr(t, err, "mssrelay.toml", c.line, c.key, c.msg)
		})
	}
}

// TestParseTrustAndSigner: the new trust keys and the [signer] section,
// with their defaults.
func TestParseTrustAndSigner(t *testing.T) {
	dir := fixtureDir(t)
	cfg, err := Parse("m.toml", dir, []byte(base(t)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Trust.ReloadInterval.Duration != DefaultTrustReloadInterval || len(cfg.Trust.CRLOptionalIssuers) != 0 {
		t.Errorf("trust defaults: reload_interval %v, crl_optional_issuers %v", cfg.Trust.ReloadInterval, cfg.Trust.CRLOptionalIssuers)
	}
	if cfg.Signer.Signs() || cfg.Signer.Address != "postmaster@relay.test.example" {
		t.Errorf("no [signer]: Signs() = %v, address %q; want unsigned, postmaster@relay.test.example", cfg.Signer.Signs(), cfg.Signer.Address)
	}

	text := strings.Replace(base(t), `crls = ["ca.crl"]`,
		"crls = [\"ca.crl\"]\ncrl_optional_issuers = [\"anchor.pem\", \"inter.pem\"]\nreload_interval = \"5m\"", 1) +
		"[signer]\ncert = \"signer.pem\"\nkey = \"signer-key.pem\"\naddress = \"postmaster@Example.ORG\"\n"
	text = strings.Replace(text, `data_dir = "data"`, "data_dir = \"data\"\nmail_domain = \"example.org\"", 1)
	cfg, err = Parse("m.toml", dir, []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	tr, s := cfg.Trust, cfg.Signer
	if tr.ReloadInterval.Duration != 5*time.Minute || len(tr.CRLOptionalIssuers) != 2 || tr.CRLOptionalIssuers[1] != filepath.Join(dir, "inter.pem") {
		t.Errorf("trust: reload_interval %v, crl_optional_issuers %v", tr.ReloadInterval, tr.CRLOptionalIssuers)
	}
	if !s.Signs() || s.Cert != filepath.Join(dir, "signer.pem") || s.Key != filepath.Join(dir, "signer-key.pem") || s.Address != "postmaster@example.org" {
		t.Errorf("signer: %+v (Signs %v)", s, s.Signs())
	}

	// The default address follows mail_domain and must be in the
	// certificate (here it is: the fixture names both test domains).
	text = base(t) + "[signer]\ncert = \"signer.pem\"\nkey = \"signer-key.pem\"\n"
	cfg, err = Parse("m.toml", dir, []byte(text))
	if err != nil {
		t.Fatalf("Parse with the default address: %v", err)
	}
	if cfg.Signer.Address != "postmaster@relay.test.example" {
		t.Errorf("default address %q", cfg.Signer.Address)
	}

	// A bad mail_domain is reported once, at its line, not again through
	// the default address.
	text = strings.Replace(text, `data_dir = "data"`, "data_dir = \"data\"\nmail_domain = \"bad_domain.example\"", 1)
	_, err = Parse("m.toml", dir, []byte(text))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Key != "server.mail_domain" {
		t.Errorf("want only server.mail_domain refused, got:\n%v", err)
	}
}

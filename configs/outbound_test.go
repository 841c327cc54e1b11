package configs

import (
	"errors"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestOutboundDefaults(t *testing.T) {
	dir := fixtureDir(t)
	cfg, err := Parse("m.toml", dir, []byte(base(t)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	o, p := cfg.Outbound, cfg.Patients
	checks := []struct {
		name      string
		got, want any
	}{
		{"patients.domain", p.Domain, DefaultPatientDomain},
		{"patients.registry", p.Registry, ""},
		{"registry", cfg.PatientRegistry() == nil, true},
		{"client_cert is tls.cert", o.ClientCert, filepath.Join(dir, "cert.pem")},
		{"client_key is tls.key", o.ClientKey, filepath.Join(dir, "key.pem")},
		{"cas are anchors and intermediates", o.CAs, []string{filepath.Join(dir, "anchor.pem"), filepath.Join(dir, "inter.pem")}},
		{"max_age", o.MaxAge.Duration, 48 * time.Hour},
		{"delay_warning", o.DelayWarning.Duration, 4 * time.Hour},
		{"retry_min", o.RetryMin.Duration, time.Minute},
		{"retry_max", o.RetryMax.Duration, time.Hour},
		{"workers", o.Workers, 4},
		{"per_destination", o.PerDestination, 2},
		{"connect_timeout", o.ConnectTimeout.Duration, 30 * time.Second},
		{"command_timeout", o.CommandTimeout.Duration, 5 * time.Minute},
		{"mx_lookup", o.MXLookup, false},
		{"routes", len(o.Routes), 0},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}
	// The default CAs are a copy: changing one list leaves the other.
	cfg.Outbound.CAs[0] = "changed"
	if cfg.Trust.Anchors[0] == "changed" {
		t.Errorf("outbound.cas shares its array with trust.anchors")
	}
	if _, ok := o.RouteFor(DefaultPatientDomain); ok {
		t.Errorf("RouteFor found a route in a config without any")
	}
}

func TestOutboundExplicit(t *testing.T) {
	dir := fixtureDir(t)
	text := base(t) + `
[patients]
domain = "Patients.Example.NET"

[outbound]
client_cert = "signer.pem"
client_key = "signer-key.pem"
cas = ["inter.pem"]
max_age = "72h"
delay_warning = "0s"
retry_min = "30s"
retry_max = "2h"
workers = 16
per_destination = 4
connect_timeout = "10s"
command_timeout = "10m"
mx_lookup = true

[[outbound.route]]
domain = "Patients.Example.NET"
hosts = ["mx1.patients.example.net:25", "192.0.2.25:2525", "[2001:db8::25]:25"]

[[outbound.route]]
domain = "other-operator.example"
hosts = ["smtp.other-operator.example:465"]
`
	cfg, err := Parse("m.toml", dir, []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	o := cfg.Outbound
	checks := []struct {
		name      string
		got, want any
	}{
		{"patients.domain lower-cased", cfg.Patients.Domain, "patients.example.net"},
		{"client_cert", o.ClientCert, filepath.Join(dir, "signer.pem")},
		{"client_key", o.ClientKey, filepath.Join(dir, "signer-key.pem")},
		{"cas", o.CAs, []string{filepath.Join(dir, "inter.pem")}},
		{"max_age", o.MaxAge.Duration, 72 * time.Hour},
		{"delay_warning disabled", o.DelayWarning.Duration, time.Duration(0)},
		{"retry_min", o.RetryMin.Duration, 30 * time.Second},
		{"retry_max", o.RetryMax.Duration, 2 * time.Hour},
		{"workers", o.Workers, 16},
		{"per_destination", o.PerDestination, 4},
		{"connect_timeout", o.ConnectTimeout.Duration, 10 * time.Second},
		{"command_timeout", o.CommandTimeout.Duration, 10 * time.Minute},
		{"mx_lookup", o.MXLookup, true},
		{"route domain lower-cased", o.Routes[0].Domain, "patients.example.net"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}

	for _, c := range []struct {
		domain string
		hosts  []string
	}{
		{"patients.example.net", []string{"mx1.patients.example.net:25", "192.0.2.25:2525", "[2001:db8::25]:25"}},
		{"PATIENTS.example.net", []string{"mx1.patients.example.net:25", "192.0.2.25:2525", "[2001:db8::25]:25"}},
		{"other-operator.example", []string{"smtp.other-operator.example:465"}},
		{"sub.patients.example.net", nil}, // exact match only
		{"example.net", nil},
		{"patients.example.net.", nil},
		{"", nil},
	} {
		hosts, ok := o.RouteFor(c.domain)
		if ok != (c.hosts != nil) || !reflect.DeepEqual(hosts, c.hosts) {
			t.Errorf("RouteFor(%q) = %v, %v; want %v", c.domain, hosts, ok, c.hosts)
		}
	}
	// The caller may modify what RouteFor returns.
	hosts, _ := o.RouteFor("other-operator.example")
	hosts[0] = "changed"
	if again, _ := o.RouteFor("other-operator.example"); again[0] != "smtp.other-operator.example:465" {
		t.Errorf("RouteFor returned the config's own slice")
	}
	var nilOutbound *Outbound
	if _, ok := nilOutbound.RouteFor("x.example"); ok {
		t.Errorf("nil Outbound has a route")
	}

	// Inline form of the routes.
	cfg, err = Parse("m.toml", dir, []byte(base(t)+"[outbound]\nroute = [{ domain = \"a.example\", hosts = [\"mx.a.example:25\"] }]\n"))
	if err != nil {
		t.Fatalf("inline routes: %v", err)
	}
	if hosts, ok := cfg.Outbound.RouteFor("A.example"); !ok || hosts[0] != "mx.a.example:25" {
		t.Errorf("inline route: %v %v", hosts, ok)
	}
}

// TestOutboundRefusals: every refusal of [patients] and [outbound], at
// its line. extra is appended to the base config; line counts from its
// first line (1).
func TestOutboundRefusals(t *testing.T) {
	dir := fixtureDir(t)
	baseLines := strings.Count(base(t), "\n")
	route := func(domain string, hosts ...string) string {
		return "[[outbound.route]]\ndomain = " + tomlString(domain) + "\nhosts = [" + quoteAll(hosts) + "]\n"
	}
	cases := []struct {
		name  string
		extra string
		line  int // in extra; 0: no line
		key   string
		msg   string
	}{
		// [patients].
		{"patients.domain invalid", "[patients]\ndomain = \"patient_mssante.fr\"\n", 2, "patients.domain", "other than a letter"},
		{"patients.domain empty", "[patients]\ndomain = \"\"\n", 2, "patients.domain", "empty name"},
		{"patients.domain IP", "[patients]\ndomain = \"192.0.2.1\"\n", 2, "patients.domain", "IP address"},
		{"patients.domain trailing dot", "[patients]\ndomain = \"patient.mssante.fr.\"\n", 2, "patients.domain", "trailing dot"},
		{"patients.domain is mail_domain", "[patients]\ndomain = \"Relay.Test.Example\"\n", 2, "patients.domain", "patients.domain and server.mail_domain are both"},
		{"patients.domain integer", "[patients]\ndomain = 1\n", 2, "patients.domain", "expected a string"},
		{"patients unknown key", "[patients]\nregistery = \"x\"\n", 2, "patients.registery", "did you mean registry?"},
		{"registry unreadable", "[patients]\nregistry = \"nope.txt\"\n", 2, "patients.registry", "no such file"},
		{"registry a directory", "[patients]\nregistry = \".\"\n", 2, "patients.registry", "not a regular file"},

		// Client certificate.
		{"client_cert without key", "[outbound]\nclient_cert = \"signer.pem\"\n", 1, "outbound.client_key", "required when outbound.client_cert is set"},
		{"client_key without cert", "[outbound]\nclient_key = \"signer-key.pem\"\n", 1, "outbound.client_cert", "required when outbound.client_key is set"},
		{"client_cert empty", "[outbound]\nclient_cert = \"\"\nclient_key = \"key.pem\"\n", 2, "outbound.client_cert", "empty path"},
		{"client_key empty", "[outbound]\nclient_cert = \"cert.pem\"\nclient_key = \"\"\n", 3, "outbound.client_key", "empty path"},
		{"client_cert unreadable", "[outbound]\nclient_cert = \"nope.pem\"\nclient_key = \"key.pem\"\n", 2, "outbound.client_cert", "no such file"},
		{"client_key unreadable", "[outbound]\nclient_cert = \"cert.pem\"\nclient_key = \"nope.pem\"\n", 3, "outbound.client_key", "no such file"},
		{"client_cert a directory", "[outbound]\nclient_cert = \".\"\nclient_key = \"key.pem\"\n", 2, "outbound.client_cert", "not a regular file"},
		{"client_cert not PEM", "[outbound]\nclient_cert = \"garbage.pem\"\nclient_key = \"key.pem\"\n", 2, "outbound.client_cert", "no PEM CERTIFICATE"},
		{"client_key mismatch", "[outbound]\nclient_cert = \"cert.pem\"\nclient_key = \"other-key.pem\"\n", 3, "outbound.client_key", "does not go with"},
		{"client_key not a key", "[outbound]\nclient_cert = \"cert.pem\"\nclient_key = \"garbage.pem\"\n", 3, "outbound.client_key", "does not go with"},

		// CAs.
		{"cas empty", "[outbound]\ncas = []\n", 2, "outbound.cas", "at least one CA"},
		{"cas unreadable", "[outbound]\ncas = [\"anchor.pem\", \"nope.pem\"]\n", 2, "outbound.cas[1]", "no such file"},
		{"cas not a CA", "[outbound]\ncas = [\"cert.pem\"]\n", 2, "outbound.cas[0]", "is not a CA certificate"},
		{"cas not PEM", "[outbound]\ncas = [\"garbage.pem\"]\n", 2, "outbound.cas[0]", "no PEM CERTIFICATE"},
		{"cas empty path", "[outbound]\ncas = [\"\"]\n", 2, "outbound.cas[0]", "empty path"},
		{"cas a string", "[outbound]\ncas = \"anchor.pem\"\n", 2, "outbound.cas", "expected an array of strings"},

		// Durations.
		{"max_age without unit", "[outbound]\nmax_age = \"48\"\n", 2, "outbound.max_age", "missing unit"},
		{"max_age integer", "[outbound]\nmax_age = 48\n", 2, "outbound.max_age", "expected a quoted duration"},
		{"max_age too short", "[outbound]\nmax_age = \"30s\"\n", 2, "outbound.max_age", "out of range"},
		{"max_age too long", "[outbound]\nmax_age = \"721h\"\n", 2, "outbound.max_age", "must be from 1m0s to 720h0m0s"},
		{"max_age not above retry_min", "[outbound]\nmax_age = \"1m\"\n", 2, "outbound.max_age", "not longer than retry_min (1m0s)"},
		{"retry_min above default max_age", "[outbound]\nretry_min = \"1h\"\nretry_max = \"24h\"\ndelay_warning = \"0s\"\nmax_age = \"1h\"\n", 5, "outbound.max_age", "a job would fail before its first retry"},
		{"retry_min zero", "[outbound]\nretry_min = \"0s\"\n", 2, "outbound.retry_min", "out of range"},
		{"retry_min negative", "[outbound]\nretry_min = \"-1m\"\n", 2, "outbound.retry_min", "out of range"},
		{"retry_min above retry_max", "[outbound]\nretry_min = \"10m\"\nretry_max = \"5m\"\n", 2, "outbound.retry_min", "longer than retry_max (5m0s)"},
		{"retry_min above default retry_max", "[outbound]\nretry_min = \"1h\"\nretry_max = \"30m\"\n", 2, "outbound.retry_min", "longer than retry_max"},
		{"retry_max below default retry_min", "[outbound]\nretry_max = \"30s\"\n", 2, "outbound.retry_max", "retry_min (1m0s) is longer than retry_max (30s)"},
		{"retry_max too long", "[outbound]\nretry_max = \"25h\"\n", 2, "outbound.retry_max", "out of range"},
		{"delay_warning equal to max_age", "[outbound]\nmax_age = \"4h\"\ndelay_warning = \"4h\"\n", 3, "outbound.delay_warning", "not shorter than max_age (4h0m0s)"},
		{"max_age below default delay_warning", "[outbound]\nmax_age = \"2h\"\n", 2, "outbound.max_age", "delay_warning (4h0m0s) is not shorter than max_age (2h0m0s)"},
		{"delay_warning negative", "[outbound]\ndelay_warning = \"-1s\"\n", 2, "outbound.delay_warning", "out of range"},
		{"connect_timeout zero", "[outbound]\nconnect_timeout = \"0s\"\n", 2, "outbound.connect_timeout", "out of range"},
		{"connect_timeout too long", "[outbound]\nconnect_timeout = \"11m\"\n", 2, "outbound.connect_timeout", "out of range"},
		{"command_timeout too long", "[outbound]\ncommand_timeout = \"2h\"\n", 2, "outbound.command_timeout", "out of range"},
		{"command_timeout garbage", "[outbound]\ncommand_timeout = \"soon\"\n", 2, "outbound.command_timeout", "invalid duration"},

		// Concurrency.
		{"workers zero", "[outbound]\nworkers = 0\n", 2, "outbound.workers", "must be from 1 to 256"},
		{"workers too many", "[outbound]\nworkers = 257\n", 2, "outbound.workers", "out of range"},
		{"per_destination zero", "[outbound]\nper_destination = 0\n", 2, "outbound.per_destination", "out of range"},
		{"per_destination too many", "[outbound]\nper_destination = 1000\n", 2, "outbound.per_destination", "must be from 1 to 256"},
		{"workers a string", "[outbound]\nworkers = \"4\"\n", 2, "outbound.workers", "expected an integer"},
		{"mx_lookup a string", "[outbound]\nmx_lookup = \"yes\"\n", 2, "outbound.mx_lookup", "expected true or false"},

		// Routes.
		{"route domain missing", "[[outbound.route]]\nhosts = [\"mx.a.example:25\"]\n", 1, "outbound.route[0].domain", "required"},
		{"route domain invalid", route("a_b.example", "mx.a.example:25"), 2, "outbound.route[0].domain", "other than a letter"},
		{"route domain IP", route("192.0.2.1", "mx.a.example:25"), 2, "outbound.route[0].domain", "IP address"},
		{"route domain duplicate", route("a.example", "mx.a.example:25") + route("b.example", "mx.b.example:25") + route("A.Example", "mx2.a.example:25"),
			8, "outbound.route[2].domain", `"a.example" is already routed by outbound.route[0] (line ` + strconv.Itoa(baseLines+2) + ")"},
		{"route domain is mail_domain", route("relay.test.example", "mx.a.example:25"), 2, "outbound.route[0].domain", "is server.mail_domain"},
		{"route hosts missing", "[[outbound.route]]\ndomain = \"a.example\"\n", 1, "outbound.route[0].hosts", "at least one"},
		{"route hosts empty", route("a.example"), 3, "outbound.route[0].hosts", "at least one"},
		{"route host without port", route("a.example", "mx.a.example"), 3, "outbound.route[0].hosts[0]", "not host:port"},
		{"route host port zero", route("a.example", "mx.a.example:0"), 3, "outbound.route[0].hosts[0]", "from 1 to 65535"},
		{"route host port too big", route("a.example", "mx.a.example:65536"), 3, "outbound.route[0].hosts[0]", "from 1 to 65535"},
		{"route host port signed", route("a.example", "mx.a.example:+25"), 3, "outbound.route[0].hosts[0]", "from 1 to 65535"},
		{"route host service name", route("a.example", "mx.a.example:smtp"), 3, "outbound.route[0].hosts[0]", "must be a number"},
		{"route host empty port", route("a.example", "mx.a.example:"), 3, "outbound.route[0].hosts[0]", "must be a number"},
		{"route host empty host", route("a.example", ":25"), 3, "outbound.route[0].hosts[0]", "empty host"},
		{"route host bad name", route("a.example", "mx.a.example:25", "mx_2.a.example:25"), 3, "outbound.route[0].hosts[1]", "neither an IP address nor a host name"},
		{"route host unspecified", route("a.example", "0.0.0.0:25"), 3, "outbound.route[0].hosts[0]", "not a destination"},
		{"route host IPv6 without brackets", route("a.example", "2001:db8::25:25"), 3, "outbound.route[0].hosts[0]", "not host:port"},
		{"route host URL", route("a.example", "smtp://mx.a.example:25"), 3, "outbound.route[0].hosts[0]", "not host:port"},
		{"route as table", "[outbound.route]\ndomain = \"a.example\"\n", 1, "outbound.route", "write [[outbound.route]]"},
		{"route unknown key", "[[outbound.route]]\ndomain = \"a.example\"\nhost = [\"mx.a.example:25\"]\n", 3, "outbound.route[0].host", "did you mean hosts?"},
		{"route hosts a string", "[[outbound.route]]\ndomain = \"a.example\"\nhosts = \"mx.a.example:25\"\n", 3, "outbound.route[0].hosts", "expected an array of strings"},
		{"outbound unknown key", "[outbound]\nmax_retries = 5\n", 2, "outbound.max_retries", "unknown key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("mssrelay.toml", dir, []byte(base(t)+c.extra))
			line := 0
			if c.line > 0 {
				line = baseLines + c.line
			}
			wantErr(t, err, "mssrelay.toml", line, c.key, c.msg)
		})
	}
}

// TestOutboundMailDomainClash: the default patients.domain against a
// mail_domain written as patient.mssante.fr is reported at mail_domain.
func TestOutboundMailDomainClash(t *testing.T) {
	dir := fixtureDir(t)
	text := strings.Replace(base(t), `data_dir = "data"`, "data_dir = \"data\"\nmail_domain = \"Patient.MSSante.fr\"", 1)
	_, err := Parse("m.toml", dir, []byte(text))
	wantErr(t, err, "m.toml", 4, "server.mail_domain", `patients.domain and server.mail_domain are both "patient.mssante.fr"`)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 {
		t.Errorf("want exactly one error, got:\n%v", err)
	}
}

// TestOutboundDefaultsAfterBadTLS: when tls.cert is refused, the default
// client certificate is not reported a second time.
func TestOutboundDefaultsAfterBadTLS(t *testing.T) {
	dir := fixtureDir(t)
	text := strings.Replace(base(t), `cert = "cert.pem"`, `cert = "nope.pem"`, 1)
	_, err := Parse("m.toml", dir, []byte(text))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Key != "tls.cert" {
		t.Errorf("want only tls.cert refused, got:\n%v", err)
	}
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = tomlString(s)
	}
	return strings.Join(q, ", ")
}

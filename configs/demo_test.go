package configs

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func demoParams(t *testing.T) DemoParams {
	return DemoParams{
		Hostname:      "localhost",
		DataDir:       ".",
		Cert:          "cert.pem",
		Key:           "key.pem",
		Anchors:       []string{"anchor.pem"},
		Intermediates: []string{"inter.pem"},
		Submission:    "127.0.0.1:10587",
		SubmissionTLS: "127.0.0.1:10465",
		IMAPTLS:       "127.0.0.1:10993",
		IMAPSTARTTLS:  "127.0.0.1:10143",
		Accounts: []Account{
			{Address: "dr.martin@localhost", Role: RolePrescriber, PasswordHash: hash(t), RPPS: "10101201234", Name: `Dr "Claire" Martin`},
			{Address: "pharmacie@localhost", Role: RoleExecutant, PasswordHash: hash(t)},
		},
	}
}

func TestRenderDemoRoundTrip(t *testing.T) {
	dir := fixtureDir(t)
	p := demoParams(t)
	out, err := RenderDemo(p)
	if err != nil {
		t.Fatalf("RenderDemo: %v", err)
	}
	path := filepath.Join(dir, "mssrelay.toml")
	writeFile(t, path, out)
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("the demo config is refused:\n%v\n%s", err, out)
	}
	if !reflect.DeepEqual(cfg.Accounts, p.Accounts) {
		t.Errorf("accounts do not round-trip:\n got %+v\nwant %+v", cfg.Accounts, p.Accounts)
	}
	for _, a := range p.Accounts {
		got, ok := cfg.Account(a.Address)
		if !ok || !got.CheckPassword("correct horse battery") {
			t.Errorf("account %s: found %v, password check failed", a.Address, ok)
		}
	}
	if cfg.Server.DataDir != dir || cfg.TLS.Cert != filepath.Join(dir, "cert.pem") {
		t.Errorf("paths not resolved against the demo directory: %q %q", cfg.Server.DataDir, cfg.TLS.Cert)
	}
	if got := []string{cfg.SMTP.Submission[0], cfg.SMTP.SubmissionTLS[0], cfg.IMAP.TLS[0], cfg.IMAP.STARTTLS[0]}; !reflect.DeepEqual(got,
		[]string{p.Submission, p.SubmissionTLS, p.IMAPTLS, p.IMAPSTARTTLS}) {
		t.Errorf("listeners %v", got)
	}
	if !bytes.HasPrefix(out, []byte("# mssrelay demo configuration")) {
		t.Errorf("demo config is not commented")
	}
}

func TestRenderDemoOmitsEmptyListener(t *testing.T) {
	dir := fixtureDir(t)
	p := demoParams(t)
	p.IMAPSTARTTLS, p.SubmissionTLS = "", ""
	p.Accounts = nil
	p.MailDomain = "Demo.Example"
	out, err := RenderDemo(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("demo.toml", dir, out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if cfg.Server.MailDomain != "demo.example" {
		t.Errorf("mail_domain %q", cfg.Server.MailDomain)
	}
	if len(cfg.IMAP.STARTTLS) != 0 || len(cfg.SMTP.SubmissionTLS) != 0 || len(cfg.Accounts) != 0 {
		t.Errorf("empty listeners or accounts rendered: %+v %+v %d", cfg.SMTP, cfg.IMAP, len(cfg.Accounts))
	}
}

// TestRenderDemoQuotes checks that parameters cannot inject TOML: a
// hostile value stays one string and is refused for what it is.
func TestRenderDemoQuotes(t *testing.T) {
	dir := fixtureDir(t)
	p := demoParams(t)
	p.Hostname = "evil\"\n[log]\nlevel = \"debug\"\n#\\"
	p.Accounts[1].Name = "Bcc\r\n\x00\x7f"
	out, err := RenderDemo(p)
	if err != nil {
		t.Fatalf("RenderDemo: %v", err)
	}
	if strings.Count(string(out), "\n[log]\n") != 1 {
		t.Errorf("a parameter added a table:\n%s", out)
	}
	_, err = Parse("demo.toml", dir, out)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 || errs[0].Key != "server.hostname" || errs[1].Key != "account[1].name" {
		t.Errorf("want exactly the hostname and name refused, got:\n%v", err)
	}
}

// TestRenderDemoTrustAndSigner: CRLs, CRL-optional issuers and [signer]
// appear when set and round-trip; without them nothing is rendered.
func TestRenderDemoTrustAndSigner(t *testing.T) {
	dir := fixtureDir(t)
	p := demoParams(t)
	out, err := RenderDemo(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"crls", "crl_optional_issuers", "[signer]"} {
		if bytes.Contains(out, []byte(absent)) {
			t.Errorf("%s rendered without being set:\n%s", absent, out)
		}
	}

	p.CRLs = []string{"ca.crl"}
	p.CRLOptionalIssuers = []string{"anchor.pem", "inter.pem"}
	p.SignerCert, p.SignerKey = "signer.pem", "signer-key.pem"
	p.SignerAddress = "postmaster@relay.test.example"
	out, err = RenderDemo(p)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("demo.toml", dir, out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []string{filepath.Join(dir, "anchor.pem"), filepath.Join(dir, "inter.pem")}
	if !reflect.DeepEqual(cfg.Trust.CRLOptionalIssuers, want) || !reflect.DeepEqual(cfg.Trust.CRLs, []string{filepath.Join(dir, "ca.crl")}) {
		t.Errorf("trust: crls %v, crl_optional_issuers %v", cfg.Trust.CRLs, cfg.Trust.CRLOptionalIssuers)
	}
	s := cfg.Signer
	if !s.Signs() || s.Cert != filepath.Join(dir, "signer.pem") || s.Key != filepath.Join(dir, "signer-key.pem") || s.Address != p.SignerAddress {
		t.Errorf("signer: %+v", s)
	}

	// The address alone renders a [signer] with the address only.
	p.SignerCert, p.SignerKey = "", ""
	out, err = RenderDemo(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err = Parse("demo.toml", dir, out); err != nil || cfg.Signer.Signs() || cfg.Signer.Address != p.SignerAddress {
		t.Errorf("address-only signer: %v, %+v", err, cfg)
	}

	// A hostile address stays one string.
	p.SignerAddress = "x\"\n[log]\nlevel = \"debug\"\n"
	out, err = RenderDemo(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(out), "\n[log]\n") != 1 {
		t.Errorf("the signer address added a table:\n%s", out)
	}
	_, err = Parse("demo.toml", dir, out)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Key != "signer.address" {
		t.Errorf("want only signer.address refused, got:\n%v", err)
	}
}

package configs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"text/template"
)

// Example is the reference configuration, mssrelay.example.toml: every key
// with a comment giving its meaning, default and unit, and production-shaped
// values. Tests parse it and check that it mentions every key of Config.
// Read-only: write a copy (bytes.Clone) if you need to change it.
//
//go:embed mssrelay.example.toml
var Example []byte

//go:embed demo.toml.tmpl
var demoTemplate string

// DemoParams fills the demo configuration. Paths may be relative to the
// directory the file will be written to. A listener left empty is not
// configured.
type DemoParams struct {
	Hostname      string
	MailDomain    string // optional; the hostname when empty
	DataDir       string // usually "."
	Cert, Key     string // server certificate chain and key, PEM
	Anchors       []string
	Intermediates []string
	// CRLs and CRLOptionalIssuers are rendered when set. A demo without
	// CRLs must list its CAs as CRL-optional, or every signature is
	// refused as revocation-unknown.
	CRLs               []string
	CRLOptionalIssuers []string
	Submission         string // host:port, STARTTLS submission
	SubmissionTLS      string // host:port, implicit TLS submission
	IMAPTLS            string // host:port, implicit TLS IMAP
	IMAPSTARTTLS       string // host:port, STARTTLS IMAP
	Accounts           []Account
	// The [signer] section is rendered when any of these is set: the
	// relay's organisation certificate chain and key (PEM) that sign its
	// notifications, and their From: address (default postmaster@ the
	// mail domain).
	SignerCert, SignerKey, SignerAddress string
}

var demoTmpl = template.Must(template.New("demo.toml").Funcs(template.FuncMap{
	"q": tomlString,
	"list": func(s string) string {
		if s == "" {
			return "[]"
		}
		return "[" + tomlString(s) + "]"
	},
	"lists": func(ss []string) string {
		var b bytes.Buffer
		b.WriteByte('[')
		for i, s := range ss {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(tomlString(s))
		}
		b.WriteByte(']')
		return b.String()
	},
}).Parse(demoTemplate))

// RenderDemo writes the demo configuration for p. Every value is quoted as
// a TOML string, so no parameter can add keys; the output is checked to be
// well-formed against the Config schema (the files it names are checked
// when it is loaded).
func RenderDemo(p DemoParams) ([]byte, error) {
	var b bytes.Buffer
	if err := demoTmpl.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("configs: rendering demo config: %w", err)
	}
	errs := &collector{file: "demo.toml"}
	newWalker(b.Bytes(), errs).run()
	if err := errs.result(); err != nil {
		return nil, errors.Join(errors.New("configs: rendered demo config is malformed"), err)
	}
	return b.Bytes(), nil
}

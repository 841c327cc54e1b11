package configs

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary text to Parse: it must never panic, and a
// refusal must be a well-formed Errors.
func FuzzParse(f *testing.F) {
	dir := fixtureDir(f)
	f.Add([]byte(base(f)))
	f.Add(Example)
	f.Add([]byte(base(f) + "[signer]\ncert = \"signer.pem\"\nkey = \"signer-key.pem\"\naddress = \"Postmaster@X\"\n"))
	f.Add([]byte("[trust]\ncrl_optional_issuers = [\"cert.pem\", \"\"]\nreload_interval = \"0.5s\"\n"))
	f.Add([]byte("[server]\nhostname = 42\n[[account]]\naddress = \"a@b.example\"\n"))
	f.Add([]byte("log = { level = \"info\", x = [1, {a = 2}] }\naccount = [{address = 3}, 4]\n"))
	f.Add([]byte("tls.cert = 'a'\n[tls]\n[tls.cert]\n[[tls]]\n[account.x]\n"))
	f.Add([]byte("[limits]\nread_timeout = \"-99999999999h\"\nmax_message_bytes = -9223372036854775808\n"))
	f.Add([]byte("a = \"\"\"\nmulti\nline\"\"\"\nb = [\n# c\n]\n\"quoted.key\" = 1\n"))
	f.Add([]byte("\xef\xbb\xbf[server]\r\nhostname = \"x\"\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", dir, data)
		if err == nil {
			if cfg == nil || cfg.Limits.MaxMessageBytes <= 0 || cfg.TLS.Version() == 0 || len(cfg.Trust.Anchors) == 0 {
				t.Fatalf("accepted config is incomplete: %+v", cfg)
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) {
			t.Fatalf("refusal is %T, not Errors: %v", err, err)
		}
		if len(errs) == 0 || len(errs) > MaxReportedErrors+1 {
			t.Fatalf("%d errors reported", len(errs))
		}
		lines := strings.Count(string(data), "\n") + 1
		for _, e := range errs {
			if e.Line < 0 || e.Line > lines || (e.Line > 0 && e.Col < 1) || e.File != "fuzz.toml" {
				t.Fatalf("bad position %d:%d in %d lines: %v", e.Line, e.Col, lines, e)
			}
			if strings.ContainsAny(e.Error(), "\n\r") {
				t.Fatalf("an error message spans lines: %q", e.Error())
			}
		}
	})
}

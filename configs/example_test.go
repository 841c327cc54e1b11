package configs

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	toml "github.com/pelletier/go-toml/v2"
)

// exampleInDir rewrites the example's absolute paths into dir and writes
// the files it names there: a real certificate and key, anchors,
// intermediates and a CRL.
func exampleInDir(t *testing.T) (dir string, text []byte) {
	t.Helper()
	dir = t.TempDir()
	text = bytes.ReplaceAll(Example, []byte(`"/etc/mssrelay/`), []byte(`"`+dir+`/etc/`))
	text = bytes.ReplaceAll(text, []byte(`"/var/lib/mssrelay`), []byte(`"`+dir+`/var`))
	if bytes.Count(text, []byte(`"/`)) != bytes.Count(text, []byte(`"`+dir+`/`)) {
		t.Fatalf("the example has an absolute path this test does not rewrite")
	}
	var raw Config
	if err := toml.Unmarshal(text, &raw); err != nil {
		t.Fatalf("example: %v", err)
	}
	p := pki(t)
	writeFile(t, raw.TLS.Cert, p.certPEM)
	writeFile(t, raw.TLS.Key, p.keyPEM)
	for _, f := range append(slices.Clone(raw.Trust.Anchors), raw.Trust.Intermediates...) {
		writeFile(t, f, p.caPEM)
	}
	for _, f := range raw.Trust.CRLs {
		writeFile(t, f, p.crlDER)
	}
	for _, f := range raw.Trust.CRLOptionalIssuers {
		writeFile(t, f, p.caPEM)
	}
	if raw.Operators.Whitelist != "" {
		writeFile(t, raw.Operators.Whitelist, []byte("# other operators\nmssante.fr\n"))
	}
	if raw.Signer.Cert != "" {
		writeFile(t, raw.Signer.Cert, p.signerPEM)
		writeFile(t, raw.Signer.Key, p.signerKeyPEM)
	}
	return dir, text
}

func TestExampleParses(t *testing.T) {
	dir, text := exampleInDir(t)
	cfg, err := Parse("mssrelay.example.toml", dir, text)
	if err != nil {
		t.Fatalf("the example config is refused:\n%v", err)
	}
	// Production shape: the standard ports and paths.
	for _, want := range []string{":587", ":465", ":993", ":143", "/etc/mssrelay/", "/var/lib/mssrelay"} {
		if !bytes.Contains(Example, []byte(want)) {
			t.Errorf("example lacks %q", want)
		}
	}
	if len(cfg.Accounts) == 0 || cfg.Server.MailDomain == cfg.Server.Hostname {
		t.Errorf("example should show accounts and a mail_domain distinct from hostname")
	}
	// The documented defaults are the defaults: the example writes every
	// limit with its default value, so parsing it without [limits] gives
	// the same Limits.
	noLimits := regexp.MustCompile(`(?ms)^\[limits\].*?^\[log\]`).ReplaceAll(text, []byte("[log]"))
	cfg2, err := Parse("x.toml", dir, noLimits)
	if err != nil {
		t.Fatalf("example without [limits]: %v", err)
	}
	if cfg.Limits != cfg2.Limits {
		t.Errorf("example limits differ from defaults:\n%+v\n%+v", cfg.Limits, cfg2.Limits)
	}
	if cfg.TLS.MinVersion != DefaultMinTLSVersion {
		t.Errorf("example min_version %q is not the default", cfg.TLS.MinVersion)
	}
}

// TestExampleDocumentsEveryKey keeps the example from rotting: every key of
// the Config tree must be written in it, with a comment on the line above.
func TestExampleDocumentsEveryKey(t *testing.T) {
	errs := &collector{file: "example"}
	w := newWalker(Example, errs)
	w.run()
	if err := errs.result(); err != nil {
		t.Fatalf("example: %v", err)
	}
	index := regexp.MustCompile(`\[\d+\]`)
	first := map[string]int{} // key without indexes → first line
	for path, d := range w.defs {
		k := index.ReplaceAllString(path, "")
		if l, ok := first[k]; !ok || d.pos.line < l {
			first[k] = d.pos.line
		}
	}
	lines := strings.Split(string(Example), "\n")
	keys := schemaKeys()
	if len(keys) < 30 {
		t.Fatalf("schemaKeys found only %d keys", len(keys))
	}
	for _, k := range keys {
		line, ok := first[k]
		if !ok {
			t.Errorf("example lacks key %s", k)
			continue
		}
		if line < 2 || !strings.HasPrefix(strings.TrimSpace(lines[line-2]), "#") {
			t.Errorf("example line %d: key %s has no comment above it", line, k)
		}
	}
}

func TestExampleEmbedded(t *testing.T) {
	onDisk, err := os.ReadFile(filepath.Join(".", "mssrelay.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, Example) {
		t.Errorf("Example differs from mssrelay.example.toml")
	}
}

// TestDocumentsEveryKey keeps docs/configuration.md in step with the code:
// every key of the Config tree has a row, and every row names a real key.
func TestDocumentsEveryKey(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	keys := schemaKeys()
	known := map[string]bool{}
	for _, k := range keys {
		known[k] = true
		if !bytes.Contains(doc, []byte("| `"+k+"` |")) {
			t.Errorf("docs/configuration.md has no row for `%s`", k)
		}
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z_.]+)` \\|")
	rows := row.FindAllSubmatch(doc, -1)
	if len(rows) < len(keys) {
		t.Errorf("docs/configuration.md has %d key rows, want %d", len(rows), len(keys))
	}
	for _, m := range rows {
		if !known[string(m[1])] {
			t.Errorf("docs/configuration.md documents `%s`, which is not a config key", m[1])
		}
	}
}

package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOperators: the whitelist paths resolve and smtp.relay parses.
func TestOperators(t *testing.T) {
	dir := fixtureDir(t)
	if err := os.WriteFile(filepath.Join(dir, "ops.txt"), []byte("mssante.fr\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(base(t), "[smtp]\n", "[smtp]\nrelay = [\"127.0.0.1:2525\"]\n", 1) +
		"[operators]\nwhitelist = \"ops.txt\"\npublisher = \"ANS\"\n"
	cfg, err := Parse("m.toml", dir, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Operators.Relaying() || cfg.Operators.Whitelist != filepath.Join(dir, "ops.txt") || len(cfg.SMTP.Relay) != 1 || cfg.Operators.Publisher != "ANS" {
		t.Errorf("parsed %+v, relay %v", cfg.Operators, cfg.SMTP.Relay)
	}
	plain, err := Parse("m.toml", dir, []byte(base(t)))
	if err != nil || plain.Operators.Relaying() {
		t.Errorf("without [operators]: relaying %v, %v", plain.Operators.Relaying(), err)
	}
}

// TestOperatorsRefusals: each mistake is reported at its key.
func TestOperatorsRefusals(t *testing.T) {
	dir := fixtureDir(t)
	for _, f := range []string{"ops.txt", "ops.xml"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("mssante.fr\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	baseLines := strings.Count(base(t), "\n")
	withRelay := strings.Replace(base(t), "[smtp]\n", "[smtp]\nrelay = [\"127.0.0.1:2525\"]\n", 1)
	cases := []struct {
		name, text string
		line       int // 0: no line check
		key, msg   string
	}{
		{"relay without whitelist", withRelay, 0, "smtp.relay", "needs operators.whitelist"},
		{"relay clashes with submission", strings.Replace(base(t), "[smtp]\n", "[smtp]\nrelay = [\"127.0.0.1:2587\"]\n", 1) + "[operators]\nwhitelist = \"ops.txt\"\n",
			0, "smtp.relay[0]", "clashes with"},
		{"whitelist unreadable", base(t) + "[operators]\nwhitelist = \"nope.txt\"\n", baseLines + 2, "operators.whitelist", "no such file"},
		{"XML without signature", base(t) + "[operators]\nwhitelist = \"ops.xml\"\n", baseLines + 2, "operators.whitelist", "detached signature"},
		{"signature unreadable", base(t) + "[operators]\nwhitelist = \"ops.xml\"\nsignature = \"nope.p7s\"\n", baseLines + 3, "operators.signature", "no such file"},
		{"signature without whitelist", base(t) + "[operators]\nsignature = \"ops.txt\"\n", baseLines + 2, "operators.signature", "without operators.whitelist"},
		{"unknown key", base(t) + "[operators]\nwhitelst = \"ops.txt\"\n", baseLines + 2, "operators.whitelst", "did you mean whitelist?"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("mssrelay.toml", dir, []byte(c.text))
			if err == nil || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %s: …%s", err, c.key, c.msg)
			}
			if c.line > 0 {
				wantErr(t, err, "mssrelay.toml", c.line, c.key, c.msg)
			}
		})
	}
}

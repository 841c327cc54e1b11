package configs

import (
	"strings"
	"testing"
	"time"
)

// TestClaimDefaults: without [claim] and server.claim_address the
// documented defaults apply, and the claim address follows mail_domain.
func TestClaimDefaults(t *testing.T) {
	dir := fixtureDir(t)
	cfg, err := Parse("m.toml", dir, []byte(base(t)))
	if err != nil {
		t.Fatal(err)
	}
	want := Claim{MaxPerHour: DefaultClaimMaxPerHour, FailureDelay: Duration{DefaultClaimFailureDelay}, ExecutionsAllowed: DefaultClaimExecutionsAllowed}
	if cfg.Claim != want || cfg.Server.ClaimAddress != "claim@relay.test.example" {
		t.Errorf("defaults: %+v, claim address %q", cfg.Claim, cfg.Server.ClaimAddress)
	}
	text := strings.Replace(base(t), `data_dir = "data"`, "data_dir = \"data\"\nmail_domain = \"Example.ORG\"", 1)
	if cfg, err = Parse("m.toml", dir, []byte(text)); err != nil || cfg.Server.ClaimAddress != "claim@example.org" {
		t.Errorf("claim address with mail_domain: %q, %v", cfg.Server.ClaimAddress, err)
	}

	text = strings.Replace(base(t), `data_dir = "data"`, "data_dir = \"data\"\nclaim_address = \"Ordonnances@Example.ORG\"", 1) +
		"[claim]\nmax_per_hour = 5\nfailure_delay = \"0s\"\nexecutions_allowed = 3\n"
	cfg, err = Parse("m.toml", dir, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want = Claim{MaxPerHour: 5, FailureDelay: Duration{0}, ExecutionsAllowed: 3}
	if cfg.Claim != want || cfg.Server.ClaimAddress != "Ordonnances@example.org" {
		t.Errorf("explicit: %+v, claim address %q", cfg.Claim, cfg.Server.ClaimAddress)
	}
	if cfg.Claim.FailureDelay.Duration != 0*time.Second {
		t.Errorf("failure_delay 0s is not zero")
	}
}

func TestClaimRefusals(t *testing.T) {
	dir := fixtureDir(t)
	cases := []struct {
		name, old, new string
		line           int
		key, msg       string
	}{
		{"claim address with display name", `data_dir = "data"`, "data_dir = \"data\"\nclaim_address = \"Claims <claim@example.org>\"", 4, "server.claim_address", "bare address"},
		{"claim address not an address", `data_dir = "data"`, "data_dir = \"data\"\nclaim_address = \"claim\"", 4, "server.claim_address", "not an e-mail address"},
		{"claim address is an account", `data_dir = "data"`, "data_dir = \"data\"\nclaim_address = \"Pharma@example.org\"", 4, "server.claim_address", "also the address of account[1] (line 31)"},
		{"default claim address is an account", `"pharma@example.org"`, `"claim@relay.test.example"`, 1, "server.claim_address", "the default claim address \"claim@relay.test.example\""},
		{"max_per_hour zero", "", "[claim]\nmax_per_hour = 0\n", 34, "claim.max_per_hour", "out of range"},
		{"max_per_hour string", "", "[claim]\nmax_per_hour = \"60\"\n", 34, "claim.max_per_hour", "expected an integer"},
		{"failure_delay too long", "", "[claim]\nfailure_delay = \"1m\"\n", 34, "claim.failure_delay", "out of range"},
		{"failure_delay negative", "", "[claim]\nfailure_delay = \"-1s\"\n", 34, "claim.failure_delay", "out of range"},
		{"executions_allowed zero", "", "[claim]\nexecutions_allowed = 0\n", 34, "claim.executions_allowed", "out of range"},
		{"unknown claim key", "", "[claim]\nmax_per_day = 3\n", 34, "claim.max_per_day", "unknown key"},
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

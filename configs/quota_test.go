package configs

import (
	"strings"
	"testing"
)

func TestQuotaDefaults(t *testing.T) {
	cfg, err := Parse("x.toml", fixtureDir(t), []byte(base(t)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Quota != (Quota{}) {
		t.Errorf("quota default %+v, want no limit", cfg.Quota)
	}
	if got := cfg.Limits.MaxIMAPSessionsPerAccount; got != DefaultMaxIMAPSessionsPerAccount {
		t.Errorf("max_imap_sessions_per_account default %d", got)
	}
	if b, m := cfg.QuotaFor("pharma@example.org"); b != 0 || m != 0 {
		t.Errorf("QuotaFor without quota: %d, %d", b, m)
	}
}

func TestQuotaValues(t *testing.T) {
	// The last [[account]] of the base config is pharma@example.org: the
	// keys appended go into it.
	text := base(t) + `quota_bytes = 100_000_000
quota_messages = 7

[quota]
max_bytes = 50_000_000
max_messages = 1000

[limits]
max_imap_sessions_per_account = 3
`
	cfg, err := Parse("x.toml", fixtureDir(t), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.MaxIMAPSessionsPerAccount != 3 {
		t.Errorf("max_imap_sessions_per_account %d", cfg.Limits.MaxIMAPSessionsPerAccount)
	}
	for _, c := range []struct {
		addr  string
		bytes int64
		msgs  uint32
	}{
		{"pharma@example.org", 100_000_000, 7},      // both overridden
		{"dr.martin@example.org", 50_000_000, 1000}, // [quota]
		{"dr.martin@EXAMPLE.org", 50_000_000, 1000}, // domain case-insensitive
		{"stranger@example.org", 50_000_000, 1000},  // no account: the default
	} {
		if b, m := cfg.QuotaFor(c.addr); b != c.bytes || m != c.msgs {
			t.Errorf("QuotaFor(%s) = %d, %d; want %d, %d", c.addr, b, m, c.bytes, c.msgs)
		}
	}
	// One override alone: the other limit comes from [quota].
	if b, m := cfg.Quota.For(&Account{QuotaMessages: 5}); b != 50_000_000 || m != 5 {
		t.Errorf("For(messages only) = %d, %d", b, m)
	}
	if b, m := cfg.Quota.For(nil); b != 50_000_000 || m != 1000 {
		t.Errorf("For(nil) = %d, %d", b, m)
	}
}

func TestQuotaRefusals(t *testing.T) {
	dir := fixtureDir(t)
	tests := []struct {
		name, add, want string
	}{
		{"negative bytes", "[quota]\nmax_bytes = -1\n", "quota.max_bytes: -1 is out of range"},
		{"bytes above 1 PiB", "[quota]\nmax_bytes = 1_125_899_906_842_625\n", "quota.max_bytes: 1125899906842625 is out of range"},
		{"bytes below one message", "[quota]\nmax_bytes = 1000\n", "quota.max_bytes: 1000 bytes is less than limits.max_message_bytes (33554432)"},
		{"bytes below a configured message size", "[limits]\nmax_message_bytes = 2048\n[quota]\nmax_bytes = 2047\n", "less than limits.max_message_bytes (2048)"},
		{"negative messages", "[quota]\nmax_messages = -5\n", "quota.max_messages: -5 is out of range"},
		{"too many messages", "[quota]\nmax_messages = 2_147_483_648\n", "quota.max_messages: 2147483648 is out of range"},
		{"messages as a string", "[quota]\nmax_messages = \"10\"\n", "quota.max_messages: expected an integer"},
		{"unknown quota key", "[quota]\nmax_size = 10\n", "quota.max_size: unknown key"},
		{"account bytes below one message", "quota_bytes = 4096\n", "account[1].quota_bytes: 4096 bytes is less than limits.max_message_bytes"},
		{"account negative messages", "quota_messages = -1\n", "account[1].quota_messages: -1 is out of range"},
		{"sessions zero", "[limits]\nmax_imap_sessions_per_account = 0\n", "limits.max_imap_sessions_per_account: 0 is out of range"},
		{"sessions too many", "[limits]\nmax_imap_sessions_per_account = 10001\n", "limits.max_imap_sessions_per_account: 10001 is out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.toml", dir, []byte(base(t)+tc.add))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.add)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tc.want)
			}
			// Every error names a line of the file.
			if !strings.Contains(err.Error(), "x.toml:") {
				t.Fatalf("error without a line: %v", err)
			}
		})
	}
	// 0 is "no limit" (or "use [quota]") and always valid.
	text := base(t) + "quota_bytes = 0\nquota_messages = 0\n[quota]\nmax_bytes = 0\nmax_messages = 0\n"
	if _, err := Parse("x.toml", dir, []byte(text)); err != nil {
		t.Fatalf("zero quotas refused: %v", err)
	}
}

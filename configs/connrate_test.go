package configs

import "testing"

// TestConnectionRateKey: limits.max_connection_rate_per_ip defaults to
// DefaultMaxConnRatePerIP, takes a value in range, and refuses one out of
// range with the key and line named.
func TestConnectionRateKey(t *testing.T) {
	dir := fixtureDir(t)
	cfg, err := Parse("mssrelay.toml", dir, []byte(base(t)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := cfg.Limits.MaxConnectionRatePerIP; got != DefaultMaxConnRatePerIP {
		t.Errorf("default max_connection_rate_per_ip %d, want %d", got, DefaultMaxConnRatePerIP)
	}
	cfg, err = Parse("mssrelay.toml", dir, []byte(base(t)+"[limits]\nmax_connection_rate_per_ip = 20\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := cfg.Limits.MaxConnectionRatePerIP; got != 20 {
		t.Errorf("max_connection_rate_per_ip %d, want 20", got)
	}
	for _, tc := range []struct{ name, value string }{
		{"zero", "0"},
		{"negative", "-1"},
		{"too high", "100001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("mssrelay.toml", dir, []byte(base(t)+"[limits]\nmax_connection_rate_per_ip = "+tc.value+"\n"))
			wantErr(t, err, "mssrelay.toml", 34, "limits.max_connection_rate_per_ip", "from 1 to 100000 a minute")
		})
	}
}

package configs

import (
	"testing"
)

// TestAdminRefusals: the admin endpoint has no authentication, so an
// address that is not loopback is refused, at its line, unless
// allow_remote says a firewall guards it.
func TestAdminRefusals(t *testing.T) {
	dir := fixtureDir(t)
	// The base config ends at line 32: an appended [admin] header is line 33
	// and its first key line 34.
	cases := []struct {
		name string
		add  string
		line int
		key  string
		msg  string
	}{
		{"every interface, IPv4", "[admin]\nlisten = \"0.0.0.0:9187\"\n", 34, "admin.listen", `"0.0.0.0:9187" listens on every interface: the admin endpoint has no authentication`},
		{"every interface, empty host", "[admin]\nlisten = \":9187\"\n", 34, "admin.listen", "listens on every interface"},
		{"every interface, IPv6", "[admin]\nlisten = \"[::]:9187\"\n", 34, "admin.listen", "listens on every interface"},
		{"public address", "[admin]\nlisten = \"192.0.2.10:9187\"\n", 34, "admin.listen", "is not a loopback address"},
		{"private address", "[admin]\nlisten = \"10.1.2.3:9187\"\n", 34, "admin.listen", "set admin.allow_remote = true"},
		{"host name", "[admin]\nlisten = \"metrics.example.org:9187\"\n", 34, "admin.listen", "host name other than localhost"},
		{"allow_remote false", "[admin]\nlisten = \"0.0.0.0:9187\"\nallow_remote = false\n", 34, "admin.listen", "not face the internet"},
		{"not host:port", "[admin]\nlisten = \"127.0.0.1\"\n", 34, "admin.listen", "not host:port"},
		{"bad port", "[admin]\nlisten = \"127.0.0.1:99999\"\n", 34, "admin.listen", "from 0 to 65535"},
		{"clashes with submission", "[admin]\nlisten = \"127.0.0.1:2587\"\n", 34, "admin.listen", "clashes with smtp.submission[0] (line 10)"},
		{"listen as a list", "[admin]\nlisten = [\"127.0.0.1:9187\"]\n", 34, "admin.listen", "expected a string, got an array"},
		{"pprof as a string", "[admin]\npprof = \"yes\"\n", 34, "admin.pprof", "expected true or false"},
		{"allow_remote as integer", "[admin]\nallow_remote = 1\n", 34, "admin.allow_remote", "expected true or false"},
		{"unknown key", "[admin]\nprof = true\n", 34, "admin.prof", "did you mean pprof?"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("mssrelay.toml", dir, []byte(base(t)+c.add))
			wantErr(t, err, "mssrelay.toml", c.line, c.key, c.msg)
		})
	}
}

func TestAdminAccepted(t *testing.T) {
	dir := fixtureDir(t)
	cases := []struct {
		name string
		add  string
		want Admin
	}{
		{"absent: disabled", "", Admin{}},
		{"empty: disabled", "[admin]\nlisten = \"\"\n", Admin{}},
		{"pprof without listen", "[admin]\npprof = true\n", Admin{Pprof: true}},
		{"loopback IPv4", "[admin]\nlisten = \"127.0.0.1:9187\"\n", Admin{Listen: "127.0.0.1:9187"}},
		{"loopback 127/8", "[admin]\nlisten = \"127.0.0.2:9187\"\n", Admin{Listen: "127.0.0.2:9187"}},
		{"loopback IPv6", "[admin]\nlisten = \"[::1]:9187\"\npprof = true\n", Admin{Listen: "[::1]:9187", Pprof: true}},
		{"IPv4-mapped loopback", "[admin]\nlisten = \"[::ffff:127.0.0.1]:9187\"\n", Admin{Listen: "[::ffff:127.0.0.1]:9187"}},
		{"localhost", "[admin]\nlisten = \"LocalHost:9187\"\n", Admin{Listen: "LocalHost:9187"}},
		{"port 0", "[admin]\nlisten = \"127.0.0.1:0\"\n", Admin{Listen: "127.0.0.1:0"}},
		{"remote allowed", "[admin]\nlisten = \"0.0.0.0:9187\"\nallow_remote = true\n", Admin{Listen: "0.0.0.0:9187", AllowRemote: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse("mssrelay.toml", dir, []byte(base(t)+c.add))
			if err != nil {
				t.Fatalf("refused:\n%v", err)
			}
			if cfg.Admin != c.want {
				t.Errorf("Admin = %+v, want %+v", cfg.Admin, c.want)
			}
		})
	}
}

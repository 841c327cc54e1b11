package configs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseCollectsAllErrors(t *testing.T) {
	dir := fixtureDir(t)
	text := strings.NewReplacer(
		`hostname = "relay.test.example"`, "hostname = 42", // shape, line 2
		`cert = "cert.pem"`, `cert = "missing.pem"`, // meaning, line 6
		`submission_tls =`, `submision_tls =`, // shape, line 11
		`tls = ["127.0.0.1:2993"]`, `tls = ["127.0.0.1:2587"]`, // meaning, line 14
		`role = "executant"`, `role = "nurse"`, // meaning, line 31
	).Replace(base(t)) + "[log]\nlevel = \"loud\"\n" // meaning, line 34
	_, err := Parse("m.toml", dir, []byte(text))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want Errors, got %T: %v", err, err)
	}
	var got []string
	for _, e := range errs {
		got = append(got, fmt.Sprintf("%d %s", e.Line, e.Key))
	}
	want := []string{
		"2 server.hostname", // reported once: not again as "required"
		"6 tls.cert",
		"11 smtp.submision_tls",
		"14 imap.tls[0]",
		"31 account[1].role",
		"34 log.level",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s\nfull error:\n%v", strings.Join(got, "\n"), strings.Join(want, "\n"), err)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != len(want) {
		t.Errorf("error text has %d lines, want %d:\n%v", n, len(want), err)
	}
}

func TestParseErrorCap(t *testing.T) {
	dir := fixtureDir(t)
	var b strings.Builder
	for i := range 30 {
		fmt.Fprintf(&b, "unknown%d = 1\n", i)
	}
	_, err := Parse("m.toml", dir, []byte(b.String()+base(t)))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want Errors, got %T: %v", err, err)
	}
	if len(errs) != MaxReportedErrors+1 {
		t.Fatalf("got %d entries, want %d", len(errs), MaxReportedErrors+1)
	}
	if errs[0].Line != 1 || errs[0].Key != "unknown0" || errs[19].Line != 20 {
		t.Errorf("errors not in line order: first %v, last %v", errs[0], errs[19])
	}
	if last := errs[len(errs)-1]; last.Msg != "too many errors: 10 more not shown" || last.Line != 0 {
		t.Errorf("last entry = %v", last)
	}
}

func TestParseSyntaxErrorStops(t *testing.T) {
	dir := fixtureDir(t)
	// An unknown key before the syntax error is still reported; nothing
	// after it is checked for meaning.
	_, err := Parse("m.toml", dir, []byte("bogus = 1\n[server]\nhostname = \n"))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("want 2 errors, got %v", err)
	}
	if errs[0].Key != "bogus" || errs[1].Line != 3 || !strings.Contains(errs[1].Msg, "invalid TOML") {
		t.Errorf("got:\n%v", err)
	}
}

func TestParseDecoderFallback(t *testing.T) {
	dir := fixtureDir(t)
	// An integer beyond 64 bits is not modelled by the walk: go-toml's
	// decoder reports it, with its position.
	_, err := Parse("m.toml", dir, []byte(base(t)+"[limits]\nmax_recipients = 99999999999999999999\n"))
	wantErr(t, err, "m.toml", 34, "limits.max_recipients", "too large")
}

func TestParseLimits(t *testing.T) {
	dir := fixtureDir(t)
	big := make([]byte, MaxConfigBytes+1)
	_, err := Parse("m.toml", dir, big)
	wantErr(t, err, "m.toml", 0, "", "larger than")

	// A byte order mark is tolerated and does not shift positions.
	_, err = Parse("m.toml", dir, append([]byte("\uFEFF"), base(t)+"bogus = 1\n"...))
	wantErr(t, err, "m.toml", 33, "account[1].bogus", "unknown key")
}

func TestLoad(t *testing.T) {
	dir := fixtureDir(t)
	path := filepath.Join(dir, "mssrelay.toml")
	writeFile(t, path, []byte(base(t)))
	// Relative paths resolve against the file's directory, not the
	// working directory.
	t.Chdir(t.TempDir())
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.File != path || cfg.TLS.Cert != filepath.Join(dir, "cert.pem") || cfg.Server.DataDir != filepath.Join(dir, "data") {
		t.Errorf("File %q, cert %q, data_dir %q", cfg.File, cfg.TLS.Cert, cfg.Server.DataDir)
	}

	writeFile(t, path, []byte(base(t)+"bogus = true\n"))
	_, err = Load(path)
	wantErr(t, err, path, 33, "account[1].bogus", "unknown key")

	for _, bad := range []string{filepath.Join(dir, "none.toml"), dir} {
		_, err := Load(bad)
		var errs Errors
		if err == nil || errors.As(err, &errs) {
			t.Errorf("Load(%s) = %v; want a plain file error", bad, err)
		}
	}
	_, err = Load(filepath.Join(dir, "none.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want ErrNotExist", err)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	cases := []struct {
		e    FieldError
		want string
	}{
		{FieldError{File: "a.toml", Line: 12, Col: 1, Key: "smtp.submision", Msg: "unknown key"}, "a.toml:12:1: smtp.submision: unknown key"},
		{FieldError{File: "a.toml", Key: "smtp", Msg: "no SMTP listener"}, "a.toml: smtp: no SMTP listener"},
		{FieldError{File: "a.toml", Line: 3, Col: 8, Msg: "invalid TOML"}, "a.toml:3:8: invalid TOML"},
	}
	for _, c := range cases {
		if got := c.e.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
	errs := Errors{&cases[0].e, &cases[1].e}
	if got := errs.Error(); got != cases[0].want+"\n"+cases[1].want {
		t.Errorf("Errors.Error() = %q", got)
	}
	var fe *FieldError
	if !errors.As(error(errs), &fe) || fe != &cases[0].e {
		t.Errorf("errors.As does not reach the FieldError")
	}
}

func TestAccountLookup(t *testing.T) {
	dir := fixtureDir(t)
	cfg, err := Parse("m.toml", dir, []byte(base(t)))
	if err != nil {
		t.Fatal(err)
	}
	hand := &Config{Accounts: []Account{{Address: "dr.martin@example.org"}, {Address: "pharma@example.org"}}}
	cases := []struct {
		address string
		want    string // "" for not found
	}{
		{"dr.martin@example.org", "dr.martin@example.org"},
		{"dr.martin@EXAMPLE.org", "dr.martin@example.org"},
		{"pharma@Example.Org", "pharma@example.org"},
		{"Dr.Martin@example.org", ""}, // local part is exact
		{"nobody@example.org", ""},
		{"dr.martin", ""},
		{"@example.org", ""},
		{"dr.martin@", ""},
		{"", ""},
	}
	for _, c := range cases {
		for name, conf := range map[string]*Config{"parsed": cfg, "hand-built": hand} {
			a, ok := conf.Account(c.address)
			got := ""
			if ok {
				got = a.Address
			}
			if got != c.want {
				t.Errorf("%s: Account(%q) = %q, want %q", name, c.address, got, c.want)
			}
		}
	}
	if a, ok := cfg.Account("pharma@example.org"); !ok || a != &cfg.Accounts[1] {
		t.Errorf("Account does not return the config's own account")
	}
	var nilCfg *Config
	if _, ok := nilCfg.Account("a@b.example"); ok {
		t.Errorf("nil config found an account")
	}
}

func BenchmarkAccount(b *testing.B) {
	cfg := &Config{}
	for i := range 1000 {
		cfg.Accounts = append(cfg.Accounts, Account{Address: fmt.Sprintf("user%d@example.org", i)})
	}
	cfg.byAddress = make(map[string]int)
	for i, a := range cfg.Accounts {
		cfg.byAddress[a.Address] = i
	}
	for _, addr := range []string{"user999@example.org", "user999@Example.org"} {
		b.Run(addr, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := cfg.Account(addr); !ok {
					b.Fatal("not found")
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	dir := fixtureDir(b)
	data := []byte(base(b))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("m.toml", dir, data); err != nil {
			b.Fatal(err)
		}
	}
}

package configs

import (
	"strings"
	"testing"
	"time"
)

// TestRetentionRefusals: every bad [retention] value is reported at its
// line, with what to write instead.
func TestRetentionRefusals(t *testing.T) {
	dir := fixtureDir(t)
	// The appended [retention] header follows the base config; its first
	// key is on the line after the header.
	line := strings.Count(base(t), "\n") + 2
	cases := []struct {
		name, add, key, msg string
	}{
		{"shorter than 5 years in days", "records = \"1825d\"\n", "retention.records", `"1825d" is shorter than the legal retention of a prescription (5 years, up to 1827 days): write "5y"`},
		{"typo days for years", "records = \"5d\"\n", "retention.records", "set retention.allow_short = true"},
		{"4 years", "records = \"4y\"\n", "retention.records", "shorter than the legal retention"},
		{"duration under 5 years", "records = \"43800h\"\n", "retention.records", "shorter than the legal retention"},
		{"allow_short false", "records = \"1y\"\nallow_short = false\n", "retention.records", "shorter than the legal retention"},
		{"zero years", "records = \"0y\"\n", "retention.records", `"0y": want a number of years ("5y"), of days ("1825d") or a Go duration ("36h"), from 1y to 100y`},
		{"too many years", "records = \"101y\"\n", "retention.records", "from 1y to 100y"},
		{"negative days", "records = \"-3d\"\n", "retention.records", "from 1d to 36600d"},
		{"words", "records = \"5 years\"\n", "retention.records", `"5 years": want a number of years`},
		{"zero duration", "records = \"0s\"\n", "retention.records", "want a number of years"},
		{"unit months", "records = \"60mo\"\n", "retention.records", "want a number of years"},
		{"integer", "records = 5\n", "retention.records", "expected a quoted duration"},
		{"interval too short", "purge_interval = \"30s\"\n", "retention.purge_interval", "30s is out of range: must be from 1m0s to 720h0m0s"},
		{"interval too long", "purge_interval = \"721h\"\n", "retention.purge_interval", "out of range"},
		{"interval in days", "purge_interval = \"1d\"\n", "retention.purge_interval", "unknown unit"},
		{"allow_short as string", "allow_short = \"yes\"\n", "retention.allow_short", "expected true or false"},
		{"unknown key", "record = \"5y\"\n", "retention.record", "did you mean records?"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("mssrelay.toml", dir, []byte(base(t)+"[retention]\n"+c.add))
			wantErr(t, err, "mssrelay.toml", line, c.key, c.msg)
		})
	}
}

func TestRetentionAccepted(t *testing.T) {
	dir := fixtureDir(t)
	cases := []struct {
		name     string
		add      string
		records  Period
		interval time.Duration
	}{
		{"absent: 5 years, daily", "", Period{Years: 5}, 24 * time.Hour},
		{"empty section", "[retention]\n", Period{Years: 5}, 24 * time.Hour},
		{"10 years", "[retention]\nrecords = \"10y\"\n", Period{Years: 10}, 24 * time.Hour},
		{"1827 days", "[retention]\nrecords = \"1827d\"\n", Period{Days: 1827}, 24 * time.Hour},
		{"duration of 1827 days", "[retention]\nrecords = \"43848h\"\n", Period{Exact: 43848 * time.Hour}, 24 * time.Hour},
		{"short, allowed", "[retention]\nrecords = \"36h\"\nallow_short = true\npurge_interval = \"15m\"\n", Period{Exact: 36 * time.Hour}, 15 * time.Minute},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse("mssrelay.toml", dir, []byte(base(t)+c.add))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Retention.Records != c.records || cfg.Retention.PurgeInterval.Duration != c.interval {
				t.Errorf("retention %+v, want records %+v interval %s", cfg.Retention, c.records, c.interval)
			}
		})
	}
}

// TestPeriodBefore: years and days are calendar arithmetic, durations
// exact; the cutoff of "5y" keeps exactly the records of the last five
// calendar years.
func TestPeriodBefore(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		paris = time.FixedZone("CET", 3600)
	}
	now := time.Date(2030, 3, 5, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		p    string
		now  time.Time
		want time.Time
	}{
		{"5y", now, time.Date(2025, 3, 5, 10, 0, 0, 0, time.UTC)},
		{"1827d", now, time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC)},
		{"36h", now, time.Date(2030, 3, 3, 22, 0, 0, 0, time.UTC)},
		// 29 February minus a year normalises to 1 March.
		{"1y", time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)},
		// Days keep the wall clock across a DST change.
		{"1d", time.Date(2030, 3, 31, 12, 0, 0, 0, paris), time.Date(2030, 3, 30, 12, 0, 0, 0, paris)},
	}
	for _, c := range cases {
		p, err := ParsePeriod(c.p)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Before(c.now); !got.Equal(c.want) {
			t.Errorf("%s before %v = %v, want %v", c.p, c.now, got, c.want)
		}
		if q, err := ParsePeriod(p.String()); err != nil || q != p {
			t.Errorf("ParsePeriod(%q).String() = %q does not read back", c.p, p.String())
		}
	}
}

func TestPeriodAtLeastYears(t *testing.T) {
	for _, c := range []struct {
		p    string
		want bool
	}{
		{"5y", true}, {"6y", true}, {"4y", false},
		{"1827d", true}, {"1826d", false}, {"1825d", false},
		{"43848h", true}, {"43847h", false},
	} {
		p, err := ParsePeriod(c.p)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.AtLeastYears(5); got != c.want {
			t.Errorf("%s at least 5 years: %v, want %v", c.p, got, c.want)
		}
	}
}

// FuzzParsePeriod: any text is refused or gives a positive period that
// prints back to itself.
func FuzzParsePeriod(f *testing.F) {
	for _, s := range []string{"5y", "1825d", "36h", "1h30m", "0y", "-1d", "99999999999999999999y", "y", "d", " 5y ", "5Y", "1e3d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePeriod(s)
		if err != nil {
			return
		}
		if p.Years < 0 || p.Days < 0 || p.Exact < 0 || p == (Period{}) {
			t.Fatalf("%q parsed as %+v", s, p)
		}
		q, err := ParsePeriod(p.String())
		if err != nil || q != p {
			t.Fatalf("%q → %+v → %q → %+v, %v", s, p, p.String(), q, err)
		}
		now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		if !p.Before(now).Before(now) {
			t.Fatalf("%q: cutoff %v not before now", s, p.Before(now))
		}
	})
}

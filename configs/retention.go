package configs

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Retention is how long filed messages are kept ([retention]): the legal
// record of a prescription is kept 5 years, then purged with everything
// pointing at it (store.Purge, run every PurgeInterval by the relay).
type Retention struct {
	// Records is how long after its receipt a message is kept (default
	// 5 years). Shorter than LegalRetentionYears needs AllowShort.
	Records Period `toml:"records"`
	// PurgeInterval is the time between two purges (default 24h).
	PurgeInterval Duration `toml:"purge_interval"`
	// AllowShort accepts Records shorter than the legal 5 years (test
	// systems): a typo such as "5d" for "5y" would otherwise destroy
	// legal records at the next purge.
	AllowShort bool `toml:"allow_short"`
}

// Retention defaults and bounds.
const (
	// LegalRetentionYears is the legal retention of a prescription
	// record (MISSION: "The legal record is kept 5 years").
	LegalRetentionYears = 5
	// DefaultPurgeInterval: daily, so that a record leaves at most a day
	// after its retention ends.
	DefaultPurgeInterval = 24 * time.Hour
	minPurgeInterval     = time.Minute
	maxPurgeInterval     = 30 * 24 * time.Hour
	maxPeriodYears       = 100
	maxPeriodDays        = maxPeriodYears * 366
	daysPerYear          = 365
)

// Period is a retention length: a number of calendar years ("5y"), of
// calendar days ("1825d"), or a Go duration ("36h", "90m"; units h, m, s,
// ms…). Years and days are calendar arithmetic on the receipt date
// (time.AddDate), so "5y" keeps a record received on 5 March 2025 until 5
// March 2030, leap days included; a duration is exact. Zero and negative
// lengths are refused.
type Period struct {
	Years int
	Days  int
	Exact time.Duration
}

// DefaultRetention is retention.records when absent: the legal 5 years.
var DefaultRetention = Period{Years: LegalRetentionYears}

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Period) UnmarshalText(b []byte) error {
	v, err := ParsePeriod(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// MarshalText implements encoding.TextMarshaler: the form it was written
// in.
func (p Period) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p Period) String() string {
	switch {
	case p.Years > 0:
		return strconv.Itoa(p.Years) + "y"
	case p.Days > 0:
		return strconv.Itoa(p.Days) + "d"
	}
	return p.Exact.String()
}

// ParsePeriod reads "<n>y", "<n>d" or a Go duration.
func ParsePeriod(s string) (Period, error) {
	const want = `want a number of years ("5y"), of days ("1825d") or a Go duration ("36h")`
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "y"); ok {
		v, err := strconv.Atoi(n)
		if err != nil || v <= 0 || v > maxPeriodYears {
			return Period{}, fmt.Errorf("%q: %s, from 1y to %dy", s, want, maxPeriodYears)
		}
		return Period{Years: v}, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.Atoi(n)
		if err != nil || v <= 0 || v > maxPeriodDays {
			return Period{}, fmt.Errorf("%q: %s, from 1d to %dd", s, want, maxPeriodDays)
		}
		return Period{Days: v}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return Period{}, fmt.Errorf("%q: %s", s, want)
	}
	return Period{Exact: d}, nil
}

// Before returns the receipt time before which a record is past this
// period at now (the purge cutoff).
func (p Period) Before(now time.Time) time.Time {
	return now.AddDate(-p.Years, 0, -p.Days).Add(-p.Exact)
}

// AtLeastYears reports whether the period is n calendar years or more
// whatever the date: in days or as a duration it must cover the longest n
// years, with a leap day in every started four years.
func (p Period) AtLeastYears(n int) bool {
	if p.Years > 0 {
		return p.Years >= n
	}
	longest := n*daysPerYear + (n+3)/4
	if p.Days > 0 {
		return p.Days >= longest
	}
	return p.Exact >= time.Duration(longest)*24*time.Hour
}

func (v *validator) retention() {
	r := &v.cfg.Retention
	if !v.has("retention.records") {
		r.Records = DefaultRetention
	} else if !r.AllowShort && !r.Records.AtLeastYears(LegalRetentionYears) {
		v.fail("retention.records", "%q is shorter than the legal retention of a prescription (%d years, up to %d days): write \"%dy\", "+
			"or set retention.allow_short = true if this relay keeps no legal records (a test system)",
			r.Records, LegalRetentionYears, LegalRetentionYears*daysPerYear+(LegalRetentionYears+3)/4, LegalRetentionYears)
	}
	durationRange(v, "retention.purge_interval", &r.PurgeInterval, DefaultPurgeInterval, minPurgeInterval, maxPurgeInterval)
}

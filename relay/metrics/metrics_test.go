package metrics

import (
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"mssrelay/store"
)

type fakeAuth struct{ hits, misses uint64 }

func (f fakeAuth) CacheStats() (uint64, uint64) { return f.hits, f.misses }

type fakeStore struct {
	stats store.Stats
	path  string
}

func (f fakeStore) Stats() store.Stats { return f.stats }
func (f fakeStore) Path() string       { return f.path }

// gather returns the families of m's registry by name.
func gather(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value returns the value of the series of family name whose labels are
// exactly labels (name=value pairs); ok is false when there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	t.Helper()
	mf, ok := fams[name]
	if !ok {
		return 0, false
	}
series:
	for _, s := range mf.GetMetric() {
		if len(s.GetLabel())*2 != len(labels) {
			continue
		}
		for i, l := range s.GetLabel() {
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				continue series
			}
		}
		switch {
		case s.Counter != nil:
			return s.Counter.GetValue(), true
		case s.Gauge != nil:
			return s.Gauge.GetValue(), true
		case s.Histogram != nil:
			return float64(s.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestNilMetricsIsANoOp(t *testing.T) {
	var m *Metrics
	// None of these may panic.
	m.SMTPData(Accepted, "", time.Millisecond)
	m.SMTPData(Refused, "not_signed", time.Millisecond)
	m.ObserveVerify(time.Millisecond)
	m.SessionOpened(SMTP)
	m.SessionClosed(IMAP)
	m.AuthFailed(SMTP)
	if m.Registry() != nil {
		t.Errorf("a nil Metrics has a registry")
	}
	// Its handler still serves, from an empty registry.
	rec := httptest.NewRecorder()
	Handler(m, HandlerOptions{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/metrics of a nil Metrics: %d", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "mssrelay_") {
		t.Errorf("/metrics of a nil Metrics shows relay metrics:\n%s", rec.Body)
	}
}

func TestRecording(t *testing.T) {
	db := filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(db, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	m := New(Sources{
		Auth:  fakeAuth{hits: 7, misses: 3},
		Store: fakeStore{stats: store.Stats{Commits: 5, Filings: 4}, path: db},
	})
	m.SMTPData(Accepted, "ignored", 10*time.Millisecond)
	m.SMTPData(Duplicate, "", time.Millisecond)
	m.SMTPData(Refused, "not_signed", time.Millisecond)
	m.SMTPData(Refused, "not_signed", time.Millisecond)
	m.SMTPData(Refused, "Bad Label\n", time.Millisecond)
	m.SMTPData(Refused, "", time.Millisecond)
	m.SMTPData("bogus", "sig_revoked", time.Millisecond)
	m.ObserveVerify(time.Millisecond)
	m.SessionOpened(SMTP)
	m.SessionOpened(SMTP)
	m.SessionClosed(SMTP)
	m.SessionOpened(IMAP)
	m.AuthFailed(IMAP)
	m.AuthFailed(IMAP)
	m.AuthFailed("pop3")

	fams := gather(t, m)
	cases := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mssrelay_smtp_messages_total", []string{"outcome", "accepted", "reason", ""}, 1},
		{"mssrelay_smtp_messages_total", []string{"outcome", "duplicate", "reason", ""}, 1},
		{"mssrelay_smtp_messages_total", []string{"outcome", "refused", "reason", "not_signed"}, 2},
		// A label that is not a reason, or none, is folded into "other".
		{"mssrelay_smtp_messages_total", []string{"outcome", "refused", "reason", "other"}, 2},
		// An unknown outcome is a refusal.
		{"mssrelay_smtp_messages_total", []string{"outcome", "refused", "reason", "sig_revoked"}, 1},
		{"mssrelay_smtp_data_seconds", nil, 7},
		{"mssrelay_verify_seconds", nil, 1},
		{"mssrelay_smtp_sessions", nil, 1},
		{"mssrelay_imap_sessions", nil, 1},
		{"mssrelay_auth_failures_total", []string{"proto", "imap"}, 2},
		{"mssrelay_auth_failures_total", []string{"proto", "smtp"}, 0}, // present from the start
		{"mssrelay_auth_failures_total", []string{"proto", "other"}, 1},
		{"mssrelay_auth_cache_hits_total", nil, 7},
		{"mssrelay_auth_cache_misses_total", nil, 3},
		{"mssrelay_store_commits_total", nil, 5},
		{"mssrelay_store_filings_total", nil, 4},
		{"mssrelay_store_bytes", nil, 4096},
	}
	for _, c := range cases {
		got, ok := value(t, fams, c.name, c.labels...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := value(t, fams, "mssrelay_smtp_messages_total", "outcome", "accepted", "reason", "ignored"); ok {
		t.Errorf("an accepted message carries a reason label")
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("registry lacks %s (Go/process collectors)", name)
		}
	}
}

func TestStoreBytesUnreadable(t *testing.T) {
	m := New(Sources{Store: fakeStore{path: filepath.Join(t.TempDir(), "missing")}})
	got, ok := value(t, gather(t, m), "mssrelay_store_bytes")
	if !ok || !math.IsNaN(got) {
		t.Errorf("store_bytes of a missing file = %v (present %v), want NaN", got, ok)
	}
}

func TestWithoutSources(t *testing.T) {
	fams := gather(t, New(Sources{}))
	for _, name := range []string{"mssrelay_auth_cache_hits_total", "mssrelay_store_commits_total", "mssrelay_store_bytes"} {
		if _, ok := fams[name]; ok {
			t.Errorf("%s registered without its source", name)
		}
	}
}

// Two Metrics in one process are independent: nothing is global.
func TestIndependentRegistries(t *testing.T) {
	a, b := New(Sources{}), New(Sources{})
	a.AuthFailed(SMTP)
	if got, _ := value(t, gather(t, b), "mssrelay_auth_failures_total", "proto", "smtp"); got != 0 {
		t.Errorf("a count in one Metrics shows in another: %v", got)
	}
}

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body)
}

func TestHandlerRoutes(t *testing.T) {
	m := New(Sources{})
	m.SMTPData(Refused, "not_signed", time.Millisecond)
	var ready error
	off := Handler(m, HandlerOptions{Ready: func() error { return ready }})
	on := Handler(m, HandlerOptions{Pprof: true, Ready: func() error { return ready }})

	cases := []struct {
		name     string
		h        http.Handler
		method   string
		path     string
		code     int
		contains string
	}{
		{"metrics", off, "GET", "/metrics", 200, `mssrelay_smtp_messages_total{outcome="refused",reason="not_signed"} 1`},
		{"metrics has Go collector", off, "GET", "/metrics", 200, "go_goroutines "},
		{"metrics HEAD", off, "HEAD", "/metrics", 200, ""},
		{"metrics POST", off, "POST", "/metrics", 405, ""},
		{"healthz", off, "GET", "/healthz", 200, "ok"},
		{"readyz", off, "GET", "/readyz", 200, "ok"},
		{"index", off, "GET", "/", 200, "/metrics"},
		{"unknown path", off, "GET", "/nope", 404, ""},
		{"pprof off index", off, "GET", "/debug/pprof/", 404, ""},
		{"pprof off heap", off, "GET", "/debug/pprof/heap", 404, ""},
		{"pprof off cmdline", off, "GET", "/debug/pprof/cmdline", 404, ""},
		{"pprof off symbol", off, "GET", "/debug/pprof/symbol", 404, ""},
		{"pprof on index", on, "GET", "/debug/pprof/", 200, "goroutine"},
		{"pprof on goroutine", on, "GET", "/debug/pprof/goroutine?debug=1", 200, "goroutine profile"},
		{"pprof on cmdline", on, "GET", "/debug/pprof/cmdline", 200, ""},
		{"pprof on symbol", on, "GET", "/debug/pprof/symbol", 200, "num_symbols"},
		{"pprof listed in index", on, "GET", "/", 200, "/debug/pprof/"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := get(t, c.h, c.method, c.path)
			if code != c.code || !strings.Contains(body, c.contains) {
				t.Errorf("%s %s: %d %q, want %d containing %q", c.method, c.path, code, body[:min(len(body), 200)], c.code, c.contains)
			}
		})
	}

	// Readiness follows Ready; liveness does not.
	ready = errors.New("shutting down")
	if code, body := get(t, off, "GET", "/readyz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz while not ready: %d %q, want 503 with the reason", code, body)
	}
	if code, _ := get(t, off, "GET", "/healthz"); code != 200 {
		t.Errorf("/healthz while not ready: %d, want 200", code)
	}
	// No Ready function: always ready.
	if code, _ := get(t, Handler(nil, HandlerOptions{}), "GET", "/readyz"); code != 200 {
		t.Errorf("/readyz without Ready: %d", code)
	}
}

func TestNewServerBoundsWaits(t *testing.T) {
	srv := NewServer(http.NotFoundHandler(), nil)
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Errorf("unbounded admin server: %+v", srv)
	}
	// net/http/pprof refuses a profile whose duration reaches the write
	// deadline: the default 30 s profile must fit.
	if srv.WriteTimeout <= 30*time.Second {
		t.Errorf("WriteTimeout %v leaves no room for a 30 s CPU profile", srv.WriteTimeout)
	}
}

package relay_test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"mssrelay/configs"
	"mssrelay/relay"
)

func withAdmin(c *configs.Config) { c.Admin.Listen = "127.0.0.1:0" }

// httpGet fetches a path of the admin endpoint.
func httpGet(t *testing.T, addr, path string) (int, []byte) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp.StatusCode, body
}

// scrape parses /metrics as Prometheus does.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return fams
}

// sample returns the value of the series of family name with exactly the
// given labels (name, value pairs); a histogram gives its sample count.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			found := false
			for i := 0; i < len(labels); i += 2 {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// TestMetricsEndToEnd drives a relay with an admin listener through an
// accepted and a refused submission and a failed then successful IMAP
// login, and reads the counts back the way Prometheus would.
func TestMetricsEndToEnd(t *testing.T) {
	h := newHarnessWith(t, withAdmin)
	admin := h.addrs[relay.Admin]
	if admin == "" {
		t.Fatalf("no admin listener in Addrs: %v", h.addrs)
	}
	from, to := h.info.Prescriber.Address, h.info.Pharmacy.Address

	msg, _ := h.prescription()
	if _, err := h.prescriber().Send(from, []string{to}, msg); err != nil {
		t.Fatalf("valid prescription refused: %v", err)
	}
	unsigned := append(submitHeader(from, to), []byte("Content-Type: text/plain\r\n\r\nHello\r\n")...)
	if _, err := h.prescriber().Send(from, []string{to}, unsigned); err == nil {
		t.Fatalf("unsigned message accepted")
	}

	c, err := imapclient.DialTLS(h.addrs[relay.IMAPTLS], &imapclient.Options{TLSConfig: h.clientTLS()})
	if err != nil {
		t.Fatalf("dial imap: %v", err)
	}
	defer c.Close()
	if err := c.Login(h.info.Pharmacy.Address, "not the password").Wait(); err == nil {
		t.Fatalf("IMAP login with a wrong password succeeded")
	}
	if err := c.Login(h.info.Pharmacy.Address, h.info.Pharmacy.Password).Wait(); err != nil {
		t.Fatalf("IMAP login: %v", err)
	}

	// Every count below is recorded before the reply it belongs to is sent,
	// so the scrape sees them all without waiting.
	fams := scrape(t, admin)
	exact := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mssrelay_smtp_messages_total", []string{"outcome", "accepted", "reason", ""}, 1},
		{"mssrelay_smtp_messages_total", []string{"outcome", "duplicate", "reason", ""}, 0},
		{"mssrelay_smtp_messages_total", []string{"outcome", "refused", "reason", "not_signed"}, 1},
		{"mssrelay_store_filings_total", nil, 1},
		// One verification: the unsigned message is refused before it.
		{"mssrelay_verify_seconds", nil, 1},
	}
	for _, c := range exact {
		if got, ok := sample(fams, c.name, c.labels...); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	atLeast := []struct {
		name   string
		labels []string
		min    float64
	}{
		{"mssrelay_auth_failures_total", []string{"proto", "imap"}, 1},
		{"mssrelay_smtp_data_seconds", nil, 2},
		{"mssrelay_store_commits_total", nil, 1},
		{"mssrelay_store_bytes", nil, 1},
		{"mssrelay_auth_cache_misses_total", nil, 1},
		{"mssrelay_imap_sessions", nil, 1}, // our client is still connected
		{"go_goroutines", nil, 1},
	}
	for _, c := range atLeast {
		if got, ok := sample(fams, c.name, c.labels...); !ok || got < c.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", c.name, c.labels, got, ok, c.min)
		}
	}
	if _, ok := fams["process_start_time_seconds"]; !ok {
		t.Errorf("/metrics lacks the process collector")
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, admin, path); code != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
			t.Errorf("%s: %d %q, want 200 ok", path, code, body)
		}
	}
	// pprof is off by default.
	if code, _ := httpGet(t, admin, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without admin.pprof: %d, want 404", code)
	}
}

func TestAdminPprof(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) { withAdmin(c); c.Admin.Pprof = true })
	code, body := httpGet(t, h.addrs[relay.Admin], "/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !bytes.Contains(body, []byte("goroutine profile")) {
		t.Errorf("/debug/pprof/goroutine with admin.pprof: %d %.100q", code, body)
	}
}

func TestNoAdminListenerByDefault(t *testing.T) {
	h := newHarness(t)
	if a, ok := h.addrs[relay.Admin]; ok {
		t.Errorf("admin listener %s without admin.listen", a)
	}
	// Metrics are still kept.
	if h.relay.Metrics() == nil || h.relay.Metrics().Registry() == nil {
		t.Errorf("relay without admin listener has no metrics")
	}
}

// TestReadinessDuringShutdown: /readyz turns 503 as soon as shutdown
// begins, while a transaction in progress drains, and the admin endpoint
// keeps answering until the drain is over.
func TestReadinessDuringShutdown(t *testing.T) {
	h := newHarnessWith(t, withAdmin)
	admin := h.addrs[relay.Admin]
	if code, _ := httpGet(t, admin, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before shutdown: %d", code)
	}

	// A submission left between two BDAT chunks (RFC 3030) holds the drain
	// open. BDAT rather than DATA because go-smtp answers a chunk only once
	// Session.Data has consumed it: the 250 proves the transaction is in
	// flight, with no race against the start of shutdown.
	conn, err := tls.Dial("tcp", h.addrs[relay.SMTPSubmissionTLS], h.clientTLS())
	if err != nil {
		t.Fatalf("dial submission: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	tc := textproto.NewConn(conn)
	cmd := func(want int, format string, args ...any) {
		t.Helper()
		if err := tc.PrintfLine(format, args...); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if _, _, err := tc.ReadResponse(want); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
	}
	if _, _, err := tc.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	from, to := h.info.Prescriber.Address, h.info.Pharmacy.Address
	cmd(250, "EHLO test.example")
	cmd(235, "AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+from+"\x00"+h.info.Prescriber.Password)))
	cmd(250, "MAIL FROM:<%s>", from)
	cmd(250, "RCPT TO:<%s>", to)
	msg, _ := h.prescription()
	half := len(msg) / 2
	chunk := func(data []byte, last string) {
		t.Helper()
		if _, err := fmt.Fprintf(tc.W, "BDAT %d%s\r\n", len(data), last); err != nil {
			t.Fatal(err)
		}
		if _, err := tc.W.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := tc.W.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := tc.ReadResponse(250); err != nil {
			t.Fatalf("BDAT%s: %v", last, err)
		}
	}
	chunk(msg[:half], "")

	stopped := make(chan struct{})
	go func() { h.shutdown(); close(stopped) }()

	// Poll until shutdown has begun (the relay offers no hook to wait on);
	// the bound is a safety net, not the assertion.
	var code int
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if code, body = httpGet(t, admin, "/readyz"); code != http.StatusOK {
			break
		}
	}
	if code != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("shutting down")) {
		t.Errorf("/readyz during shutdown: %d %q, want 503 shutting down", code, body)
	}
	if code, _ := httpGet(t, admin, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz during the drain: %d, want 200", code)
	}

	// The transaction in flight still completes with its 250.
	chunk(msg[half:], " LAST")
	<-stopped
	if c, err := net.DialTimeout("tcp", admin, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("admin endpoint still accepts connections after shutdown")
	}
}

package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

// Latency summarises a set of durations. Percentiles use the nearest-rank
// method on every sample (no histogram buckets): runs are at most a few
// hundred thousand messages.
type Latency struct {
	Count                    int
	Mean, P50, P95, P99, Max time.Duration
}

// summarise sorts d in place and computes its percentiles.
func summarise(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	rank := func(p float64) time.Duration {
		// Nearest rank: the smallest value with at least p% of the samples
		// at or below it.
		i := int(math.Ceil(p*float64(len(d))/100-1e-9)) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return Latency{
		Count: len(d),
		Mean:  sum / time.Duration(len(d)),
		P50:   rank(50), P95: rank(95), P99: rank(99),
		Max: d[len(d)-1],
	}
}

// MarshalJSON writes milliseconds, the unit people compare.
func (l Latency) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return json.Marshal(struct {
		Count int     `json:"count"`
		Mean  float64 `json:"mean_ms"`
		P50   float64 `json:"p50_ms"`
		P95   float64 `json:"p95_ms"`
		P99   float64 `json:"p99_ms"`
		Max   float64 `json:"max_ms"`
	}{l.Count, ms(l.Mean), ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Max)})
}

// ReplyKey names an SMTP refusal by its reply code and RFC 3463 enhanced
// code, e.g. "451 4.7.5", the unit refusals are counted in.
func ReplyKey(e *smtp.SMTPError) string {
	c := e.EnhancedCode
	if c == (smtp.EnhancedCode{}) || c == smtp.NoEnhancedCode {
		return fmt.Sprint(e.Code)
	}
	return fmt.Sprintf("%d %d.%d.%d", e.Code, c[0], c[1], c[2])
}

// errorClass names a failure that is not an SMTP reply, by what happened
// rather than by its full text (which holds ports and addresses), so that
// 500 resets count as one line.
func errorClass(phase string, err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return phase + ": connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return phase + ": connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return phase + ": connection closed"
	case errors.As(err, &ne) && ne.Timeout():
		return phase + ": timeout"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.Contains(msg[:i], "tcp") {
		msg = msg[i+2:] // "dial tcp 127.0.0.1:1: <what>" → "<what>"
	}
	if len(msg) > 80 {
		msg = msg[:80] + "…"
	}
	return phase + ": " + msg
}

func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// sortedKeys returns the keys of m, most frequent first, then by name.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	return keys
}

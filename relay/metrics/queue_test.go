package metrics

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"mssrelay/store"
)

type fakeQueue struct {
	stats store.QueueStats
	err   error
}

func (f fakeQueue) QueueStats() (store.QueueStats, error) { return f.stats, f.err }

// queueMetrics builds Metrics over q with the queue gauges' clock at now.
func queueMetrics(q fakeQueue, now time.Time) *Metrics {
	m := New(Sources{Queue: q})
	m.queue.now = func() time.Time { return now }
	return m
}

func TestQueueGauges(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		q      fakeQueue
		jobs   map[string]float64 // kind → value; every known kind is checked
		oldest float64
	}{
		{"empty", fakeQueue{stats: store.QueueStats{ByKind: map[string]int{}}},
			map[string]float64{"forward": 0, "dsn": 0, "mdn": 0, "executed": 0}, 0},
		{"nil ByKind", fakeQueue{},
			map[string]float64{"forward": 0, "dsn": 0, "mdn": 0, "executed": 0}, 0},
		{"some jobs", fakeQueue{stats: store.QueueStats{Jobs: 4, Oldest: now.Add(-90 * time.Minute),
			ByKind: map[string]int{store.JobForward: 2, store.JobDSN: 1, store.JobExecuted: 1}}},
			map[string]float64{"forward": 2, "dsn": 1, "mdn": 0, "executed": 1}, 5400},
		// A kind this build does not know is not a new series per value.
		{"unknown kind", fakeQueue{stats: store.QueueStats{Jobs: 2, Oldest: now.Add(-time.Second),
			ByKind: map[string]int{"carrier-pigeon": 1, "x\ny": 1}}},
			map[string]float64{"forward": 0, "other": 2}, 1},
		// A clock behind the oldest job's creation does not give a negative age.
		{"future job", fakeQueue{stats: store.QueueStats{Jobs: 1, Oldest: now.Add(time.Hour), ByKind: map[string]int{store.JobMDN: 1}}},
			map[string]float64{"mdn": 1}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fams := gather(t, queueMetrics(c.q, now))
			for kind, want := range c.jobs {
				if got, ok := value(t, fams, "mssrelay_queue_jobs", "kind", kind); !ok || got != want {
					t.Errorf("mssrelay_queue_jobs{kind=%q} = %v (present %v), want %v", kind, got, ok, want)
				}
			}
			if got, ok := value(t, fams, "mssrelay_queue_oldest_age_seconds"); !ok || got != c.oldest {
				t.Errorf("mssrelay_queue_oldest_age_seconds = %v (present %v), want %v", got, ok, c.oldest)
			}
		})
	}
}

// A queue that cannot be read is NaN, never a reassuring 0.
func TestQueueGaugesUnreadable(t *testing.T) {
	fams := gather(t, queueMetrics(fakeQueue{err: errors.New("store closed")}, time.Now()))
	for _, s := range [][]string{{"mssrelay_queue_jobs", "kind", "forward"}, {"mssrelay_queue_oldest_age_seconds"}} {
		if got, ok := value(t, fams, s[0], s[1:]...); !ok || !math.IsNaN(got) {
			t.Errorf("%v = %v (present %v), want NaN", s, got, ok)
		}
	}
}

func TestQueueGaugesWithoutSource(t *testing.T) {
	fams := gather(t, New(Sources{}))
	for _, name := range []string{"mssrelay_queue_jobs", "mssrelay_queue_oldest_age_seconds"} {
		if _, ok := fams[name]; ok {
			t.Errorf("%s registered without a queue", name)
		}
	}
}

func TestOutboundCounters(t *testing.T) {
	m := New(Sources{})
	m.OutboundAttempt(store.JobForward, OutboundRetry)
	m.OutboundAttempt(store.JobForward, OutboundRetry)
	m.OutboundAttempt(store.JobForward, OutboundDelivered)
	m.OutboundAttempt(store.JobDSN, OutboundFailed)
	m.OutboundAttempt("bogus", OutboundDelivered)
	m.OutboundAttempt(store.JobMDN, "exploded")
	m.OutboundLatency(2 * time.Second)
	m.OutboundLatency(3 * time.Minute)
	m.OutboundLatency(-time.Second) // a clock step: counted as 0

	fams := gather(t, m)
	cases := []struct {
		labels []string
		want   float64
	}{
		{[]string{"kind", "forward", "outcome", "retry"}, 2},
		{[]string{"kind", "forward", "outcome", "delivered"}, 1},
		{[]string{"kind", "forward", "outcome", "failed"}, 0}, // present from the start
		{[]string{"kind", "executed", "outcome", "delivered"}, 0},
		{[]string{"kind", "dsn", "outcome", "failed"}, 1},
		{[]string{"kind", "other", "outcome", "delivered"}, 1},
		{[]string{"kind", "mdn", "outcome", "other"}, 1},
	}
	for _, c := range cases {
		if got, ok := value(t, fams, "mssrelay_outbound_attempts_total", c.labels...); !ok || got != c.want {
			t.Errorf("mssrelay_outbound_attempts_total%v = %v (present %v), want %v", c.labels, got, ok, c.want)
		}
	}
	h := fams["mssrelay_outbound_delivery_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() != 2+180 {
		t.Errorf("delivery histogram: count %d sum %v, want 3 and %v", h.GetSampleCount(), h.GetSampleSum(), 2+180)
	}
	// Through the handler, as Prometheus reads it.
	_, body := get(t, Handler(m, HandlerOptions{}), "GET", "/metrics")
	for _, want := range []string{
		`mssrelay_outbound_attempts_total{kind="forward",outcome="retry"} 2`,
		`mssrelay_outbound_delivery_seconds_bucket{le="2.5"} 2`,
		`mssrelay_outbound_delivery_seconds_bucket{le="300"} 3`,
		`mssrelay_outbound_delivery_seconds_count 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestNilMetricsOutbound(t *testing.T) {
	var m *Metrics
	m.OutboundAttempt(store.JobForward, OutboundDelivered) // must not panic
	m.OutboundLatency(time.Second)
	if m.Registry() != nil {
		t.Error("a nil Metrics has a registry")
	}
}

// The queue gauges over a real store: a job enqueued shows up.
func TestQueueGaugesRealStore(t *testing.T) {
	st, err := store.Open(t.TempDir()+"/db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Enqueue(t.Context(), store.QueueUpdate{Jobs: []store.Job{
		{Kind: store.JobDSN, RecordID: 1, To: "dr@example.org"},
	}}); err != nil {
		t.Fatal(err)
	}
	_, body := get(t, Handler(New(Sources{Queue: st}), HandlerOptions{}), "GET", "/metrics")
	for _, want := range []string{`mssrelay_queue_jobs{kind="dsn"} 1`, `mssrelay_queue_jobs{kind="forward"} 0`, "mssrelay_queue_oldest_age_seconds "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

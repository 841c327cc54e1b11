// Package metrics is the relay's observability: Prometheus metrics on a
// registry of its own, and the admin HTTP endpoints that serve them with
// liveness, readiness and (when enabled) Go profiles.
//
// A *Metrics is created once by the relay and handed to the services that
// record into it. A nil *Metrics is valid everywhere and records nothing, so
// that tests and tools that build a service without metrics need no stub.
// Nothing here is package-level state: two relays in one process (tests)
// have two independent registries.
package metrics

import (
	"math"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"mssrelay/store"
)

// Outcome is how a DATA transaction ended, the outcome label of
// mssrelay_smtp_messages_total.
type Outcome string

const (
	Accepted  Outcome = "accepted"  // filed, 250
	Duplicate Outcome = "duplicate" // identical resend, 250, not filed again
	Refused   Outcome = "refused"   // any 4xx/5xx reply to DATA
)

// Proto names a protocol in metric names and labels.
type Proto string

const (
	SMTP Proto = "smtp"
	IMAP Proto = "imap"
)

// Sources are the components whose own counters are exported as they are
// read at scrape time (no double bookkeeping). A nil field leaves its
// metrics out.
type Sources struct {
	// Auth is the login directory (*auth.Directory).
	Auth interface {
		CacheStats() (hits, misses uint64)
	}
	// Store is the message store (*store.Store).
	Store interface {
		Stats() store.Stats
		Path() string
	}
	// Queue is the outbound queue (*store.Store): its jobs are counted at
	// each scrape (one read transaction over the queue bucket, which holds
	// only undelivered jobs).
	Queue interface {
		QueueStats() (store.QueueStats, error)
	}
}

// Buckets, in seconds. DATA spans the client's transfer, the checks and the
// fsync'd commit: milliseconds for a typical prescription on a LAN, up to
// limits.read_timeout (60 s by default) for a large one on a slow link.
// Verification is CPU only (one RSA/ECDSA check per signature and chain
// link, a CRL lookup): well under a millisecond to tens of milliseconds.
var (
	dataBuckets   = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	verifyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}
	// One successful outbound delivery: dialling, TLS handshakes, the
	// transfer and the peer's reply. Tens of milliseconds on a healthy link,
	// up to relay/outbound's timeouts (30s to connect, 10 min for DATA).
	outboundBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// Outbound attempt outcomes, the outcome label of
// mssrelay_outbound_attempts_total.
const (
	OutboundDelivered = "delivered" // the peer accepted (250), or filed locally
	OutboundRetry     = "retry"     // a temporary failure: the job stays queued
	OutboundFailed    = "failed"    // a permanent failure, or max_age reached: the job ends
)

// outboundKinds are the job kinds used as labels; anything else is folded
// into "other" so that the series count stays fixed.
var outboundKinds = []string{store.JobForward, store.JobDSN, store.JobMDN, store.JobExecuted}

var outboundOutcomes = []string{OutboundDelivered, OutboundRetry, OutboundFailed}

// Metrics holds the relay's metrics and the registry they are served from.
type Metrics struct {
	reg *prometheus.Registry

	messages      *prometheus.CounterVec // outcome, reason
	dataSeconds   prometheus.Histogram
	verifySeconds prometheus.Histogram
	smtpSessions  prometheus.Gauge
	imapSessions  prometheus.Gauge
	authFailures  *prometheus.CounterVec // proto

	outboundAttempts *prometheus.CounterVec // kind, outcome
	outboundSeconds  prometheus.Histogram
	queue            *queueCollector // nil without Sources.Queue
}

// New creates the metrics on a fresh registry, with the Go runtime and
// process collectors beside them.
func New(src Sources) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mssrelay_smtp_messages_total",
			Help: "SMTP DATA transactions by outcome (accepted, duplicate, refused) and refusal reason.",
		}, []string{"outcome", "reason"}),
		dataSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mssrelay_smtp_data_seconds",
			Help:    "Time from the DATA command to the relay's reply: transfer, checks and the durable commit.",
			Buckets: dataBuckets,
		}),
		verifySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mssrelay_verify_seconds",
			Help:    "Time spent verifying a message's S/MIME signature, chain and revocation status.",
			Buckets: verifyBuckets,
		}),
		smtpSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mssrelay_smtp_sessions",
			Help: "Open SMTP sessions.",
		}),
		imapSessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mssrelay_imap_sessions",
			Help: "Open IMAP sessions.",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mssrelay_auth_failures_total",
			Help: "Failed or refused logins (wrong credentials, or address locked out), by protocol.",
		}, []string{"proto"}),
		outboundAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mssrelay_outbound_attempts_total",
			Help: "Outbound delivery attempts (patients' copies and notifications to prescribers) by job kind and outcome (delivered, retry, failed).",
		}, []string{"kind", "outcome"}),
		outboundSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mssrelay_outbound_delivery_seconds",
			Help:    "Time a successful outbound delivery took, from dialling (or filing locally) to the acceptance.",
			Buckets: outboundBuckets,
		}),
	}
	// Series that exist from the start read 0 rather than being absent,
	// so that rate() and alerts on them work before the first event.
	m.messages.WithLabelValues(string(Accepted), "")
	m.messages.WithLabelValues(string(Duplicate), "")
	m.authFailures.WithLabelValues(string(SMTP))
	m.authFailures.WithLabelValues(string(IMAP))
	for _, k := range outboundKinds {
		for _, o := range outboundOutcomes {
			m.outboundAttempts.WithLabelValues(k, o)
		}
	}

	m.reg.MustRegister(
		m.messages, m.dataSeconds, m.verifySeconds, m.smtpSessions, m.imapSessions, m.authFailures,
		m.outboundAttempts, m.outboundSeconds,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if a := src.Auth; a != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "mssrelay_auth_cache_hits_total",
				Help: "Logins answered from the cache of successful password checks (no bcrypt run).",
			}, func() float64 { h, _ := a.CacheStats(); return float64(h) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "mssrelay_auth_cache_misses_total",
				Help: "Logins of a known account not found in the cache (a bcrypt run).",
			}, func() float64 { _, miss := a.CacheStats(); return float64(miss) }),
		)
	}
	if s := src.Store; s != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "mssrelay_store_commits_total",
				Help: "Write transactions committed to the store, each one fsync'd (group commit: one may carry several messages).",
			}, func() float64 { return float64(s.Stats().Commits) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "mssrelay_store_filings_total",
				Help: "Prescriptions filed as new records.",
			}, func() float64 { return float64(s.Stats().Filings) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "mssrelay_store_bytes",
				Help: "Size of the store's database file (bbolt files never shrink; NaN when it cannot be read).",
			}, func() float64 { return fileSize(s.Path()) }),
		)
	}
	if q := src.Queue; q != nil {
		m.queue = newQueueCollector(q, time.Now)
		m.reg.MustRegister(m.queue)
	}
	return m
}

// queueCollector exports the outbound queue as it is at scrape time. One
// QueueStats call feeds both gauges, so that they describe the same state.
type queueCollector struct {
	src interface {
		QueueStats() (store.QueueStats, error)
	}
	now    func() time.Time
	jobs   *prometheus.Desc
	oldest *prometheus.Desc
}

func newQueueCollector(src interface {
	QueueStats() (store.QueueStats, error)
}, now func() time.Time) *queueCollector {
	return &queueCollector{
		src: src,
		now: now,
		jobs: prometheus.NewDesc("mssrelay_queue_jobs",
			"Jobs in the outbound queue (copies for patients, notifications for prescribers) by kind (NaN when the store cannot be read).",
			[]string{"kind"}, nil),
		oldest: prometheus.NewDesc("mssrelay_queue_oldest_age_seconds",
			"Age of the oldest job in the outbound queue; 0 when it is empty (NaN when the store cannot be read).",
			nil, nil),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.jobs
	ch <- c.oldest
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.src.QueueStats()
	if err != nil {
		// Like mssrelay_store_bytes: a reading that cannot be made is NaN,
		// not 0, so that "queue empty" is never claimed by mistake.
		for _, k := range outboundKinds {
			ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, math.NaN(), k)
		}
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, math.NaN())
		return
	}
	counts := make(map[string]int, len(outboundKinds)+1)
	for _, k := range outboundKinds {
		counts[k] = 0 // every kind present from the start
	}
	for k, n := range st.ByKind {
		counts[kindLabel(k)] += n
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(n), k)
	}
	age := 0.0
	if st.Jobs > 0 && !st.Oldest.IsZero() {
		age = max(c.now().Sub(st.Oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
}

// kindLabel is a job kind as a label value.
func kindLabel(k string) string {
	for _, known := range outboundKinds {
		if k == known {
			return k
		}
	}
	return "other"
}

func fileSize(path string) float64 {
	fi, err := os.Stat(path)
	if err != nil {
		return math.NaN()
	}
	return float64(fi.Size())
}

// Registry returns the registry the metrics are served from (nil for a nil
// Metrics). Callers may register metrics of their own on it.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// SMTPData records one DATA transaction: how it ended, the refusal's reason
// label (intake.Refusal.Reason, or a label of the session's own; ignored
// unless refused) and the time from DATA to the reply.
func (m *Metrics) SMTPData(o Outcome, reason string, d time.Duration) {
	if m == nil {
		return
	}
	switch o {
	case Accepted, Duplicate:
		reason = ""
	default:
		o, reason = Refused, label(reason)
	}
	m.messages.WithLabelValues(string(o), reason).Inc()
	m.dataSeconds.Observe(d.Seconds())
}

// ObserveVerify records the time one signature verification took, whatever
// its result.
func (m *Metrics) ObserveVerify(d time.Duration) {
	if m == nil {
		return
	}
	m.verifySeconds.Observe(d.Seconds())
}

// SessionOpened counts a new session of protocol p; SessionClosed must
// follow exactly once.
func (m *Metrics) SessionOpened(p Proto) { m.sessions(p, 1) }

// SessionClosed counts the end of a session opened with SessionOpened.
func (m *Metrics) SessionClosed(p Proto) { m.sessions(p, -1) }

func (m *Metrics) sessions(p Proto, delta float64) {
	if m == nil {
		return
	}
	switch p {
	case SMTP:
		m.smtpSessions.Add(delta)
	case IMAP:
		m.imapSessions.Add(delta)
	}
}

// AuthFailed counts a failed or refused login over protocol p.
func (m *Metrics) AuthFailed(p Proto) {
	if m == nil {
		return
	}
	if p != SMTP && p != IMAP {
		p = "other"
	}
	m.authFailures.WithLabelValues(string(p)).Inc()
}

// OutboundAttempt counts one delivery attempt of an outbound job of the
// given kind (store.JobForward…) ending with outcome (OutboundDelivered,
// OutboundRetry or OutboundFailed). Unknown values are counted as "other".
func (m *Metrics) OutboundAttempt(kind, outcome string) {
	if m == nil {
		return
	}
	switch outcome {
	case OutboundDelivered, OutboundRetry, OutboundFailed:
	default:
		outcome = "other"
	}
	m.outboundAttempts.WithLabelValues(kindLabel(kind), outcome).Inc()
}

// OutboundLatency records how long a successful delivery attempt took: d
// runs from the start of the attempt (dialling the peer, or filing a local
// notification) to its acceptance. How long jobs wait in the queue shows in
// mssrelay_queue_oldest_age_seconds.
func (m *Metrics) OutboundLatency(d time.Duration) {
	if m == nil {
		return
	}
	m.outboundSeconds.Observe(max(d, 0).Seconds())
}

// maxLabel bounds a reason label. Reasons are constants of the code
// (intake's refusal table), but a label is a time series each: anything
// that does not look like one is folded into "other" rather than allowed
// to grow the series count.
const maxLabel = 40

func label(s string) string {
	if s == "" || len(s) > maxLabel {
		return "other"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return "other"
		}
	}
	return s
}

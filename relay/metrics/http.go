package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HandlerOptions configure the admin endpoints.
type HandlerOptions struct {
	// Pprof mounts the net/http/pprof handlers under /debug/pprof/;
	// without it those paths are 404.
	Pprof bool
	// Ready reports whether the relay should be sent traffic: nil when it
	// serves, the reason otherwise (starting, shutting down). A nil Ready
	// means always ready.
	Ready func() error
	// Log receives errors met while gathering metrics (none when nil).
	Log *slog.Logger
	// Backup, when set and complete, serves POST /backup (backup.go):
	// a snapshot of the store for `mssrelay backup`, to loopback clients
	// holding the token only.
	Backup *BackupOptions
}

// scrapeTimeout bounds one gathering of the metrics; Prometheus' own
// default scrape timeout is 10 s.
const scrapeTimeout = 10 * time.Second

// Handler serves the admin endpoints:
//
//	GET /metrics        Prometheus text exposition of m's registry
//	GET /healthz        200 "ok" while the process serves HTTP (liveness)
//	GET /readyz         200 "ok" when opts.Ready returns nil, else 503 and the reason
//	    /debug/pprof/   Go profiles, only with opts.Pprof (404 otherwise)
//	POST /backup        a snapshot of the store, only with opts.Backup (404
//	                    otherwise), for loopback clients with the token
//
// A nil m serves an empty registry. The handler has no authentication: it
// is meant for a loopback or otherwise firewalled address (admin.listen).
func Handler(m *Metrics, opts HandlerOptions) http.Handler {
	reg := m.Registry()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	hopts := promhttp.HandlerOpts{
		Registry: reg, // promhttp_metric_handler_errors_total
		// A collector that fails (a file that cannot be stat'ed) must not
		// hide every other metric.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             scrapeTimeout,
	}
	if opts.Log != nil {
		hopts.ErrorLog = errorLog{opts.Log}
	}

	mux := http.NewServeMux()
	// A method in the pattern also admits HEAD for GET, and makes the mux
	// answer 405 to other methods.
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, hopts)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if opts.Ready != nil {
			if err := opts.Ready(); err != nil {
				plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
				return
			}
		}
		plain(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		index := "mssrelay admin\n/metrics\n/healthz\n/readyz\n"
		if opts.Pprof {
			index += "/debug/pprof/\n"
		}
		if backupEnabled(opts.Backup) {
			index += "/backup (POST, token)\n"
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprint(w, index)
	})
	if backupEnabled(opts.Backup) {
		mux.Handle("POST /backup", &backupHandler{opts: *opts.Backup, log: opts.Log})
	}
	if opts.Pprof {
		// Mounted on this mux explicitly: importing net/http/pprof also
		// registers on http.DefaultServeMux, which the relay never serves.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index) // heap, goroutine, allocs, block, mutex…
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		// go tool pprof looks symbols up with POST.
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintln(w, body)
}

// NewServer returns the admin HTTP server for h, with every wait bounded:
// a client that opens a connection and sends nothing is dropped after
// ReadHeaderTimeout (slowloris), an idle keep-alive after IdleTimeout.
// WriteTimeout is longer than a default 30 s CPU profile or trace, which
// net/http/pprof refuses to take when it would outlast the write deadline.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	if log != nil {
		srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	}
	return srv
}

// errorLog adapts slog to promhttp.Logger.
type errorLog struct{ log *slog.Logger }

func (e errorLog) Println(v ...any) {
	e.log.Warn("metrics gathering", "detail", fmt.Sprint(v...))
}

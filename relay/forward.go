package relay

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"mssrelay/configs"
	"mssrelay/relay/imapd"
	"mssrelay/relay/intake"
	"mssrelay/relay/outbound"
)

// forwardingPolicy is the patient forwarding policy of a configuration.
func forwardingPolicy(cfg *configs.Config) *intake.Forwarding {
	return &intake.Forwarding{PatientDomain: cfg.Patients.Domain, Registry: cfg.PatientRegistry()}
}

// newWorker builds the outbound queue worker: our client certificate and
// the CAs peers must chain to are read once here, not per delivery.
func (r *Relay) newWorker(cfg *configs.Config) (*outbound.Worker, error) {
	ob := cfg.Outbound
	tlsCfg, err := clientTLS(ob)
	if err != nil {
		return nil, err
	}
	var sign func(header, entity []byte) ([]byte, error)
	if r.notifier != nil {
		sign = r.SignNotification
	} else {
		r.log.Warn("no [signer]: notifications to prescribers (DSN, MDN, execution) are sent unsigned")
	}
	if _, ok := ob.RouteFor(cfg.Patients.Domain); !ok && !ob.MXLookup {
		r.log.Warn("no [[outbound.route]] for the patients' domain: copies for patients wait in the queue and fail at max_age",
			"domain", cfg.Patients.Domain)
	}
	return outbound.NewWorker(outbound.Options{
		Store: r.store,
		Dialer: &outbound.Dialer{
			Hostname:       cfg.Server.Hostname,
			TLS:            tlsCfg,
			ConnectTimeout: ob.ConnectTimeout.Duration,
			CommandTimeout: ob.CommandTimeout.Duration,
		},
		Settings: outbound.Settings{
			MaxAge: ob.MaxAge.Duration, DelayWarning: ob.DelayWarning.Duration,
			RetryMin: ob.RetryMin.Duration, RetryMax: ob.RetryMax.Duration,
			Workers: ob.Workers, PerDestination: ob.PerDestination, MXLookup: ob.MXLookup,
		},
		Routes:   func(domain string) ([]string, bool) { return r.routes.Load().RouteFor(domain) },
		Local:    func(addr string) bool { _, ok := r.auth.Lookup(addr); return ok },
		Hostname: cfg.Server.Hostname,
		From:     cfg.Signer.Address,
		Sign:     sign,
		Meta:     imapd.ComputeMeta,
		Log:      r.log.With("service", "outbound"),
		Metrics:  r.metrics,
	})
}

// clientTLS is the TLS configuration of outbound deliveries: our client
// certificate (mutual TLS between operators), the peers' CAs, TLS 1.2
// minimum with the same AEAD suites as the listeners.
func clientTLS(ob configs.Outbound) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(ob.ClientCert, ob.ClientKey)
	if err != nil {
		return nil, fmt.Errorf("loading the outbound client certificate %s: %w", ob.ClientCert, err)
	}
	pool := x509.NewCertPool()
	for _, f := range ob.CAs {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("outbound CAs: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("outbound CAs: no certificate in %s", f)
		}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS12,
		CipherSuites: aeadSuites(),
	}, nil
}

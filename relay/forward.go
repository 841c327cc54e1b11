package relay

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay/imapd"
	"mssrelay/relay/intake"
	"mssrelay/relay/operators"
	"mssrelay/relay/outbound"
	"mssrelay/signing"
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
		IsPatient: func(addr string) bool {
			ins, ok := r.intake.PatientAddress(addr)
			return ok && mime.ValidINS(ins)
		},
		Log:     r.log.With("service", "outbound"),
		Metrics: r.metrics,
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

// loadOperators reads the operators' whitelist, checking its signature.
func loadOperators(cfg *configs.Config, trust *signing.Trust, log *slog.Logger) (*operators.Holder, error) {
	o := cfg.Operators
	src := operators.Source{Path: o.Whitelist, Signature: o.Signature, Trust: trust}
	if o.Publisher != "" {
		src.CheckSigner = func(c *x509.Certificate) error {
			if strings.EqualFold(c.Subject.CommonName, o.Publisher) || slices.ContainsFunc(c.EmailAddresses, func(e string) bool {
				return strings.EqualFold(e, o.Publisher)
			}) {
				return nil
			}
			return fmt.Errorf("the whitelist is signed by %q, not by operators.publisher %q", c.Subject.CommonName, o.Publisher)
		}
	} else if o.Signature != "" {
		log.Warn("operators.publisher is not set: any certificate of the trust anchors may sign the operators' whitelist")
	}
	h, err := operators.NewHolder(src, log.With("service", "operators"))
	if err != nil {
		return nil, fmt.Errorf("operators' whitelist: %w", err)
	}
	return h, nil
}

// whitelist is the smtpd view of the operators' whitelist: nil (not a nil
// *Holder in an interface) when there is none.
func (r *Relay) whitelist() interface{ Allows(string) bool } {
	if r.operators == nil {
		return nil
	}
	return r.operators
}

// PeerTLS is smtp.relay's TLS configuration: the listeners' (certificate,
// TLS 1.2 minimum, AEAD suites) plus client certificates verified against
// the trust anchors when given (tls.VerifyClientCertIfGiven: a peer without
// one is refused at MAIL with a reply that says why, rather than by a
// failed handshake that says nothing).
//
// The anchors are read at each handshake, so that a trust reload applies
// to the next connection.
func PeerTLS(base *tls.Config, trust *signing.Trust) *tls.Config {
	c := base.Clone()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cc := c.Clone()
		cc.GetConfigForClient = nil
		cc.ClientCAs = trust.Pool()
		return cc, nil
	}
	return c
}

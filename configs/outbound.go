package configs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Outbound is the durable outbound SMTP queue ([outbound]): it forwards
// prescriptions to other operators' servers, patients' secure mailboxes
// first, over TLS with certificates verified both ways. A job that cannot
// be delivered is retried with exponential backoff, from RetryMin doubling
// up to RetryMax, until it is MaxAge old; then it fails and the prescriber
// gets a delivery status notification (RFC 3464), so that the patient can
// be given a paper copy instead.
type Outbound struct {
	// ClientCert and ClientKey are the certificate and key this relay
	// presents as a TLS client (mutual TLS between operators); default
	// tls.cert and tls.key. Both or neither.
	ClientCert string `toml:"client_cert"`
	ClientKey  string `toml:"client_key"`
	// CAs are PEM files of the CAs that issue peers' server certificates;
	// default trust.anchors plus trust.intermediates.
	CAs []string `toml:"cas"`
	// MaxAge is the age at which a job fails (default 48h).
	MaxAge Duration `toml:"max_age"`
	// DelayWarning is the age at which the prescriber is told the job is
	// delayed (a "delayed" DSN, RFC 3464 §2.3.3); 0 disables it (default
	// 4h).
	DelayWarning Duration `toml:"delay_warning"`
	// RetryMin is the delay before the first retry (default 1m), RetryMax
	// the cap of the exponential backoff (default 1h).
	RetryMin Duration `toml:"retry_min"`
	RetryMax Duration `toml:"retry_max"`
	// Workers is how many deliveries run at once (default 4);
	// PerDestination how many of them may go to one destination domain
	// (default 2), so that one slow operator does not hold every worker.
	Workers        int `toml:"workers"`
	PerDestination int `toml:"per_destination"`
	// ConnectTimeout bounds the TCP connection and TLS handshake (default
	// 30s), CommandTimeout the wait for each SMTP reply (default 5m,
	// RFC 5321 §4.5.3.2).
	ConnectTimeout Duration `toml:"connect_timeout"`
	CommandTimeout Duration `toml:"command_timeout"`
	// MXLookup lets domains without a route be delivered to their DNS MX
	// hosts (RFC 5321 §5.1); false (the default) delivers only to the
	// domains of Routes: secure health messaging relays only to known
	// operators.
	MXLookup bool `toml:"mx_lookup"`
	// Routes are the destination domains and their servers
	// ([[outbound.route]]).
	Routes []Route `toml:"route"`
}

// Route is where mail for one domain is delivered.
type Route struct {
	Domain string   `toml:"domain"` // exact domain, case-insensitive; stored in lower case
	Hosts  []string `toml:"hosts"`  // "host:port", tried in order; at least one
}

// RouteFor returns the hosts of the route for a recipient domain, compared
// exactly but without regard to case (RFC 5321 §2.4); ok is false when no
// route names it (a subdomain does not match its parent's route). The
// caller may modify the returned slice.
func (o *Outbound) RouteFor(domain string) (hosts []string, ok bool) {
	if o == nil {
		return nil, false
	}
	for i := range o.Routes {
		if strings.EqualFold(o.Routes[i].Domain, domain) {
			return slices.Clone(o.Routes[i].Hosts), true
		}
	}
	return nil, false
}

// Outbound defaults and bounds.
const (
	// DefaultOutboundMaxAge: two days to reach the patient's mailbox; past
	// that the prescriber is told, while a paper copy is still useful.
	DefaultOutboundMaxAge = 48 * time.Hour
	// DefaultOutboundDelayWarning: a prescription not in the patient's
	// mailbox after 4 hours is worth a word to the prescriber (an RFC 3464
	// "delayed" notification), well before it fails.
	DefaultOutboundDelayWarning = 4 * time.Hour
	// DefaultOutboundRetryMin and DefaultOutboundRetryMax: RFC 5321
	// §4.5.4.1 asks for 30 minutes at least between retries to one
	// destination; a first retry after a minute recovers a peer's brief
	// restart quickly, and the backoff reaches the RFC's interval after
	// five failures.
	DefaultOutboundRetryMin       = time.Minute
	DefaultOutboundRetryMax       = time.Hour
	DefaultOutboundWorkers        = 4
	DefaultOutboundPerDestination = 2
	DefaultOutboundConnectTimeout = 30 * time.Second
	// DefaultOutboundCommandTimeout: RFC 5321 §4.5.3.2.1-3 gives 5
	// minutes to the greeting and to the replies to MAIL and RCPT
	// (§4.5.3.2.6 asks 10 minutes for the reply that ends DATA, when the
	// receiver may be checking the whole message).
	DefaultOutboundCommandTimeout = 5 * time.Minute
	// MaxOutboundWorkers bounds workers and per_destination: each worker
	// holds a connection and a message in memory.
	MaxOutboundWorkers = 256

	maxOutboundAge = 30 * 24 * time.Hour
)

func (v *validator) outbound() {
	o := &v.cfg.Outbound
	v.outboundClient()

	if !v.has("outbound.cas") {
		// Peers' server certificates come from the same health PKI as
		// the signatures; trust() checked and resolved these files.
		o.CAs = slices.Concat(v.cfg.Trust.Anchors, v.cfg.Trust.Intermediates)
	} else {
		if len(o.CAs) == 0 {
			v.fail("outbound.cas", "at least one CA is required, or no peer's certificate can be verified; "+
				"remove the key to use trust.anchors and trust.intermediates")
		}
		for i := range o.CAs {
			v.caFile(fmt.Sprintf("outbound.cas[%d]", i), &o.CAs[i])
		}
	}

	minOK := durationRange(v, "outbound.retry_min", &o.RetryMin, DefaultOutboundRetryMin, time.Second, time.Hour)
	maxOK := durationRange(v, "outbound.retry_max", &o.RetryMax, DefaultOutboundRetryMax, time.Second, 24*time.Hour)
	ageOK := durationRange(v, "outbound.max_age", &o.MaxAge, DefaultOutboundMaxAge, time.Minute, maxOutboundAge)
	warnOK := durationRange(v, "outbound.delay_warning", &o.DelayWarning, DefaultOutboundDelayWarning, 0, maxOutboundAge)
	if minOK && maxOK && o.RetryMin.Duration > o.RetryMax.Duration {
		v.fail(v.written("outbound.retry_min", "outbound.retry_max"), "retry_min (%s) is longer than retry_max (%s): the backoff starts at retry_min and is capped at retry_max",
			o.RetryMin.Duration, o.RetryMax.Duration)
	}
	if minOK && ageOK && o.MaxAge.Duration <= o.RetryMin.Duration {
		v.fail(v.written("outbound.max_age", "outbound.retry_min"), "max_age (%s) is not longer than retry_min (%s): a job would fail before its first retry",
			o.MaxAge.Duration, o.RetryMin.Duration)
	}
	if ageOK && warnOK && o.DelayWarning.Duration != 0 && o.DelayWarning.Duration >= o.MaxAge.Duration {
		v.fail(v.written("outbound.delay_warning", "outbound.max_age"), "delay_warning (%s) is not shorter than max_age (%s): the job fails before the warning; "+
			"lower delay_warning, or set it to \"0s\" to send no warning", o.DelayWarning.Duration, o.MaxAge.Duration)
	}
	intRange(v, "outbound.workers", &o.Workers, DefaultOutboundWorkers, 1, MaxOutboundWorkers, "")
	intRange(v, "outbound.per_destination", &o.PerDestination, DefaultOutboundPerDestination, 1, MaxOutboundWorkers, "")
	durationRange(v, "outbound.connect_timeout", &o.ConnectTimeout, DefaultOutboundConnectTimeout, time.Second, 10*time.Minute)
	durationRange(v, "outbound.command_timeout", &o.CommandTimeout, DefaultOutboundCommandTimeout, time.Second, time.Hour)
	v.routes()
}

// written returns the first of keys written in the file, or the last: a
// problem between two keys is reported at the one the administrator wrote.
func (v *validator) written(keys ...string) string {
	for _, k := range keys {
		if v.has(k) {
			return k
		}
	}
	return keys[len(keys)-1]
}

// outboundClient checks the client certificate and key, or defaults them
// to the server's (checked by tls()).
func (v *validator) outboundClient() {
	o := &v.cfg.Outbound
	hasCert, hasKey := v.has("outbound.client_cert"), v.has("outbound.client_key")
	switch {
	case !hasCert && !hasKey:
		o.ClientCert, o.ClientKey = v.cfg.TLS.Cert, v.cfg.TLS.Key
		return
	case !hasCert:
		v.fail("outbound.client_cert", "required when outbound.client_key is set: the PEM certificate chain this relay presents to peers "+
			"(or remove client_key to use tls.cert and tls.key)")
		return
	case !hasKey:
		v.fail("outbound.client_key", "required when outbound.client_cert is set: the PEM private key of client_cert "+
			"(or remove client_cert to use tls.cert and tls.key)")
		return
	}
	bad := false
	for _, k := range []struct {
		key string
		val *string
	}{{"outbound.client_cert", &o.ClientCert}, {"outbound.client_key", &o.ClientKey}} {
		if *k.val == "" {
			v.fail(k.key, "empty path: remove client_cert and client_key to use tls.cert and tls.key")
			bad = true
		}
	}
	if bad {
		return
	}
	o.ClientCert, o.ClientKey = v.path(o.ClientCert), v.path(o.ClientKey)
	certPEM, err := readFileLimited(o.ClientCert, maxPEMFileBytes)
	if err != nil {
		v.fail("outbound.client_cert", "%v", err)
	}
	keyPEM, kerr := readFileLimited(o.ClientKey, maxPEMFileBytes)
	if kerr != nil {
		v.fail("outbound.client_key", "%v", kerr)
	}
	if err != nil || kerr != nil {
		return
	}
	if n, err := countCertificates(certPEM); err != nil || n == 0 {
		if err == nil {
			err = errors.New("no PEM CERTIFICATE block")
		}
		v.fail("outbound.client_cert", "%s: %v", o.ClientCert, err)
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		v.fail("outbound.client_key", "%s does not go with %s: %v", o.ClientKey, o.ClientCert, err)
	}
	// The extended key usage is not checked: the default is the server
	// certificate, which may lack clientAuth without harm as long as no
	// peer asks for a client certificate; a peer that asks refuses it
	// (RFC 5280 §4.2.1.12).
}

// routes checks [[outbound.route]].
func (v *validator) routes() {
	seen := make(map[string]int, len(v.cfg.Outbound.Routes))
	for i := range v.cfg.Outbound.Routes {
		r := &v.cfg.Outbound.Routes[i]
		base := fmt.Sprintf("outbound.route[%d]", i)
		switch err := checkDNSName(r.Domain); {
		case r.Domain == "":
			v.fail(base+".domain", "required: the recipient domain this route serves, such as %q", DefaultPatientDomain)
		case err != nil:
			v.fail(base+".domain", "%q: %v", r.Domain, err)
		default:
			r.Domain = strings.ToLower(r.Domain)
			if j, dup := seen[r.Domain]; dup {
				v.fail(base+".domain", "%q is already routed by outbound.route[%d] (line %d): one route per domain, list its hosts there",
					r.Domain, j, v.at(fmt.Sprintf("outbound.route[%d].domain", j)).line)
				break
			}
			seen[r.Domain] = i
			if strings.EqualFold(r.Domain, v.cfg.Server.MailDomain) {
				v.fail(base+".domain", "%q is server.mail_domain: its mail is delivered to local mailboxes, never forwarded", r.Domain)
			}
		}
		if len(r.Hosts) == 0 {
			v.fail(base+".hosts", "at least one \"host:port\" is required")
		}
		for j, h := range r.Hosts {
			if err := checkRouteHost(h); err != nil {
				v.fail(fmt.Sprintf("%s.hosts[%d]", base, j), "%q: %v", h, err)
			}
		}
	}
}

// checkRouteHost checks a destination "host:port": a host name or an IP
// address (IPv6 in brackets), and a numeric port from 1 to 65535.
func checkRouteHost(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("not host:port: %w", err)
	}
	// A numeric port only: a service name depends on /etc/services, and
	// port 0 cannot be dialled.
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || port[0] == '+' || port[0] == '-' {
		return fmt.Errorf("port %q: must be a number from 1 to 65535", port)
	}
	if host == "" {
		return errors.New("empty host")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() {
			return fmt.Errorf("%s is not a destination address", host)
		}
		return nil
	}
	if err := checkDNSName(host); err != nil {
		return fmt.Errorf("host %q is neither an IP address nor a host name: %v", host, err)
	}
	return nil
}

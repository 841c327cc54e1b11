// Package relay is the mssrelay daemon: it wires configuration, trust,
// store, the SMTP submission service and the IMAP service together and runs
// them until told to stop.
package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay/auth"
	"mssrelay/relay/claim"
	"mssrelay/relay/imapd"
	"mssrelay/relay/intake"
	"mssrelay/relay/metrics"
	"mssrelay/relay/operators"
	"mssrelay/relay/outbound"
	"mssrelay/relay/smtpd"
	"mssrelay/signing"
	"mssrelay/store"
)

// DBFile is the bbolt file's name inside the data directory.
const DBFile = "mssrelay.db"

// Listener kinds, as named in logs and in Addrs.
const (
	SMTPSubmission    = "smtp-submission"     // STARTTLS, port 587
	SMTPSubmissionTLS = "smtp-submission-tls" // implicit TLS, port 465
	SMTPRelay         = "smtp-relay"          // other operators, STARTTLS + client certificate, port 25
	IMAPTLS           = "imap-tls"            // implicit TLS, port 993
	IMAPSTARTTLS      = "imap-starttls"       // STARTTLS, port 143
	Admin             = "admin"               // HTTP metrics/health/pprof ([admin] listen)
)

// busyReply is what a plaintext listener says to a connection over the
// limit before closing it: RFC 5321 §3.1 (421, service not available) and
// RFC 3501 §7.1.5 (BYE). TLS listeners close without a word: nothing may be
// sent before the handshake.
func busyReply(kind string) []byte {
	switch kind {
	case SMTPSubmission, SMTPRelay:
		return []byte("421 4.3.2 Too many connections, try again later\r\n")
	case IMAPSTARTTLS:
		return []byte("* BYE Too many connections, try again later\r\n")
	}
	return nil
}

// Relay is a configured daemon.
type Relay struct {
	cfg  *configs.Config // as started; Reload applies parts of a newer one
	log  *slog.Logger
	cert *CertHolder
	auth *auth.Directory

	// notifier signs the notifications the relay emits; nil when
	// [signer] is not configured.
	notifier *signing.KeyPair

	reloadMu sync.Mutex // one reload at a time
	store    *store.Store
	trust    *signing.Trust
	smtp     *smtpd.Service
	imap     *imapd.Service
	intake   *intake.Intake

	// operators is the other operators' whitelist (nil: no exchange with
	// other operators); reloaded with the trust files.
	operators *operators.Holder

	// The outbound queue worker (relay/outbound) and the routes it
	// reads, swapped on reload.
	worker *outbound.Worker
	routes atomic.Pointer[configs.Outbound]

	// Observability (relay/metrics): metrics always; the admin HTTP
	// server only when admin.listen is set. phase drives /readyz.
	metrics *metrics.Metrics
	admin   *http.Server
	audit   *auditLog    // sessions' events, written without making them wait
	fetches *fetchMarks  // first fetches, for the prescriptions' history
	phase   atomic.Int32 // phaseStarting, phaseServing, phaseStopping

	listeners []bound
}

// Lifecycle phases reported by /readyz.
const (
	phaseStarting int32 = iota
	phaseServing
	phaseStopping
)

type bound struct {
	kind string
	l    net.Listener
}

// New loads trust material and the TLS certificate, opens the store and
// prepares the services. Nothing listens yet.
func New(cfg *configs.Config, log *slog.Logger) (*Relay, error) {
	cert := &CertHolder{}
	if err := cert.Load(cfg.TLS); err != nil {
		return nil, err
	}
	tlsCfg := ServerTLS(cfg.TLS, cert)
	trust, err := signing.LoadTrustWith(signing.LoadTrustOptions{
		Anchors: cfg.Trust.Anchors, Intermediates: cfg.Trust.Intermediates,
		CRLs: cfg.Trust.CRLs, CRLOptionalIssuers: cfg.Trust.CRLOptionalIssuers,
	})
	if err != nil {
		return nil, fmt.Errorf("loading trust material: %w", err)
	}
	var notifier *signing.KeyPair
	if cfg.Signer.Signs() {
		// The relay's own certificate signs the notifications it emits
		// (DSN, MDN); refuse to start with one that could not.
		if notifier, err = signing.LoadKeyPair(cfg.Signer.Cert, cfg.Signer.Key); err != nil {
			return nil, fmt.Errorf("loading the relay's signing certificate: %w", err)
		}
		if err := signing.CheckNotificationSigner(notifier, cfg.Signer.Address, time.Now()); err != nil {
			return nil, fmt.Errorf("the relay's signing certificate %s: %w", cfg.Signer.Cert, err)
		}
	}
	st, err := store.Open(filepath.Join(cfg.Server.DataDir, DBFile), store.Options{Quota: quotaPolicy(cfg)})
	if err != nil {
		return nil, err
	}
	for _, a := range cfg.Accounts {
		if err := st.EnsureAccount(a.Address); err != nil {
			st.Close()
			return nil, fmt.Errorf("creating mailboxes of %s: %w", a.Address, err)
		}
	}
	limits := mime.Limits{
		MaxMessageBytes: cfg.Limits.MaxMessageBytes,
		MaxHeaderBytes:  cfg.Limits.MaxHeaderBytes,
		MaxHeaders:      cfg.Limits.MaxHeaders,
		MaxDepth:        cfg.Limits.MaxMIMEDepth,
		MaxParts:        cfg.Limits.MaxMIMEParts,
	}
	dir := auth.New(cfg, auth.OptionsFrom(cfg.Auth))
	// Metrics are kept even without an admin listener: a few atomic adds
	// per message, and tools can read them through Metrics().
	m := metrics.New(metrics.Sources{Auth: dir, Store: st, Queue: st})
	audit := newAuditLog(st, log)
	in := &intake.Intake{
		Audit:    audit.Record,
		Store:    st,
		Trust:    trust,
		Limits:   limits,
		Hostname: cfg.Server.Hostname,
		Log:      log,
		Meta:     imapd.ComputeMeta,
		Metrics:  m,
	}
	// QR-code claims by executants (relay/claim); settings are read at
	// start only.
	in.Claims = claim.New(claim.Options{Config: claim.ConfigFrom(cfg), Store: st, Log: log.With("service", "claim"), Audit: audit.Record})
	in.SetForwarding(forwardingPolicy(cfg))
	r := &Relay{cfg: cfg, log: log, store: st, trust: trust, cert: cert, auth: dir, notifier: notifier, metrics: m, audit: audit, intake: in,
		fetches: newFetchMarks(st, log.With("service", "history"))}
	r.routes.Store(&cfg.Outbound)
	if cfg.Operators.Relaying() {
		if r.operators, err = loadOperators(cfg, trust, log); err != nil {
			r.fetches.close()
			audit.close()
			st.Close()
			return nil, err
		}
	}
	if r.worker, err = r.newWorker(cfg); err != nil {
		r.fetches.close()
		audit.close()
		st.Close()
		return nil, err
	}
	if cfg.Admin.Listen != "" {
		// POST /backup lets `mssrelay backup` snapshot the store while the
		// relay holds it; the token written in the data directory at each
		// start authorises it (relay/metrics/backup.go).
		tok, err := metrics.NewBackupToken(cfg.Server.DataDir)
		if err != nil {
			r.fetches.close()
			audit.close()
			st.Close()
			return nil, err
		}
		r.admin = metrics.NewServer(metrics.Handler(m, metrics.HandlerOptions{
			Pprof: cfg.Admin.Pprof,
			Ready: r.ready,
			Log:   log.With("service", Admin),
			Backup: &metrics.BackupOptions{
				Snapshot: st.Backup,
				Dir:      cfg.Server.DataDir,
				Token:    tok,
				Done: func(remote string, n int64, err error) {
					ev := store.AuditEvent{Kind: store.AuditAdminPrefix + "backup", Remote: remote,
						Subject: fmt.Sprintf("bytes=%d", n), Outcome: "ok", Detail: "via the admin endpoint"}
					if err != nil {
						ev.Outcome, ev.Detail = "error", err.Error()
					}
					audit.Record(ev)
					log.Info("backup served", "service", Admin, "remote", remote, "bytes", n, "ok", err == nil)
				},
			},
		}), log.With("service", Admin))
	}
	r.smtp = smtpd.New(smtpd.Config{
		Hostname:        cfg.Server.Hostname,
		TLS:             tlsCfg,
		Auth:            dir,
		Intake:          in,
		Log:             log.With("proto", "smtp"),
		MaxMessageBytes: cfg.Limits.MaxMessageBytes,
		MaxRecipients:   cfg.Limits.MaxRecipients,
		ReadTimeout:     cfg.Limits.ReadTimeout.Duration,
		WriteTimeout:    cfg.Limits.WriteTimeout.Duration,
		Metrics:         m,
		Audit:           audit.Record,
		MaxSession:      cfg.Limits.MaxSMTPSession.Duration,
		LocalDomain:     cfg.Server.MailDomain,
		Operators:       r.whitelist(),
		PeerTLS:         PeerTLS(tlsCfg, trust),
		CheckPeer: func(chain []*x509.Certificate) error {
			return trust.CheckRevocation(chain, time.Now())
		},
	})
	maxAppend := cfg.Limits.MaxMessageBytes
	if maxAppend > 1<<31 {
		maxAppend = 1 << 31
	}
	r.imap = imapd.New(imapd.Config{
		TLS:       tlsCfg,
		Auth:      dir,
		Store:     st,
		Log:       log,
		Limits:    limits,
		MaxAppend: uint32(maxAppend),
		Metrics:   m,
		Audit:     audit.Record,
		Fetched:   r.fetches.record,
		// Concurrent IMAP sessions per account (NO [LIMIT] past it).
		MaxSessionsPerAccount: cfg.Limits.MaxIMAPSessionsPerAccount,
	})
	return r, nil
}

// quotaPolicy is the store's quota policy for a configuration: the
// account's own quota_bytes/quota_messages, else [quota].
func quotaPolicy(cfg *configs.Config) store.QuotaFunc {
	return func(account string) (int64, uint32) { return cfg.QuotaFor(account) }
}

// Metrics returns the relay's metrics (served on the admin listener when
// one is configured).
func (r *Relay) Metrics() *metrics.Metrics { return r.metrics }

// ready is the readiness /readyz reports: nil once every listener is bound
// and the store is open and Serve runs, the reason otherwise.
func (r *Relay) ready() error {
	switch r.phase.Load() {
	case phaseServing:
		return nil
	case phaseStopping:
		return errors.New("shutting down")
	}
	return errors.New("starting")
}

// ServerTLS builds the one TLS configuration every listener shares (built
// once, not per connection). TLS 1.2 minimum everywhere; for TLS 1.2 only
// ECDHE with AEAD ciphers, as MSSanté requires (TLS 1.3 suites are all AEAD).
// The certificate is read through cert, so that a reload can rotate it
// without dropping a connection.
func ServerTLS(c configs.TLS, cert *CertHolder) *tls.Config {
	return &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert.Get(), nil },
		MinVersion:     c.Version(),
		CipherSuites:   aeadSuites(),
	}
}

// aeadSuites are the TLS 1.2 suites allowed in and out: ECDHE with AES-GCM
// or ChaCha20-Poly1305.
func aeadSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,
	}
}

// CertHolder holds the server certificate, swapped atomically on reload.
type CertHolder struct {
	p atomic.Pointer[tls.Certificate]
}

// Load reads the certificate chain and key files into the holder.
func (h *CertHolder) Load(c configs.TLS) error {
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return fmt.Errorf("loading TLS certificate %s: %w", c.Cert, err)
	}
	h.p.Store(&cert)
	return nil
}

// Get returns the current certificate.
func (h *CertHolder) Get() *tls.Certificate { return h.p.Load() }

// Close releases a relay that will not be served (Listen failed): the
// audit writer and the store. Serve does this itself when it returns.
func (r *Relay) Close() error {
	r.closeListeners()
	r.fetches.close()
	r.audit.close()
	return r.store.Close()
}

// Store gives tests and admin commands access to the open store.
func (r *Relay) Store() *store.Store { return r.store }

// Trust returns the loaded trust store.
func (r *Relay) Trust() *signing.Trust { return r.trust }

// Listen binds every configured listener, so that a port conflict fails
// before anything is served and tests can use port 0.
func (r *Relay) Listen() error {
	groups := []struct {
		kind  string
		addrs []string
	}{
		{SMTPSubmission, r.cfg.SMTP.Submission},
		{SMTPSubmissionTLS, r.cfg.SMTP.SubmissionTLS},
		{SMTPRelay, r.cfg.SMTP.Relay},
		{IMAPTLS, r.cfg.IMAP.TLS},
		{IMAPSTARTTLS, r.cfg.IMAP.STARTTLS},
	}
	if r.admin != nil {
		groups = append(groups, struct {
			kind  string
			addrs []string
		}{Admin, []string{r.cfg.Admin.Listen}})
	}
	rate := newConnRate(r.cfg.Limits.MaxConnectionRatePerIP) // one budget for all listeners
	for _, g := range groups {
		for _, a := range g.addrs {
			l, err := net.Listen("tcp", a)
			if err != nil {
				r.closeListeners()
				return fmt.Errorf("%s listener on %s: %w", g.kind, a, err)
			}
			l = newLimitListener(l, r.cfg.Limits.MaxConnections, r.cfg.Limits.MaxConnectionsPerIP, rate, busyReply(g.kind))
			r.listeners = append(r.listeners, bound{kind: g.kind, l: l})
		}
	}
	return nil
}

func (r *Relay) closeListeners() {
	for _, b := range r.listeners {
		b.l.Close()
	}
	r.listeners = nil
}

// closeListenersOf closes the listeners of the given kinds and keeps them
// in r.listeners (closeListeners closes them again, harmlessly): their
// Serve loops see net.ErrClosed and return.
func (r *Relay) closeListenersOf(kinds ...string) {
	for _, b := range r.listeners {
		if slices.Contains(kinds, b.kind) {
			b.l.Close()
		}
	}
}

// Addrs returns the bound address of the first listener of each kind.
func (r *Relay) Addrs() map[string]string {
	m := map[string]string{}
	for _, b := range r.listeners {
		if _, ok := m[b.kind]; !ok {
			m[b.kind] = b.l.Addr().String()
		}
	}
	return m
}

// Serve runs every listener until ctx is cancelled, then shuts down: stop
// accepting, let transactions in DATA finish (bounded by the configured
// shutdown timeout), close connections, close the store. Messages that got
// 250 are already durable; a transaction cut off gets no 250 and the
// client retries.
func (r *Relay) Serve(ctx context.Context) error {
	if r.listeners == nil {
		if err := r.Listen(); err != nil {
			r.fetches.close()
			r.audit.close()
			r.store.Close()
			return err
		}
	}
	errc := make(chan error, len(r.listeners))
	var wg sync.WaitGroup
	for _, b := range r.listeners {
		wg.Add(1)
		go func(b bound) {
			defer wg.Done()
			var err error
			switch b.kind {
			case SMTPSubmission:
				err = r.smtp.Serve(b.l, false)
			case SMTPSubmissionTLS:
				err = r.smtp.Serve(b.l, true)
			case SMTPRelay:
				err = r.smtp.ServeRelay(b.l)
			case IMAPTLS:
				err = r.imap.Serve(b.l, true)
			case IMAPSTARTTLS:
				err = r.imap.Serve(b.l, false)
			case Admin:
				if err = r.admin.Serve(b.l); errors.Is(err, http.ErrServerClosed) {
					err = nil
				}
			}
			if err != nil {
				errc <- fmt.Errorf("%s on %s: %w", b.kind, b.l.Addr(), err)
			}
		}(b)
		r.log.Info("listening", "service", b.kind, "addr", b.l.Addr().String())
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watchTrust(watchCtx, r.cfg.Trust.ReloadInterval.Duration)
	}()

	// The outbound queue: copies for patients, notifications; stopped
	// with the watchers, before the store closes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.worker.Run(watchCtx)
	}()

	// Retention: purge records past retention.records now and every
	// retention.purge_interval; stopped with the trust watcher, before
	// the store closes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = r.store.RunRetention(watchCtx, store.RetentionPolicy{
			Cutoff:   r.cfg.Retention.Records.Before,
			Interval: r.cfg.Retention.PurgeInterval.Duration,
		}, r.log.With("service", "retention"))
	}()

	// Every listener is bound and the store is open: ready for traffic.
	r.phase.Store(phaseServing)

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		r.log.Error("listener failed, shutting down", "err", serveErr)
	}
	// Not ready from the first moment of shutdown, so that a load
	// balancer polling /readyz stops sending clients during the drain.
	r.phase.Store(phaseStopping)
	// Stop accepting on every mail listener from the first moment:
	// smtp.Shutdown closes the SMTP listeners itself, but the IMAP ones
	// would otherwise greet (and serve) new sessions for as long as the
	// SMTP drain lasts. Sessions already open go on until imap.Shutdown
	// tells them BYE (RFC 3501 §7.1.5), so that a client idling on its
	// INBOX still sees the messages filed during the drain.
	r.closeListenersOf(IMAPTLS, IMAPSTARTTLS)

	timeout := r.cfg.Limits.ShutdownTimeout.Duration
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	r.log.Info("shutting down", "drain_timeout", timeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := r.smtp.Shutdown(sctx); err != nil {
		r.log.Warn("smtp drain incomplete", "err", err)
	}
	if err := r.imap.Shutdown(sctx); err != nil {
		r.log.Warn("imap shutdown", "err", err)
	}
	if r.admin != nil {
		// Last of the services, so that /readyz answered 503 and the
		// final counts could be scraped during the drain. A scrape in
		// progress gets a short grace, not the drain's leftover time.
		actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := r.admin.Shutdown(actx); err != nil {
			r.admin.Close()
			r.log.Warn("admin server shutdown", "err", err)
		}
		acancel()
	}
	r.closeListeners()
	stopWatch()
	wg.Wait()
	// Sessions are gone: write their last audit events and fetch marks,
	// then close.
	r.fetches.close()
	r.audit.close()
	if err := r.store.Close(); err != nil {
		return errors.Join(serveErr, fmt.Errorf("closing store: %w", err))
	}
	r.log.Info("stopped")
	return serveErr
}

// ErrNoSigner is returned by SignNotification when [signer] is not set.
var ErrNoSigner = errors.New("relay: no signing certificate configured ([signer])")

// SignNotification signs a notification entity (a DSN or MDN
// multipart/report, RFC 3464 / RFC 8098) with the relay's organisation
// certificate and returns the complete multipart/signed message, header
// fields first. Recipients verify it like any prescriber's signature.
func (r *Relay) SignNotification(header, entity []byte) ([]byte, error) {
	if r.notifier == nil {
		return nil, ErrNoSigner
	}
	sig, err := signing.SignNotification(r.notifier, entity)
	if err != nil {
		return nil, fmt.Errorf("signing a notification: %w", err)
	}
	return mime.BuildDetached(header, entity, sig), nil
}

// NotificationAddress is the From: of the relay's notifications.
func (r *Relay) NotificationAddress() string { return r.cfg.Signer.Address }

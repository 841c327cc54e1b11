package relay

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"mssrelay/configs"
)

// Reload re-reads the configuration file and applies, without dropping a
// connection, what an administrator changes in daily operation: accounts
// and passwords, the server certificate (rotation), the trust files
// (anchors, intermediates, CRLs re-read from the same paths), the patient
// registry and domain, and the outbound routes. A new file
// that does not load is refused and logged; the running configuration
// stays. Changes that need new sockets or a new store (listeners, data
// directory, lists of trust files, limits) are reported as needing a
// restart. Quotas apply at once.
func (r *Relay) Reload() error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	cfg, err := configs.Load(r.cfg.File)
	if err != nil {
		r.log.Error("reload refused, the running configuration stays", "err", err)
		return err
	}
	if err := r.cert.Load(cfg.TLS); err != nil {
		r.log.Error("reload refused, the running configuration stays", "err", err)
		return err
	}
	for _, a := range cfg.Accounts {
		if err := r.store.EnsureAccount(a.Address); err != nil {
			return fmt.Errorf("creating mailboxes of %s: %w", a.Address, err)
		}
	}
	if err := r.trust.Reload(); err != nil {
		// signing keeps the previous material when the new one is broken.
		r.log.Error("trust material not reloaded, the previous stays", "err", err)
	}
	if r.operators != nil {
		// After the trust: new CRLs may change the whitelist's verdict.
		// The holder logs a failure and keeps the previous list.
		_ = r.operators.Reload()
	}
	r.auth.Replace(cfg)
	r.store.SetQuota(quotaPolicy(cfg)) // [quota] and per-account quotas apply at once
	// The patient registry and domain, and the outbound routes.
	r.intake.SetForwarding(forwardingPolicy(cfg))
	r.routes.Store(&cfg.Outbound)
	r.worker.Kick()
	for _, what := range needsRestart(r.cfg, cfg) {
		r.log.Warn("changed setting needs a restart to apply", "setting", what)
	}
	r.log.Info("configuration reloaded", "accounts", len(cfg.Accounts))
	return nil
}

// needsRestart lists the sections whose change Reload cannot apply.
func needsRestart(old, cur *configs.Config) []string {
	var out []string
	check := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	check("server", old.Server, cur.Server)
	check("smtp", old.SMTP, cur.SMTP)
	check("imap", old.IMAP, cur.IMAP)
	check("limits", old.Limits, cur.Limits)
	check("auth", old.Auth, cur.Auth)
	check("admin", old.Admin, cur.Admin)
	check("retention", old.Retention, cur.Retention)
	check("claim", old.Claim, cur.Claim)
	check("server.claim_address", old.Server.ClaimAddress, cur.Server.ClaimAddress)
	check("log", old.Log, cur.Log)
	check("tls.min_version", old.TLS.MinVersion, cur.TLS.MinVersion)
	check("trust (list of files)", old.Trust, cur.Trust)
	check("signer", old.Signer, cur.Signer)
	check("operators", old.Operators, cur.Operators)
	// Routes apply at once; the rest of [outbound] (certificate, CAs,
	// retry policy, workers) is read when the worker starts.
	oldOut, curOut := old.Outbound, cur.Outbound
	oldOut.Routes, curOut.Routes = nil, nil
	check("outbound (except routes)", oldOut, curOut)
	return out
}

// watchTrust re-reads the trust files when they change on disk (a CRL
// fetched by cron, a renewed intermediate), checking every interval.
func (r *Relay) watchTrust(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			reloaded, err := r.trust.ReloadIfChanged()
			if err != nil {
				r.log.Error("trust files changed but do not load, the previous material stays", "err", err)
				continue
			}
			if reloaded {
				r.log.Info("trust files reloaded")
			}
			// The whitelist: when its files change, or when new CRLs may
			// change its signature's verdict. The holder logs failures.
			if r.operators != nil {
				if reloaded {
					_ = r.operators.Reload()
				} else {
					_, _ = r.operators.ReloadIfChanged()
				}
			}
		}
	}
}

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"mssrelay/configs"
	"mssrelay/relay/demo"
	"mssrelay/relay/loadgen"
	"mssrelay/signing"
)

const benchHelp = `bench [-data DIR | -smtp ADDR -user ADDR -password PW -ca FILE ...] [-n N] [-c C] [-per-conn K] [-rate R] [-json]
       bench -idle-imap N -idle-smtp M [-idle-hold D] [-admin ADDR] [-pid PID] [-data DIR] [-json]
       bench -imap-sessions N [-c C] [-data DIR | -imap ADDR -imap-user ADDR -imap-password PW -ca FILE] [-json]

Submits N distinct signed prescriptions to a running relay from C clients and
reports accepted messages per second, DATA→250 latency percentiles and every
refusal by reply code; then reads the recipient's mailbox back over IMAP with
C clients (BODY.PEEK[], nothing is marked seen). All messages are generated
and signed before the clock starts.

Against the demo (` + "`go run ./cmd/mssrelay`" + ` in another terminal) no flag is needed:
accounts, addresses and the development CA come from -data, and two signer
certificates (RSA-2048 and P-256) are issued from the demo's PKI for the demo
prescriber. Explicit flags override what -data provides.

Each client sends MAIL, RCPT and DATA in one write when the server offers
PIPELINING (RFC 2920), as MTAs that submit in volume do; -no-pipelining waits
for each reply, as simple clients (most practice software) do. Messages are
dot-stuffed when prepared, so the tool spends little CPU sending them.

-plain runs the same SMTP phase against a mail server that only carries mail
(no STARTTLS, no AUTH, unsigned messages of about the same size), such as the
Postfix of bench/compare.sh.

Idle mode (-idle-imap and/or -idle-smtp) measures the relay's memory with
many mail clients connected and doing nothing: it opens N IMAP sessions
(implicit TLS, LOGIN as -imap-user, the demo pharmacy by default, SELECT
INBOX, then IDLE, RFC 2177) and M SMTP sessions (STARTTLS + AUTH as -user,
then idle, NOOP every -keepalive), -dialers at a time; holds them all for
-idle-hold; reads the relay's resident memory (RSS), Go heap and goroutines
from its admin /metrics (-admin, by default the demo config's [admin]
listen) and/or VmRSS from /proc/PID/status (-pid), before opening anything
and with everything open; then closes every session (LOGOUT, QUIT).
The relay must allow that many sessions from one address: raise [limits]
max_connections (per listener), max_connections_per_ip,
max_imap_sessions_per_account (all IMAP sessions are one account) and
max_connection_rate_per_ip in its config for the run (the command says
which are too low for the demo) and restart it.

Sessions mode (-imap-sessions N) measures how many short IMAP sessions the
relay serves a second, as mail clients polling their mailbox make them: C
workers (-c, 8 by default in this mode) each run sessions one after another,
every session on a new implicit-TLS connection (TLS resumption from one
session cache per worker, unless -no-resume): LOGIN as -imap-user (the demo
pharmacy by default), EXAMINE INBOX, UID FETCH of the first message's
BODY.PEEK[], LOGOUT. The INBOX must hold a message: put some in with
` + "`mssrelay bench -n 200 -imap-phase=false`" + `. All sessions are one account:
keep C below its [limits] max_imap_sessions_per_account (20 in the demo; a
server may release a session a moment after answering its LOGOUT), and
max_connection_rate_per_ip (a minute) above the sessions to run.

Flags:`

// benchOutput is the -json document.
type benchOutput struct {
	RunID          string              `json:"run_id"`
	PrepareSeconds float64             `json:"prepare_seconds"`
	Signers        map[string]int      `json:"signers"`
	SMTP           *loadgen.Report     `json:"smtp"`
	IMAP           *loadgen.IMAPReport `json:"imap,omitempty"`
	IMAPError      string              `json:"imap_error,omitempty"`
}

func cmdBench(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: mssrelay %s\n", benchHelp)
		fs.PrintDefaults()
	}
	dataDir := fs.String("data", "mssrelay-data", "data directory of the running demo: accounts, addresses, CA and PKI")
	smtpAddr := fs.String("smtp", "", "submission address host:port, STARTTLS (default: the demo's)")
	imapAddr := fs.String("imap", "", "IMAP address host:port, implicit TLS (default: the demo's)")
	user := fs.String("user", "", "submitting account (default: the demo prescriber)")
	password := fs.String("password", "", "its password (default: the demo prescriber's)")
	from := fs.String("from", "", "sender address (default: -user)")
	to := fs.String("to", "", "recipient (default: the demo pharmacy)")
	imapUser := fs.String("imap-user", "", "account read in the IMAP phase (default: -to when it is a demo account)")
	imapPassword := fs.String("imap-password", "", "its password")
	caFile := fs.String("ca", "", "PEM file of the CA that issued the server certificate (default: the demo's root)")
	signerCert := fs.String("signer-cert", "", "S/MIME signer certificate PEM (with its chain); default: issue from the demo PKI")
	signerKey := fs.String("signer-key", "", "its private key PEM")
	rpps := fs.String("rpps", "", "prescriber RPPS written in the prescriptions (default: the demo prescriber's)")
	n := fs.Int("n", 2000, "number of messages")
	c := fs.Int("c", 32, "concurrent SMTP clients")
	imapC := fs.Int("imap-c", 8, "concurrent IMAP clients in the IMAP phase (all log in as one account: stay within its limits.max_imap_sessions_per_account)")
	perConn := fs.Int("per-conn", 0, "messages per connection: 0 reuses one connection per client, 1 connects (STARTTLS+AUTH) for every message")
	rate := fs.Float64("rate", 0, "open loop: offer this many msgs/s on a fixed schedule; latency counts from when each was due (0: closed loop)")
	keys := fs.String("key", loadgen.KeysBoth, "signer key type issued from the demo PKI: rsa (2048), p256 or both (half each)")
	size := fs.String("size", string(loadgen.SizeFull), "message content: full (FHIR+PDF+IHE_XDM.ZIP, 10–30 KiB), pdf (FHIR+PDF) or fhir")
	imapPhase := fs.Bool("imap-phase", true, "after SMTP, fetch the recipient's whole INBOX over IMAP")
	plain := fs.Bool("plain", false, "plain SMTP: no STARTTLS, no AUTH, unsigned messages (for comparison with a plain MTA)")
	noResume := fs.Bool("no-resume", false, "disable TLS session resumption between connections")
	noPipelining := fs.Bool("no-pipelining", false, "send MAIL, RCPT and DATA one at a time even when the server offers PIPELINING (RFC 2920), as simple clients do")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	timeout := fs.Duration("timeout", 10*time.Minute, "bound on the whole run; when it passes, messages not yet sent are reported as such")
	cmdTimeout := fs.Duration("command-timeout", 30*time.Second, "bound on each SMTP command and connection attempt")
	idleIMAP := fs.Int("idle-imap", 0, "idle mode: IMAP sessions to open and hold (LOGIN, SELECT INBOX, IDLE)")
	idleSMTP := fs.Int("idle-smtp", 0, "idle mode: SMTP sessions to open and hold (STARTTLS, AUTH)")
	idleHold := fs.Duration("idle-hold", 30*time.Second, "idle mode: how long every session stays open before the memory is read")
	idleNoop := fs.Bool("idle-noop", false, "idle mode: IMAP sessions poll with NOOP every -keepalive instead of IDLE")
	keepAlive := fs.Duration("keepalive", 30*time.Second, "idle mode: NOOP interval of held SMTP sessions (within the relay's limits.read_timeout)")
	dialers := fs.Int("dialers", 16, "idle mode: sessions being set up at once")
	adminAddr := fs.String("admin", "", "idle mode: the relay's admin endpoint, host:port or URL of /metrics (default: the demo config's [admin] listen)")
	pid := fs.Int("pid", 0, "idle mode: also read VmRSS and VmHWM of this process from /proc (Linux)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the load tool itself during the timed SMTP phase to this file (the relay's own: its admin listener's /debug/pprof)")
	imapSessions := fs.Int("imap-sessions", 0, "sessions mode: run this many IMAP sessions (new connection, LOGIN, EXAMINE INBOX, UID FETCH one message, LOGOUT) from -c workers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case *n <= 0:
		return usageError{"-n must be positive"}
	case *c <= 0:
		return usageError{"-c must be positive"}
	case *imapC <= 0:
		return usageError{"-imap-c must be positive"}
	case *perConn < 0:
		return usageError{"-per-conn must be 0 or more"}
	case *rate < 0:
		return usageError{"-rate must be 0 or more"}
	case *timeout <= 0 || *cmdTimeout <= 0:
		return usageError{"-timeout and -command-timeout must be positive"}
	case (*signerCert == "") != (*signerKey == ""):
		return usageError{"-signer-cert and -signer-key go together"}
	case *idleIMAP < 0 || *idleSMTP < 0:
		return usageError{"-idle-imap and -idle-smtp must be 0 or more"}
	case *idleHold < 0 || *keepAlive <= 0 || *dialers <= 0:
		return usageError{"-idle-hold must be 0 or more, -keepalive and -dialers positive"}
	case *pid < 0:
		return usageError{"-pid must be a process id"}
	case *imapSessions < 0:
		return usageError{"-imap-sessions must be 0 or more"}
	}
	idle := *idleIMAP > 0 || *idleSMTP > 0
	if *imapSessions > 0 {
		if idle || *plain {
			return usageError{"-imap-sessions goes with neither idle mode nor -plain"}
		}
		if !set["c"] {
			*c = 8 // the SMTP default would exceed an account's IMAP sessions
		}
		*imapPhase = false
	}
	if idle {
		*imapPhase = false // idle mode has no IMAP fetch phase
		if !set["timeout"] {
			*timeout += *idleHold // the default bound leaves 10 minutes for opening and closing
		}
	}
	sz, err := loadgen.ParseSize(*size)
	if err != nil {
		return usageError{err.Error()}
	}
	if *plain && !set["imap-phase"] {
		*imapPhase = false // a plain MTA has no IMAP to read back from
	}

	// The demo supplies every default; without -data it is optional when
	// the explicit flags say everything it would.
	info, demoErr := demo.Load(*dataDir)
	if demoErr != nil && set["data"] {
		return demoErr
	}
	pick := func(flagValue, fromDemo string) string {
		if flagValue != "" || info == nil {
			return flagValue
		}
		return fromDemo
	}
	var d demo.Info
	if info != nil {
		d = *info
	}
	*smtpAddr = pick(*smtpAddr, d.Submission)
	*imapAddr = pick(*imapAddr, d.IMAPTLS)
	*user = pick(*user, d.Prescriber.Address)
	*password = pick(*password, d.Prescriber.Password)
	*to = pick(*to, d.Pharmacy.Address)
	*rpps = pick(*rpps, d.Prescriber.RPPS)
	if *from == "" {
		*from = *user
	}
	if *rpps == "" {
		*rpps = demo.PrescriberRPPS
	}
	if info != nil && *imapUser == "" {
		for _, u := range []demo.User{d.Pharmacy, d.Pharmacy2, d.Prescriber} {
			if u.Address == *to {
				*imapUser, *imapPassword = u.Address, u.Password
			}
		}
	}
	missing := func(what string) error {
		msg := "no " + what
		if demoErr != nil {
			msg += " (and " + demoErr.Error() + ")"
		}
		return usageError{msg}
	}
	switch {
	case *imapSessions > 0 && (*imapAddr == "" || *imapUser == "" || *imapPassword == ""):
		return missing("-imap, -imap-user and -imap-password for -imap-sessions")
	case *imapSessions > 0:
		// Needs no SMTP: checked below.
	case *smtpAddr == "":
		return missing("-smtp address")
	case !idle && (*from == "" || *to == ""):
		return missing("-from/-user or -to address")
	case !*plain && (!idle || *idleSMTP > 0) && (*user == "" || *password == ""):
		return missing("-user and -password")
	case *imapPhase && (*imapAddr == "" || *imapUser == "" || *imapPassword == ""):
		return missing("-imap, -imap-user and -imap-password for the IMAP phase (or -imap-phase=false)")
	case *idleIMAP > 0 && (*imapAddr == "" || *imapUser == "" || *imapPassword == ""):
		return missing("-imap, -imap-user and -imap-password for -idle-imap")
	}
	if *imapSessions > 0 {
		imapTLS, err := benchTLS(*caFile, info, *imapAddr)
		if err != nil {
			return err
		}
		ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stopSignals()
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return benchSessions(ctx, stdout, sessionsRun{
			opts: loadgen.IMAPSessionsOptions{
				IMAP: loadgen.IMAPOptions{Addr: *imapAddr, TLS: imapTLS, User: *imapUser, Password: *imapPassword,
					Concurrency: *c, Timeout: *cmdTimeout},
				Sessions: *imapSessions,
				NoResume: *noResume,
			},
			info: info, dataDir: *dataDir, json: *asJSON,
		})
	}
	if idle {
		if *plain {
			return usageError{"-plain does not go with idle mode"}
		}
		imapTLS, err := benchTLS(*caFile, info, *imapAddr)
		if err != nil && *idleIMAP > 0 {
			return err
		}
		smtpTLS, err := benchTLS(*caFile, info, *smtpAddr)
		if err != nil && *idleSMTP > 0 {
			return err
		}
		ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stopSignals()
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return benchIdle(ctx, stdout, idleRun{
			opts: loadgen.IdleOptions{
				IMAP: loadgen.IMAPOptions{Addr: *imapAddr, TLS: imapTLS, User: *imapUser, Password: *imapPassword,
					Timeout: *cmdTimeout},
				IMAPSessions: *idleIMAP,
				NoIDLE:       *idleNoop,
				SMTP: loadgen.SMTPOptions{Addr: *smtpAddr, TLS: smtpTLS, User: *user, Password: *password,
					NoResume: *noResume, Timeout: *cmdTimeout},
				SMTPSessions: *idleSMTP,
				Dialers:      *dialers,
				Hold:         *idleHold,
				KeepAlive:    *keepAlive,
			},
			info: info, dataDir: *dataDir, admin: *adminAddr, pid: *pid, json: *asJSON,
		})
	}

	var smtpTLS, imapTLS *tls.Config
	if !*plain || *imapPhase {
		if smtpTLS, err = benchTLS(*caFile, info, *smtpAddr); err != nil {
			return err
		}
		if imapTLS, err = benchTLS(*caFile, info, *imapAddr); err != nil {
			return err
		}
	}

	cfg := loadgen.Config{N: *n, From: *from, To: *to, Plain: *plain, Size: sz, RPPS: *rpps}
	if info != nil && *from == d.Prescriber.Address {
		cfg.Prescriber = d.Prescriber.Name
	}
	if !*plain {
		if cfg.Signers, err = benchSigners(info, *signerCert, *signerKey, *keys, set["key"], *from, *rpps, cfg.Prescriber); err != nil {
			return err
		}
	}

	say := func(format string, a ...any) {
		if !*asJSON {
			fmt.Fprintf(stdout, format, a...)
		}
	}
	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	o := loadgen.SMTPOptions{Addr: *smtpAddr, NoResume: *noResume, NoPipelining: *noPipelining,
		Concurrency: *c, PerConn: *perConn, Rate: *rate, Timeout: *cmdTimeout}
	if !*plain {
		o.TLS, o.User, o.Password = smtpTLS, *user, *password
	}
	if err := loadgen.Probe(ctx, o); err != nil {
		if info != nil && *smtpAddr == d.Submission {
			return fmt.Errorf("%w (is the demo relay running? start it with `mssrelay -data %s`)", err, *dataDir)
		}
		return err
	}

	say("Preparing %d messages (%s)...\n", *n, describeSigners(cfg))
	batch, err := loadgen.Prepare(cfg)
	if err != nil {
		return err
	}
	say("Prepared in %.1f s, %.1f MiB in all; sending to %s as %s with %d clients...\n",
		batch.Prepared.Seconds(), float64(batch.Bytes)/(1<<20), *smtpAddr, *from, *c)

	if !*asJSON {
		o.Progress = func(done, total int) { fmt.Fprintf(stdout, "  %d/%d answered\n", done, total) }
	}
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	rep, err := loadgen.RunSMTP(ctx, batch, o)
	stopProfile()
	if err != nil {
		return err
	}

	out := benchOutput{RunID: batch.RunID, PrepareSeconds: batch.Prepared.Seconds(), SMTP: rep, Signers: map[string]int{}}
	for _, m := range batch.Messages {
		out.Signers[m.Signer]++
	}
	if *imapPhase && ctx.Err() == nil {
		say("Reading %s's INBOX back over IMAP with %d clients...\n", *imapUser, *imapC)
		out.IMAP, err = loadgen.RunIMAP(ctx, loadgen.IMAPOptions{Addr: *imapAddr, TLS: imapTLS,
			User: *imapUser, Password: *imapPassword, Concurrency: *imapC, Timeout: *cmdTimeout})
		if err != nil {
			out.IMAPError = err.Error()
		}
	}

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout)
		if err := rep.WriteText(stdout); err != nil {
			return err
		}
		if out.IMAP != nil {
			fmt.Fprintln(stdout)
			if err := out.IMAP.WriteText(stdout); err != nil {
				return err
			}
		}
	}

	// The exit status tells a script whether the run was clean.
	var problems []error
	if rep.Accepted < rep.Messages {
		problems = append(problems, fmt.Errorf("%d of %d messages not accepted", rep.Messages-rep.Accepted, rep.Messages))
	}
	if out.IMAPError != "" {
		problems = append(problems, fmt.Errorf("IMAP phase: %s", out.IMAPError))
	} else if out.IMAP != nil && len(out.IMAP.Errors) > 0 {
		problems = append(problems, fmt.Errorf("IMAP phase: %d client(s) failed", len(out.IMAP.Errors)))
	}
	return errors.Join(problems...)
}

// benchTLS trusts caFile, or the demo's root; the server name is the host
// of addr (the demo's certificate names localhost, 127.0.0.1 and ::1).
func benchTLS(caFile string, info *demo.Info, addr string) (*tls.Config, error) {
	if caFile == "" {
		if info == nil {
			return nil, usageError{"no -ca file to verify the server certificate with"}
		}
		caFile = info.Path(info.RootCA)
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageError{fmt.Sprintf("address %q: %v", addr, err)}
	}
	return &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}, nil
}

// benchSigners loads the given signer, or issues RSA-2048 and/or P-256
// certificates for from from the demo's development PKI.
func benchSigners(info *demo.Info, certFile, keyFile, keys string, keySet bool, from, rpps, name string) ([]loadgen.Signer, error) {
	if certFile != "" {
		if keySet {
			return nil, usageError{"-key chooses certificates issued from the demo PKI: not with -signer-cert"}
		}
		kp, err := signing.LoadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the signer: %w", err)
		}
		return []loadgen.Signer{{Name: keyName(kp.Cert), Key: kp}}, nil
	}
	if info == nil {
		return nil, usageError{"no signer: give -signer-cert and -signer-key, or -data with a demo PKI"}
	}
	pki, err := signing.LoadDevPKI(filepath.Dir(info.Path(info.RootCA)))
	if err != nil {
		return nil, fmt.Errorf("loading the demo PKI to issue signer certificates: %w", err)
	}
	if name == "" {
		name = "Load Generator"
	}
	s, err := loadgen.IssueSigners(pki, from, rpps, name, keys)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return s, nil
}

func keyName(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ecdsa-" + k.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}

func describeSigners(cfg loadgen.Config) string {
	if cfg.Plain {
		return "plain, unsigned"
	}
	s := "signed with"
	for i, sg := range cfg.Signers {
		if i > 0 {
			s += " and"
		}
		s += " " + sg.Name
	}
	return s + ", " + string(cfg.Size)
}

// idleRun is what `bench` passes to its idle mode.
type idleRun struct {
	opts    loadgen.IdleOptions
	info    *demo.Info // nil without a demo
	dataDir string
	admin   string // -admin
	pid     int    // -pid
	json    bool
}

// benchIdleOutput is the -json document of the idle mode.
type benchIdleOutput struct {
	*loadgen.IdleReport
	// LimitWarnings name the demo config's limits that refuse part of the
	// run, and the values it needs.
	LimitWarnings []string `json:"limit_warnings,omitempty"`
}

// benchIdle opens, holds and measures the idle sessions of r.opts and
// prints the report. The error says whether every session was opened,
// survived and was measured.
func benchIdle(ctx context.Context, stdout io.Writer, r idleRun) error {
	say := func(format string, a ...any) {
		if !r.json {
			fmt.Fprintf(stdout, format, a...)
		}
	}
	warnings, metricsURL, err := idleDemoConfig(r)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		say("warning: %s\n", w)
	}
	if r.admin != "" {
		if metricsURL, err = adminMetricsURL(r.admin); err != nil {
			return usageError{err.Error()}
		}
	}
	switch {
	case metricsURL != "" && r.pid > 0:
		say("Reading the relay's memory from %s and /proc/%d/status.\n", metricsURL, r.pid)
	case metricsURL != "":
		say("Reading the relay's memory from %s.\n", metricsURL)
	case r.pid > 0:
		say("Reading the relay's memory from /proc/%d/status (no Go heap figures without -admin).\n", r.pid)
	default:
		say("warning: no -admin endpoint ([admin] listen) and no -pid: the relay's memory will not be read\n")
	}
	if metricsURL != "" || r.pid > 0 {
		hc := &http.Client{Timeout: 10 * time.Second}
		r.opts.Measure = func(ctx context.Context) (*loadgen.Memory, error) {
			var m *loadgen.Memory
			if metricsURL != "" {
				var err error
				if m, err = loadgen.ScrapeMemory(ctx, hc, metricsURL); err != nil {
					return nil, err
				}
			}
			if r.pid > 0 {
				p, err := loadgen.ProcMemory(r.pid)
				if err != nil {
					return nil, err
				}
				if m == nil {
					return p, nil
				}
				m.Merge(p)
			}
			return m, nil
		}
	}
	if !r.json {
		r.opts.Progress = func(imapOpen, smtpOpen int) {
			fmt.Fprintf(stdout, "  %d/%d IMAP, %d/%d SMTP sessions open\n",
				imapOpen, r.opts.IMAPSessions, smtpOpen, r.opts.SMTPSessions)
		}
	}
	say("Opening %d IMAP and %d SMTP idle sessions, %d at a time; holding them %v...\n",
		r.opts.IMAPSessions, r.opts.SMTPSessions, r.opts.Dialers, r.opts.Hold)
	rep, err := loadgen.RunIdle(ctx, r.opts)
	if err != nil {
		if r.info != nil && errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (is the relay running, with [admin] listen set? start the demo with `mssrelay -data %s`)", err, r.dataDir)
		}
		return err
	}
	if r.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(benchIdleOutput{IdleReport: rep, LimitWarnings: warnings}); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout)
		if err := rep.WriteText(stdout); err != nil {
			return err
		}
		if rep.During != nil {
			// One line to paste: the figures the memory target is about.
			fmt.Fprintf(stdout, "\nidle: %d IMAP + %d SMTP sessions open, relay RSS %.1f MiB", rep.IMAPAlive, rep.SMTPAlive, mibOf(rep.During.RSS))
			if rep.During.HeapInuse > 0 {
				fmt.Fprintf(stdout, ", Go heap in use %.1f MiB", mibOf(rep.During.HeapInuse))
			}
			if rep.Before != nil {
				fmt.Fprintf(stdout, " (%.1f MiB before, %.1f KiB per session)", mibOf(rep.Before.RSS), float64(rep.PerSession())/1024)
			}
			fmt.Fprintln(stdout)
		}
	}

	var problems []error
	if rep.IMAPOpen < rep.IMAPRequested || rep.SMTPOpen < rep.SMTPRequested {
		problems = append(problems, fmt.Errorf("%d of %d IMAP and %d of %d SMTP sessions opened",
			rep.IMAPOpen, rep.IMAPRequested, rep.SMTPOpen, rep.SMTPRequested))
	}
	if rep.IMAPAlive < rep.IMAPOpen || rep.SMTPAlive < rep.SMTPOpen {
		problems = append(problems, fmt.Errorf("%d IMAP and %d SMTP sessions lost while held",
			rep.IMAPOpen-rep.IMAPAlive, rep.SMTPOpen-rep.SMTPAlive))
	}
	if rep.MeasureError != "" {
		problems = append(problems, errors.New(rep.MeasureError))
	}
	return errors.Join(problems...)
}

func mibOf(n int64) float64 { return float64(n) / (1 << 20) }

// idleDemoConfig reads the demo's configuration, when the run targets the
// demo: the limits that would refuse part of the run, and the admin
// endpoint's /metrics URL ("" when [admin] listen is unset).
func idleDemoConfig(r idleRun) (warnings []string, metricsURL string, err error) {
	if r.info == nil {
		return nil, "", nil
	}
	path := r.info.Path(r.info.Config)
	cfg, err := configs.Load(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading the demo's config for its limits: %w", err)
	}
	if cfg.Admin.Listen != "" {
		if metricsURL, err = adminMetricsURL(cfg.Admin.Listen); err != nil {
			return nil, "", fmt.Errorf("%s: [admin] listen: %w", path, err)
		}
	}
	imapN, smtpN := 0, 0
	for _, a := range append(cfg.IMAP.TLS, cfg.IMAP.STARTTLS...) {
		if a == r.opts.IMAP.Addr {
			imapN = r.opts.IMAPSessions
		}
	}
	for _, a := range append(cfg.SMTP.Submission, cfg.SMTP.SubmissionTLS...) {
		if a == r.opts.SMTP.Addr {
			smtpN = r.opts.SMTPSessions
		}
	}
	// The caps apply per listener (relay/limit.go): the larger of the two
	// counts is what one listener must hold.
	most := max(imapN, smtpN)
	l := cfg.Limits
	var low []string
	check := func(name string, have, need int) {
		if need > have {
			low = append(low, fmt.Sprintf("%s = %d (now %d)", name, need, have))
		}
	}
	check("max_connections", l.MaxConnections, most)
	check("max_connections_per_ip", l.MaxConnectionsPerIP, most)
	check("max_connection_rate_per_ip", l.MaxConnectionRatePerIP, most)
	check("max_imap_sessions_per_account", l.MaxIMAPSessionsPerAccount, imapN)
	if len(low) > 0 {
		warnings = append(warnings, fmt.Sprintf("the relay's limits refuse part of this run: set in %s [limits] %s, then restart the relay",
			path, strings.Join(low, ", ")))
	}
	return warnings, metricsURL, nil
}

// adminMetricsURL turns an admin listen address ("127.0.0.1:9187",
// ":9187") or a URL into the URL of its /metrics; an unspecified host is
// reached on loopback.
func adminMetricsURL(s string) (string, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("admin address %q: want host:port or an http(s) URL", s)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/metrics"
		}
		return u.String(), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("admin address %q: %w", s, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/metrics", nil
}

// sessionsRun is what `bench` passes to its sessions mode.
type sessionsRun struct {
	opts    loadgen.IMAPSessionsOptions
	info    *demo.Info // nil without a demo
	dataDir string
	json    bool
}

// benchSessionsOutput is the -json document of the sessions mode.
type benchSessionsOutput struct {
	*loadgen.IMAPSessionsReport
	LimitWarnings []string `json:"limit_warnings,omitempty"`
}

// benchSessions runs the short IMAP sessions of r.opts and prints the
// report. The error says whether every session completed.
func benchSessions(ctx context.Context, stdout io.Writer, r sessionsRun) error {
	say := func(format string, a ...any) {
		if !r.json {
			fmt.Fprintf(stdout, format, a...)
		}
	}
	warnings, err := sessionsDemoLimits(r)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		say("warning: %s\n", w)
	}
	if !r.json {
		r.opts.Progress = func(done, total int) { fmt.Fprintf(stdout, "  %d/%d sessions\n", done, total) }
	}
	say("Running %d IMAP sessions on %s as %s with %d workers...\n",
		r.opts.Sessions, r.opts.IMAP.Addr, r.opts.IMAP.User, r.opts.IMAP.Concurrency)
	rep, err := loadgen.RunIMAPSessions(ctx, r.opts)
	if err != nil {
		switch {
		case errors.Is(err, loadgen.ErrEmptyMailbox) && r.info != nil:
			return fmt.Errorf("%w (put messages in with `mssrelay bench -data %s -n 200 -imap-phase=false`)", err, r.dataDir)
		case errors.Is(err, syscall.ECONNREFUSED) && r.info != nil:
			return fmt.Errorf("%w (is the demo relay running? start it with `mssrelay -data %s`)", err, r.dataDir)
		}
		return err
	}
	if r.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(benchSessionsOutput{IMAPSessionsReport: rep, LimitWarnings: warnings}); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout)
		if err := rep.WriteText(stdout); err != nil {
			return err
		}
	}
	if rep.Completed < rep.Sessions {
		return fmt.Errorf("%d of %d IMAP sessions completed (%d failed, %d not run)",
			rep.Completed, rep.Sessions, rep.Failed, rep.NotRun)
	}
	return nil
}

// sessionsDemoLimits names the demo config's limits that would refuse part
// of a sessions run, when the run targets the demo's IMAP port.
func sessionsDemoLimits(r sessionsRun) ([]string, error) {
	if r.info == nil || r.opts.IMAP.Addr != r.info.IMAPTLS {
		return nil, nil
	}
	path := r.info.Path(r.info.Config)
	cfg, err := configs.Load(path)
	if err != nil {
		return nil, fmt.Errorf("reading the demo's config for its limits: %w", err)
	}
	l := cfg.Limits
	var w []string
	// The server may count a session until a moment after its LOGOUT is
	// answered, while the worker already logs in again: leave headroom.
	if c := r.opts.IMAP.Concurrency; c+4 > l.MaxIMAPSessionsPerAccount {
		w = append(w, fmt.Sprintf("%d workers against %s [limits] max_imap_sessions_per_account = %d: some LOGINs may get NO [LIMIT]; use -c %d or less",
			c, path, l.MaxIMAPSessionsPerAccount, max(l.MaxIMAPSessionsPerAccount-4, 1)))
	}
	// The rate limit counts connections a minute (relay/limit.go); the
	// first-message lookup is one more.
	if n := r.opts.Sessions + 1; n > l.MaxConnectionRatePerIP {
		w = append(w, fmt.Sprintf("%d connections against %s [limits] max_connection_rate_per_ip = %d a minute: some may be refused",
			n, path, l.MaxConnectionRatePerIP))
	}
	return w, nil
}

// startCPUProfile profiles this process into path until the returned
// function is called; with no path it does nothing. The load tool shares
// the machine with the relay in every documented run, so what it spends is
// worth knowing as much as what the relay spends.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"mssrelay/configs"
	"mssrelay/gctune"
	"mssrelay/relay"
	"mssrelay/relay/demo"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	defer startGCTuner(os.Getenv("GOGC"))()
	return serve(ctx, args, stdout, stderr, demo.DefaultPorts())
}

// The garbage collector's pace for the daemon when the environment does not
// set GOGC (GOMEMLIMIT still bounds the heap when set). Every message
// allocates a few times its size (TLS, reading, verifying, extracting,
// filing) while the live heap stays small: a few MiB while receiving, tens
// with a thousand idle sessions.
//
//   - defaultGCPercent: the heap may grow to three times the live data
//     between collections instead of Go's default two; the relay accepted
//     8-15 % more messages a second.
//   - defaultGCFloor: and by at least this much. With a 4 MiB live heap,
//     200 % alone meant a collection every 30 ms with one connection per
//     message, and the store's commits stalled behind their
//     stop-the-world pauses. With the floor (a collection every ~200 ms)
//     the relay spent 15 % less CPU per message and accepted 14 % more
//     messages a second (5 % on reused connections; docs/PERFORMANCE.md).
const (
	defaultGCPercent = 200
	defaultGCFloor   = 32 << 20
)

// startGCTuner applies the daemon's collector pace unless env (GOGC) is set,
// and returns the function that stops it.
func startGCTuner(env string) (stop func()) {
	if env != "" {
		return func() {}
	}
	return gctune.Start(defaultGCPercent, defaultGCFloor).Stop
}

// serve is cmdServe with the listener addresses a new embedded demo is
// given (a reused demo keeps the ones in its config): tests pass port 0 so
// as never to take the demo's well-known ports.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer, demoPorts demo.Ports) error {
	fs := newFlags("serve", stderr, "serve [-config FILE] [-data DIR]")
	cfgPath := fs.String("config", "", "config file (default: the embedded demo in -data)")
	dataDir := fs.String("data", "mssrelay-data", "data directory of the embedded demo (ignored with -config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}

	var info *demo.Info
	if *cfgPath == "" {
		var created bool
		var err error
		info, created, err = demo.Ensure(*dataDir, demoPorts)
		if err != nil {
			return fmt.Errorf("preparing the embedded demo in %s: %w", *dataDir, err)
		}
		*cfgPath = filepath.Join(*dataDir, demo.ConfigFile)
		if created {
			fmt.Fprintf(stdout, "Created a demo relay in %s (development PKI, demo accounts, config).\n", *dataDir)
		} else {
			fmt.Fprintf(stdout, "Reusing the demo relay in %s.\n", *dataDir)
		}
	}
	cfg, err := configs.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	r, err := relay.New(cfg, log)
	if err != nil {
		return err
	}
	// Signals are caught before the help says "Stop with Ctrl-C", so that
	// a Ctrl-C from then on always drains and closes the store.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := r.Listen(); err != nil {
		r.Close()
		return err
	}
	if info != nil {
		printDemoHelp(stdout, info, *dataDir, r.Addrs())
	}

	// SIGHUP reloads accounts, the server certificate and trust files
	// without dropping connections; a broken new config is refused.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = r.Reload() // logged by Reload
			}
		}
	}()
	return r.Serve(ctx)
}

func newLogger(c configs.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func printDemoHelp(w io.Writer, info *demo.Info, dir string, addrs map[string]string) {
	fmt.Fprintf(w, `
mssrelay demo is running.
  config:          %s
  data:            %s (store: %s)
  development CA:  %s
  SMTP submission: %s (STARTTLS), %s (implicit TLS)
  IMAP:            %s (implicit TLS), %s (STARTTLS)

Accounts (passwords are in %s):
  prescriber  %-34s password %s
  pharmacy    %-34s password %s
  pharmacy    %-34s password %s

Next, in another terminal:
  go run ./cmd/mssrelay demo send     # sign and submit a prescription as the prescriber
  go run ./cmd/mssrelay demo fetch    # read the pharmacy's INBOX over IMAP and verify it
  go run ./cmd/mssrelay demo claim    # the second pharmacy claims it by number + INS

A mail client (Thunderbird, mutt) can read the pharmacy's mailbox: IMAP server
127.0.0.1 port %s, SSL/TLS, normal password, the address as user name; import
%s as a trusted authority first.
Stop with Ctrl-C.
`,
		filepath.Join(dir, demo.ConfigFile), dir, filepath.Join(dir, relay.DBFile), info.Path(info.RootCA),
		addrs[relay.SMTPSubmission], addrs[relay.SMTPSubmissionTLS], addrs[relay.IMAPTLS], addrs[relay.IMAPSTARTTLS],
		filepath.Join(dir, demo.InfoFile),
		info.Prescriber.Address, info.Prescriber.Password,
		info.Pharmacy.Address, info.Pharmacy.Password,
		info.Pharmacy2.Address, info.Pharmacy2.Password,
		portOf(addrs[relay.IMAPTLS]), info.Path(info.RootCA))
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i+1:]
		}
	}
	return addr
}

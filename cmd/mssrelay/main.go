// Command mssrelay is the secure health messaging relay: it receives signed
// prescriptions over SMTP, verifies and files them, and serves them over
// IMAP. Run without arguments it starts the embedded default (a demo with a
// generated development PKI in ./mssrelay-data).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

const usage = `mssrelay — secure health messaging relay for electronic prescriptions

Usage:
  mssrelay [serve] [-config FILE] [-data DIR]   run the relay (no -config: the embedded demo)
  mssrelay check-config FILE                     validate a config file, exit 1 on errors
  mssrelay hash-password                         read a password on stdin, print its bcrypt hash
  mssrelay demo send  [-data DIR] [-to ADDR]     sign and submit a sample prescription as the demo prescriber
  mssrelay demo fetch [-data DIR] [-user ADDR]   read the demo pharmacy's INBOX and verify each signature
  mssrelay demo claim [-data DIR] [-number N]    claim the newest prescription as the second demo pharmacy
  mssrelay rx show [-content] NUMBER             what was filed under a prescription number (relay stopped)
  mssrelay audit verify [-data DIR]              check the audit trail's hash chain (relay stopped)
  mssrelay audit export [-since T] [-o FILE]     audit records as JSON lines (relay stopped)
  mssrelay queue list                            the outbound queue: copies for patients, notifications (relay stopped)
  mssrelay queue show [-raw] ID                  one job's fields, or its rendered message (relay stopped)
  mssrelay queue retry ID|all                    make a job, or every job, due now (relay stopped)
  mssrelay queue drop ID [-reason TEXT]          remove a job; the prescriber of a dropped copy is told (relay stopped)
  mssrelay backup FILE                           consistent snapshot of the store, relay running or not
  mssrelay restore FILE                          replace the store with a backup; new UIDVALIDITYs (relay stopped)
  mssrelay compact [-o NEWFILE] [-no-backup]     rewrite the store without free space (relay stopped)
  mssrelay mailbox list ACCOUNT                  an account's folders: counts, size, UIDVALIDITY, UIDNEXT (relay stopped)
  mssrelay mailbox show ACCOUNT [FOLDER]         a folder's entries: UID, flags, date, size, record, number (relay stopped)
  mssrelay bench [-data DIR] [-n N] [-c C] [-per-conn K] [-rate R] [-plain] [-json]
                                                 load-test a running relay (see docs/PERFORMANCE.md)
  mssrelay bench -imap-sessions N | -idle-imap N -idle-smtp M
                                                 short IMAP sessions/s; memory with idle sessions
  mssrelay version                               print the version

Run "mssrelay COMMAND -h" for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run dispatches a command line; it returns the process exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = cmdServe(ctx, args, stdout, stderr)
	case "check-config":
		err = cmdCheckConfig(args, stdout)
	case "hash-password":
		err = cmdHashPassword(args, stdin, stdout)
	case "demo":
		err = cmdDemo(ctx, args, stdout)
	case "rx":
		err = cmdRx(args, stdout)
	case "bench":
		err = cmdBench(ctx, args, stdout)
	case "audit":
		err = cmdAudit(args, stdout)
	case "backup":
		err = cmdBackup(ctx, args, stdout)
	case "compact":
		err = cmdCompact(args, stdout)
	case "restore":
		err = cmdRestore(args, stdout)
	case "mailbox":
		err = cmdMailbox(args, stdout)
	case "queue":
		err = cmdQueue(ctx, args, stdout, time.Now)
	case "version":
		fmt.Fprintln(stdout, "mssrelay", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "mssrelay: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "mssrelay %s: %v\n", cmd, err)
			return 2
		}
		fmt.Fprintf(stderr, "mssrelay %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// usageError is a command-line mistake (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type flagSet = flag.FlagSet

func newFlags(name string, out io.Writer, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: mssrelay %s\n\n", help)
		fs.PrintDefaults()
	}
	return fs
}

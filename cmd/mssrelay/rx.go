package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/signing"
	"mssrelay/store"
)

// configFlags adds -config and -data to an admin command and returns a
// loader for the configuration they name.
func configFlags(fsName string, out io.Writer, help string) (*flagSet, func() (*configs.Config, error)) {
	fs := newFlags(fsName, out, help)
	cfgPath := fs.String("config", "", "config file (default: the demo's, in -data)")
	dataDir := fs.String("data", "mssrelay-data", "data directory of the embedded demo (ignored with -config)")
	return fs, func() (*configs.Config, error) {
		p := *cfgPath
		if p == "" {
			p = filepath.Join(*dataDir, demo.ConfigFile)
		}
		return configs.Load(p)
	}
}

// openStore opens the relay's store for an admin command. bbolt allows one
// process at a time: while the relay runs, admin commands wait a little and
// then say so.
func openStore(cfg *configs.Config) (*store.Store, error) {
	st, err := store.Open(filepath.Join(cfg.Server.DataDir, relay.DBFile), store.Options{LockTimeout: 3 * time.Second})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w\n(admin commands read the store directly: stop the relay first)", err)
	}
	return st, err
}

// cmdRx implements `mssrelay rx show NUMBER`: what was filed under a
// prescription number, when, from whom, for whom and the delivery choice,
// then its history and status (executed? the patient's copy? pending
// notifications? where it is now). Clinical content is printed only with
// -content.
func cmdRx(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "show" {
		return usageError{"expected: rx show NUMBER"}
	}
	fs, load := configFlags("rx show", stdout, "rx show [-config FILE | -data DIR] [-content] NUMBER\n\n"+
		"Prints what was filed under a prescription number, who claimed it, its history\n"+
		"(filing, deliveries, fetches, executions, the patient's copy, notifications)\n"+
		"and its status: executed or not, the patient's copy delivered, pending or\n"+
		"failed, and the mailboxes that hold it with their flags (relay stopped).")
	content := fs.Bool("content", false, "also print the prescription's content (patient INS, items)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"expected exactly one prescription number"}
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	rec, err := st.RecordByNumber(fs.Arg(0))
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no prescription filed under number %q", fs.Arg(0))
	} else if err != nil {
		return err
	}
	delivery := rec.Delivery
	if delivery == "" {
		delivery = "not stated"
	}
	fmt.Fprintf(stdout, "prescription %s\n  record      %d (%d bytes, digest %x…)\n  filed       %s\n  from        %s (signer %s, IDNPS %s)\n  message-id  %s\n  delivery    %s\n",
		rec.Number, rec.ID, rec.Size, rec.Digest[:6], rec.Received.Format(time.RFC3339), rec.Sender, rec.Signer, rec.IDNPS, rec.MessageID, delivery)
	for _, r := range rec.Recipients {
		fmt.Fprintf(stdout, "  delivered   INBOX of %s\n", r)
	}
	// Claims (docs/claim.md): executants that retrieved it from its number
	// and the patient's INS. Refused claims are in the audit trail
	// (`mssrelay audit export`, kind smtp.claim).
	claims, err := st.Claims(rec.ID)
	if err != nil {
		return err
	}
	for _, c := range claims {
		// Where the claim filed it; the executant may have moved it since
		// (the "mailbox" lines below say where it is now).
		fmt.Fprintf(stdout, "  claimed     by %s, %s (filed in its INBOX as UID %d)\n", c.Account, c.Time.UTC().Format(time.RFC3339), c.UID)
	}
	if *content {
		if err := printContent(st, rec, stdout); err != nil {
			return err
		}
	}
	return printHistory(st, rec, stdout, time.Now())
}

// printContent prints the prescription's clinical content (rx show
// -content).
func printContent(st *store.Store, rec *store.Record, stdout io.Writer) error {
	raw, err := st.Bytes(rec.ID)
	if err != nil {
		return err
	}
	body, err := signing.FiledContent(raw)
	if err != nil {
		return fmt.Errorf("record %d: %w", rec.ID, err)
	}
	rx, err := mime.ExtractPrescription(body)
	if err != nil {
		return fmt.Errorf("record %d: %w", rec.ID, err)
	}
	fmt.Fprintf(stdout, "  patient INS %s\n  authored    %s\n", rx.PatientINS, rx.AuthoredOn)
	for _, it := range rx.Items {
		fmt.Fprintf(stdout, "  item        %s: %s — %s\n", it.Kind, it.Text, it.Dosage)
	}
	return nil
}

// printHistory prints the record's history (store/rxlog.go: filing,
// deliveries, fetches, executions, forwarding, notifications, one event
// each, written in the transaction that made it true) and a status that
// answers the questions asked about a prescription: was it executed,
// did the patient's copy arrive, where is it now. The patient's secure
// address (it holds the INS) appears as the actor of forwarding events:
// an identifier the administrator needs, not clinical content.
func printHistory(st *store.Store, rec *store.Record, stdout io.Writer, now time.Time) error {
	events, err := st.RecordEvents(rec.ID)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "history")
	if len(events) == 0 {
		fmt.Fprintln(stdout, "  (none recorded: filed before histories were kept)")
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 2, 4, 2, ' ', 0)
	for _, ev := range events {
		actor := ev.Actor
		if actor == "" {
			actor = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", ev.Time.UTC().Format(time.RFC3339), printable(ev.Kind), printable(actor), printable(ev.Detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Events without detail leave the actor column's padding at the end of
	// the line.
	for line := range strings.Lines(table.String()) {
		fmt.Fprintln(stdout, strings.TrimRight(line, " \n"))
	}

	fmt.Fprintln(stdout, "status")
	ex, err := st.RecordExecution(rec.ID)
	if err != nil {
		return err
	}
	if ex != nil {
		fmt.Fprintf(stdout, "  executed    yes, by %s, %s\n", printable(ex.Account), ex.Time.UTC().Format(time.RFC3339))
	} else {
		fmt.Fprintln(stdout, "  executed    no")
	}
	jobs, err := st.Jobs()
	if err != nil {
		return err
	}
	var pending []store.Job
	for _, j := range jobs {
		if j.RecordID == rec.ID {
			pending = append(pending, j)
		}
	}
	for _, line := range forwardStatus(rec, events, pending, now) {
		fmt.Fprintf(stdout, "  forward     %s\n", line)
	}
	for _, j := range pending {
		if j.Kind == store.JobForward {
			continue
		}
		fmt.Fprintf(stdout, "  notify      %s to %s pending: job %d, %d attempt%s, next %s\n",
			printable(j.Kind), printable(j.To), j.ID, j.Attempts, pluralS(j.Attempts), nextAttempt(now, j.NextAttempt))
	}
	entries, err := st.RecordEntries(rec.ID)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		fmt.Fprintln(stdout, "  mailboxes   none: no mailbox holds it now (expunged or purged)")
	}
	for _, e := range entries {
		flags := "no flags"
		if len(e.Flags) > 0 {
			flags = "flags " + printable(strings.Join(e.Flags, " "))
		}
		fmt.Fprintf(stdout, "  mailbox     %s %s UID %d, %s\n", printable(e.Account), printable(e.Mailbox), e.UID, flags)
	}
	return nil
}

// forwardStatus summarises the patient's copy: pending jobs, then the
// outcomes in the history. Nothing forwarded and nothing asked: the
// delivery choice says why.
func forwardStatus(rec *store.Record, events []store.RxEvent, pending []store.Job, now time.Time) []string {
	var out []string
	for _, j := range pending {
		if j.Kind != store.JobForward {
			continue
		}
		s := fmt.Sprintf("pending to %s: job %d, %d attempt%s, next %s", printable(j.To), j.ID, j.Attempts, pluralS(j.Attempts), nextAttempt(now, j.NextAttempt))
		if j.LastError != "" {
			s += ", last error: " + cutText(printable(j.LastError), lastErrorWidth)
		}
		out = append(out, s)
	}
	for _, ev := range events {
		at := ev.Time.UTC().Format(time.RFC3339)
		switch ev.Kind {
		case store.RxForwarded:
			out = append(out, fmt.Sprintf("delivered to %s, %s", printable(ev.Actor), at))
		case store.RxForwardFailed:
			out = append(out, fmt.Sprintf("FAILED for %s, %s: the patient needs a paper copy (%s)", printable(ev.Actor), at, printable(ev.Detail)))
		case store.RxNotForwarded:
			out = append(out, fmt.Sprintf("NOT forwarded, %s: the patient needs a paper copy (%s)", at, printable(ev.Detail)))
		}
	}
	if len(out) == 0 {
		if rec.Delivery == "messaging-only" {
			out = append(out, "none recorded, although the patient chose messaging-only delivery")
		} else {
			out = append(out, "not asked (the patient did not choose messaging-only delivery)")
		}
	}
	return out
}

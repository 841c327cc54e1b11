package main

// Store operations: backup, compact, mailbox list/show.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"mssrelay/configs"
	"mssrelay/relay"
	"mssrelay/relay/metrics"
	"mssrelay/store"
)

// storeLockWait is how long the store commands wait for the database's
// lock before concluding that the relay (or another command) holds it.
const storeLockWait = time.Second

func dbPath(cfg *configs.Config) string { return filepath.Join(cfg.Server.DataDir, relay.DBFile) }

// cmdBackup implements `mssrelay backup FILE`: a hot, consistent snapshot
// of the store, checked, written atomically to FILE.
func cmdBackup(ctx context.Context, args []string, stdout io.Writer) error {
	fs, load := configFlags("backup", stdout,
		"backup [-config FILE | -data DIR] FILE\n\n"+
			"Writes a consistent snapshot of the store to FILE, while the relay runs or not.\n"+
			"When the relay runs (it holds the store's lock), the snapshot is asked of it\n"+
			"over the admin endpoint (admin.listen, loopback, with the token the relay\n"+
			"writes in the data directory); otherwise the store is read directly.\n"+
			"FILE is written to a temporary name, fsync'd, checked (bbolt consistency,\n"+
			"schema, records, audit chain) and only then renamed: it is complete or absent.\n"+
			"Restore: stop the relay, replace "+relay.DBFile+" in the data directory with FILE.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"expected exactly one output file"}
	}
	out := fs.Arg(0)
	cfg, err := load()
	if err != nil {
		return err
	}
	db := dbPath(cfg)
	if _, err := os.Stat(db); err != nil {
		return fmt.Errorf("no store to back up: %w", err)
	}
	if sameFile(db, out) {
		return usageError{fmt.Sprintf("%s is the store itself: choose another file", out)}
	}

	var info *store.FileInfo
	st, err := store.Open(db, store.Options{LockTimeout: storeLockWait})
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "backing up %s (relay stopped: reading the store directly)…\n", db)
		info, err = backupOffline(ctx, st, out)
		if cerr := st.Close(); err == nil {
			err = cerr
		}
	case errors.Is(err, store.ErrLocked):
		info, err = backupOnline(ctx, cfg, out, stdout)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup written to %s: %s, schema %d, %d records, mailboxes of %d account(s), audit trail intact (%d records, head %x)\n",
		out, humanBytes(info.Size), info.Schema, info.Records, info.Accounts, info.AuditRecords, info.AuditHead[:8])
	return nil
}

// backupOffline records the backup in the audit trail (so that the copy
// holds its own record) and writes the snapshot.
func backupOffline(ctx context.Context, st *store.Store, out string) (*store.FileInfo, error) {
	err := st.Audit(ctx, store.AuditEvent{Kind: store.AuditAdminPrefix + "backup", Subject: "file=" + filepath.Base(out), Outcome: "ok", Detail: "offline"})
	if err != nil {
		return nil, err
	}
	return st.BackupFile(out)
}

// backupOnline asks the running relay for the snapshot.
func backupOnline(ctx context.Context, cfg *configs.Config, out string, stdout io.Writer) (*store.FileInfo, error) {
	if cfg.Admin.Listen == "" {
		return nil, fmt.Errorf("the store %s is in use (is the relay running?) and admin.listen is not set, so the relay cannot be asked for a snapshot: "+
			"set admin.listen (e.g. \"127.0.0.1:9187\") and restart the relay, or stop it and run backup again", dbPath(cfg))
	}
	base, err := metrics.AdminBaseURL(cfg.Admin.Listen)
	if err != nil {
		return nil, err
	}
	tok, err := metrics.ReadBackupToken(cfg.Server.DataDir)
	if err != nil {
		return nil, fmt.Errorf("the store is in use and the relay's backup token cannot be read (%w): run backup as the relay's user or root", err)
	}
	fmt.Fprintf(stdout, "the store is in use: asking the running relay at %s for a snapshot…\n", base)
	var info *store.FileInfo
	err = store.WriteFileAtomic(out, func(f *os.File) error {
		if _, err := metrics.FetchBackup(ctx, nil, base, tok, f); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		var err error
		info, err = store.VerifyFile(f.Name())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w\n(the store is locked: the relay, or another admin command, holds it)", err)
	}
	return info, nil
}

// cmdCompact implements `mssrelay compact`: rewrite the store into a new
// file without its free pages (offline only).
func cmdCompact(args []string, stdout io.Writer) error {
	fs, load := configFlags("compact", stdout,
		"compact [-config FILE | -data DIR] [-o NEWFILE] [-no-backup]\n\n"+
			"bbolt never shrinks its file: space freed by expunges and retention purges is\n"+
			"reused but not returned. compact copies the live data into a new file, checks\n"+
			"it (same records and audit records, consistency, audit chain) and replaces the\n"+
			"store with it, keeping the old file as "+relay.DBFile+".bak unless -no-backup.\n"+
			"With -o the compacted copy goes to NEWFILE and the store is left as it is.\n"+
			"Offline only: stop the relay first. Needs free space for one more copy.")
	output := fs.String("o", "", "write the compacted copy to NEWFILE (must not exist) and leave the store as it is")
	noBackup := fs.Bool("no-backup", false, "compacting in place, do not keep the old file as .bak")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if *output != "" && *noBackup {
		return usageError{"-no-backup applies to compacting in place; with -o the store is not touched"}
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	db := dbPath(cfg)
	if *output != "" && sameFile(db, *output) {
		return usageError{fmt.Sprintf("%s is the store itself: use compact without -o to compact in place", *output)}
	}
	fmt.Fprintf(stdout, "compacting %s…\n", db)
	res, err := store.CompactFile(db, store.CompactOptions{Output: *output, NoBackup: *noBackup, LockTimeout: storeLockWait})
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("%w\n(compact rewrites the whole file and runs only while the relay is stopped: systemctl stop mssrelay, compact, start it again)", err)
	}
	if err != nil {
		return err
	}
	saved := 0.0
	if res.Before > 0 {
		saved = 100 * float64(res.Before-res.After) / float64(res.Before)
	}
	fmt.Fprintf(stdout, "compacted into %s: %s → %s (%.0f%% smaller)\n", res.Output, humanBytes(res.Before), humanBytes(res.After), saved)
	if res.Backup != "" {
		fmt.Fprintf(stdout, "the old file is kept as %s: delete it once the relay runs well on the new one\n", res.Backup)
	}
	return nil
}

// cmdRestore implements `mssrelay restore FILE`: replace the store with a
// backup, offline, renewing every mailbox's UIDVALIDITY.
func cmdRestore(args []string, stdout io.Writer) error {
	fs, load := configFlags("restore", stdout,
		"restore [-config FILE | -data DIR] FILE\n\n"+
			"Replaces the store with the backup FILE (made by mssrelay backup), relay stopped.\n"+
			"FILE is checked first. Every mailbox then gets a new UIDVALIDITY: the backup is\n"+
			"older than the store it replaces, so the UIDs it hands out next were already\n"+
			"seen by mail clients for other messages (RFC 3501 2.3.1.1); clients resync.\n"+
			"The replaced store is kept as "+relay.DBFile+".before-restore. Messages filed\n"+
			"after the backup was taken are not in it.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"expected exactly one backup file"}
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	db := dbPath(cfg)
	if sameFile(db, fs.Arg(0)) {
		return usageError{fmt.Sprintf("%s is the store itself", fs.Arg(0))}
	}
	fmt.Fprintf(stdout, "checking %s and restoring it as %s…\n", fs.Arg(0), db)
	res, err := store.RestoreFile(fs.Arg(0), db, storeLockWait)
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("%w\n(stop the relay first: systemctl stop mssrelay)", err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %d records (audit trail intact, %d records); %d mailboxes have a new UIDVALIDITY\n",
		res.Backup.Records, res.Backup.AuditRecords, res.Mailboxes)
	if res.Previous != "" {
		fmt.Fprintf(stdout, "the replaced store is kept as %s\n", res.Previous)
	}
	return nil
}

const mailboxUsage = "expected: mailbox list ACCOUNT | mailbox show ACCOUNT [FOLDER]"

// cmdMailbox implements `mssrelay mailbox list|show`: an account's folders
// and entries as the IMAP clients see them, without clinical content.
func cmdMailbox(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{mailboxUsage}
	}
	switch args[0] {
	case "list":
		return cmdMailboxList(args[1:], stdout)
	case "show":
		return cmdMailboxShow(args[1:], stdout)
	}
	return usageError{fmt.Sprintf("unknown mailbox subcommand %q; %s", args[0], mailboxUsage)}
}

// openReadOnly opens the store for a read-only admin command (mailbox,
// queue list and show): looking never writes.
func openReadOnly(cfg *configs.Config) (*store.Store, error) {
	st, err := store.OpenReadOnly(dbPath(cfg), store.Options{LockTimeout: 3 * storeLockWait})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w\n(admin commands read the store directly: stop the relay first)", err)
	}
	return st, err
}

// accountName resolves ACCOUNT as the relay does (the configured spelling
// of the address); an address no account has is used as written.
func accountName(cfg *configs.Config, s string) string {
	if a, ok := cfg.Account(s); ok {
		return a.Address
	}
	return s
}

func cmdMailboxList(args []string, stdout io.Writer) error {
	fs, load := configFlags("mailbox list", stdout,
		"mailbox list [-config FILE | -data DIR] ACCOUNT\n\n"+
			"Lists the account's folders with their message and unseen counts, size,\n"+
			"UIDVALIDITY and UIDNEXT (relay stopped).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"expected exactly one account"}
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	st, err := openReadOnly(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	account := accountName(cfg, fs.Arg(0))
	boxes, err := st.Mailboxes(account)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("the store has no mailboxes for %q (an account gets them at the relay's start or its first message)", account)
	}
	if err != nil {
		return err
	}
	usage, err := st.Usage(account)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d folders, %d messages, %s\n", account, len(boxes), usage.Messages, humanBytes(usage.Bytes))
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FOLDER\tMESSAGES\tUNSEEN\tSIZE\tUIDVALIDITY\tUIDNEXT\tUSE\tSUBSCRIBED")
	for _, b := range boxes {
		use := b.SpecialUse
		if use == "" {
			use = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n", printable(b.Name), b.Messages, b.Unseen, humanBytes(b.Size),
			b.UIDValidity, b.UIDNext, use, yesNo(b.Subscribed))
	}
	return tw.Flush()
}

func cmdMailboxShow(args []string, stdout io.Writer) error {
	fs, load := configFlags("mailbox show", stdout,
		"mailbox show [-config FILE | -data DIR] ACCOUNT [FOLDER]\n\n"+
			"Lists the entries of one folder (default INBOX): UID, flags, internal date,\n"+
			"size, the record it points at and its prescription number. No clinical\n"+
			"content: use rx show -content for that (relay stopped).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return usageError{"expected an account and optionally a folder"}
	}
	folder := store.Inbox
	if fs.NArg() == 2 {
		folder = fs.Arg(1)
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	st, err := openReadOnly(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	account := accountName(cfg, fs.Arg(0))
	info, entries, err := st.Entries(account, folder)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no folder %q for %q (mailbox list shows the folders)", folder, account)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s: %d messages, %d unseen, %s, UIDVALIDITY %d, UIDNEXT %d\n",
		account, printable(info.Name), info.Messages, info.Unseen, humanBytes(info.Size), info.UIDValidity, info.UIDNext)
	if len(entries) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UID\tDATE\tSIZE\tRECORD\tNUMBER\tFLAGS")
	for _, e := range entries {
		number := "-"
		switch rec, err := st.Record(e.RecordID); {
		case errors.Is(err, store.ErrNotFound):
			number = "(record missing)"
		case err != nil:
			return err
		case rec.Appended:
			number = "(appended)"
		case rec.Number != "":
			number = printable(rec.Number)
		}
		flags := "-"
		if len(e.Flags) > 0 {
			flags = printable(strings.Join(e.Flags, " "))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", e.UID, e.InternalDate.UTC().Format(time.RFC3339), humanBytes(e.Size), e.RecordID, number, flags)
	}
	return tw.Flush()
}

// printable keeps text from the store (keywords and folder names came
// from IMAP clients) from carrying terminal control sequences.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// humanBytes prints a size in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// sameFile reports whether two paths name the same existing file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"mssrelay/store"
)

const auditUsage = "expected: audit verify | audit export [-since T] [-o FILE]"

// auditProgressEvery is how often `audit verify` reports progress on a
// long trail (five years of a busy relay hold hundreds of millions).
const auditProgressEvery = 1_000_000

// cmdAudit implements `mssrelay audit verify` and `mssrelay audit export`.
// Both read the store directly, so the relay must be stopped (bbolt allows
// one process).
func cmdAudit(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{auditUsage}
	}
	switch args[0] {
	case "verify":
		return cmdAuditVerify(args[1:], stdout)
	case "export":
		return cmdAuditExport(args[1:], stdout, time.Now)
	default:
		return usageError{fmt.Sprintf("unknown audit subcommand %q; %s", args[0], auditUsage)}
	}
}

// cmdAuditVerify walks the whole chain. It prints one line when the trail
// is intact; otherwise it returns an error naming the first bad record
// (exit 1).
func cmdAuditVerify(args []string, stdout io.Writer) error {
	fs, load := configFlags("audit verify", stdout,
		"audit verify [-config FILE | -data DIR]\n\n"+
			"Recomputes the hash chain of the audit trail from the first record and\n"+
			"checks the last one against the stored head: any altered, removed or\n"+
			"reordered record is reported. Exit 1 when the trail is broken.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
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
	var last store.AuditRecord
	n, err := st.AuditVerify(func(r store.AuditRecord) {
		last = r
		if r.Seq%auditProgressEvery == 0 {
			fmt.Fprintf(stdout, "  … %d records verified\n", r.Seq)
		}
	})
	var brk *store.AuditBreak
	if errors.As(err, &brk) {
		return fmt.Errorf("audit trail BROKEN at record %d: %s (%s); %d records before it are intact",
			brk.Seq, brk.Reason, brk.Detail, n)
	}
	if err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(stdout, "audit trail intact: 0 records")
		return nil
	}
	fmt.Fprintf(stdout, "audit trail intact: %d records, head %x (record %d, %s)\n",
		n, last.Hash[:8], last.Seq, last.Time.Format(time.RFC3339))
	return nil
}

// auditJSON is one exported record. Field order is fixed (struct order) so
// that exports diff cleanly. prev and hash let an external verifier
// recompute the chain (encoding in docs/security-model.md).
type auditJSON struct {
	Seq     uint64 `json:"seq"`
	Time    string `json:"time"`
	Kind    string `json:"kind"`
	Actor   string `json:"actor"`
	Remote  string `json:"remote"`
	Subject string `json:"subject"`
	Outcome string `json:"outcome"`
	Detail  string `json:"detail"`
	Prev    string `json:"prev"`
	Hash    string `json:"hash"`
}

// cmdAuditExport writes the records with a time at or after -since as
// JSON lines, to standard output or to -o FILE (written to a temporary
// name, fsync'd, then renamed, so that a partial export never looks
// complete).
func cmdAuditExport(args []string, stdout io.Writer, now func() time.Time) error {
	fs, load := configFlags("audit export", stdout,
		"audit export [-config FILE | -data DIR] [-since T] [-o FILE]\n\n"+
			"Writes audit records as JSON lines (seq, time, kind, actor, remote,\n"+
			"subject, outcome, detail, prev, hash), in sequence order. The chain is\n"+
			"not checked here: run `audit verify`.")
	since := fs.String("since", "", "only records at or after T: RFC 3339 (2025-03-01T00:00:00Z), a date (2025-03-01, UTC) or a duration ago (24h, 90m)")
	outPath := fs.String("o", "", "write to FILE instead of standard output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	t, err := parseSince(*since, now())
	if err != nil {
		return err
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

	var w io.Writer = stdout
	var f *os.File
	renamed := false
	if *outPath != "" {
		f, err = os.CreateTemp(filepath.Dir(*outPath), ".audit-export-*")
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		defer func() {
			if !renamed { // failed half-way: leave no partial file behind
				_ = f.Close()
				_ = os.Remove(f.Name())
			}
		}()
		w = f
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	var n uint64
	err = st.AuditSince(t, func(r store.AuditRecord) error {
		n++
		return enc.Encode(auditJSON{
			Seq: r.Seq, Time: r.Time.UTC().Format(time.RFC3339Nano), Kind: r.Kind, Actor: r.Actor,
			Remote: r.Remote, Subject: r.Subject, Outcome: r.Outcome, Detail: r.Detail,
			Prev: hex.EncodeToString(r.Prev[:]), Hash: hex.EncodeToString(r.Hash[:]),
		})
	})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if f == nil {
		return nil
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := os.Rename(f.Name(), *outPath); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	renamed = true
	fmt.Fprintf(stdout, "exported %d audit records to %s\n", n, *outPath)
	return nil
}

// parseSince reads -since: empty (everything), RFC 3339, a date (midnight
// UTC) or a Go duration meaning that long before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usageError{fmt.Sprintf("-since %q: want RFC 3339 (2025-03-01T00:00:00Z), a date (2025-03-01) or a duration ago (24h)", s)}
}

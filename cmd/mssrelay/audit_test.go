package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/store"
)

// auditStore makes a demo data directory whose store holds a filing with
// its acceptance event and four more events: two 30 hours old, two 2 hours
// old. It returns the directory and the filing's patient INS.
func auditStore(t *testing.T) (dir, ins string) {
	t.Helper()
	dir = t.TempDir()
	if _, _, err := demo.Ensure(dir, demo.DefaultPorts()); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	raw := []byte("From: dr@example.org\r\n\r\nsigned prescription\r\n")
	ins = "180017512345610"
	if _, err := st.File(context.Background(), &store.Filing{
		Raw: raw, Received: now, Sender: "dr@example.org", Recipients: []string{"pharma@example.org"},
		Number: "RX-AUDIT-1", Digest: sha256.Sum256(raw), PatientINS: ins,
		Audit: []store.AuditEvent{{Time: now.Add(-2 * time.Hour), Kind: store.AuditSMTPAccept, Actor: "dr@example.org",
			Remote: "192.0.2.1:4000", Subject: "rx=RX-AUDIT-1", Outcome: "250 2.0.0"}},
	}); err != nil {
		t.Fatal(err)
	}
	evs := []store.AuditEvent{
		{Time: now.Add(-30 * time.Hour), Kind: store.AuditAuthFail, Remote: "203.0.113.9:999", Subject: "user=pharma@example.org", Outcome: "535 5.7.8 bad_password"},
		{Time: now.Add(-30 * time.Hour), Kind: store.AuditSMTPRefuse, Actor: "dr@example.org", Remote: "192.0.2.1:4001", Subject: "rx=RX-X", Outcome: "554 5.7.7 sig_integrity", Detail: "<b>\"quoted\"</b>"},
		{Time: now.Add(-2 * time.Hour), Kind: store.AuditIMAPFetch, Actor: "pharma@example.org", Remote: "192.0.2.5:993", Subject: "record=1 mbox=INBOX uid=1", Outcome: "OK"},
		{Time: now.Add(-2 * time.Hour), Kind: "admin.rx.show", Actor: "-", Subject: "rx=RX-AUDIT-1", Outcome: "ok"},
	}
	if err := st.Audit(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
	return dir, ins
}

func runAudit(args ...string) (string, error) {
	var out bytes.Buffer
	err := cmdAudit(args, &out)
	return out.String(), err
}

func TestAuditVerifyCommand(t *testing.T) {
	dir, _ := auditStore(t)
	out, err := runAudit("verify", "-data", dir)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !strings.HasPrefix(out, "audit trail intact: 5 records, head ") {
		t.Fatalf("verify output %q", out)
	}
	st, err := store.Open(filepath.Join(dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, head, err := st.AuditHead()
	st.Close()
	if err != nil || !strings.Contains(out, hex.EncodeToString(head[:8])) {
		t.Errorf("verify output %q does not show the head %x (%v)", out, head[:8], err)
	}

	// Remove record 3 as an intruder would.
	db, err := bbolt.Open(filepath.Join(dir, relay.DBFile), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("audit")).Delete(binary.BigEndian.AppendUint64(nil, 3)) // layout: store/audit.go
	})
	if cerr := db.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
	_, err = runAudit("verify", "-data", dir)
	var ue usageError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "record 3: missing") {
		t.Fatalf("verify of a tampered trail: %v, want an error naming record 3", err)
	}
}

func readJSONLines(t *testing.T, s string) []auditJSON {
	t.Helper()
	var out []auditJSON
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var r auditJSON
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

func TestAuditExportCommand(t *testing.T) {
	dir, ins := auditStore(t)
	out, err := runAudit("export", "-data", dir)
	if err != nil {
		t.Fatal(err)
	}
	all := readJSONLines(t, out)
	if len(all) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(all), out)
	}
	prev := strings.Repeat("0", 64)
	for i, r := range all {
		if r.Seq != uint64(i+1) || r.Prev != prev || len(r.Hash) != 64 {
			t.Errorf("line %d: seq %d prev %.8s hash %q: chain not exported", i, r.Seq, r.Prev, r.Hash)
		}
		if _, err := time.Parse(time.RFC3339Nano, r.Time); err != nil {
			t.Errorf("line %d: time %q: %v", i, r.Time, err)
		}
		prev = r.Hash
	}
	if all[0].Kind != store.AuditSMTPAccept || all[0].Subject != "record=1 rx=RX-AUDIT-1" || all[0].Outcome != "250 2.0.0" {
		t.Errorf("acceptance exported as %+v", all[0])
	}
	if all[2].Detail != `<b>"quoted"</b>` || !strings.Contains(out, `"<b>\"quoted\"</b>"`) {
		t.Errorf("detail exported as %q (HTML must not be escaped)", all[2].Detail)
	}
	if strings.Contains(out, ins) {
		t.Error("export holds the patient INS")
	}

	// 24h ago: the filing's event and the two recent ones.
	out, err = runAudit("export", "-data", dir, "-since", "24h")
	if err != nil {
		t.Fatal(err)
	}
	recent := readJSONLines(t, out)
	if len(recent) != 3 || recent[0].Seq != 1 || recent[1].Seq != 4 || recent[2].Seq != 5 {
		t.Errorf("-since 24h: %+v", recent)
	}
	since := time.Now().Add(-25 * time.Hour).UTC().Format(time.RFC3339)
	if out2, err := runAudit("export", "-data", dir, "-since", since); err != nil || out2 != out {
		t.Errorf("-since %s differs from -since 24h (%v)", since, err)
	}

	// To a file: same lines, a summary on stdout, no temporary left.
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	msg, err := runAudit("export", "-data", dir, "-o", path)
	if err != nil || msg != fmt.Sprintf("exported 5 audit records to %s\n", path) {
		t.Fatalf("export -o: %q %v", msg, err)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(readJSONLines(t, string(b))) != 5 {
		t.Fatalf("exported file: %v\n%s", err, b)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("export left %d files in its directory", len(ents))
	}
}

func TestAuditCommandUsage(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "audit verify"},
		{[]string{"frob"}, "unknown audit subcommand"},
		{[]string{"verify", "extra"}, "unexpected argument"},
		{[]string{"export", "extra"}, "unexpected argument"},
		{[]string{"export", "-since", "yesterday"}, "-since"},
		{[]string{"export", "-since", "-3h"}, "-since"},
	}
	for _, tc := range cases {
		_, err := runAudit(tc.args...)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2025, 3, 2, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"2025-03-01T08:30:00Z", time.Date(2025, 3, 1, 8, 30, 0, 0, time.UTC)},
		{"2025-03-01T08:30:00.5+01:00", time.Date(2025, 3, 1, 7, 30, 0, 5e8, time.UTC)},
		{"2025-03-01", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)},
		{"24h", time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)},
		{"90m", time.Date(2025, 3, 2, 10, 30, 0, 0, time.UTC)},
	}
	for _, tc := range cases {
		got, err := parseSince(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// ---- a frozen picture of schema version 1 ----
//
// buildV1 writes a database the way mssrelay's first release laid it out,
// byte by byte from the layout documented in schema.go and audit.go, with
// its own encoders: when the package's encoders or buckets change, this
// stays what version 1 files on disk look like, and the tests below show
// they still open and read back (through the upgrade steps once there are
// any). Do not "update" it: add a buildV2 beside it when version 2 ships.

type v1enc struct{ b []byte }

func (e *v1enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *v1enc) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *v1enc) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *v1enc) time(t time.Time) { e.varint(t.Unix()); e.uvarint(uint64(t.Nanosecond())) }

// v1 fixture content.
var (
	v1Received = time.Date(2024, 11, 5, 9, 30, 0, 0, time.UTC)
	v1Raw      = []byte("From: dr@example.org\r\nMessage-ID: <v1@example.org>\r\n\r\nv1 prescription\r\n")
	v1Digest   = sha256.Sum256(v1Raw)
)

const (
	v1Sender    = "dr@example.org"
	v1Pharma    = "pharma@example.org"
	v1Number    = "RXV1-0001"
	v1MessageID = "<v1@example.org>"
	v1INS       = "180017512345610"
	v1IDNPS     = "810101201234"
	v1UIDValid  = 1730799000
)

func buildV1(t *testing.T, path string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	be64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	err = db.Update(func(tx *bbolt.Tx) error {
		mk := func(name string) *bbolt.Bucket {
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		put := func(b *bbolt.Bucket, k, v []byte) {
			if err := b.Put(k, v); err != nil {
				t.Fatal(err)
			}
		}
		meta := mk("meta")
		put(meta, []byte("schema"), be32(1))
		put(meta, []byte("uidvalidity"), be32(v1UIDValid))

		// Record 1: format 1, received, size, sender, recipients, number,
		// digest, Message-ID, signer, IDNPS, INS, owner, appended, delivery.
		r := v1enc{b: []byte{1}}
		r.time(v1Received)
		r.varint(int64(len(v1Raw)))
		r.str(v1Sender)
		r.uvarint(1)
		r.str(v1Pharma)
		r.str(v1Number)
		r.b = append(r.b, v1Digest[:]...)
		r.str(v1MessageID)
		r.str(v1Sender)
		r.str(v1IDNPS)
		r.str(v1INS)
		r.str(v1Sender)
		r.b = append(r.b, 0)
		r.str("messaging-only")
		records := mk("records")
		put(records, be64(1), r.b)
		if err := records.SetSequence(1); err != nil {
			t.Fatal(err)
		}
		put(mk("raw"), be64(1), v1Raw)
		put(mk("rmeta"), be64(1), []byte("v1 meta"))
		idx := append(be64(1), v1Digest[:]...)
		put(mk("idx_number"), []byte(v1Number), idx)
		put(mk("idx_msgid"), append([]byte(v1Sender+"\x00"), v1MessageID...), idx)
		put(mk("idx_ins"), append([]byte(v1INS+"\x00"), be64(1)...), nil)
		put(mk("idx_idnps"), append([]byte(v1IDNPS+"\x00"), be64(1)...), nil)

		// The pharmacy's INBOX (box id 1) holding record 1 as UID 1, seen.
		accounts := mk("accounts")
		ab, err := accounts.CreateBucket([]byte(v1Pharma))
		if err != nil {
			t.Fatal(err)
		}
		names, _ := ab.CreateBucket([]byte("names"))
		boxes, _ := ab.CreateBucket([]byte("boxes"))
		put(names, []byte("INBOX"), be64(1))
		if err := ab.SetSequence(1); err != nil {
			t.Fatal(err)
		}
		bx, _ := boxes.CreateBucket(be64(1))
		in := v1enc{b: []byte{1}}
		in.uvarint(v1UIDValid) // uidvalidity
		in.uvarint(2)          // uidnext
		in.uvarint(1)          // messages
		in.uvarint(0)          // unseen
		in.varint(int64(len(v1Raw)))
		in.b = append(in.b, 1) // subscribed
		in.str("")             // special-use
		in.uvarint(3)          // modseq
		put(bx, []byte("info"), in.b)
		entries, _ := bx.CreateBucket([]byte("entries"))
		e := v1enc{b: []byte{1}}
		e.uvarint(1)
		e.time(v1Received)
		e.varint(int64(len(v1Raw)))
		e.uvarint(1)
		e.str(`\Seen`)
		put(entries, be32(1), e.b)

		// One audit record: body = format, seq, seconds, nanoseconds, six
		// length-prefixed strings; value = body ‖ prev ‖ SHA-256(prev ‖ body).
		body := []byte{1}
		body = binary.BigEndian.AppendUint64(body, 1)
		body = binary.BigEndian.AppendUint64(body, uint64(v1Received.Unix()))
		body = binary.BigEndian.AppendUint32(body, 0)
		for _, f := range []string{"smtp.accept", v1Sender, "192.0.2.1:4000", "record=1 rx=" + v1Number, "250", ""} {
			body = binary.BigEndian.AppendUint32(body, uint32(len(f)))
			body = append(body, f...)
		}
		var prev [32]byte
		h := sha256.Sum256(append(prev[:], body...))
		audit := mk("audit")
		put(audit, be64(1), append(append(slices.Clone(body), prev[:]...), h[:]...))
		if err := audit.SetSequence(1); err != nil {
			t.Fatal(err)
		}
		put(meta, []byte("audit_head"), append(append([]byte{1}, be64(1)...), h[:]...))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenV1Database: a version 1 file opens with this version of the
// package (upgraded when SchemaVersion is higher) and everything in it
// reads back and keeps working: record, bytes, indexes, mailbox, audit
// chain, dedupe, new filings and UIDs.
func TestOpenV1Database(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	buildV1(t, path)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open(v1): %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })

	var ver uint32
	if err := s.view(func(tx *bbolt.Tx) error {
		ver = binary.BigEndian.Uint32(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	}); err != nil || ver != SchemaVersion {
		t.Fatalf("schema after open: %d, %v; want %d", ver, err, SchemaVersion)
	}
	rec, err := s.RecordByNumber(v1Number)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != 1 || !rec.Received.Equal(v1Received) || rec.Sender != v1Sender || !slices.Equal(rec.Recipients, []string{v1Pharma}) ||
		rec.Digest != v1Digest || rec.PatientINS != v1INS || rec.IDNPS != v1IDNPS || rec.Delivery != "messaging-only" || rec.Appended {
		t.Errorf("v1 record read back as %+v", rec)
	}
	if raw, err := s.Bytes(1); err != nil || !bytes.Equal(raw, v1Raw) {
		t.Errorf("v1 bytes: %q, %v", raw, err)
	}
	if ids, _ := s.RecordsByPatient(v1INS); !slices.Equal(ids, []uint64{1}) {
		t.Errorf("v1 patient index: %v", ids)
	}
	info, es, err := s.Entries(v1Pharma, Inbox)
	if err != nil || len(es) != 1 || es[0].RecordID != 1 || !slices.Equal(es[0].Flags, []string{`\Seen`}) ||
		info.UIDValidity != v1UIDValid || info.UIDNext != 2 || info.Unseen != 0 {
		t.Fatalf("v1 INBOX: %+v %+v %v", info, es, err)
	}
	if n, err := s.AuditVerify(nil); err != nil || n != 1 {
		t.Errorf("v1 audit: %d, %v", n, err)
	}
	if u, err := s.Usage(v1Pharma); err != nil || u.Messages != 1 || u.Bytes != int64(len(v1Raw)) {
		t.Errorf("v1 usage: %+v, %v", u, err)
	}
	// The v1 filing is recognised on resend; a new one goes on from there.
	res, err := s.File(context.Background(), &Filing{Raw: v1Raw, Sender: v1Sender, Recipients: []string{v1Pharma},
		Number: v1Number, Digest: v1Digest, MessageID: v1MessageID})
	if err != nil || !res.Duplicate || res.ID != 1 {
		t.Errorf("resend of the v1 filing: %+v, %v", res, err)
	}
	res = mustFile(t, s, testFiling(2, v1Pharma))
	if res.ID != 2 || res.Entries[0].UID != 2 || res.Entries[0].UIDValidity != v1UIDValid {
		t.Errorf("filing after v1: %+v", res)
	}
	if n, err := s.AuditVerify(nil); err != nil || n != 1 {
		t.Errorf("audit after filing: %d, %v", n, err)
	}
	checkConsistent(t, s)
}

// TestUpgradeStepsComplete: every version from the oldest supported one
// up has a step (SchemaVersion bumped without its step fails here).
func TestUpgradeStepsComplete(t *testing.T) {
	for v := oldestSchema; v < SchemaVersion; v++ {
		if upgrades[v] == nil {
			t.Errorf("no upgrade step from schema version %d", v)
		}
	}
}

// TestUpgradeFramework runs upgrade with test-only steps on copies of the
// v1 fixture: a fake version 0 with a legacy bucket that step 0→1 turns
// into the version 1 layout, a chain 1→2→3, a failing step that leaves
// the file untouched, and the refusals.
func TestUpgradeFramework(t *testing.T) {
	base := filepath.Join(t.TempDir(), "v1.db")
	buildV1(t, base)
	fresh := func(t *testing.T, change func(tx *bbolt.Tx) error) *bbolt.DB {
		t.Helper()
		p := filepath.Join(t.TempDir(), "copy.db")
		data, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := bbolt.Open(p, 0o600, &bbolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		if change != nil {
			if err := db.Update(change); err != nil {
				t.Fatal(err)
			}
		}
		return db
	}
	version := func(t *testing.T, db *bbolt.DB) uint32 {
		t.Helper()
		var v uint32
		_ = db.View(func(tx *bbolt.Tx) error {
			v = binary.BigEndian.Uint32(tx.Bucket(bucketMeta).Get(keySchema))
			return nil
		})
		return v
	}

	t.Run("fake v0 to v1", func(t *testing.T) {
		// Version 0 (test-only): the INS index was called "patients".
		db := fresh(t, func(tx *bbolt.Tx) error {
			if err := tx.DeleteBucket(bucketIdxINS); err != nil {
				return err
			}
			b, err := tx.CreateBucket([]byte("patients"))
			if err != nil {
				return err
			}
			if err := b.Put(indexKey(v1INS, 1), nil); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(keySchema, be32(0))
		})
		step := func(tx *bbolt.Tx) error {
			old := tx.Bucket([]byte("patients"))
			nb, err := tx.CreateBucket(bucketIdxINS)
			if err != nil {
				return err
			}
			if err := old.ForEach(func(k, v []byte) error { return nb.Put(k, v) }); err != nil {
				return err
			}
			return tx.DeleteBucket([]byte("patients"))
		}
		if err := db.Update(func(tx *bbolt.Tx) error {
			return upgrade(tx, "copy.db", 0, 1, []upgradeStep{step})
		}); err != nil {
			t.Fatalf("upgrade 0→1: %v", err)
		}
		if v := version(t, db); v != 1 {
			t.Fatalf("version after upgrade %d", v)
		}
		p := db.Path()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := Open(p, Options{})
		if err != nil {
			t.Fatalf("Open after the fake upgrade: %v", err)
		}
		defer s.Close()
		if ids, _ := s.RecordsByPatient(v1INS); !slices.Equal(ids, []uint64{1}) {
			t.Errorf("patient index after upgrade: %v", ids)
		}
	})

	t.Run("chain in order, in one transaction", func(t *testing.T) {
		db := fresh(t, nil)
		var ran []uint32
		step := func(v uint32) upgradeStep {
			return func(tx *bbolt.Tx) error {
				ran = append(ran, v)
				return tx.Bucket(bucketMeta).Put([]byte("step"), be32(v))
			}
		}
		steps := []upgradeStep{nil, step(1), step(2)}
		if err := db.Update(func(tx *bbolt.Tx) error { return upgrade(tx, "copy.db", 1, 3, steps) }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ran, []uint32{1, 2}) || version(t, db) != 3 {
			t.Errorf("ran %v, version %d; want [1 2], 3", ran, version(t, db))
		}
	})

	t.Run("failing step rolls everything back", func(t *testing.T) {
		db := fresh(t, nil)
		boom := errors.New("boom")
		steps := []upgradeStep{nil,
			func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte("step"), be32(1)) },
			func(tx *bbolt.Tx) error { return boom },
		}
		err := db.Update(func(tx *bbolt.Tx) error { return upgrade(tx, "copy.db", 1, 3, steps) })
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "upgrade from schema version 2 to 3") {
			t.Fatalf("failing upgrade: %v", err)
		}
		if version(t, db) != 1 {
			t.Errorf("version %d after a failed upgrade", version(t, db))
		}
		_ = db.View(func(tx *bbolt.Tx) error {
			if tx.Bucket(bucketMeta).Get([]byte("step")) != nil {
				t.Error("the first step's write survived the failed upgrade")
			}
			return nil
		})
	})

	for _, c := range []struct {
		name     string
		from, to uint32
		steps    []upgradeStep
		want     string
	}{
		{"newer", 3, 1, nil, "schema version 3, this mssrelay understands up to 1"},
		{"no step", 0, 1, []upgradeStep{nil}, "invalid schema version 0"},
		{"steps too short", 1, 3, []upgradeStep{nil, func(*bbolt.Tx) error { return nil }}, "no upgrade step from 2 to 3"},
	} {
		t.Run("refuses "+c.name, func(t *testing.T) {
			db := fresh(t, nil)
			ran := false
			steps := c.steps
			for i := range steps {
				if steps[i] != nil {
					steps[i] = func(*bbolt.Tx) error { ran = true; return nil }
				}
			}
			err := db.Update(func(tx *bbolt.Tx) error { return upgrade(tx, "copy.db", c.from, c.to, steps) })
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("upgrade %d→%d: %v; want %q", c.from, c.to, err, c.want)
			}
			if ran || version(t, db) != 1 {
				t.Errorf("a refused upgrade ran a step (%v) or changed the version (%d)", ran, version(t, db))
			}
		})
	}
}

// TestOpenRefusesVersions: through Open, version 0 (no step) and a newer
// version are refused and the file keeps its version.
func TestOpenRefusesVersions(t *testing.T) {
	for _, c := range []struct {
		ver  uint32
		want string
	}{
		{0, "invalid schema version 0"},
		{SchemaVersion + 1, "run a newer mssrelay"},
	} {
		path := filepath.Join(t.TempDir(), "v.db")
		buildV1(t, path)
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, be32(c.ver)) })
		if cerr := db.Close(); err != nil || cerr != nil {
			t.Fatal(err, cerr)
		}
		if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open of version %d: %v; want %q", c.ver, err, c.want)
		}
		if _, err := OpenReadOnly(path, Options{}); err == nil {
			t.Errorf("OpenReadOnly of version %d succeeded", c.ver)
		}
	}
}

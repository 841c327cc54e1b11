package store

// On-disk layout (schema version 1).
//
//	meta                          "schema" → uint32 BE version
//	                              "uidvalidity" → uint32 BE, last UIDVALIDITY handed out
//	records                       id (uint64 BE) → encoded Record   (sequence = last id)
//	raw                           id → exact message bytes
//	rmeta                         id → opaque cache (Filing.Meta)
//	idx_number                    prescription number → id + digest (40 bytes)
//	idx_msgid                     sender "\x00" Message-ID → id + digest
//	idx_ins                       patient INS "\x00" id → empty
//	idx_idnps                     prescriber IDNPS "\x00" id → empty
//	accounts/<account>/names      mailbox name → box id (uint64 BE)
//	accounts/<account>/boxes/<id> "info" → encoded mailbox info
//	accounts/<account>/boxes/<id>/entries   uid (uint32 BE) → encoded entry
//
// Mailboxes are stored under a stable box id and found through the names
// bucket, so RENAME rewrites a few name keys instead of copying every entry
// (bbolt cannot rename a bucket). The digest is kept in the dedupe indexes so
// a resend is recognised without decoding the record.
//
// records, raw, rmeta and audit only ever get keys past their last one
// (new ids, new sequence numbers) and their values are never rewritten:
// writers fill their pages completely (appendOnly), which halves their
// leaves and their splits. The other buckets keep bbolt's half-full split:
// they take keys in the middle (indexes, rxlog events for older records)
// or rewrite values in place (entries gaining flags, queue jobs), and a
// full leaf would split on each such write.
//
// Every encoded value starts with a format byte (currently 1). Decoders
// ignore bytes after the fields they know, so a later version can append
// fields (its decoder then treats a value that ends early as holding zero
// values for them); any other change must bump the format byte and keep the
// old decoder.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"go.etcd.io/bbolt"
)

// SchemaVersion is the database layout this package reads and writes.
const SchemaVersion = 1

var (
	bucketMeta     = []byte("meta")
	bucketRecords  = []byte("records")
	bucketRaw      = []byte("raw")
	bucketRMeta    = []byte("rmeta")
	bucketIdxNum   = []byte("idx_number")
	bucketIdxMsgID = []byte("idx_msgid")
	bucketIdxINS   = []byte("idx_ins")
	bucketIdxIDNPS = []byte("idx_idnps")
	bucketAccounts = []byte("accounts")

	keySchema      = []byte("schema")
	keyUIDValidity = []byte("uidvalidity")

	bucketNames   = []byte("names")
	bucketBoxes   = []byte("boxes")
	keyInfo       = []byte("info")
	bucketEntries = []byte("entries")

	topBuckets = [][]byte{bucketMeta, bucketRecords, bucketRaw, bucketRMeta,
		bucketIdxNum, bucketIdxMsgID, bucketIdxINS, bucketIdxIDNPS, bucketAccounts, bucketAudit}
)

const formatV1 = 1

// appendOnly sets b, in the current write transaction, to fill its pages
// completely when they split: right for a bucket whose new keys always
// sort after its existing ones, since a split then leaves a left page that
// will never be written again (bbolt's own advice for sequential inserts).
// bbolt does not store FillPercent, so every writer sets it.
func appendOnly(b *bbolt.Bucket) *bbolt.Bucket {
	b.FillPercent = 1.0
	return b
}

// errCorrupt marks a stored value this package cannot decode.
var errCorrupt = errors.New("store: corrupt value")

// initSchema creates the buckets of a new database, upgrades an older
// layout and refuses a database written by a newer one.
func initSchema(tx *bbolt.Tx, path string) error {
	// An existing database is upgraded first, in this transaction
	// (migrate.go); a newer or unknown version is refused.
	ver, exists, err := schemaVersion(tx, path)
	if err != nil {
		return err
	}
	if exists {
		if err := upgrade(tx, path, ver, SchemaVersion, upgrades[:]); err != nil {
			return err
		}
	}
	for _, name := range topBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("store: %s: create bucket %s: %w", path, name, err)
		}
	}
	mb := tx.Bucket(bucketMeta)
	if mb.Get(keySchema) == nil {
		if err := mb.Put(keySchema, be32(SchemaVersion)); err != nil {
			return fmt.Errorf("store: %s: write schema version: %w", path, err)
		}
	}
	return nil
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func be32(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

// indexKey is prefix "\x00" id: the separator keeps a prefix scan for one
// value from matching a longer value (values never contain NUL).
func indexKey(prefix string, id uint64) []byte {
	k := make([]byte, 0, len(prefix)+9)
	k = append(k, prefix...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, id)
}

func msgIDKey(sender, messageID string) []byte {
	k := make([]byte, 0, len(sender)+1+len(messageID))
	k = append(k, sender...)
	k = append(k, 0)
	return append(k, messageID...)
}

// dedupe index value: record id then digest.
func encodeIdx(id uint64, digest [32]byte) []byte {
	v := make([]byte, 0, 40)
	v = binary.BigEndian.AppendUint64(v, id)
	return append(v, digest[:]...)
}

func decodeIdx(v []byte) (uint64, [32]byte, error) {
	var d [32]byte
	if len(v) != 40 {
		return 0, d, fmt.Errorf("%w: index value of %d bytes", errCorrupt, len(v))
	}
	copy(d[:], v[8:])
	return binary.BigEndian.Uint64(v), d, nil
}

// ---- primitive encoder/decoder ----

type enc struct{ b []byte }

func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *enc) time(t time.Time) {
	// Seconds and nanoseconds rather than UnixNano, which is undefined
	// outside 1678–2262 (and the zero Time is far outside).
	e.varint(t.Unix())
	e.uvarint(uint64(t.Nanosecond()))
}

type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", errCorrupt, what)
	}
}

func (d *dec) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) u32(what string) uint32 {
	v := d.uvarint(what)
	if v > math.MaxUint32 {
		d.fail(what)
		return 0
	}
	return uint32(v)
}

func (d *dec) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) str(what string) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail(what)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *dec) bool(what string) bool {
	if d.err != nil {
		return false
	}
	if len(d.b) == 0 || d.b[0] > 1 {
		d.fail(what)
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

func (d *dec) time(what string) time.Time {
	sec := d.varint(what)
	nsec := d.uvarint(what)
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 {
		d.fail(what)
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec))
}

func (d *dec) format(what string) {
	if d.err != nil {
		return
	}
	if len(d.b) == 0 || d.b[0] != formatV1 {
		d.fail(what + " format")
		return
	}
	d.b = d.b[1:]
}

// ---- records ----

func encodeRecord(r *Record) []byte {
	e := enc{b: make([]byte, 0, 128+len(r.Sender)+len(r.MessageID))}
	e.b = append(e.b, formatV1)
	e.time(r.Received)
	e.varint(r.Size)
	e.str(r.Sender)
	e.uvarint(uint64(len(r.Recipients)))
	for _, rc := range r.Recipients {
		e.str(rc)
	}
	e.str(r.Number)
	e.b = append(e.b, r.Digest[:]...)
	e.str(r.MessageID)
	e.str(r.Signer)
	e.str(r.IDNPS)
	e.str(r.PatientINS)
	e.str(r.Owner)
	e.bool(r.Appended)
	// Fields added after the first release of format 1 go at the end:
	// older records simply lack them (decodeRecord treats them as empty).
	e.str(r.Delivery)
	e.bool(r.Opposition)
	return e.b
}

func decodeRecord(id uint64, v []byte) (*Record, error) {
	d := dec{b: v}
	d.format("record")
	r := &Record{ID: id}
	r.Received = d.time("record received")
	r.Size = d.varint("record size")
	r.Sender = d.str("record sender")
	n := d.uvarint("record recipients")
	// Each recipient takes at least one byte: bounds the allocation.
	if n > uint64(len(d.b)) {
		d.fail("record recipients")
	}
	if d.err == nil && n > 0 {
		r.Recipients = make([]string, 0, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			r.Recipients = append(r.Recipients, d.str("record recipient"))
		}
	}
	r.Number = d.str("record number")
	if d.err == nil {
		if len(d.b) < 32 {
			d.fail("record digest")
		} else {
			copy(r.Digest[:], d.b[:32])
			d.b = d.b[32:]
		}
	}
	r.MessageID = d.str("record message-id")
	r.Signer = d.str("record signer")
	r.IDNPS = d.str("record idnps")
	r.PatientINS = d.str("record ins")
	r.Owner = d.str("record owner")
	r.Appended = d.bool("record appended")
	if d.err == nil && len(d.b) > 0 {
		r.Delivery = d.str("record delivery")
	}
	if d.err == nil && len(d.b) > 0 {
		r.Opposition = d.bool("record opposition")
	}
	if d.err != nil {
		return nil, fmt.Errorf("record %d: %w", id, d.err)
	}
	return r, nil
}

// ---- mailbox info ----

// boxInfo is MailboxInfo as stored (the name is the key in names).
type boxInfo struct {
	UIDValidity uint32
	UIDNext     uint32
	Messages    uint32
	Unseen      uint32
	Size        int64
	Subscribed  bool
	SpecialUse  string
	ModSeq      uint64
}

func encodeInfo(in *boxInfo) []byte {
	e := enc{b: make([]byte, 0, 48)}
	e.b = append(e.b, formatV1)
	e.uvarint(uint64(in.UIDValidity))
	e.uvarint(uint64(in.UIDNext))
	e.uvarint(uint64(in.Messages))
	e.uvarint(uint64(in.Unseen))
	e.varint(in.Size)
	e.bool(in.Subscribed)
	e.str(in.SpecialUse)
	e.uvarint(in.ModSeq)
	return e.b
}

func decodeInfo(v []byte) (boxInfo, error) {
	d := dec{b: v}
	d.format("mailbox info")
	var in boxInfo
	in.UIDValidity = d.u32("uidvalidity")
	in.UIDNext = d.u32("uidnext")
	in.Messages = d.u32("messages")
	in.Unseen = d.u32("unseen")
	in.Size = d.varint("size")
	in.Subscribed = d.bool("subscribed")
	in.SpecialUse = d.str("special-use")
	in.ModSeq = d.uvarint("modseq")
	return in, d.err
}

// ---- entries ----

type entryVal struct {
	RecordID     uint64
	InternalDate time.Time
	Size         int64
	Flags        []string // normalised, sorted
}

func encodeEntry(ev *entryVal) []byte {
	e := enc{b: make([]byte, 0, 32)}
	e.b = append(e.b, formatV1)
	e.uvarint(ev.RecordID)
	e.time(ev.InternalDate)
	e.varint(ev.Size)
	e.uvarint(uint64(len(ev.Flags)))
	for _, f := range ev.Flags {
		e.str(f)
	}
	return e.b
}

func decodeEntry(v []byte) (entryVal, error) {
	d := dec{b: v}
	d.format("entry")
	var ev entryVal
	ev.RecordID = d.uvarint("entry record")
	ev.InternalDate = d.time("entry date")
	ev.Size = d.varint("entry size")
	n := d.uvarint("entry flags")
	if n > uint64(len(d.b)) {
		d.fail("entry flags")
	}
	if d.err == nil && n > 0 {
		ev.Flags = make([]string, 0, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			ev.Flags = append(ev.Flags, d.str("entry flag"))
		}
	}
	return ev, d.err
}

// validText reports whether s is UTF-8 without control characters (C0, DEL,
// C1): the rule for every string used as or in an index key.
func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return false
		}
	}
	return true
}

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

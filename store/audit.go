package store

// Audit trail.
//
// Every security-relevant event (acceptance or refusal of a message, login,
// fetch, flag change, forward, notification, purge, admin action) is kept as
// an append-only, hash-chained record in the "audit" bucket:
//
//	audit             seq (uint64 BE) → body ‖ prev (32 bytes) ‖ hash (32 bytes)
//	meta "audit_head" → format ‖ seq (uint64 BE) ‖ hash (32 bytes)
//
// body is the canonical encoding of the record (auditBody): a format byte,
// then fixed-width big-endian integers and u32-length-prefixed strings, so
// that anyone can recompute it from an export without this package. The
// hash is SHA-256(prev ‖ body) and prev is the previous record's hash (32
// zero bytes for seq 1): changing, removing or moving one record breaks
// every link after it. The head, written in the same transaction as each
// append, names the last record and its hash, so that removing the last
// records (or all of them) is detected too.
//
// Appends go through the group commit (commit.go): each operation reads the
// head from the transaction it runs in and computes the hashes there, so an
// operation run again after a rollback recomputes them from the state it
// then sees; nothing is cached across runs.
//
// What the chain does not do: it has no secret. Whoever can write the
// database file can rebuild a consistent chain (or truncate it and its
// head together). Exporting the trail (or just its head hash) regularly to
// an append-only store outside this host is what makes a rewrite
// detectable; see docs/security-model.md.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.etcd.io/bbolt"
)

var (
	bucketAudit  = []byte("audit")
	keyAuditHead = []byte("audit_head")
)

const auditFormatV1 = 1

// Limits on audit events. Events carry peer-controlled text (an SMTP
// reason, a login name), so each field is bounded and cleaned.
const (
	MaxAuditFieldBytes = 1024 // each field after Kind; longer ones are cut and end with "…"
	MaxAuditKindBytes  = 64
	MaxAuditEvents     = 1024 // events per Audit call or per Filing
)

// Event kinds the relay records. The store accepts any kind matching
// [a-z]+(\.[a-z]+)*; these are the ones documented in
// docs/security-model.md.
const (
	AuditSMTPAccept    = "smtp.accept"    // a message got 250 and was filed
	AuditSMTPDuplicate = "smtp.duplicate" // a resend got 250, nothing new filed
	AuditSMTPRefuse    = "smtp.refuse"    // a message or command was refused (4xx/5xx)
	AuditAuthOK        = "auth.ok"        // successful SMTP or IMAP login
	AuditAuthFail      = "auth.fail"      // failed login (wrong password, locked out…)
	AuditIMAPFetch     = "imap.fetch"     // message bytes handed to an IMAP client
	AuditIMAPFlags     = "imap.flags"     // flags changed (\Seen, executed keyword…)
	AuditIMAPExpunge   = "imap.expunge"   // entries expunged from a mailbox
	AuditForward       = "out.forward"    // forwarding to a patient attempted / done / failed
	AuditNotify        = "out.notify"     // an MDN or DSN was sent
	AuditPurge         = "store.purge"    // records removed by retention
	AuditAdminPrefix   = "admin."         // admin.<command>, e.g. admin.rx.show
)

// AuditEvent is one thing that happened, as the caller reports it. It holds
// identifiers, never clinical content: no INS, no names, no prescription
// items.
type AuditEvent struct {
	Time    time.Time // when it happened; zero means the commit's clock reading
	Kind    string    // "smtp.accept", "auth.fail"… ([a-z]+(\.[a-z]+)*)
	Actor   string    // authenticated account, or "-" (empty becomes "-")
	Remote  string    // client address ip:port, "" for local actions
	Subject string    // identifiers, "key=value" separated by spaces: "record=42 rx=RX1 mbox=INBOX uid=7"
	Outcome string    // reply code and reason label: "250", "554 5.7.7 sig_integrity"
	Detail  string    // short, safe free text
}

// AuditRecord is a stored event with its place in the chain.
type AuditRecord struct {
	Seq uint64 // 1, 2, 3… with no gaps
	AuditEvent
	Prev [32]byte // Hash of record Seq-1 (zero for Seq 1)
	Hash [32]byte // SHA-256(Prev ‖ canonical body)
}

// Reasons of an AuditBreak.
const (
	AuditAltered      = "altered"       // a record's bytes are not what was written
	AuditMissing      = "missing"       // a record the chain or the head implies is absent
	AuditReordered    = "reordered"     // an intact record stored under another sequence number
	AuditHeadMismatch = "head mismatch" // the head does not name the last record
)

// AuditBreak is the first place where the stored trail differs from what
// was appended. AuditVerify returns it as *AuditBreak.
type AuditBreak struct {
	Seq    uint64 // the first bad sequence number
	Reason string // AuditAltered, AuditMissing, AuditReordered or AuditHeadMismatch
	Detail string // what exactly did not match
}

func (e *AuditBreak) Error() string {
	return fmt.Sprintf("store: audit trail broken at record %d: %s (%s)", e.Seq, e.Reason, e.Detail)
}

// ErrAuditHead marks an unreadable audit head when appending.
var ErrAuditHead = errors.New("store: audit head unreadable")

// ---- normalisation ----

// validAuditKind: [a-z]+(\.[a-z]+)*, at most MaxAuditKindBytes.
func validAuditKind(k string) bool {
	if k == "" || len(k) > MaxAuditKindBytes || k[0] == '.' || k[len(k)-1] == '.' || strings.Contains(k, "..") {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; (c < 'a' || c > 'z') && c != '.' {
			return false
		}
	}
	return true
}

// cleanAuditField makes peer text safe to store and print: invalid UTF-8
// becomes U+FFFD, control characters (C0, DEL, C1) become spaces so that a
// field cannot forge a line of a text export, and a field longer than
// MaxAuditFieldBytes is cut on a rune boundary and ends with "…".
func cleanAuditField(s string) string {
	if !validText(s) {
		s = strings.Map(func(r rune) rune {
			if r < 0x20 || (r >= 0x7f && r < 0xa0) {
				return ' '
			}
			return r
		}, strings.ToValidUTF8(s, "\uFFFD"))
	}
	if len(s) <= MaxAuditFieldBytes {
		return s
	}
	const ellipsis = "…"
	cut := MaxAuditFieldBytes - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// normAuditEvents checks kinds and cleans fields, returning copies (the
// caller's slice is not modified) and their approximate stored size.
func normAuditEvents(in []AuditEvent) ([]AuditEvent, int64, error) {
	if len(in) > MaxAuditEvents {
		return nil, 0, fmt.Errorf("%w: more than %d audit events", ErrTooLarge, MaxAuditEvents)
	}
	out := make([]AuditEvent, len(in))
	var size int64
	for i, ev := range in {
		if !validAuditKind(ev.Kind) {
			return nil, 0, fmt.Errorf("%w: audit kind %q (want [a-z]+(.[a-z]+)*, at most %d bytes)", ErrInvalid, truncForError(ev.Kind), MaxAuditKindBytes)
		}
		ev.Actor = cleanAuditField(ev.Actor)
		if ev.Actor == "" {
			ev.Actor = "-"
		}
		ev.Remote = cleanAuditField(ev.Remote)
		ev.Subject = cleanAuditField(ev.Subject)
		ev.Outcome = cleanAuditField(ev.Outcome)
		ev.Detail = cleanAuditField(ev.Detail)
		out[i] = ev
		size += int64(auditFixedBytes + len(ev.Kind) + len(ev.Actor) + len(ev.Remote) + len(ev.Subject) + len(ev.Outcome) + len(ev.Detail))
	}
	return out, size, nil
}

func truncForError(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// ---- encoding ----

// auditFixedBytes is the encoded size of a record without its strings:
// format 1, seq 8, seconds 8, nanoseconds 4, six string lengths 4 each,
// prev 32, hash 32.
const auditFixedBytes = 1 + 8 + 8 + 4 + 6*4 + 32 + 32

// auditBody is the canonical encoding the hash covers:
//
//	format   1 byte (1)
//	seq      uint64 BE
//	seconds  int64 BE, Unix time
//	nanos    uint32 BE (< 1e9)
//	kind, actor, remote, subject, outcome, detail:
//	         each uint32 BE byte length, then the UTF-8 bytes
//
// Fixed widths make it trivial to recompute outside Go (an export carries
// every field), and there is exactly one encoding of a record.
func auditBody(seq uint64, ev *AuditEvent) []byte {
	b := make([]byte, 0, auditFixedBytes+len(ev.Kind)+len(ev.Actor)+len(ev.Remote)+len(ev.Subject)+len(ev.Outcome)+len(ev.Detail))
	b = append(b, auditFormatV1)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, uint64(ev.Time.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(ev.Time.Nanosecond()))
	for _, s := range [...]string{ev.Kind, ev.Actor, ev.Remote, ev.Subject, ev.Outcome, ev.Detail} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// auditHash is SHA-256(prev ‖ body).
func auditHash(prev [32]byte, body []byte) [32]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(body)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// decodeAuditValue splits a stored value into its record and reports
// whether the stored hash is the hash of its content. With fixed widths and
// no stray bytes allowed, a value that decodes is the one canonical
// encoding of its content, so every byte of it is covered by the hash.
func decodeAuditValue(v []byte) (rec AuditRecord, hashOK bool, err error) {
	if len(v) < auditFixedBytes {
		return rec, false, fmt.Errorf("%w: audit value of %d bytes", errCorrupt, len(v))
	}
	if v[0] != auditFormatV1 {
		return rec, false, fmt.Errorf("%w: audit format %d", errCorrupt, v[0])
	}
	body := v[:len(v)-64]
	copy(rec.Prev[:], v[len(v)-64:len(v)-32])
	copy(rec.Hash[:], v[len(v)-32:])
	p := body[1:]
	rec.Seq = binary.BigEndian.Uint64(p)
	sec := int64(binary.BigEndian.Uint64(p[8:]))
	nsec := binary.BigEndian.Uint32(p[16:])
	if nsec >= 1e9 {
		return rec, false, fmt.Errorf("%w: audit time nanoseconds %d", errCorrupt, nsec)
	}
	rec.Time = time.Unix(sec, int64(nsec)).UTC()
	p = p[20:]
	var fields [6]string
	for i := range fields {
		if len(p) < 4 {
			return rec, false, fmt.Errorf("%w: audit field %d length", errCorrupt, i)
		}
		n := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(n) > uint64(len(p)) {
			return rec, false, fmt.Errorf("%w: audit field %d of %d bytes", errCorrupt, i, n)
		}
		fields[i] = string(p[:n])
		p = p[n:]
	}
	if len(p) != 0 {
		return rec, false, fmt.Errorf("%w: %d stray bytes in audit value", errCorrupt, len(p))
	}
	rec.Kind, rec.Actor, rec.Remote, rec.Subject, rec.Outcome, rec.Detail =
		fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]
	return rec, auditHash(rec.Prev, body) == rec.Hash, nil
}

type auditHead struct {
	Seq  uint64
	Hash [32]byte
}

func encodeAuditHead(h auditHead) []byte {
	b := make([]byte, 0, 41)
	b = append(b, auditFormatV1)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	return append(b, h.Hash[:]...)
}

// readAuditHead returns the head (zero when none was written) and whether
// one exists.
func readAuditHead(tx *bbolt.Tx) (auditHead, bool, error) {
	var h auditHead
	v := tx.Bucket(bucketMeta).Get(keyAuditHead)
	if v == nil {
		return h, false, nil
	}
	if len(v) != 41 || v[0] != auditFormatV1 {
		return h, true, fmt.Errorf("%w: %d bytes", ErrAuditHead, len(v))
	}
	h.Seq = binary.BigEndian.Uint64(v[1:])
	copy(h.Hash[:], v[9:])
	return h, true, nil
}

// ---- appending ----

// appendAudit appends normalised events in w's transaction; the caller
// has called w.mark(). It reads the head from the transaction on every run
// (see the note on retries at the top of this file).
func appendAudit(w *wtx, evs []AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	b, err := w.tx.CreateBucketIfNotExists(bucketAudit)
	if err != nil {
		return fmt.Errorf("store: audit bucket: %w", err)
	}
	appendOnly(b) // sequence numbers only grow
	head, _, err := readAuditHead(w.tx)
	if err != nil {
		// Appending after an unreadable head would chain to nothing; the
		// write fails and the caller's operation with it, so that an
		// acceptance is never filed without its audit record.
		return fmt.Errorf("store: audit append: %w (run `mssrelay audit verify`)", err)
	}
	// The next number is past the head, the bucket's sequence and the last
	// key: if the head or the last records were tampered with, a new
	// record never overwrites an old one, and verify still reports the
	// break.
	seq := max(head.Seq, b.Sequence())
	if k, _ := b.Cursor().Last(); len(k) == 8 {
		seq = max(seq, binary.BigEndian.Uint64(k))
	}
	prev := head.Hash
	for i := range evs {
		ev := evs[i]
		if ev.Time.IsZero() {
			ev.Time = w.now
		}
		ev.Time = ev.Time.UTC()
		seq++
		body := auditBody(seq, &ev)
		hash := auditHash(prev, body)
		v := make([]byte, 0, len(body)+64)
		v = append(append(append(v, body...), prev[:]...), hash[:]...)
		if err := b.Put(be64(seq), v); err != nil {
			return fmt.Errorf("store: audit record %d: %w", seq, err)
		}
		prev = hash
	}
	if err := b.SetSequence(seq); err != nil {
		return fmt.Errorf("store: audit sequence: %w", err)
	}
	if err := w.tx.Bucket(bucketMeta).Put(keyAuditHead, encodeAuditHead(auditHead{Seq: seq, Hash: prev})); err != nil {
		return fmt.Errorf("store: audit head: %w", err)
	}
	return nil
}

// Audit appends events to the audit trail and returns once they are
// committed (fsync'd). Concurrent calls share commits with each other and
// with filings (group commit). To record an acceptance together with the
// filing it reports, use Filing.Audit instead.
//
// Fields are cleaned (control characters become spaces) and cut to
// MaxAuditFieldBytes; a Kind outside [a-z]+(\.[a-z]+)* is an error matching
// ErrInvalid. ctx is checked before the events are queued.
func (s *Store) Audit(ctx context.Context, ev ...AuditEvent) error {
	evs, size, err := normAuditEvents(ev)
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: audit: %w", err)
	}
	return s.write(size, func(w *wtx) error {
		w.mark()
		return appendAudit(w, evs)
	})
}

// withRecordID returns copies of evs whose Subject starts with
// "record=<id>": the id is known only inside the filing's transaction.
func withRecordID(evs []AuditEvent, id uint64) []AuditEvent {
	out := make([]AuditEvent, len(evs))
	tag := "record=" + strconv.FormatUint(id, 10)
	for i, ev := range evs {
		if ev.Subject == "" {
			ev.Subject = tag
		} else {
			ev.Subject = cleanAuditField(tag + " " + ev.Subject)
		}
		out[i] = ev
	}
	return out
}

// ---- reading ----

// auditChunk bounds the records read per read transaction: a long walk
// must not hold one transaction (and block the writer's remaps) for
// minutes, and fn runs outside any transaction.
const auditChunk = 4096

// AuditHead returns the sequence number and hash of the last record
// appended, as the head records them (0 and zeros for an empty trail).
func (s *Store) AuditHead() (seq uint64, hash [32]byte, err error) {
	err = s.view(func(tx *bbolt.Tx) error {
		h, _, err := readAuditHead(tx)
		seq, hash = h.Seq, h.Hash
		return err
	})
	return seq, hash, err
}

// AuditVerify walks the trail from record 1, recomputes every hash and
// link, checks the last record against the head, and calls fn (may be
// nil) with each record found intact, in order. It returns the number of
// intact records and, at the first break, a *AuditBreak:
//
//   - altered: a value that does not decode, is not the canonical encoding
//     of its content, does not hash to its stored hash, or does not link to
//     the previous record's hash (the previous record was rewritten with a
//     fresh hash, or this one was);
//   - missing: a sequence number absent from the bucket while a later
//     record or the head implies it (deleted records, the last ones
//     included, or all of them);
//   - reordered: an intact record stored under another sequence number;
//   - head mismatch: the head is absent or unreadable while records exist,
//     names a hash other than the last record's, or stops before it.
//
// Records appended while the walk runs are verified too: the walk ends in
// the transaction that sees no further record.
func (s *Store) AuditVerify(fn func(AuditRecord)) (n uint64, err error) {
	var prev [32]byte
	next := uint64(1)
	for {
		var batch []AuditRecord
		var brk *AuditBreak
		done := false
		err := s.view(func(tx *bbolt.Tx) error {
			batch, brk, done = verifyChunk(tx, next, prev)
			return nil
		})
		if err != nil {
			return n, err
		}
		for _, r := range batch {
			if fn != nil {
				fn(r)
			}
			n++
		}
		if brk != nil {
			return n, brk
		}
		if done {
			return n, nil
		}
		last := batch[len(batch)-1]
		next, prev = last.Seq+1, last.Hash
	}
}

// verifyChunk verifies up to auditChunk records from seq next, whose
// predecessor's hash is prev. done means the end of the trail was reached
// and the head checked.
func verifyChunk(tx *bbolt.Tx, next uint64, prev [32]byte) (ok []AuditRecord, brk *AuditBreak, done bool) {
	var c *bbolt.Cursor
	if b := tx.Bucket(bucketAudit); b != nil {
		c = b.Cursor()
	}
	var k, v []byte
	if c != nil {
		k, v = c.Seek(be64(next))
	}
	for ; k != nil; k, v = c.Next() {
		if len(ok) == auditChunk {
			return ok, nil, false
		}
		if len(k) != 8 {
			return ok, &AuditBreak{Seq: next, Reason: AuditAltered, Detail: fmt.Sprintf("key of %d bytes in the audit bucket", len(k))}, true
		}
		if seq := binary.BigEndian.Uint64(k); seq != next {
			return ok, &AuditBreak{Seq: next, Reason: AuditMissing, Detail: fmt.Sprintf("next record found is %d", seq)}, true
		}
		rec, hashOK, err := decodeAuditValue(v)
		switch {
		case err != nil:
			return ok, &AuditBreak{Seq: next, Reason: AuditAltered, Detail: err.Error()}, true
		case !hashOK:
			return ok, &AuditBreak{Seq: next, Reason: AuditAltered, Detail: "content does not match its hash"}, true
		case rec.Seq != next:
			return ok, &AuditBreak{Seq: next, Reason: AuditReordered, Detail: fmt.Sprintf("holds record %d", rec.Seq)}, true
		case rec.Prev != prev:
			d := "does not link to the previous record (this record or the one before was rewritten)"
			if next == 1 {
				d = "first record does not start the chain"
			}
			return ok, &AuditBreak{Seq: next, Reason: AuditAltered, Detail: d}, true
		}
		ok = append(ok, rec)
		prev = rec.Hash
		next++
	}
	// End of the bucket in this transaction: the head must name the last
	// record seen.
	last := next - 1
	head, present, err := readAuditHead(tx)
	switch {
	case err != nil:
		return ok, &AuditBreak{Seq: last, Reason: AuditHeadMismatch, Detail: err.Error()}, true
	case !present && last > 0:
		return ok, &AuditBreak{Seq: last, Reason: AuditHeadMismatch, Detail: "records exist but the head is absent"}, true
	case head.Seq > last:
		return ok, &AuditBreak{Seq: next, Reason: AuditMissing, Detail: fmt.Sprintf("the head names record %d, the trail ends at %d", head.Seq, last)}, true
	case head.Seq < last:
		return ok, &AuditBreak{Seq: head.Seq + 1, Reason: AuditHeadMismatch, Detail: fmt.Sprintf("the head names record %d, the trail goes on to %d", head.Seq, last)}, true
	case head.Hash != prev:
		return ok, &AuditBreak{Seq: last, Reason: AuditHeadMismatch, Detail: "the head's hash is not the last record's"}, true
	}
	return ok, nil, true
}

// AuditSince calls fn with every record whose Time is at or after t, in
// sequence order, without verifying the chain (AuditVerify does). Event
// times come from the callers and need not increase with the sequence, so
// the whole trail is scanned; a record that does not decode is an error.
// fn runs outside any transaction; an error from fn stops the walk and is
// returned.
func (s *Store) AuditSince(t time.Time, fn func(AuditRecord) error) error {
	next := uint64(1)
	for {
		var batch []AuditRecord
		var end bool
		err := s.view(func(tx *bbolt.Tx) error {
			batch, end = nil, true
			b := tx.Bucket(bucketAudit)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			seen := 0
			for k, v := c.Seek(be64(next)); k != nil; k, v = c.Next() {
				if seen == auditChunk {
					end = false
					return nil
				}
				seen++
				if len(k) != 8 {
					return fmt.Errorf("store: audit key %x is not a sequence number (run audit verify)", k)
				}
				next = binary.BigEndian.Uint64(k) + 1
				rec, _, err := decodeAuditValue(v)
				if err != nil {
					return fmt.Errorf("store: audit record %d: %w (run audit verify)", next-1, err)
				}
				if !rec.Time.Before(t) {
					batch = append(batch, rec)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range batch {
			if err := fn(r); err != nil {
				return err
			}
		}
		if end {
			return nil
		}
	}
}

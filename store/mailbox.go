package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// defaultBoxes are created with a new account (RFC 6154 special-use).
var defaultBoxes = []struct{ name, use string }{
	{Inbox, ""},
	{"Sent", `\Sent`},
	{"Drafts", `\Drafts`},
	{"Trash", `\Trash`},
	{"Archive", `\Archive`},
}

// box is an open mailbox inside a transaction.
type box struct {
	name    string
	id      []byte // key in the account's boxes bucket
	b       *bbolt.Bucket
	entries *bbolt.Bucket
	info    boxInfo
	// ab and saved let save keep the account's usage in step with the
	// mailbox's counters (quota.go): saved is the info as last stored.
	ab    *bbolt.Bucket
	saved boxInfo
}

func accountBucket(tx *bbolt.Tx, account string) *bbolt.Bucket {
	return tx.Bucket(bucketAccounts).Bucket([]byte(account))
}

func openAccount(tx *bbolt.Tx, account string) (*bbolt.Bucket, error) {
	ab := accountBucket(tx, account)
	if ab == nil {
		return nil, fmt.Errorf("store: account: %w", ErrNotFound)
	}
	return ab, nil
}

func openBox(ab *bbolt.Bucket, name string) (*box, error) {
	idv := ab.Bucket(bucketNames).Get([]byte(name))
	if idv == nil {
		return nil, fmt.Errorf("store: mailbox %q: %w", name, ErrNotFound)
	}
	id := append([]byte(nil), idv...)
	b := ab.Bucket(bucketBoxes).Bucket(id)
	if b == nil {
		return nil, fmt.Errorf("store: mailbox %q: %w: no bucket %x", name, errCorrupt, id)
	}
	info, err := decodeInfo(b.Get(keyInfo))
	if err != nil {
		return nil, fmt.Errorf("store: mailbox %q: %w", name, err)
	}
	entries := b.Bucket(bucketEntries)
	if entries == nil {
		return nil, fmt.Errorf("store: mailbox %q: %w: no entries bucket", name, errCorrupt)
	}
	return &box{name: name, id: id, b: b, entries: entries, info: info, ab: ab, saved: info}, nil
}

func (bx *box) save() error {
	// Account usage first: a usage record not yet written is computed
	// from the stored infos, which must not hold this change yet.
	if err := addUsage(bx.ab, int64(bx.info.Messages)-int64(bx.saved.Messages), bx.info.Size-bx.saved.Size); err != nil {
		return fmt.Errorf("store: mailbox %q: %w", bx.name, err)
	}
	bx.saved = bx.info
	if err := bx.b.Put(keyInfo, encodeInfo(&bx.info)); err != nil {
		return fmt.Errorf("store: mailbox %q: write info: %w", bx.name, err)
	}
	return nil
}

func (bx *box) mailboxInfo() *MailboxInfo {
	in := bx.info
	return &MailboxInfo{
		Name: bx.name, UIDValidity: in.UIDValidity, UIDNext: in.UIDNext,
		Messages: in.Messages, Unseen: in.Unseen, Size: in.Size,
		Subscribed: in.Subscribed, SpecialUse: in.SpecialUse, ModSeq: in.ModSeq,
	}
}

// addEntry appends an entry with the mailbox's next UID. The caller saves
// the box info afterwards.
func (bx *box) addEntry(ev *entryVal) (uint32, error) {
	uid := bx.info.UIDNext
	// RFC 3501 §2.3.1.1: UIDs strictly ascend and are never reused; at the
	// end of the 32-bit space only a new UIDVALIDITY could go on.
	if uid == 0 || uid == math.MaxUint32 {
		return 0, fmt.Errorf("store: mailbox %q: UID space exhausted", bx.name)
	}
	if bx.info.Messages == math.MaxUint32 {
		return 0, fmt.Errorf("store: mailbox %q: too many messages", bx.name)
	}
	if err := bx.entries.Put(be32(uid), encodeEntry(ev)); err != nil {
		return 0, fmt.Errorf("store: mailbox %q: write entry: %w", bx.name, err)
	}
	bx.info.UIDNext = uid + 1
	bx.info.Messages++
	bx.info.Size += ev.Size
	if !hasFlag(ev.Flags, flagSeen) {
		bx.info.Unseen++
	}
	bx.info.ModSeq++
	return uid, nil
}

// removeEntry deletes the entry uid (whose value is ev) and takes it out of
// the mailbox counters; the caller bumps ModSeq once and saves the box
// info afterwards (save keeps the account's usage in step).
func (bx *box) removeEntry(uid uint32, ev *entryVal) error {
	if err := bx.entries.Delete(be32(uid)); err != nil {
		return fmt.Errorf("store: mailbox %q: delete entry: %w", bx.name, err)
	}
	bx.info.Messages--
	bx.info.Size -= ev.Size
	if !hasFlag(ev.Flags, flagSeen) {
		bx.info.Unseen--
	}
	return nil
}

func (bx *box) getEntry(uid uint32) (entryVal, bool, error) {
	v := bx.entries.Get(be32(uid))
	if v == nil {
		return entryVal{}, false, nil
	}
	ev, err := decodeEntry(v)
	if err != nil {
		return entryVal{}, false, fmt.Errorf("store: mailbox %q uid %d: %w", bx.name, uid, err)
	}
	return ev, true, nil
}

func toEntry(uid uint32, ev *entryVal) Entry {
	return Entry{UID: uid, RecordID: ev.RecordID, Flags: ev.Flags, InternalDate: ev.InternalDate, Size: ev.Size}
}

// nextUIDValidity hands out a UIDVALIDITY never used before in this
// database: the larger of the last one plus one and the current Unix time,
// so that a database restored from an old backup still moves forward
// (RFC 3501 §2.3.1.1: a recreated name must get a new UIDVALIDITY).
func nextUIDValidity(w *wtx) (uint32, error) {
	mb := w.tx.Bucket(bucketMeta)
	var last uint32
	if v := mb.Get(keyUIDValidity); len(v) == 4 {
		last = binary.BigEndian.Uint32(v)
	}
	next := last + 1
	if t := w.now.Unix(); t > int64(next) && t < math.MaxUint32 {
		next = uint32(t)
	}
	if next == 0 {
		return 0, errors.New("store: UIDVALIDITY space exhausted")
	}
	if err := mb.Put(keyUIDValidity, be32(next)); err != nil {
		return 0, fmt.Errorf("store: write uidvalidity: %w", err)
	}
	return next, nil
}

// createBox creates a mailbox; the caller has checked the name is free and
// called w.mark().
func createBox(w *wtx, account string, ab *bbolt.Bucket, name, use string, subscribed bool) (*box, error) {
	uv, err := nextUIDValidity(w)
	if err != nil {
		return nil, err
	}
	seq, err := ab.NextSequence()
	if err != nil {
		return nil, fmt.Errorf("store: mailbox id: %w", err)
	}
	id := be64(seq)
	b, err := ab.Bucket(bucketBoxes).CreateBucket(id)
	if err != nil {
		return nil, fmt.Errorf("store: create mailbox %q: %w", name, err)
	}
	entries, err := b.CreateBucket(bucketEntries)
	if err != nil {
		return nil, fmt.Errorf("store: create mailbox %q: %w", name, err)
	}
	bx := &box{name: name, id: id, b: b, entries: entries, ab: ab, info: boxInfo{
		UIDValidity: uv, UIDNext: 1, Subscribed: subscribed, SpecialUse: use, ModSeq: 1,
	}}
	if err := bx.save(); err != nil {
		return nil, err
	}
	if err := ab.Bucket(bucketNames).Put([]byte(name), id); err != nil {
		return nil, fmt.Errorf("store: create mailbox %q: %w", name, err)
	}
	w.changed(account, name)
	return bx, nil
}

// missingDefaults lists the default mailboxes an existing account lacks: a
// default is missing when no mailbox carries its special-use (a renamed
// Trash still counts) and its name is free. INBOX is always required.
func missingDefaults(ab *bbolt.Bucket) ([]int, error) {
	names := ab.Bucket(bucketNames)
	boxes := ab.Bucket(bucketBoxes)
	uses := map[string]bool{}
	err := names.ForEach(func(_, id []byte) error {
		b := boxes.Bucket(id)
		if b == nil {
			return fmt.Errorf("store: %w: dangling mailbox id %x", errCorrupt, id)
		}
		in, err := decodeInfo(b.Get(keyInfo))
		if err != nil {
			return fmt.Errorf("store: mailbox info: %w", err)
		}
		if in.SpecialUse != "" {
			uses[in.SpecialUse] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var miss []int
	for i, d := range defaultBoxes {
		exists := names.Get([]byte(d.name)) != nil
		if !exists && (d.use == "" || !uses[d.use]) {
			miss = append(miss, i)
		}
	}
	return miss, nil
}

// ensureAccount creates the account with its default mailboxes when
// absent. With full set it also recreates missing defaults of an existing
// account; otherwise it only makes sure INBOX exists (the filing path).
func ensureAccount(w *wtx, account string, full bool) (*bbolt.Bucket, error) {
	accts := w.tx.Bucket(bucketAccounts)
	ab := accts.Bucket([]byte(account))
	var miss []int
	switch {
	case ab == nil:
		w.mark()
		var err error
		if ab, err = accts.CreateBucket([]byte(account)); err != nil {
			return nil, fmt.Errorf("store: create account: %w", err)
		}
		if _, err := ab.CreateBucket(bucketNames); err != nil {
			return nil, fmt.Errorf("store: create account: %w", err)
		}
		if _, err := ab.CreateBucket(bucketBoxes); err != nil {
			return nil, fmt.Errorf("store: create account: %w", err)
		}
		for i := range defaultBoxes {
			miss = append(miss, i)
		}
	case full:
		var err error
		if miss, err = missingDefaults(ab); err != nil {
			return nil, err
		}
	default:
		if ab.Bucket(bucketNames).Get([]byte(Inbox)) == nil {
			miss = []int{0}
		}
	}
	for _, i := range miss {
		w.mark()
		d := defaultBoxes[i]
		if _, err := createBox(w, account, ab, d.name, d.use, true); err != nil {
			return nil, err
		}
	}
	return ab, nil
}

// EnsureAccount creates the account's INBOX (and Sent, Drafts, Trash,
// Archive with their special-use) if missing. A default counts as present
// when a mailbox carries its special-use, so a renamed Trash is not
// recreated beside itself. Account names are used as given: the caller
// normalises addresses.
func (s *Store) EnsureAccount(account string) error {
	if err := checkAccount(account); err != nil {
		return err
	}
	// Fast path without a write transaction: logins call this often.
	complete := false
	err := s.view(func(tx *bbolt.Tx) error {
		ab := accountBucket(tx, account)
		if ab == nil || !s.durable(tx) {
			return nil
		}
		miss, err := missingDefaults(ab)
		complete = err == nil && len(miss) == 0
		return err
	})
	if err != nil || complete {
		return err
	}
	return s.write(0, func(w *wtx) error {
		_, err := ensureAccount(w, account, true)
		return err
	})
}

// Mailboxes lists an account's mailboxes, sorted by name (bytewise).
func (s *Store) Mailboxes(account string) ([]MailboxInfo, error) {
	var out []MailboxInfo
	err := s.view(func(tx *bbolt.Tx) error {
		ab, err := openAccount(tx, account)
		if err != nil {
			return err
		}
		return ab.Bucket(bucketNames).ForEach(func(k, _ []byte) error {
			bx, err := openBox(ab, string(k))
			if err != nil {
				return err
			}
			out = append(out, *bx.mailboxInfo())
			return nil
		})
	})
	return out, err
}

// lookupName canonicalises a name given for an existing mailbox; a name
// that cannot exist is simply not found.
func lookupName(name string) (string, error) {
	n, err := canonName(name)
	if err != nil {
		return "", fmt.Errorf("store: mailbox: %w (%w)", ErrNotFound, err)
	}
	return n, nil
}

// Mailbox describes one mailbox; ErrNotFound when absent. "INBOX" is
// case-insensitive (RFC 3501 §5.1).
func (s *Store) Mailbox(account, name string) (*MailboxInfo, error) {
	n, err := lookupName(name)
	if err != nil {
		return nil, err
	}
	var out *MailboxInfo
	err = s.view(func(tx *bbolt.Tx) error {
		ab, err := openAccount(tx, account)
		if err != nil {
			return err
		}
		bx, err := openBox(ab, n)
		if err != nil {
			return err
		}
		out = bx.mailboxInfo()
		return nil
	})
	return out, err
}

// Entries returns the mailbox's entries sorted by UID, with its info read
// in the same transaction.
func (s *Store) Entries(account, mailbox string) (*MailboxInfo, []Entry, error) {
	n, err := lookupName(mailbox)
	if err != nil {
		return nil, nil, err
	}
	var info *MailboxInfo
	var out []Entry
	err = s.view(func(tx *bbolt.Tx) error {
		ab, err := openAccount(tx, account)
		if err != nil {
			return err
		}
		bx, err := openBox(ab, n)
		if err != nil {
			return err
		}
		info = bx.mailboxInfo()
		out = make([]Entry, 0, info.Messages)
		return bx.entries.ForEach(func(k, v []byte) error {
			if len(k) != 4 {
				return fmt.Errorf("store: mailbox %q: %w: uid key of %d bytes", n, errCorrupt, len(k))
			}
			ev, err := decodeEntry(v)
			if err != nil {
				return fmt.Errorf("store: mailbox %q: %w", n, err)
			}
			out = append(out, toEntry(binary.BigEndian.Uint32(k), &ev))
			return nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return info, out, nil
}

// UpdateFlags changes flags of the entries with the given UIDs (missing
// UIDs are skipped) and returns the entries found, updated, in UID order
// (a STORE answers with every addressed message, changed or not: RFC 3501
// §6.4.6). System flags are stored in canonical case, \Recent is ignored,
// keywords keep the spelling first stored.
func (s *Store) UpdateFlags(account, mailbox string, uids []uint32, op FlagOp, flags []string) ([]Entry, error) {
	if op != FlagsSet && op != FlagsAdd && op != FlagsRemove {
		return nil, fmt.Errorf("%w: flag operation %d", ErrInvalid, op)
	}
	n, err := lookupName(mailbox)
	if err != nil {
		return nil, err
	}
	nf, err := normFlags(flags)
	if err != nil {
		return nil, err
	}
	su, err := sortedUIDs(uids)
	if err != nil {
		return nil, err
	}
	var out []Entry
	err = s.write(0, func(w *wtx) error {
		out = out[:0]
		ab, err := openAccount(w.tx, account)
		if err != nil {
			return err
		}
		bx, err := openBox(ab, n)
		if err != nil {
			return err
		}
		changed := false
		for _, uid := range su {
			ev, ok, err := bx.getEntry(uid)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			nfl := applyFlags(ev.Flags, op, nf)
			if len(nfl) > MaxFlags {
				return fmt.Errorf("%w: more than %d flags on a message", ErrInvalidFlag, MaxFlags)
			}
			if !sameFlags(nfl, ev.Flags) {
				w.mark()
				changed = true
				wasSeen, isSeen := hasFlag(ev.Flags, flagSeen), hasFlag(nfl, flagSeen)
				switch {
				case wasSeen && !isSeen:
					bx.info.Unseen++
				case !wasSeen && isSeen:
					bx.info.Unseen--
				}
				if err := dispensedChange(w, account, ev.RecordID, ev.Flags, nfl); err != nil {
					return err
				}
				ev.Flags = nfl
				if err := bx.entries.Put(be32(uid), encodeEntry(&ev)); err != nil {
					return fmt.Errorf("store: mailbox %q: write entry: %w", n, err)
				}
			}
			out = append(out, toEntry(uid, &ev))
		}
		if changed {
			bx.info.ModSeq++
			if err := bx.save(); err != nil {
				return err
			}
			w.changed(account, n)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Expunge removes the entries flagged \Deleted (restricted to uids when
// non-nil) and returns the removed UIDs in ascending order. Records stay:
// they are the legal record, whatever a mailbox shows.
func (s *Store) Expunge(account, mailbox string, uids []uint32) ([]uint32, error) {
	n, err := lookupName(mailbox)
	if err != nil {
		return nil, err
	}
	var su []uint32
	if uids != nil {
		if su, err = sortedUIDs(uids); err != nil {
			return nil, err
		}
	}
	var removed []uint32
	err = s.write(0, func(w *wtx) error {
		removed = removed[:0]
		ab, err := openAccount(w.tx, account)
		if err != nil {
			return err
		}
		bx, err := openBox(ab, n)
		if err != nil {
			return err
		}
		type victim struct {
			uid uint32
			ev  entryVal
		}
		var victims []victim
		if uids == nil {
			err = bx.entries.ForEach(func(k, v []byte) error {
				ev, err := decodeEntry(v)
				if err != nil || len(k) != 4 {
					return fmt.Errorf("store: mailbox %q: %w", n, errors.Join(errCorrupt, err))
				}
				if hasFlag(ev.Flags, flagDeleted) {
					victims = append(victims, victim{binary.BigEndian.Uint32(k), ev})
				}
				return nil
			})
			if err != nil {
				return err
			}
		} else {
			for _, uid := range su {
				ev, ok, err := bx.getEntry(uid)
				if err != nil {
					return err
				}
				if ok && hasFlag(ev.Flags, flagDeleted) {
					victims = append(victims, victim{uid, ev})
				}
			}
		}
		if len(victims) == 0 {
			return nil
		}
		w.mark()
		for _, v := range victims {
			if err := bx.removeEntry(v.uid, &v.ev); err != nil {
				return err
			}
			removed = append(removed, v.uid)
		}
		bx.info.ModSeq++
		if err := bx.save(); err != nil {
			return err
		}
		w.changed(account, n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return removed, nil
}

// Append stores raw as a new record owned by account and adds an entry to
// mailbox (IMAP APPEND, RFC 3501 §6.3.11). The record is in no index: it is
// not a verified filing. A zero date means now. ErrNotFound when the
// mailbox does not exist (the IMAP layer answers [TRYCREATE]).
func (s *Store) Append(account, mailbox string, raw []byte, flags []string, date time.Time, meta []byte) (*Delivered, error) {
	if err := checkAccount(account); err != nil {
		return nil, err
	}
	n, err := lookupName(mailbox)
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > s.max {
		return nil, fmt.Errorf("%w: message of %d bytes (limit %d)", ErrTooLarge, len(raw), s.max)
	}
	if len(meta) > MaxMetaBytes {
		return nil, fmt.Errorf("%w: meta of %d bytes (limit %d)", ErrTooLarge, len(meta), MaxMetaBytes)
	}
	nf, err := normFlags(flags)
	if err != nil {
		return nil, err
	}
	var out *Delivered
	err = s.write(int64(len(raw)+len(meta)), func(w *wtx) error {
		out = nil
		ab, err := openAccount(w.tx, account)
		if err != nil {
			return err
		}
		bx, err := openBox(ab, n)
		if err != nil {
			return err
		}
		if err := s.checkQuotaTx(w.tx, account, 1, int64(len(raw))); err != nil {
			return err
		}
		w.mark()
		when := date
		if when.IsZero() {
			when = w.now
		}
		id, err := putRecord(w.tx, &Record{
			Received: w.now, Size: int64(len(raw)), Recipients: []string{account},
			Owner: account, Appended: true,
		}, raw, meta)
		if err != nil {
			return err
		}
		uid, err := bx.addEntry(&entryVal{RecordID: id, InternalDate: when, Size: int64(len(raw)), Flags: nf})
		if err != nil {
			return err
		}
		if err := bx.save(); err != nil {
			return err
		}
		w.changed(account, n)
		out = &Delivered{Account: account, Mailbox: n, UIDValidity: bx.info.UIDValidity, UID: uid}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Copy adds entries pointing at the same records to dest, keeping flags
// and internal date (RFC 3501 §6.4.7); returns dest's UIDVALIDITY and the
// source and destination UIDs in order (for COPYUID, RFC 4315 §3). Missing
// source UIDs are skipped. The copies count against the account's quota.
func (s *Store) Copy(account, mailbox string, uids []uint32, dest string) (uidValidity uint32, src, dst []uint32, err error) {
	return s.transfer(account, mailbox, uids, dest, false)
}

// Move moves entries to dest in one transaction (RFC 6851 MOVE), keeping
// flags and internal date: each gets a new UID in dest and leaves mailbox,
// whatever its flags. Returns dest's UIDVALIDITY and the source and
// destination UIDs in order (COPYUID); missing source UIDs are skipped.
// The account's usage does not change, so a MOVE is never over quota: an
// account at its quota can still move messages to Trash.
func (s *Store) Move(account, mailbox string, uids []uint32, dest string) (uidValidity uint32, src, dst []uint32, err error) {
	return s.transfer(account, mailbox, uids, dest, true)
}

// transfer is Copy, or Move when move is set: the entries leave mailbox in
// the same transaction that adds them to dest.
func (s *Store) transfer(account, mailbox string, uids []uint32, dest string, move bool) (uidValidity uint32, src, dst []uint32, err error) {
	n, err := lookupName(mailbox)
	if err != nil {
		return 0, nil, nil, err
	}
	dn, err := lookupName(dest)
	if err != nil {
		return 0, nil, nil, err
	}
	su, err := sortedUIDs(uids)
	if err != nil {
		return 0, nil, nil, err
	}
	err = s.write(0, func(w *wtx) error {
		uidValidity, src, dst = 0, src[:0], dst[:0]
		ab, err := openAccount(w.tx, account)
		if err != nil {
			return err
		}
		from, err := openBox(ab, n)
		if err != nil {
			return err
		}
		to := from // into the same mailbox: one view of it
		if dn != n {
			if to, err = openBox(ab, dn); err != nil {
				return err
			}
		}
		uidValidity = to.info.UIDValidity
		var evs []entryVal
		for _, uid := range su {
			ev, ok, err := from.getEntry(uid)
			if err != nil {
				return err
			}
			if ok {
				src = append(src, uid)
				evs = append(evs, ev)
			}
		}
		if len(evs) == 0 {
			return nil
		}
		if !move {
			var bytes int64
			for i := range evs {
				bytes += evs[i].Size
			}
			if err := s.checkQuotaTx(w.tx, account, uint64(len(evs)), bytes); err != nil {
				return err
			}
		}
		w.mark()
		for i := range evs {
			uid, err := to.addEntry(&evs[i])
			if err != nil {
				return err
			}
			dst = append(dst, uid)
		}
		if move {
			for i, uid := range src {
				if err := from.removeEntry(uid, &evs[i]); err != nil {
					return err
				}
			}
			from.info.ModSeq++
			if err := from.save(); err != nil {
				return err
			}
			w.changed(account, n)
		}
		if !move || to != from {
			if err := to.save(); err != nil {
				return err
			}
			w.changed(account, dn)
		}
		return nil
	})
	if err != nil {
		return 0, nil, nil, err
	}
	return uidValidity, src, dst, nil
}

// parentName is the name one level up ("" at the top).
func parentName(name string) string {
	i := strings.LastIndex(name, Separator)
	if i < 0 {
		return ""
	}
	return name[:i]
}

// missingParents lists, top level first, the superiors of name that
// creating it must create (RFC 3501 §6.3.3 and §6.3.5: the server SHOULD
// create the superior hierarchical names needed). A superior is already
// there when it is a mailbox, or a level of the hierarchy: a name with
// mailboxes below it, such as a parent deleted after its children were
// made, which LIST shows as \Noselect (§6.3.4); its own superiors are
// then levels too. INBOX always exists. gone names mailboxes about to
// leave (the subtree a RENAME moves): they do not count.
func missingParents(names *bbolt.Bucket, name string, gone map[string]bool) []string {
	var out []string
	for p := parentName(name); p != "" && p != Inbox; p = parentName(p) {
		if (names.Get([]byte(p)) != nil && !gone[p]) || hasInferiors(names, p, gone) {
			break
		}
		out = append(out, p)
	}
	slices.Reverse(out)
	return out
}

// hasInferiors says whether a mailbox other than those in gone lies below
// name.
func hasInferiors(names *bbolt.Bucket, name string, gone map[string]bool) bool {
	prefix := []byte(name + Separator)
	c := names.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if !gone[string(k)] {
			return true
		}
	}
	return false
}

// CreateMailbox creates a mailbox (RFC 3501 §6.3.3), unsubscribed, and
// the superiors it lacks ("a" and "a/b" for "a/b/c"), unsubscribed too, as
// §6.3.3 says a server SHOULD: a client browsing the hierarchy level by
// level (LIST "%") then finds the new mailbox. Creating INBOX, in any
// case, is ErrInvalidName; an existing name is ErrExists. The account is
// created if needed.
func (s *Store) CreateMailbox(account, name string) error {
	if err := checkAccount(account); err != nil {
		return err
	}
	n, err := newName(name)
	if err != nil {
		return err
	}
	return s.write(0, func(w *wtx) error {
		if ab := accountBucket(w.tx, account); ab != nil {
			names := ab.Bucket(bucketNames)
			if names.Get([]byte(n)) != nil {
				return fmt.Errorf("store: mailbox %q: %w", n, ErrExists)
			}
			if names.Stats().KeyN+1+len(missingParents(names, n, nil)) > MaxMailboxes {
				return fmt.Errorf("%w: more than %d mailboxes", ErrTooLarge, MaxMailboxes)
			}
		}
		ab, err := ensureAccount(w, account, false)
		if err != nil {
			return err
		}
		w.mark()
		for _, p := range missingParents(ab.Bucket(bucketNames), n, nil) {
			if _, err := createBox(w, account, ab, p, "", false); err != nil {
				return err
			}
		}
		_, err = createBox(w, account, ab, n, "", false)
		return err
	})
}

// DeleteMailbox deletes a mailbox and its entries; the records stay.
// Mailboxes below it stay too (RFC 3501 §6.3.4: DELETE MUST NOT remove
// inferior names): the name then remains only as a level of the
// hierarchy, with no messages, which is what §6.3.4 asks ("the name will
// acquire the \Noselect attribute"; the IMAP layer lists it so). INBOX
// cannot be deleted: ErrMailboxInUse.
func (s *Store) DeleteMailbox(account, name string) error {
	n, err := lookupName(name)
	if err != nil {
		return err
	}
	if n == Inbox {
		return fmt.Errorf("store: INBOX: %w", ErrMailboxInUse)
	}
	return s.write(0, func(w *wtx) error {
		ab, err := openAccount(w.tx, account)
		if err != nil {
			return err
		}
		bx, err := openBox(ab, n)
		if err != nil {
			return err
		}
		w.mark()
		// The entries go with the mailbox: so does their share of the
		// account's usage (quota.go).
		if err := addUsage(ab, -int64(bx.saved.Messages), -bx.saved.Size); err != nil {
			return err
		}
		if err := ab.Bucket(bucketNames).Delete([]byte(n)); err != nil {
			return fmt.Errorf("store: delete mailbox %q: %w", n, err)
		}
		if err := ab.Bucket(bucketBoxes).DeleteBucket(bx.id); err != nil {
			return fmt.Errorf("store: delete mailbox %q: %w", n, err)
		}
		w.changed(account, n)
		return nil
	})
}

// RenameMailbox renames a mailbox and the mailboxes below it ("from/…"),
// keeping UIDVALIDITY and UIDs: the UIDVALIDITY was never used under any
// other name, so RFC 3501 §2.3.1.1 holds. Renaming INBOX moves its
// messages into the new mailbox and leaves INBOX empty, with a new
// UIDVALIDITY; mailboxes below INBOX are unaffected (RFC 3501 §6.3.5).
// Superiors of the new name that are missing are created, as for
// CreateMailbox (§6.3.5 SHOULD).
func (s *Store) RenameMailbox(account, from, to string) error {
	fn, err := lookupName(from)
	if err != nil {
		return err
	}
	tn, err := newName(to)
	if err != nil {
		return err
	}
	return s.write(0, func(w *wtx) error {
		ab, err := openAccount(w.tx, account)
		if err != nil {
			return err
		}
		names := ab.Bucket(bucketNames)
		if names.Get([]byte(fn)) == nil {
			return fmt.Errorf("store: mailbox %q: %w", fn, ErrNotFound)
		}
		if fn == tn || names.Get([]byte(tn)) != nil {
			return fmt.Errorf("store: mailbox %q: %w", tn, ErrExists)
		}
		type move struct {
			from, to string
			id       []byte
		}
		moves := []move{{from: fn, to: tn, id: append([]byte(nil), names.Get([]byte(fn))...)}}
		if fn != Inbox {
			prefix := fn + Separator
			c := names.Cursor()
			for k, v := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
				moves = append(moves, move{from: string(k), to: tn + string(k[len(fn):]), id: append([]byte(nil), v...)})
			}
		}
		sources := map[string]bool{}
		for _, m := range moves {
			sources[m.from] = true
		}
		for _, m := range moves[1:] {
			if len(m.to) > MaxMailboxNameBytes {
				return fmt.Errorf("%w: %q would be longer than %d bytes", ErrInvalidName, m.to, MaxMailboxNameBytes)
			}
			if names.Get([]byte(m.to)) != nil && !sources[m.to] {
				return fmt.Errorf("store: mailbox %q: %w", m.to, ErrExists)
			}
		}
		parents := missingParents(names, tn, sources)
		if names.Stats().KeyN+len(parents) > MaxMailboxes {
			return fmt.Errorf("%w: more than %d mailboxes", ErrTooLarge, MaxMailboxes)
		}
		w.mark()
		for _, m := range moves {
			if err := names.Delete([]byte(m.from)); err != nil {
				return fmt.Errorf("store: rename mailbox: %w", err)
			}
		}
		for _, m := range moves {
			if err := names.Put([]byte(m.to), m.id); err != nil {
				return fmt.Errorf("store: rename mailbox: %w", err)
			}
			w.changed(account, m.from)
			w.changed(account, m.to)
		}
		if fn == Inbox {
			if _, err := createBox(w, account, ab, Inbox, "", true); err != nil {
				return err
			}
		}
		for _, p := range parents {
			if _, err := createBox(w, account, ab, p, "", false); err != nil {
				return err
			}
		}
		return nil
	})
}

// SetSubscribed sets a mailbox's subscription (RFC 3501 §6.3.6, §6.3.7).
// Subscriptions live with the mailbox, so deleting a mailbox forgets it.
func (s *Store) SetSubscribed(account, name string, on bool) error {
	n, err := lookupName(name)
	if err != nil {
		return err
	}
	return s.write(0, func(w *wtx) error {
		ab, err := openAccount(w.tx, account)
		if err != nil {
			return err
		}
		bx, err := openBox(ab, n)
		if err != nil {
			return err
		}
		if bx.info.Subscribed == on {
			return nil
		}
		w.mark()
		bx.info.Subscribed = on
		bx.info.ModSeq++
		if err := bx.save(); err != nil {
			return err
		}
		w.changed(account, n)
		return nil
	})
}

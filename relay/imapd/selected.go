package imapd

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mssrelay/store"
)

// selected is the connection's view of its selected mailbox: the entries
// in sequence-number order as this client last learnt them. The store is
// the truth; sync reconciles the view with it after each command, which is
// how other sessions' changes (new mail, flags, expunges) reach the client.
type selected struct {
	name        string
	readOnly    bool
	uidValidity uint32
	uidNext     uint32
	modSeq      uint64
	entries     []store.Entry // sorted by UID; index i is sequence number i+1
	// shared: entries is a snapshot other sessions hold too
	// (Service.mailboxEntries); own copies it before any change.
	shared bool
}

// own gives the view its own copy of the entries before it changes them.
func (sel *selected) own() {
	if sel.shared {
		sel.entries = slices.Clone(sel.entries)
		sel.shared = false
	}
}

var errReadOnly = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Mailbox is read-only (EXAMINE)"}

// sync reports changes since the view was taken (RFC 3501 §7.4.1, §5.2).
// During FETCH, STORE and SEARCH expunges must not be sent (RFC 3501 §7.4.1):
// expunged entries then stay in the view (their records still exist) until
// a later command may report them.
func (sel *selected) sync(s *session, w *imapserver.UpdateWriter, allowExpunge bool) error {
	info, err := s.store().Mailbox(s.account.Address, sel.name)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted or renamed by another session; commands will say so
	} else if err != nil {
		return s.bug(err)
	}
	if info.ModSeq == sel.modSeq {
		return nil
	}
	info, current, err := s.svc.mailboxEntries(s.store(), s.account.Address, sel.name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return s.bug(err)
	}
	if info.UIDValidity != sel.uidValidity {
		// The mailbox was deleted and recreated under the same name; the
		// client's UIDs mean nothing now. RFC 3501 §2.3.1.1 says the
		// client must resync; closing the session forces it to.
		return &imap.Error{Type: imap.StatusResponseTypeBye, Text: "Mailbox UIDVALIDITY changed, please reconnect"}
	}

	byUID := make(map[uint32]*store.Entry, len(current))
	for i := range current {
		byUID[current[i].UID] = &current[i]
	}
	pending := false
	kept := sel.entries[:0:0]
	for _, e := range sel.entries {
		if _, ok := byUID[e.UID]; !ok {
			if allowExpunge {
				// Sequence numbers shift as each EXPUNGE is applied.
				if err := w.WriteExpunge(uint32(len(kept) + 1)); err != nil {
					return err
				}
				continue
			}
			pending = true
		}
		kept = append(kept, e)
	}
	sel.entries = kept

	var last uint32
	if n := len(sel.entries); n > 0 {
		last = sel.entries[n-1].UID
	}
	added := false
	for _, e := range current {
		if e.UID > last {
			sel.entries = append(sel.entries, e)
			added = true
		}
	}
	if added {
		if err := w.WriteNumMessages(uint32(len(sel.entries))); err != nil {
			return err
		}
	}
	for i := range sel.entries {
		cur, ok := byUID[sel.entries[i].UID]
		if !ok || sameFlags(cur.Flags, sel.entries[i].Flags) {
			continue
		}
		sel.entries[i].Flags = cur.Flags
		if err := w.WriteMessageFlags(uint32(i+1), imap.UID(cur.UID), toFlags(cur.Flags)); err != nil {
			return err
		}
	}
	sel.uidNext = info.UIDNext
	if !pending {
		sel.modSeq = info.ModSeq
		// The view now holds exactly the mailbox's entries (every UID
		// of current, in order, with current flags; dates, sizes and
		// records never change under a UID): share the snapshot
		// instead of keeping a copy per session.
		sel.entries, sel.shared = current, true
	} else {
		sel.shared = false
	}
	return nil
}

func sameFlags(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// resolve turns a sequence or UID set into indexes of the view, ascending.
// "*" is the last message (RFC 3501 §6.4.8; for UIDs, the highest UID in
// use, and "n:*" always includes it even when n is greater).
func (sel *selected) resolve(numSet imap.NumSet) []int {
	// Contains binary-searches the set, which must stay sorted: once "*"
	// is replaced by the maximum, "7,*" with 4 messages reads "7,4", so
	// the static set is rebuilt through AddRange, which sorts and merges.
	var out []int
	switch set := numSet.(type) {
	case imap.SeqSet:
		max := uint32(len(sel.entries))
		var static imap.SeqSet
		for _, r := range set {
			static.AddRange(staticRange(r.Start, r.Stop, max))
		}
		for i := range sel.entries {
			if static.Contains(uint32(i + 1)) {
				out = append(out, i)
			}
		}
	case imap.UIDSet:
		if imap.IsSearchRes(set) {
			return nil // SEARCHRES is not advertised
		}
		var max uint32
		if n := len(sel.entries); n > 0 {
			max = sel.entries[n-1].UID
		}
		var static imap.UIDSet
		for _, r := range set {
			start, stop := staticRange(uint32(r.Start), uint32(r.Stop), max)
			static.AddRange(imap.UID(start), imap.UID(stop))
		}
		for i, e := range sel.entries {
			if static.Contains(imap.UID(e.UID)) {
				out = append(out, i)
			}
		}
	}
	return out
}

// staticRange replaces "*" (0) by max. An empty mailbox has no "*": the
// range becomes 0:0, which contains nothing.
func staticRange(start, stop, max uint32) (uint32, uint32) {
	if start == 0 {
		start = max
	}
	if stop == 0 {
		stop = max
	}
	if start > stop {
		start, stop = stop, start
	}
	return start, stop
}

func (sel *selected) uids(idx []int) []uint32 {
	out := make([]uint32, len(idx))
	for i, j := range idx {
		out[i] = sel.entries[j].UID
	}
	return out
}

// recordError answers a FETCH whose record is gone: the retention purge
// removed it while this session's view still listed the entry (expunges
// are held back during FETCH, RFC 3501 §7.4.1). That is not a server bug:
// RFC 5530 §3 EXPUNGEISSUED tells the client to expect the EXPUNGE.
func (s *session) recordError(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "EXPUNGEISSUED", Text: "Message was removed (retention period over)"}
	}
	return s.bug(err)
}

// Fetch implements imapserver.Session.
func (s *session) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	sel, err := s.view()
	if err != nil {
		return err
	}
	idx := sel.resolve(numSet)
	if len(idx) > 0 && (len(options.BodySection) > 0 || len(options.BinarySection) > 0) {
		// Who read which prescriptions: one record per FETCH of contents.
		s.audit(store.AuditIMAPFetch, s.account.Address, fmt.Sprintf("mbox=%s uids=%s", sel.name, uidSet(sel.uids(idx))), "OK", "")
		if f := s.svc.cfg.Fetched; f != nil {
			ids := make([]uint64, len(idx))
			for k, i := range idx {
				ids[k] = sel.entries[i].RecordID
			}
			f(s.account.Address, ids)
		}
	}
	setSeen := !sel.readOnly && fetchSetsSeen(options)
	if setSeen {
		sel.own()
	}
	for _, i := range idx {
		e := &sel.entries[i]
		flagsChanged := false
		if setSeen && !hasFlag(e.Flags, string(imap.FlagSeen)) {
			// RFC 3501 §6.4.5: BODY[] (not PEEK) sets \Seen, and the
			// new flags should be returned with the data.
			upd, err := s.store().UpdateFlags(s.account.Address, sel.name, []uint32{e.UID}, store.FlagsAdd, []string{string(imap.FlagSeen)})
			if err != nil {
				return s.viewError(err)
			}
			if len(upd) == 1 {
				e.Flags = upd[0].Flags
				flagsChanged = true
			}
		}
		if err := s.fetchOne(w, uint32(i+1), e, options, flagsChanged); err != nil {
			return err
		}
	}
	return nil
}

func fetchSetsSeen(o *imap.FetchOptions) bool {
	for _, bs := range o.BodySection {
		if !bs.Peek {
			return true
		}
	}
	for _, bs := range o.BinarySection {
		if !bs.Peek {
			return true
		}
	}
	return false
}

func (s *session) fetchOne(w *imapserver.FetchWriter, seq uint32, e *store.Entry, o *imap.FetchOptions, flagsChanged bool) error {
	var raw []byte
	loadRaw := func() ([]byte, error) {
		if raw == nil {
			b, err := s.store().Bytes(e.RecordID)
			if err != nil {
				return nil, err
			}
			raw = b
		}
		return raw, nil
	}
	var env *imap.Envelope
	var bs imap.BodyStructure
	if o.Envelope || o.BodyStructure != nil {
		m, err := s.store().Meta(e.RecordID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return s.bug(err)
		}
		var ok bool
		env, bs, ok = decodeMeta(m)
		if !ok {
			b, err := loadRaw()
			if err != nil {
				return s.recordError(err)
			}
			env, bs, _ = decodeMeta(ComputeMeta(b))
		}
	}

	m := w.CreateMessage(seq)
	// Close is mandatory: it releases the connection's write lock.
	defer m.Close()
	if o.UID {
		m.WriteUID(imap.UID(e.UID))
	}
	if o.Flags || flagsChanged {
		m.WriteFlags(toFlags(e.Flags))
	}
	if o.InternalDate {
		m.WriteInternalDate(e.InternalDate)
	}
	if o.RFC822Size {
		m.WriteRFC822Size(e.Size)
	}
	if o.Envelope && env != nil {
		m.WriteEnvelope(env)
	}
	if o.BodyStructure != nil && bs != nil {
		m.WriteBodyStructure(bs)
	}
	for _, sec := range o.BodySection {
		b, err := loadRaw()
		if err != nil {
			return s.recordError(err)
		}
		if err := writeLiteral(m.WriteBodySection(sec, int64(len(bodySection(b, sec)))), bodySection(b, sec)); err != nil {
			return err
		}
	}
	for _, sec := range o.BinarySection {
		b, err := loadRaw()
		if err != nil {
			return s.recordError(err)
		}
		data := imapserver.ExtractBinarySection(bytes.NewReader(b), sec)
		if err := writeLiteral(m.WriteBinarySection(sec, int64(len(data))), data); err != nil {
			return err
		}
	}
	for _, sec := range o.BinarySectionSize {
		b, err := loadRaw()
		if err != nil {
			return s.recordError(err)
		}
		m.WriteBinarySectionSize(sec, imapserver.ExtractBinarySectionSize(bytes.NewReader(b), sec))
	}
	return nil
}

func writeLiteral(wc interface {
	Write([]byte) (int, error)
	Close() error
}, data []byte) error {
	if _, err := wc.Write(data); err != nil {
		wc.Close()
		return err
	}
	return wc.Close()
}

// bodySection serves the whole message, its header and its text straight
// from the stored bytes, so that BODY[] is byte for byte what was received
// and still verifies; deeper sections go through go-imap's extraction.
func bodySection(raw []byte, sec *imap.FetchItemBodySection) []byte {
	if len(sec.Part) == 0 && len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0 {
		hdrEnd := headerEnd(raw)
		var b []byte
		switch sec.Specifier {
		case imap.PartSpecifierNone:
			b = raw
		case imap.PartSpecifierHeader:
			b = raw[:hdrEnd]
		case imap.PartSpecifierText:
			b = raw[hdrEnd:]
		default:
			b = imapserver.ExtractBodySection(bytes.NewReader(raw), sec)
			return b
		}
		return partial(b, sec.Partial)
	}
	return imapserver.ExtractBodySection(bytes.NewReader(raw), sec)
}

// headerEnd returns the offset just past the blank line ending the header.
// A message may have no header fields at all (RFC 5322 §2.1): it then
// starts with the blank line, and a blank line in its body is not the end
// of a header.
func headerEnd(raw []byte) int {
	if bytes.HasPrefix(raw, []byte("\r\n")) {
		return 2
	}
	if bytes.HasPrefix(raw, []byte("\n")) {
		return 1
	}
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	if i := bytes.Index(raw, []byte("\n\n")); i >= 0 {
		return i + 2
	}
	return len(raw)
}

func partial(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset >= int64(len(b)) {
		return nil
	}
	end := p.Offset + p.Size
	if end > int64(len(b)) {
		end = int64(len(b))
	}
	return b[p.Offset:end]
}

// Store implements imapserver.Session.
func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	sel, err := s.view()
	if err != nil {
		return err
	}
	if sel.readOnly {
		// go-imap does not enforce EXAMINE's read-only state (LIBRARY-NOTES.md).
		return errReadOnly
	}
	idx := sel.resolve(numSet)
	if len(idx) == 0 {
		return nil
	}
	op := map[imap.StoreFlagsOp]store.FlagOp{
		imap.StoreFlagsSet: store.FlagsSet,
		imap.StoreFlagsAdd: store.FlagsAdd,
		imap.StoreFlagsDel: store.FlagsRemove,
	}[flags.Op]
	upd, err := s.store().UpdateFlags(s.account.Address, sel.name, sel.uids(idx), op, flagStrings(flags.Flags))
	if err != nil {
		return s.viewError(err)
	}
	s.audit(store.AuditIMAPFlags, s.account.Address, fmt.Sprintf("mbox=%s uids=%s", sel.name, uidSet(sel.uids(idx))),
		"OK", fmt.Sprintf("%s %v", [...]string{"FLAGS", "+FLAGS", "-FLAGS"}[flags.Op], flagStrings(flags.Flags)))
	byUID := make(map[uint32][]string, len(upd))
	for _, e := range upd {
		byUID[e.UID] = e.Flags
	}
	sel.own()
	for _, i := range idx {
		e := &sel.entries[i]
		f, ok := byUID[e.UID]
		if !ok {
			continue // expunged meanwhile by another session
		}
		e.Flags = f
		if flags.Silent {
			continue
		}
		m := w.CreateMessage(uint32(i + 1))
		m.WriteUID(imap.UID(e.UID))
		m.WriteFlags(toFlags(e.Flags))
		if err := m.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Expunge implements imapserver.Session (EXPUNGE, UID EXPUNGE, CLOSE).
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	sel, err := s.view()
	if err != nil {
		return err
	}
	if sel.readOnly {
		// RFC 3501 §6.4.2: CLOSE under EXAMINE removes nothing and is no
		// error. go-imap runs CLOSE as Expunge with a writer that has no
		// connection (it discards, §6.4.2 sends no EXPUNGE): only that
		// zero writer tells CLOSE from EXPUNGE, which stays refused.
		if w == nil || *w == (imapserver.ExpungeWriter{}) {
			return nil
		}
		return errReadOnly
	}
	var only []uint32
	if uids != nil {
		only = sel.uids(sel.resolve(*uids))
		if len(only) == 0 {
			return nil
		}
	}
	removed, err := s.store().Expunge(s.account.Address, sel.name, only)
	if err != nil {
		return s.viewError(err)
	}
	if len(removed) > 0 {
		s.audit(store.AuditIMAPExpunge, s.account.Address, fmt.Sprintf("mbox=%s uids=%s", sel.name, uidSet(removed)), "OK", "")
	}
	return sel.dropUIDs(removed, w.WriteExpunge)
}

// dropUIDs removes entries from the view, reporting each one's sequence
// number at the moment it goes (RFC 3501 §7.4.1).
func (sel *selected) dropUIDs(removed []uint32, report func(uint32) error) error {
	gone := make(map[uint32]bool, len(removed))
	for _, u := range removed {
		gone[u] = true
	}
	sel.own() // kept reuses the array
	kept := sel.entries[:0]
	for _, e := range sel.entries {
		if gone[e.UID] {
			if err := report(uint32(len(kept) + 1)); err != nil {
				return err
			}
			continue
		}
		kept = append(kept, e)
	}
	sel.entries = kept
	return nil
}

// Search implements imapserver.Session.
func (s *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	sel, err := s.view()
	if err != nil {
		return nil, err
	}
	var hits []int
	for i := range sel.entries {
		ok, err := s.matches(i, criteria, &lazyMsg{s: s, e: &sel.entries[i]})
		if err != nil {
			return nil, s.bug(err)
		}
		if ok {
			hits = append(hits, i)
		}
	}
	data := &imap.SearchData{Count: uint32(len(hits))}
	nums := make([]uint32, len(hits))
	for j, i := range hits {
		if kind == imapserver.NumKindUID {
			nums[j] = sel.entries[i].UID
		} else {
			nums[j] = uint32(i + 1)
		}
	}
	if len(nums) > 0 {
		data.Min, data.Max = nums[0], nums[len(nums)-1]
	}
	if kind == imapserver.NumKindUID {
		var set imap.UIDSet
		for _, n := range nums {
			set.AddNum(imap.UID(n))
		}
		data.All = set
	} else {
		var set imap.SeqSet
		set.AddNum(nums...)
		data.All = set
	}
	return data, nil
}

// lazyMsg loads a message's bytes only when a criterion needs them.
type lazyMsg struct {
	s   *session
	e   *store.Entry
	raw []byte
	err error
	env *imap.Envelope

	decoded            bool // decHeader and decBody computed
	decHeader, decBody []byte
}

func (l *lazyMsg) decode(raw []byte) {
	if !l.decoded {
		l.decHeader, l.decBody = decodedText(raw)
		l.decoded = true
	}
}

func (l *lazyMsg) decodedHeader(raw []byte) []byte { l.decode(raw); return l.decHeader }
func (l *lazyMsg) decodedBody(raw []byte) []byte   { l.decode(raw); return l.decBody }

func (l *lazyMsg) bytes() ([]byte, error) {
	if l.raw == nil && l.err == nil {
		l.raw, l.err = l.s.store().Bytes(l.e.RecordID)
	}
	return l.raw, l.err
}

func (l *lazyMsg) envelope() *imap.Envelope {
	if l.env == nil {
		m, _ := l.s.store().Meta(l.e.RecordID)
		env, _, ok := decodeMeta(m)
		if !ok {
			env = &imap.Envelope{}
		}
		l.env = env
	}
	return l.env
}

// matches evaluates RFC 3501 §6.4.4 search keys against one message.
func (s *session) matches(i int, c *imap.SearchCriteria, m *lazyMsg) (bool, error) {
	sel := s.sel
	e := m.e
	for _, set := range c.SeqNum {
		if !containsIdx(sel.resolve(set), i) {
			return false, nil
		}
	}
	for _, set := range c.UID {
		if !containsIdx(sel.resolve(set), i) {
			return false, nil
		}
	}
	// Dates compare by day only, ignoring time and zone (RFC 3501 §6.4.4).
	if !c.Since.IsZero() && day(e.InternalDate).Before(day(c.Since)) {
		return false, nil
	}
	if !c.Before.IsZero() && !day(e.InternalDate).Before(day(c.Before)) {
		return false, nil
	}
	if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		sent := m.envelope().Date
		if sent.IsZero() || (!c.SentSince.IsZero() && day(sent).Before(day(c.SentSince))) ||
			(!c.SentBefore.IsZero() && !day(sent).Before(day(c.SentBefore))) {
			return false, nil
		}
	}
	for _, f := range c.Flag {
		if !hasFlag(e.Flags, string(f)) {
			return false, nil
		}
	}
	for _, f := range c.NotFlag {
		if hasFlag(e.Flags, string(f)) {
			return false, nil
		}
	}
	if c.Larger > 0 && e.Size <= c.Larger {
		return false, nil
	}
	if c.Smaller > 0 && e.Size >= c.Smaller {
		return false, nil
	}
	if len(c.Header) > 0 || len(c.Body) > 0 || len(c.Text) > 0 {
		raw, err := m.bytes()
		if err != nil {
			return false, err
		}
		he := headerEnd(raw)
		for _, h := range c.Header {
			if !headerContains(raw[:he], h.Key, h.Value) {
				return false, nil
			}
		}
		for _, b := range c.Body {
			if !containsFold(raw[he:], b) && !containsFold(m.decodedBody(raw), b) {
				return false, nil
			}
		}
		for _, t := range c.Text {
			if !containsFold(raw, t) && !containsFold(m.decodedHeader(raw), t) && !containsFold(m.decodedBody(raw), t) {
				return false, nil
			}
		}
	}
	for j := range c.Not {
		ok, err := s.matches(i, &c.Not[j], m)
		if err != nil || ok {
			return false, err
		}
	}
	for _, or := range c.Or {
		a, err := s.matches(i, &or[0], m)
		if err != nil {
			return false, err
		}
		if !a {
			b, err := s.matches(i, &or[1], m)
			if err != nil || !b {
				return false, err
			}
		}
	}
	return true, nil
}

func containsIdx(sorted []int, i int) bool {
	j := sort.SearchInts(sorted, i)
	return j < len(sorted) && sorted[j] == i
}

func day(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// containsFold is a case-insensitive substring test (RFC 3501 §6.4.4).
func containsFold(hay []byte, needle string) bool {
	return bytes.Contains(bytes.ToLower(hay), bytes.ToLower([]byte(needle)))
}

// headerContains reports whether a field named key contains value (any
// value when value is empty), over unfolded field values.
func headerContains(header []byte, key, value string) bool {
	lines := strings.Split(strings.ReplaceAll(string(header), "\r\n", "\n"), "\n")
	var fields []string
	for _, l := range lines {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += " " + strings.TrimSpace(l)
			continue
		}
		fields = append(fields, l)
	}
	for _, f := range fields {
		name, v, ok := strings.Cut(f, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), key) {
			continue
		}
		if value == "" || strings.Contains(strings.ToLower(v), strings.ToLower(value)) ||
			strings.Contains(strings.ToLower(decodeWords(v)), strings.ToLower(value)) {
			return true
		}
	}
	return false
}

// Copy implements imapserver.Session (RFC 4315 COPYUID in the reply).
func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	sel, err := s.view()
	if err != nil {
		return nil, err
	}
	idx := sel.resolve(numSet)
	if len(idx) == 0 {
		return nil, nil
	}
	uv, src, dst, err := s.store().Copy(s.account.Address, sel.name, sel.uids(idx), dest)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			// As for MOVE: TRYCREATE only when the destination is what is
			// missing, not the selected mailbox another session deleted
			// (creating dest would not help).
			if _, serr := s.store().Mailbox(s.account.Address, sel.name); errors.Is(serr, store.ErrNotFound) {
				return nil, s.viewError(serr)
			}
			return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
		}
		return nil, s.mailboxError(err)
	}
	if len(src) == 0 {
		// Every message asked for was expunged by another session and
		// this client has not been told yet (RFC 3501 §7.4.1): nothing
		// was copied, and a COPYUID with empty sets cannot be written
		// (RFC 4315 §3 needs a non-empty uid-set). RFC 5530 §3 names
		// this case.
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: "EXPUNGEISSUED", Text: "The messages were expunged by another session"}
	}
	return &imap.CopyData{UIDValidity: uv, SourceUIDs: uidSet(src), DestUIDs: uidSet(dst)}, nil
}

// Move implements imapserver.SessionMove (RFC 6851): the store moves the
// entries in one transaction, so a crash leaves them in one mailbox or the
// other, never both or neither, and a MOVE is never over quota (the
// account holds as much after as before).
func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	sel, err := s.view()
	if err != nil {
		return err
	}
	if sel.readOnly {
		return errReadOnly
	}
	idx := sel.resolve(numSet)
	if len(idx) == 0 {
		return nil
	}
	uv, src, dst, err := s.store().Move(s.account.Address, sel.name, sel.uids(idx), dest)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			if _, serr := s.store().Mailbox(s.account.Address, sel.name); errors.Is(serr, store.ErrNotFound) {
				return s.viewError(serr) // the selected mailbox went away
			}
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
		}
		return s.mailboxError(err)
	}
	if len(src) == 0 {
		// As for COPY: every message asked for was expunged by another
		// session (RFC 5530 §3 EXPUNGEISSUED).
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "EXPUNGEISSUED", Text: "The messages were expunged by another session"}
	}
	if err := w.WriteCopyData(&imap.CopyData{UIDValidity: uv, SourceUIDs: uidSet(src), DestUIDs: uidSet(dst)}); err != nil {
		return err
	}
	return sel.dropUIDs(src, w.WriteExpunge)
}

func uidSet(uids []uint32) imap.UIDSet {
	var set imap.UIDSet
	for _, u := range uids {
		set.AddNum(imap.UID(u))
	}
	return set
}

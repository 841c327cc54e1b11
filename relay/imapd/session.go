package imapd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay/auth"
	"mssrelay/relay/metrics"
	"mssrelay/store"
)

// hierarchy delimiter of every account's namespace.
const delim = '/'

// session is one IMAP connection. go-imap calls its methods one at a time,
// except Idle, which runs while the library waits for DONE and is the only
// method running then.
type session struct {
	svc     *Service
	conn    *imapserver.Conn
	remote  string // client ip:port, for the audit trail
	log     *slog.Logger
	account *configs.Account
	sel     *selected
	// counted: this session holds one of its account's session slots
	// (Service.acquire), released by Close.
	counted bool

	// Hostile-client bounds (guard): errs counts the failed commands
	// since the last successful one, closing is set once the session has
	// been told BYE. Both are only touched from go-imap's goroutine for
	// the connection.
	errs    int
	closing bool
	// loggedIn is read by loginTimer's goroutine, hence atomic.
	loggedIn   atomic.Bool
	loginTimer *time.Timer
}

var (
	_ imapserver.Session            = (*session)(nil)
	_ imapserver.SessionMove        = (*session)(nil)
	_ imapserver.SessionNamespace   = (*session)(nil)
	_ imapserver.SessionAppendLimit = (*session)(nil)

	// What go-imap is handed: the same interfaces, through the guard.
	_ imapserver.SessionMove        = (*guard)(nil)
	_ imapserver.SessionNamespace   = (*guard)(nil)
	_ imapserver.SessionAppendLimit = (*guard)(nil)
)

// Close implements imapserver.Session.
func (s *session) Close() error {
	// go-imap calls Close once, when the connection ends for any reason
	// (LOGOUT, a dropped connection, a timeout, shutdown).
	s.loginTimer.Stop()
	if s.counted {
		s.svc.release(s.account.Address)
		s.counted = false
	}
	s.svc.forget(s.conn)
	return nil
}

// Login implements imapserver.Session; AUTHENTICATE PLAIN also lands here.
// The library refuses both before TLS (InsecureAuth is false).
func (s *session) Login(username, password string) error {
	acct, err := s.svc.cfg.Auth.Authenticate(username, password, auth.RemoteIP(s.conn.NetConn().RemoteAddr()))
	if err != nil {
		s.svc.cfg.Metrics.AuthFailed(metrics.IMAP) // metrics: lockouts and bad credentials
	}
	if errors.Is(err, auth.ErrLockedOut) {
		s.log.Warn("imap login refused: address locked out", "user", username)
		s.audit(store.AuditAuthFail, username, "proto=imap", "NO [UNAVAILABLE]", "address locked out")
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Too many failed logins from your address, try again later"}
	}
	if err != nil {
		s.log.Info("imap login failed", "user", username)
		s.audit(store.AuditAuthFail, username, "proto=imap", "NO [AUTHENTICATIONFAILED]", "")
		return imapserver.ErrAuthFailed
	}
	// Right credentials, but the account has all the sessions it may
	// have: RFC 5530 §3 LIMIT ("too many sessions"). Checked after the
	// password, so that only the account's owner learns of it.
	if !s.svc.acquire(acct.Address) {
		s.log.Warn("imap login refused: too many sessions for the account", "user", acct.Address, "limit", s.svc.cfg.MaxSessionsPerAccount)
		s.audit(store.AuditAuthFail, acct.Address, "proto=imap", "NO [LIMIT]", "too many sessions")
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
			Text: fmt.Sprintf("Too many sessions for this account (at most %d): close another mail client or try again later", s.svc.cfg.MaxSessionsPerAccount)}
	}
	if err := s.svc.cfg.Store.EnsureAccount(acct.Address); err != nil {
		s.svc.release(acct.Address)
		s.log.Error("imap ensure account", "err", err)
		return s.bug(err)
	}
	s.counted = true
	s.loggedIn.Store(true)
	s.loginTimer.Stop()
	s.account = acct
	s.log = s.log.With("account", acct.Address)
	s.log.Info("imap login ok")
	s.audit(store.AuditAuthOK, acct.Address, "proto=imap", "OK", "")
	return nil
}

// audit records an event (nil hook: not audited).
func (s *session) audit(kind, actor, subject, outcome, detail string) {
	if s.svc.cfg.Audit == nil {
		return
	}
	s.svc.cfg.Audit(store.AuditEvent{Kind: kind, Actor: actor, Remote: s.remote, Subject: subject, Outcome: outcome, Detail: detail})
}

func (s *session) store() *store.Store { return s.svc.cfg.Store }

// Namespace implements imapserver.SessionNamespace (RFC 2342): one personal
// namespace, no shared or other users' namespaces.
func (s *session) Namespace() (*imap.NamespaceData, error) {
	return &imap.NamespaceData{Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: delim}}}, nil
}

// AppendLimit implements imapserver.SessionAppendLimit (RFC 7889).
func (s *session) AppendLimit() uint32 { return s.svc.cfg.MaxAppend }

// Select implements imapserver.Session (SELECT and EXAMINE).
func (s *session) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	// RFC 3501 §6.3.1: a SELECT deselects the current mailbox first, even
	// if the new one fails.
	s.sel = nil
	info, entries, err := s.svc.mailboxEntries(s.store(), s.account.Address, name)
	if err != nil {
		return nil, s.mailboxError(err)
	}
	sel := &selected{
		name:        info.Name,
		readOnly:    options != nil && options.ReadOnly,
		uidValidity: info.UIDValidity,
		uidNext:     info.UIDNext,
		modSeq:      info.ModSeq,
		entries:     entries,
		shared:      true,
	}
	s.sel = sel

	flags := mailboxFlags(entries)
	data := &imap.SelectData{
		Flags:       flags,
		NumMessages: uint32(len(entries)),
		UIDNext:     imap.UID(info.UIDNext),
		UIDValidity: info.UIDValidity,
	}
	if !sel.readOnly {
		// RFC 3501 §7.1: \* says the client may create new keywords.
		data.PermanentFlags = append(append([]imap.Flag(nil), flags...), imap.FlagWildcard)
	} else {
		data.PermanentFlags = []imap.Flag{}
	}
	for i, e := range entries {
		if !hasFlag(e.Flags, string(imap.FlagSeen)) {
			data.FirstUnseenSeqNum = uint32(i + 1)
			break
		}
	}
	return data, nil
}

// mailboxFlags is the FLAGS response: the system flags plus the keywords
// in use in the mailbox (RFC 3501 §7.2.6).
func mailboxFlags(entries []store.Entry) []imap.Flag {
	flags := []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft}
	seen := map[string]bool{}
	for _, f := range flags {
		seen[strings.ToLower(string(f))] = true
	}
	for _, e := range entries {
		for _, f := range e.Flags {
			if k := strings.ToLower(f); !seen[k] {
				seen[k] = true
				flags = append(flags, imap.Flag(f))
			}
		}
	}
	return flags
}

// Unselect implements imapserver.Session (UNSELECT, and CLOSE after the
// library's implicit expunge).
func (s *session) Unselect() error {
	s.sel = nil
	return nil
}

// Create implements imapserver.Session.
func (s *session) Create(name string, _ *imap.CreateOptions) error {
	// RFC 3501 §6.3.3: a trailing delimiter only says the client intends
	// to create children; the name itself is without it.
	name = strings.TrimSuffix(name, string(delim))
	return s.mailboxError(s.store().CreateMailbox(s.account.Address, name))
}

// Delete implements imapserver.Session. A mailbox with inferiors is
// deleted with its messages and stays as a level of the hierarchy, listed
// \Noselect (RFC 3501 §6.3.4; see listData); deleting such a level again
// is the error §6.3.4 names.
func (s *session) Delete(name string) error {
	if err := s.store().DeleteMailbox(s.account.Address, name); err != nil {
		if errors.Is(err, store.ErrNotFound) && s.hasInferiors(name) {
			// RFC 3501 §6.3.4: "It is an error to attempt to delete a
			// name that has inferior hierarchical names and also has the
			// \Noselect mailbox name attribute". HASCHILDREN is RFC 9051
			// §7.1's code for it.
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeHasChildren,
				Text: "Not a mailbox, only a level above other mailboxes: delete them first"}
		}
		return s.mailboxError(err)
	}
	// RFC 3501 does not forbid deleting the selected mailbox. go-imap
	// still thinks it is selected: the commands that need it answer
	// NONEXISTENT (see view) until the client selects another one.
	if s.sel != nil && s.sel.name == canonInbox(name) {
		s.sel = nil
	}
	return nil
}

// Rename implements imapserver.Session.
func (s *session) Rename(from, to string, _ *imap.RenameOptions) error {
	if err := s.store().RenameMailbox(s.account.Address, from, to); err != nil {
		return s.mailboxError(err)
	}
	// The selected mailbox (or one of its parents) was renamed by this
	// session: follow it, since its UIDVALIDITY and UIDs went with the
	// name (for INBOX, its messages did: RFC 3501 §6.3.5). Otherwise
	// every later STORE or EXPUNGE would address a name that is gone.
	if s.sel != nil {
		if n, ok := renamedTo(s.sel.name, canonInbox(from), canonInbox(to)); ok {
			s.sel.name = n
		}
	}
	return nil
}

// hasInferiors says whether the account has mailboxes below name. A store
// failure counts as none: the caller is answering another error already.
func (s *session) hasInferiors(name string) bool {
	boxes, err := s.store().Mailboxes(s.account.Address)
	if err != nil {
		return false
	}
	prefix := canonInbox(name) + string(delim)
	for _, b := range boxes {
		if strings.HasPrefix(b.Name, prefix) {
			return true
		}
	}
	return false
}

// canonInbox spells INBOX, case-insensitive as the first component of a
// name (RFC 3501 §5.1), as the store does.
func canonInbox(name string) string {
	first, rest, hasRest := strings.Cut(name, string(delim))
	if !strings.EqualFold(first, "INBOX") {
		return name
	}
	if hasRest {
		return "INBOX" + string(delim) + rest
	}
	return "INBOX"
}

// renamedTo is the new name of mailbox after RENAME from to: mailboxes
// below from move with it, except below INBOX (RFC 3501 §6.3.5).
func renamedTo(mailbox, from, to string) (string, bool) {
	if mailbox == from {
		return to, true
	}
	if from != "INBOX" && strings.HasPrefix(mailbox, from+string(delim)) {
		return to + mailbox[len(from):], true
	}
	return "", false
}

// Subscribe implements imapserver.Session.
func (s *session) Subscribe(name string) error {
	return s.mailboxError(s.store().SetSubscribed(s.account.Address, name, true))
}

// Unsubscribe implements imapserver.Session.
func (s *session) Unsubscribe(name string) error {
	return s.mailboxError(s.store().SetSubscribed(s.account.Address, name, false))
}

// List implements imapserver.Session: LIST, LSUB, LIST-EXTENDED (RFC
// 5258), LIST-STATUS (RFC 5819), SPECIAL-USE (RFC 6154), CHILDREN (RFC 3348).
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if options == nil {
		options = &imap.ListOptions{}
	}
	// RFC 3501 §6.3.8: an empty pattern asks for the delimiter and root
	// (clients such as Thunderbird learn the delimiter this way). go-imap
	// drops empty patterns from LIST, so LIST "" "" arrives with none;
	// LSUB passes its pattern through.
	if len(patterns) == 0 || (len(patterns) == 1 && patterns[0] == "") {
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: delim})
	}
	boxes, err := s.store().Mailboxes(s.account.Address)
	if err != nil {
		return s.bug(err)
	}
	for _, d := range listData(boxes, ref, patterns, options) {
		if err := w.WriteList(d); err != nil {
			return err
		}
	}
	return nil
}

// listData answers LIST over an account's mailboxes, in name order.
//
// Besides the mailboxes it returns the levels of the hierarchy that are
// not mailboxes: "P" when only "P/C" exists (a parent deleted after its
// children were made, RFC 3501 §6.3.4, or a mailbox created before CREATE
// made the superiors). RFC 3501 §6.3.8 wants them when a "%" stops at
// them ("matching levels of hierarchy are also returned ... with the
// \Noselect mailbox name attribute"), or a client browsing level by level
// never reaches "P/C". RFC 5258 §3 (\NonExistent) says when, generally: a
// level is returned only if a mailbox below it matches the selection
// criteria but no pattern, so that "*", which shows "P/C" itself, does
// not return "P" (RFC 5258 §5, example 10). Such a level has
// \HasChildren and \Noselect, or \NonExistent (which implies it) for a
// client using LIST-EXTENDED, as Dovecot does: a client that knows only
// RFC 3501 learns \Noselect.
func listData(boxes []store.MailboxInfo, ref string, patterns []string, options *imap.ListOptions) []*imap.ListData {
	extended := *options != (imap.ListOptions{})
	exists := make(map[string]bool, len(boxes))
	for _, b := range boxes {
		exists[b.Name] = true
	}
	children := map[string]bool{}
	subscribedChild := map[string]bool{}
	// below lists, for each level that is not a mailbox, the mailboxes
	// under it.
	below := map[string][]*store.MailboxInfo{}
	for i := range boxes {
		b := &boxes[i]
		for p := parent(b.Name); p != ""; p = parent(p) {
			children[p] = true
			if b.Subscribed {
				subscribedChild[p] = true
			}
			if !exists[p] {
				below[p] = append(below[p], b)
			}
		}
	}
	names := make([]string, 0, len(boxes)+len(below))
	byName := make(map[string]*store.MailboxInfo, len(boxes))
	for i := range boxes {
		names = append(names, boxes[i].Name)
		byName[boxes[i].Name] = &boxes[i]
	}
	for p := range below {
		names = append(names, p)
	}
	sort.Strings(names) // bytewise, as the store lists them

	var out []*imap.ListData
	for _, name := range names {
		if !matchAny(name, ref, patterns) {
			continue
		}
		b := byName[name]
		if b == nil {
			if d := levelData(name, below[name], ref, patterns, options, extended); d != nil {
				out = append(out, d)
			}
			continue
		}
		data := &imap.ListData{Delim: delim, Mailbox: b.Name}
		if options.SelectSubscribed && !b.Subscribed {
			// RFC 5258 §3.5: with RECURSIVEMATCH, a parent of subscribed
			// mailboxes is returned with CHILDINFO even if not subscribed.
			if !(options.SelectRecursiveMatch && subscribedChild[b.Name]) {
				continue
			}
			data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		if options.SelectSpecialUse && b.SpecialUse == "" {
			continue
		}
		if children[b.Name] {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if b.SpecialUse != "" {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(b.SpecialUse))
		}
		if b.Subscribed && (options.ReturnSubscribed || options.SelectSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if options.ReturnStatus != nil {
			data.Status = statusData(b, options.ReturnStatus)
		}
		out = append(out, data)
	}
	return out
}

// levelData is the LIST answer for a level of the hierarchy that is not a
// mailbox (see listData), or nil when it is not returned. under holds the
// mailboxes below it.
func levelData(name string, under []*store.MailboxInfo, ref string, patterns []string, options *imap.ListOptions, extended bool) *imap.ListData {
	if options.SelectSpecialUse || (options.SelectSubscribed && !options.SelectRecursiveMatch) {
		// A level has no special use and is never subscribed
		// (subscriptions live with mailboxes); without RECURSIVEMATCH
		// nothing below it is reported through it (RFC 5258 §3.1).
		return nil
	}
	hidden := false // a mailbox below matches the selection but no pattern
	for _, b := range under {
		if (!options.SelectSubscribed || b.Subscribed) && !matchAny(b.Name, ref, patterns) {
			hidden = true
			break
		}
	}
	if !hidden {
		return nil
	}
	data := &imap.ListData{Delim: delim, Mailbox: name}
	if extended {
		data.Attrs = []imap.MailboxAttr{imap.MailboxAttrNonExistent, imap.MailboxAttrHasChildren}
	} else {
		data.Attrs = []imap.MailboxAttr{imap.MailboxAttrNoSelect, imap.MailboxAttrHasChildren}
	}
	if options.SelectSubscribed {
		// RFC 5258 §3.5 (RECURSIVEMATCH): the level is returned for its
		// subscribed descendants.
		data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
	}
	return data
}

func parent(name string) string {
	i := strings.LastIndexByte(name, byte(delim))
	if i < 0 {
		return ""
	}
	return name[:i]
}

func matchAny(name, ref string, patterns []string) bool {
	for _, p := range patterns {
		// INBOX is case-insensitive (RFC 3501 §5.1): match it as upper case.
		if imapserver.MatchList(name, delim, ref, p) ||
			(name == "INBOX" && imapserver.MatchList(name, delim, strings.ToUpper(ref), strings.ToUpper(p))) {
			return true
		}
	}
	return false
}

// Status implements imapserver.Session.
func (s *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	info, err := s.store().Mailbox(s.account.Address, name)
	if err != nil {
		return nil, s.mailboxError(err)
	}
	return statusData(info, options), nil
}

func statusData(info *store.MailboxInfo, options *imap.StatusOptions) *imap.StatusData {
	data := &imap.StatusData{Mailbox: info.Name}
	if options.NumMessages {
		n := info.Messages
		data.NumMessages = &n
	}
	if options.UIDNext {
		data.UIDNext = imap.UID(info.UIDNext)
	}
	if options.UIDValidity {
		data.UIDValidity = info.UIDValidity
	}
	if options.NumUnseen {
		n := info.Unseen
		data.NumUnseen = &n
	}
	if options.NumRecent {
		// \Recent is not kept: RFC 9051 removed it, and a count of zero is
		// always a valid answer.
		var n uint32
		data.NumRecent = &n
	}
	if options.Size {
		n := info.Size
		data.Size = &n
	}
	return data
}

// Append implements imapserver.Session. Clients save drafts and sent
// copies; the literal is bounded by APPENDLIMIT and scanned with the same
// structural limits as received mail before any parser sees it.
func (s *session) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	if int64(r.Size()) > int64(s.svc.cfg.MaxAppend) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTooBig, Text: "Message too large"}
	}
	raw, err := io.ReadAll(io.LimitReader(r, int64(s.svc.cfg.MaxAppend)+1))
	if err != nil {
		return nil, err // the connection failed mid-literal
	}
	if err := mime.Scan(raw, s.svc.cfg.Limits); err != nil {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Message refused: " + err.Error()}
	}
	date := time.Now()
	var flags []string
	if options != nil {
		if !options.Time.IsZero() {
			date = options.Time
		}
		flags = flagStrings(options.Flags)
	}
	d, err := s.store().Append(s.account.Address, name, raw, flags, date, ComputeMeta(raw))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			// RFC 3501 §6.3.11: TRYCREATE when the mailbox does not exist.
			return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate, Text: "No such mailbox"}
		}
		return nil, s.mailboxError(err)
	}
	return &imap.AppendData{UID: imap.UID(d.UID), UIDValidity: d.UIDValidity}, nil
}

// Poll implements imapserver.Session: report what changed since the last
// command (RFC 3501 §7: unilateral EXISTS, EXPUNGE, FETCH FLAGS).
func (s *session) Poll(w *imapserver.UpdateWriter, allowExpunge bool) error {
	if s.sel == nil {
		return nil
	}
	return s.sel.sync(s, w, allowExpunge)
}

// Idle implements imapserver.Session (RFC 2177): wait for commits that
// touch this account and report them at once.
func (s *session) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	changes, cancel := s.store().Watch(s.account.Address)
	defer cancel()
	if err := s.Poll(w, true); err != nil {
		return err
	}
	for {
		select {
		case <-stop:
			return nil
		case <-changes:
			if err := s.Poll(w, true); err != nil {
				return err
			}
		}
	}
}

func flagStrings(flags []imap.Flag) []string {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		if strings.EqualFold(string(f), `\Recent`) {
			continue // RFC 3501 §2.3.2: \Recent cannot be set by a client
		}
		out = append(out, string(f))
	}
	return out
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if strings.EqualFold(x, f) {
			return true
		}
	}
	return false
}

func toFlags(flags []string) []imap.Flag {
	out := make([]imap.Flag, len(flags))
	for i, f := range flags {
		out[i] = imap.Flag(f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// mailboxError maps store errors to IMAP response codes (RFC 5530).
func (s *session) mailboxError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: "No such mailbox"}
	case errors.Is(err, store.ErrExists):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "Mailbox already exists"}
	case errors.Is(err, store.ErrInvalidName):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Invalid mailbox name"}
	case errors.Is(err, store.ErrMailboxInUse):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "This mailbox cannot be deleted"}
	case errors.Is(err, store.ErrTooLarge):
		// store.MaxMailboxes and the like: RFC 5530 §3 LIMIT, "an
		// administrative limit ... would be exceeded".
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "Limit reached: " + detail(err, store.ErrTooLarge)}
	case errors.Is(err, store.ErrInvalidFlag):
		// An unknown system flag (RFC 3501 §9 reserves "\" flag-extension
		// for future RFCs), a keyword that is not an atom, too many flags.
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "Flag refused: " + detail(err, store.ErrInvalidFlag)}
	case errors.Is(err, store.ErrOverQuota):
		// RFC 9208 §4.3 / RFC 5530 §3: APPEND or COPY would pass the
		// account's quota; nothing was added.
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeOverQuota, Text: "Mailbox quota exceeded: expunge messages to make room"}
	default:
		return s.bug(err)
	}
}

// detail is what err adds to sentinel, for the client: the store's
// refusals read "<sentinel>: <what>" ("more than 1000 mailboxes"), and
// anything else is not shown.
func detail(err, sentinel error) string {
	if d, ok := strings.CutPrefix(err.Error(), sentinel.Error()+": "); ok {
		return d
	}
	return "see the server's limits"
}

// errNotSelected answers a command on a mailbox this session deleted
// while it was selected.
var errNotSelected = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: "The selected mailbox was deleted; select another"}

// view returns the selected mailbox's view, or errNotSelected.
func (s *session) view() (*selected, error) {
	if s.sel == nil {
		return nil, errNotSelected
	}
	return s.sel, nil
}

// viewError maps a store error on the selected mailbox: when another
// session deleted or renamed it, that is the client's news, not a bug.
func (s *session) viewError(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: "The selected mailbox was deleted or renamed"}
	}
	return s.mailboxError(err)
}

// bug logs an unexpected failure (store I/O, corruption) once, here, and
// tells the client only that it may retry.
func (s *session) bug(err error) error {
	s.log.Error("imap command failed", "err", err)
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug, Text: "Internal error, try again later"}
}

// auditIMAPRefuse is the audit kind of a session closed for misbehaving
// (too many errors, no login in time). The store accepts any
// [a-z]+(\.[a-z]+)* kind.
const auditIMAPRefuse = "imap.refuse"

// guard is the session go-imap is handed. Every command that reaches the
// backend passes through it to the session, and its answer is counted:
// after Config.MaxErrors failed commands in a row the client is told
// "* BYE Too many errors" (RFC 3501 §7.1.5) and the connection closed, as
// an SMTP session is after too many refusals. A client looping on a
// failing command, or guessing passwords on one connection (the address
// lockout in relay/auth bounds that across connections), stops costing
// store lookups and audit records.
//
// In a row, not in all: a successful command starts the count again, as
// in Dovecot. A total would end, sooner or later, every long-lived session
// of a client that meets an ordinary NO now and then (a folder removed by
// another client, a full quota), and an authenticated client can issue
// any number of successful commands anyway, so a total would bound no
// cost.
//
// What is counted: NO and BAD answers the session gives, except
// [SERVERBUG] (a store failure is not the client's doing), and not a
// connection that failed mid-command. What is not: go-imap answers some
// commands without calling the session (syntax errors, commands in the
// wrong state, LOGIN before TLS, STARTTLS twice, unknown commands after
// login), and gives no hook to observe those answers: imapserver.Options
// has only a server-wide DebugWriter, not one per connection. The
// library itself closes a session at the first unknown command before
// login; other unobservable commands before login (NOOP, CAPABILITY,
// malformed ones) are bounded in time instead of in number, by
// Config.LoginTimeout.
//
// Methods the guard does not wrap are promoted from the session
// unchanged: those that cannot fail for the client's doing (Unselect,
// Namespace, AppendLimit), Poll and Idle (their errors are the
// connection's), and any verb added to *session later.
type guard struct{ *session }

// result counts err if it is a failed command (a success resets the
// count), and closes the session at the limit. It returns err unchanged:
// the client still gets its answer for this command if the connection is
// still open when go-imap writes it.
func (s *session) result(err error) error {
	if err == nil {
		s.errs = 0
		return nil
	}
	if s.closing || !isFailure(err) {
		return err
	}
	s.errs++
	if s.errs >= s.svc.maxErrors() {
		s.log.Warn("imap session closed: too many errors", "errors", s.errs)
		s.bye("Too many errors", fmt.Sprintf("%d failed commands in a row", s.errs))
	}
	return err
}

// isFailure says whether err is a NO or BAD the client caused.
func isFailure(err error) bool {
	var ie *imap.Error
	if !errors.As(err, &ie) {
		return false // nil, or I/O: the connection is failing anyway
	}
	return (ie.Type == imap.StatusResponseTypeNo || ie.Type == imap.StatusResponseTypeBad) &&
		ie.Code != imap.ResponseCodeServerBug
}

// bye audits the refusal and closes the session with an untagged BYE.
//
// It runs conn.Bye on another goroutine: go-imap may hold the
// connection's write lock while it calls the session (AUTHENTICATE keeps
// it across Login), and Bye takes that lock, so calling it here could
// deadlock. The BYE goes out once the current command's writes are done,
// just before or just after its tagged answer; either way the client
// reads BYE and the connection closes.
func (s *session) bye(text, detail string) {
	s.closing = true
	actor := ""
	if s.account != nil {
		actor = s.account.Address
	}
	s.audit(auditIMAPRefuse, actor, "proto=imap", "BYE", detail)
	conn := s.conn
	go func() { _ = conn.Bye(text) }()
}

// errClosing answers commands that slip in between the decision to close
// and the BYE.
var errClosing = &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Too many errors, closing"}

// loginExpired closes a session still unauthenticated after
// Config.LoginTimeout. It runs on the timer's goroutine: it reads only
// what does not change after newSession, and loggedIn.
func (s *session) loginExpired() {
	if s.loggedIn.Load() {
		return
	}
	timeout := s.svc.loginTimeout()
	s.svc.cfg.Log.Info("imap session closed: no login in time", "proto", "imap", "remote", s.remote, "timeout", timeout.String())
	s.audit(auditIMAPRefuse, "", "proto=imap", "BYE", "no login within "+timeout.String())
	_ = s.conn.Bye("Login timeout, reconnect to log in")
}

// Login implements imapserver.Session.
func (g *guard) Login(username, password string) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Login(username, password))
}

// Select implements imapserver.Session.
func (g *guard) Select(name string, options *imap.SelectOptions) (*imap.SelectData, error) {
	if g.closing {
		return nil, errClosing
	}
	d, err := g.session.Select(name, options)
	return d, g.result(err)
}

// Create implements imapserver.Session.
func (g *guard) Create(name string, options *imap.CreateOptions) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Create(name, options))
}

// Delete implements imapserver.Session.
func (g *guard) Delete(name string) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Delete(name))
}

// Rename implements imapserver.Session.
func (g *guard) Rename(from, to string, options *imap.RenameOptions) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Rename(from, to, options))
}

// Subscribe implements imapserver.Session.
func (g *guard) Subscribe(name string) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Subscribe(name))
}

// Unsubscribe implements imapserver.Session.
func (g *guard) Unsubscribe(name string) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Unsubscribe(name))
}

// List implements imapserver.Session.
func (g *guard) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.List(w, ref, patterns, options))
}

// Status implements imapserver.Session.
func (g *guard) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	if g.closing {
		return nil, errClosing
	}
	d, err := g.session.Status(name, options)
	return d, g.result(err)
}

// Append implements imapserver.Session.
func (g *guard) Append(name string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	if g.closing {
		return nil, errClosing
	}
	d, err := g.session.Append(name, r, options)
	return d, g.result(err)
}

// Expunge implements imapserver.Session.
func (g *guard) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Expunge(w, uids))
}

// Search implements imapserver.Session.
func (g *guard) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	if g.closing {
		return nil, errClosing
	}
	d, err := g.session.Search(kind, criteria, options)
	return d, g.result(err)
}

// Fetch implements imapserver.Session.
func (g *guard) Fetch(w *imapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Fetch(w, numSet, options))
}

// Store implements imapserver.Session.
func (g *guard) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Store(w, numSet, flags, options))
}

// Copy implements imapserver.Session.
func (g *guard) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	if g.closing {
		return nil, errClosing
	}
	d, err := g.session.Copy(numSet, dest)
	return d, g.result(err)
}

// Move implements imapserver.SessionMove.
func (g *guard) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if g.closing {
		return errClosing
	}
	return g.result(g.session.Move(w, numSet, dest))
}

package relay_test

// IMAP as executants' mail clients use it, over real sockets: what one
// account can learn of another (nothing), and the RFC 3501 corners that
// decide whether a client trusts its cache (sequence numbers, UIDs,
// expunges held back during FETCH, UIDPLUS codes, folder operations).

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"mssrelay/relay"
	"mssrelay/relay/demo"
)

// waitLimit bounds every wait for something another session caused. It
// is generous: other engineers run tests on the same machine.
const waitLimit = 30 * time.Second

// defaultFolders are the mailboxes every account is created with.
var defaultFolders = []string{"Archive", "Drafts", "INBOX", "Sent", "Trash"}

// sendRx submits a fresh signed prescription to the given recipients.
func sendRx(t *testing.T, h *harness, to ...string) {
	t.Helper()
	now := time.Now()
	rx := demo.SamplePrescription(now)
	msg, err := demo.Compose(h.signer(), h.info.Prescriber.Address, to[0], "Ordonnance", rx.Content(), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.prescriber().Send(h.info.Prescriber.Address, to, msg); err != nil {
		t.Fatalf("submission refused: %v", err)
	}
}

// note is a small message for APPEND; extra header fields end with CRLF.
func note(subject, extra string, bodyBytes int) []byte {
	body := strings.Repeat("Posologie inchangée. ", bodyBytes/21+1)[:bodyBytes]
	return []byte("From: pharmacien@mssante.test\r\nTo: pharmacie.centrale@mssante.test\r\n" +
		"Subject: " + subject + "\r\nDate: Mon, 06 Jan 2025 10:00:00 +0100\r\n" + extra +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n")
}

func appendMsg(t *testing.T, c *imapclient.Client, mailbox string, raw []byte, opts *imap.AppendOptions) *imap.AppendData {
	t.Helper()
	data, err := appendRaw(c, mailbox, raw, opts)
	if err != nil {
		t.Fatalf("APPEND to %s: %v", mailbox, err)
	}
	return data
}

func appendRaw(c *imapclient.Client, mailbox string, raw []byte, opts *imap.AppendOptions) (*imap.AppendData, error) {
	cmd := c.Append(mailbox, int64(len(raw)), opts)
	if _, err := cmd.Write(raw); err != nil {
		return nil, err
	}
	if err := cmd.Close(); err != nil {
		return nil, err
	}
	return cmd.Wait()
}

func mustSelect(t *testing.T, c *imapclient.Client, name string, readOnly bool) *imap.SelectData {
	t.Helper()
	d, err := c.Select(name, &imap.SelectOptions{ReadOnly: readOnly}).Wait()
	if err != nil {
		t.Fatalf("SELECT %s (read-only %v): %v", name, readOnly, err)
	}
	return d
}

// respCode is the response code of a tagged NO/BAD ("" when none or OK).
func respCode(err error) imap.ResponseCode {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return ""
}

func noop(t *testing.T, c *imapclient.Client) {
	t.Helper()
	if err := c.Noop().Wait(); err != nil {
		t.Fatalf("NOOP: %v", err)
	}
}

// uidFetch returns the UIDs of the messages a FETCH returned, in order.
func uidFetch(t *testing.T, c *imapclient.Client, set imap.NumSet) []imap.UID {
	t.Helper()
	msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true}).Collect()
	if err != nil {
		t.Fatalf("FETCH %v: %v", set, err)
	}
	out := make([]imap.UID, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, m.UID)
	}
	return out
}

func listNames(t *testing.T, c *imapclient.Client, ref, pattern string, opts *imap.ListOptions) []string {
	t.Helper()
	l, err := c.List(ref, pattern, opts).Collect()
	if err != nil {
		t.Fatalf("LIST %q %q: %v", ref, pattern, err)
	}
	var out []string
	for _, d := range l {
		out = append(out, d.Mailbox)
	}
	slices.Sort(out)
	return out
}

// uidNums lists a UID set's members (nil for anything else).
func uidNums(set imap.NumSet) []imap.UID {
	u, ok := set.(imap.UIDSet)
	if !ok {
		return nil
	}
	nums, _ := u.Nums()
	return nums
}

// rawIMAP speaks IMAP line by line, for what imapclient would hide: it
// drops FETCH data for numbers outside the set it sent ("*" resolved by
// the server), and it does not show where an untagged response fell.
type rawIMAP struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	tag  int
}

func (h *harness) raw(t *testing.T, u demo.User) *rawIMAP {
	t.Helper()
	c := h.rawDial(t)
	if _, st := c.do("LOGIN %s %s", quote(u.Address), quote(u.Password)); !strings.HasPrefix(st, "OK") {
		t.Fatalf("LOGIN: %s", st)
	}
	return c
}

// rawDial connects over implicit TLS and reads the greeting, without
// logging in.
func (h *harness) rawDial(t *testing.T) *rawIMAP {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitLimit}, "tcp", h.addrs[relay.IMAPTLS], h.clientTLS())
	if err != nil {
		t.Fatalf("dial imap: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawIMAP{t: t, conn: conn, r: bufio.NewReader(conn)}
	_ = conn.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := c.line(); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	return c
}

func quote(s string) string { return strconv.Quote(s) }

var literalRe = regexp.MustCompile(`\{(\d+)\+?\}$`)

// line reads one response line with its literals inlined.
func (c *rawIMAP) line() (string, error) {
	var b strings.Builder
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		l = strings.TrimSuffix(l, "\r\n")
		b.WriteString(l)
		m := literalRe.FindStringSubmatch(l)
		if m == nil {
			return b.String(), nil
		}
		n, _ := strconv.Atoi(m[1])
		lit := make([]byte, n)
		if _, err := io.ReadFull(c.r, lit); err != nil {
			return "", err
		}
		b.Write(lit)
	}
}

// do sends one command and returns the untagged lines and the tagged
// status ("OK …", "NO …", "BAD …").
func (c *rawIMAP) do(format string, args ...any) (untagged []string, status string) {
	c.t.Helper()
	c.tag++
	tag := fmt.Sprintf("R%d", c.tag)
	_ = c.conn.SetDeadline(time.Now().Add(waitLimit))
	if _, err := fmt.Fprintf(c.conn, "%s %s\r\n", tag, fmt.Sprintf(format, args...)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	for {
		l, err := c.line()
		if err != nil {
			c.t.Fatalf("%s: reading the answer: %v", fmt.Sprintf(format, args...), err)
		}
		if rest, ok := strings.CutPrefix(l, tag+" "); ok {
			return untagged, rest
		}
		untagged = append(untagged, l)
	}
}

// ok is do for a command that must succeed.
func (c *rawIMAP) ok(format string, args ...any) []string {
	c.t.Helper()
	u, st := c.do(format, args...)
	if !strings.HasPrefix(st, "OK") {
		c.t.Fatalf("%s: %s", fmt.Sprintf(format, args...), st)
	}
	return u
}

var fetchUIDRe = regexp.MustCompile(`^\* (\d+) FETCH \(.*\bUID (\d+)`)

// fetchedUIDs lists "seq:uid" of the FETCH lines among untagged.
func fetchedUIDs(untagged []string) []string {
	var out []string
	for _, l := range untagged {
		if m := fetchUIDRe.FindStringSubmatch(l); m != nil {
			out = append(out, m[1]+":"+m[2])
		}
	}
	return out
}

// events records what a server said unasked (RFC 3501 §7), in order.
type events struct {
	mu       sync.Mutex
	log      []string
	expunges []uint32
	exists   []uint32
	flags    chan *imapclient.FetchMessageBuffer
}

func (e *events) snapshot() (log []string, expunges, exists []uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log), slices.Clone(e.expunges), slices.Clone(e.exists)
}

// watched logs u in with a handler recording unilateral responses.
func (h *harness) watched(u demo.User) (*imapclient.Client, *events) {
	ev := &events{flags: make(chan *imapclient.FetchMessageBuffer, 64)}
	c := h.imap(u, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		// Expunge runs on the client's reader goroutine, in wire order.
		Expunge: func(seq uint32) {
			ev.mu.Lock()
			ev.expunges = append(ev.expunges, seq)
			ev.log = append(ev.log, fmt.Sprintf("EXPUNGE %d", seq))
			ev.mu.Unlock()
		},
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				ev.mu.Lock()
				ev.exists = append(ev.exists, *d.NumMessages)
				ev.log = append(ev.log, fmt.Sprintf("EXISTS %d", *d.NumMessages))
				ev.mu.Unlock()
			}
		},
		// Fetch runs on its own goroutine: read it through the channel.
		Fetch: func(m *imapclient.FetchMessageData) {
			if b, err := m.Collect(); err == nil {
				ev.flags <- b
			}
		},
	}})
	return c, ev
}

// TestIMAPAccountIsolation: a prescription addressed to one pharmacy is
// invisible to every other account, whatever name or pattern it tries.
func TestIMAPAccountIsolation(t *testing.T) {
	h := newHarness(t)
	sendRx(t, h, h.info.Pharmacy.Address)
	owner := h.info.Pharmacy.Address

	p1 := h.imap(h.info.Pharmacy, nil)
	if st, err := p1.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 1 {
		t.Fatalf("addressee's INBOX: %+v, %v; want 1 message", st, err)
	}

	p2 := h.imap(h.info.Pharmacy2, nil)
	// Pharmacy2 keeps a message of its own in Drafts, to try COPY with.
	appendMsg(t, p2, "Drafts", note("brouillon", "", 40), nil)

	// A name that certainly exists nowhere: every probe of another
	// account's mailboxes must fail exactly as this one does, so that the
	// answer reveals nothing.
	const nowhere = "no-such-folder-4f1c"
	_, refSel := p2.Select(nowhere, nil).Wait()
	_, refStatus := p2.Status(nowhere, &imap.StatusOptions{NumMessages: true}).Wait()
	if refSel == nil || refStatus == nil {
		t.Fatal("SELECT/STATUS of a missing mailbox succeeded")
	}

	probes := []string{
		owner + "/INBOX",
		owner,
		"INBOX/../" + owner + "/INBOX",
		"../INBOX",
		"../" + owner + "/INBOX",
		"#shared/INBOX",
		"#shared/" + owner + "/INBOX",
		"#users/" + owner + "/INBOX",
		"Other Users/" + owner + "/INBOX",
		"Other Users/" + owner,
		"~" + owner + "/INBOX",
		"user/" + owner + "/INBOX",
		"user." + owner,
		"/" + owner + "/INBOX",
	}
	for _, name := range probes {
		t.Run(name, func(t *testing.T) {
			_, err := p2.Select(name, nil).Wait()
			if err == nil {
				t.Fatalf("SELECT %q succeeded", name)
			}
			if respCode(err) != respCode(refSel) || err.Error() != refSel.Error() {
				t.Errorf("SELECT %q: %v; a missing mailbox gives %v", name, err, refSel)
			}
			if _, err := p2.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait(); err == nil {
				t.Errorf("EXAMINE %q succeeded", name)
			}
			_, err = p2.Status(name, &imap.StatusOptions{NumMessages: true, UIDNext: true}).Wait()
			if err == nil {
				t.Errorf("STATUS %q succeeded", name)
			} else if err.Error() != refStatus.Error() {
				t.Errorf("STATUS %q: %v; a missing mailbox gives %v", name, err, refStatus)
			}
			if _, err := appendRaw(p2, name, note("intrusion", "", 10), nil); err == nil {
				t.Errorf("APPEND to %q succeeded", name)
			} else if c := respCode(err); c != imap.ResponseCodeTryCreate && c != imap.ResponseCodeCannot {
				t.Errorf("APPEND to %q: %v", name, err)
			}
			mustSelect(t, p2, "Drafts", false)
			if _, err := p2.Copy(imap.SeqSetNum(1), name).Wait(); err == nil {
				t.Errorf("COPY to %q succeeded", name)
			}
			if _, err := p2.Move(imap.SeqSetNum(1), name).Wait(); err == nil {
				t.Errorf("MOVE to %q succeeded", name)
			}
			if err := p2.Subscribe(name).Wait(); err == nil {
				t.Errorf("SUBSCRIBE %q succeeded", name)
			}
			if err := p2.Delete(name).Wait(); err == nil {
				t.Errorf("DELETE %q succeeded", name)
			}
			if err := p2.Rename(name, "stolen", nil).Wait(); err == nil {
				t.Errorf("RENAME %q succeeded", name)
			}
			if err := p2.Unselect().Wait(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The COPY/MOVE attempts left Pharmacy2's draft where it was.
	if st, err := p2.Status("Drafts", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 1 {
		t.Errorf("Drafts after refused COPY/MOVE: %+v, %v", st, err)
	}

	// LIST shows Pharmacy2 its own folders and nothing else, whatever the
	// reference and pattern.
	for _, q := range [][2]string{
		{"", "*"}, {"", "%"}, {"*", "*"}, {"%", "%"}, {"", "*/*"}, {"", "*INBOX*"},
		{"", "*centrale*"}, {"", owner + "*"}, {owner, "*"}, {owner + "/", "%"}, {"..", "*"},
		{"#shared", "*"}, {"Other Users", "*"}, {"", "#*"}, {"/", "*"},
	} {
		got := listNames(t, p2, q[0], q[1], nil)
		for _, name := range got {
			if !slices.Contains(defaultFolders, name) {
				t.Errorf("LIST %q %q shows %q", q[0], q[1], name)
			}
		}
		if q == [2]string{"", "*"} || q == [2]string{"", "%"} {
			if !slices.Equal(got, defaultFolders) {
				t.Errorf("LIST %q %q = %v, want %v", q[0], q[1], got, defaultFolders)
			}
		}
	}
	if got := listNames(t, p2, "", "*", &imap.ListOptions{SelectSubscribed: true}); !slices.Equal(got, defaultFolders) {
		t.Errorf("LIST (SUBSCRIBED) = %v, want %v", got, defaultFolders)
	}
	ns, err := p2.Namespace().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.Other) != 0 || len(ns.Shared) != 0 || len(ns.Personal) != 1 {
		t.Errorf("NAMESPACE %+v: want one personal namespace only", ns)
	}

	// Its own INBOX is empty, and every way of asking says so.
	if sel := mustSelect(t, p2, "INBOX", false); sel.NumMessages != 0 {
		t.Errorf("Pharmacy2 INBOX holds %d messages", sel.NumMessages)
	}
	all, err := p2.Search(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(all.AllSeqNums()); n != 0 {
		t.Errorf("SEARCH ALL found %d messages", n)
	}
	byText, err := p2.UIDSearch(&imap.SearchCriteria{Text: []string{"Ordonnance"}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(byText.AllUIDs()); n != 0 {
		t.Errorf("UID SEARCH TEXT Ordonnance found %d messages", n)
	}
	if got := uidFetch(t, p2, imap.UIDSet{{Start: 1, Stop: 0}}); len(got) != 0 {
		t.Errorf("UID FETCH 1:* returned %v", got)
	}

	// CREATE with another account's path creates a folder of its own.
	stolen := owner + "/INBOX"
	if err := p2.Create(stolen, nil).Wait(); err != nil {
		t.Fatalf("CREATE %q: %v", stolen, err)
	}
	appendMsg(t, p2, stolen, note("à moi", "", 20), nil)
	if sel := mustSelect(t, p2, stolen, true); sel.NumMessages != 1 {
		t.Errorf("Pharmacy2's %q holds %d messages, want its own 1", stolen, sel.NumMessages)
	}
	if got := listNames(t, p2, "", "*", nil); !slices.Contains(got, stolen) {
		t.Errorf("LIST after CREATE = %v, lacks %q", got, stolen)
	}
	if got := listNames(t, p1, "", "*", nil); !slices.Equal(got, defaultFolders) {
		t.Errorf("addressee's LIST = %v after the other account's CREATE", got)
	}
	if st, err := p1.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 1 {
		t.Errorf("addressee's INBOX after the other account's APPEND: %+v, %v", st, err)
	}

	// The prescriber's own INBOX does not receive what it sent.
	pr := h.imap(h.info.Prescriber, nil)
	if sel := mustSelect(t, pr, "INBOX", true); sel.NumMessages != 0 {
		t.Errorf("prescriber's INBOX holds %d messages", sel.NumMessages)
	}
	if got := listNames(t, pr, "", "*", nil); !slices.Equal(got, defaultFolders) {
		t.Errorf("prescriber's LIST = %v", got)
	}
}

// TestIMAPEmptyMailbox: sequence sets on an empty mailbox neither crash
// the session nor return anything (RFC 9051 §6.4.5 lets FETCH 1:* be
// OK or BAD there); the connection stays usable.
func TestIMAPEmptyMailbox(t *testing.T) {
	h := newHarness(t)
	c := h.imap(h.info.Pharmacy, nil)
	if sel := mustSelect(t, c, "Drafts", false); sel.NumMessages != 0 {
		t.Fatalf("Drafts holds %d", sel.NumMessages)
	}
	for _, set := range []imap.NumSet{
		imap.SeqSet{{Start: 1, Stop: 0}}, imap.SeqSet{{Start: 0, Stop: 0}}, imap.SeqSetNum(1),
		imap.UIDSet{{Start: 1, Stop: 0}}, imap.UIDSet{{Start: 0, Stop: 0}}, imap.UIDSetNum(1),
	} {
		msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true, Flags: true, Envelope: true,
			BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		if len(msgs) != 0 {
			t.Errorf("FETCH %v on an empty mailbox returned %d messages", set, len(msgs))
		}
		if err != nil {
			t.Logf("FETCH %v on an empty mailbox: %v", set, err)
		}
		if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
			t.Logf("STORE %v on an empty mailbox: %v", set, err)
		}
		if _, err := c.Copy(set, "Archive").Wait(); err != nil {
			t.Logf("COPY %v on an empty mailbox: %v", set, err)
		}
		noop(t, c)
	}
	res, err := c.UIDSearch(&imap.SearchCriteria{UID: []imap.UIDSet{{{Start: 1, Stop: 0}}}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.AllUIDs()) != 0 {
		t.Errorf("UID SEARCH UID 1:* = %v", res.AllUIDs())
	}
	if err := c.Expunge().Close(); err != nil {
		t.Errorf("EXPUNGE on an empty mailbox: %v", err)
	}
	if st, err := c.Status("Archive", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 0 {
		t.Errorf("Archive after COPY from an empty mailbox: %+v, %v", st, err)
	}
	// Still usable: a message appended now is there.
	appendMsg(t, c, "Drafts", note("après", "", 10), nil)
	noop(t, c)
	if got := uidFetch(t, c, imap.SeqSet{{Start: 1, Stop: 0}}); len(got) != 1 {
		t.Errorf("FETCH 1:* after APPEND = %v, want one message", got)
	}
}

// TestIMAPUIDStarAfterExpunge: "*" is the highest UID in use, not
// UIDNEXT-1, and "n:*" with n past it still returns that message (RFC 3501
// §6.4.8).
func TestIMAPUIDStarAfterExpunge(t *testing.T) {
	h := newHarness(t)
	c := h.imap(h.info.Pharmacy, nil)
	if err := c.Create("Suivi", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	var uids []imap.UID
	for i := 0; i < 3; i++ {
		uids = append(uids, appendMsg(t, c, "Suivi", note(fmt.Sprintf("n°%d", i), "", 10), nil).UID)
	}
	mustSelect(t, c, "Suivi", false)
	if err := c.Store(imap.UIDSetNum(uids[2]), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	// imapclient drops FETCH data for UIDs outside the set it sent, so
	// the "*" cases are read off the wire.
	r := h.raw(t, h.info.Pharmacy)
	r.ok("SELECT Suivi")
	last := fmt.Sprintf("2:%d", uids[1])
	for _, tc := range []struct {
		set  string
		want []string
	}{
		{"*", []string{last}},
		{fmt.Sprintf("%d:*", uids[2]), []string{last}},     // the expunged UID:*
		{fmt.Sprintf("%d:*", uids[2]+100), []string{last}}, // far past the end
		{fmt.Sprintf("%d,*", uids[2]+100), []string{last}}, // a static UID past the end, and *
		{"*:" + fmt.Sprint(uids[2]+100), []string{last}},   // reversed
		{"1:*", []string{fmt.Sprintf("1:%d", uids[0]), last}},
		{fmt.Sprint(uids[2]), nil}, // the expunged UID alone
	} {
		if got := fetchedUIDs(r.ok("UID FETCH %s (UID FLAGS)", tc.set)); !slices.Equal(got, tc.want) {
			t.Errorf("UID FETCH %s = %v, want %v", tc.set, got, tc.want)
		}
	}
	// Sequence "*" is the last message too, and 5:* or 5,* with two
	// messages is the last one.
	for _, set := range []string{"*", "5:*", "5,*", "*:5"} {
		if got := fetchedUIDs(r.ok("FETCH %s (UID)", set)); !slices.Equal(got, []string{last}) {
			t.Errorf("FETCH %s = %v, want %v", set, got, []string{last})
		}
	}
	// With everything expunged, "*" matches nothing.
	if err := c.Store(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	// The raw session learns of the expunges at its next command.
	if u := r.ok("NOOP"); !slices.Equal(u, []string{"* 1 EXPUNGE", "* 1 EXPUNGE"}) {
		t.Errorf("NOOP after another session emptied the mailbox: %q", u)
	}
	for _, set := range []string{"1:*", "*"} {
		u, st := r.do("UID FETCH %s (UID)", set)
		if got := fetchedUIDs(u); len(got) != 0 || !strings.HasPrefix(st, "OK") {
			t.Errorf("UID FETCH %s on an emptied mailbox = %v, %s", set, got, st)
		}
	}
	// UIDs are never reused (RFC 3501 §2.3.1.1).
	if d := appendMsg(t, c, "Suivi", note("nouveau", "", 10), nil); d.UID <= uids[2] {
		t.Errorf("new UID %d reuses an expunged one (last was %d)", d.UID, uids[2])
	}
}

// TestIMAPExpungeHeldBackDuringFetch: RFC 3501 §7.4.1: "An EXPUNGE response
// MUST NOT be sent ... while responding to a FETCH, STORE, or SEARCH
// command". The other session's expunge reaches this one at the next NOOP,
// with sequence numbers that shift as each one is applied.
func TestIMAPExpungeHeldBackDuringFetch(t *testing.T) {
	h := newHarness(t)
	a, ev := h.watched(h.info.Pharmacy)
	b := h.imap(h.info.Pharmacy, nil)
	var uids []imap.UID
	for i := 1; i <= 5; i++ {
		uids = append(uids, appendMsg(t, b, "INBOX", note(fmt.Sprintf("message %d", i), "", 30), nil).UID)
	}
	if sel := mustSelect(t, a, "INBOX", false); sel.NumMessages != 5 {
		t.Fatalf("INBOX holds %d, want 5", sel.NumMessages)
	}

	// B expunges messages 2 and 4.
	mustSelect(t, b, "INBOX", false)
	if err := b.Store(imap.UIDSet{{Start: uids[1], Stop: uids[1]}, {Start: uids[3], Stop: uids[3]}},
		&imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Expunge().Close(); err != nil {
		t.Fatal(err)
	}

	// A's FETCH still sees its view of five messages, and no EXPUNGE.
	msgs, err := a.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true, Specifier: imap.PartSpecifierHeader}}}).Collect()
	if err != nil {
		t.Fatalf("FETCH after another session's EXPUNGE: %v", err)
	}
	var got []imap.UID
	for _, m := range msgs {
		got = append(got, m.UID)
	}
	if !slices.Equal(got, uids) {
		t.Errorf("FETCH 1:* = UIDs %v, want the view %v", got, uids)
	}
	// STORE and SEARCH must hold them back too.
	if err := a.Store(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatalf("STORE: %v", err)
	}
	if _, err := a.Search(&imap.SearchCriteria{}, nil).Wait(); err != nil {
		t.Fatalf("SEARCH: %v", err)
	}
	if log, _, _ := ev.snapshot(); len(log) != 0 {
		t.Fatalf("unilateral responses during FETCH/STORE/SEARCH: %v", log)
	}

	noop(t, a)
	_, expunges, _ := ev.snapshot()
	// Message 2 goes first; message 4 is then number 3.
	if !slices.Equal(expunges, []uint32{2, 3}) {
		t.Fatalf("EXPUNGE responses at NOOP = %v, want [2 3]", expunges)
	}
	want := []imap.UID{uids[0], uids[2], uids[4]}
	if got := uidFetch(t, a, imap.SeqSet{{Start: 1, Stop: 0}}); !slices.Equal(got, want) {
		t.Errorf("after NOOP, FETCH 1:* = %v, want %v", got, want)
	}
	if got := uidFetch(t, a, imap.SeqSetNum(2)); !slices.Equal(got, []imap.UID{uids[2]}) {
		t.Errorf("message 2 is UID %v, want %d", got, uids[2])
	}
	noop(t, a)
	if _, expunges, _ := ev.snapshot(); len(expunges) != 2 {
		t.Errorf("EXPUNGE reported again: %v", expunges)
	}
}

// TestIMAPCopyOfExpungedMessage: COPY/MOVE of a message another session
// expunged (the client does not know yet) must give a well-formed answer
// and leave the connection usable, never a COPYUID with empty sets.
func TestIMAPCopyOfExpungedMessage(t *testing.T) {
	h := newHarness(t)
	a, ev := h.watched(h.info.Pharmacy)
	b := h.imap(h.info.Pharmacy, nil)
	appendMsg(t, b, "INBOX", note("seul", "", 10), nil)
	mustSelect(t, a, "INBOX", false)
	mustSelect(t, b, "INBOX", false)
	if err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	data, err := a.Copy(imap.SeqSetNum(1), "Archive").Wait()
	if err == nil && data != nil && data.UIDValidity != 0 {
		t.Errorf("COPY of an expunged message answered COPYUID %+v", data)
	}
	// The connection still works and the client learns of the expunge.
	noop(t, a)
	if _, expunges, _ := ev.snapshot(); !slices.Equal(expunges, []uint32{1}) {
		t.Errorf("EXPUNGE responses %v, want [1]", expunges)
	}
	if st, err := a.Status("Archive", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 0 {
		t.Errorf("Archive after COPY of an expunged message: %+v, %v", st, err)
	}
}

// TestIMAPOtherSessionUpdates: flags another session set arrive as FETCH
// FLAGS, new messages as EXISTS, at the next command (RFC 3501 §7.4.1,
// §7.3.1); keywords keep the case they were first given.
func TestIMAPOtherSessionUpdates(t *testing.T) {
	h := newHarness(t)
	sendRx(t, h, h.info.Pharmacy.Address)
	a, ev := h.watched(h.info.Pharmacy)
	b := h.imap(h.info.Pharmacy, nil)
	mustSelect(t, a, "INBOX", false)
	mustSelect(t, b, "INBOX", false)

	if err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{"$Dispensed", imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	noop(t, a)
	select {
	case m := <-ev.flags:
		if m.SeqNum != 1 || !slices.Contains(m.Flags, "$Dispensed") || !hasFlag(m.Flags, imap.FlagFlagged) {
			t.Errorf("unilateral FETCH: seq %d flags %v, want seq 1 with $Dispensed \\Flagged", m.SeqNum, m.Flags)
		}
	case <-time.After(waitLimit):
		t.Fatal("no FETCH FLAGS after another session's STORE")
	}

	// The same keyword in another case is the same keyword: no duplicate,
	// and the first spelling stays (RFC 3501 §2.3.2 keywords are
	// case-insensitive).
	msgs, err := b.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{"$DISPENSED"}}, nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("STORE answered %d messages", len(msgs))
	}
	n := 0
	for _, f := range msgs[0].Flags {
		if strings.EqualFold(string(f), "$Dispensed") {
			n++
			if f != "$Dispensed" {
				t.Errorf("keyword respelt %q", f)
			}
		}
	}
	if n != 1 {
		t.Errorf("flags %v: want $Dispensed once", msgs[0].Flags)
	}
	// SELECT lists the keyword in FLAGS and allows new ones.
	sel := mustSelect(t, b, "INBOX", false)
	if !slices.Contains(sel.Flags, "$Dispensed") || !slices.Contains(sel.PermanentFlags, imap.FlagWildcard) {
		t.Errorf("FLAGS %v PERMANENTFLAGS %v", sel.Flags, sel.PermanentFlags)
	}
	hit, err := b.Search(&imap.SearchCriteria{Flag: []imap.Flag{"$dispensed"}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := hit.AllSeqNums(); !slices.Equal(got, []uint32{1}) {
		t.Errorf("SEARCH KEYWORD $dispensed = %v", got)
	}

	// A message APPENDed by B reaches A as EXISTS at A's next command.
	appendMsg(t, b, "INBOX", note("copie", "", 10), nil)
	noop(t, a)
	if _, _, exists := ev.snapshot(); !slices.Contains(exists, 2) {
		t.Errorf("EXISTS responses %v, want 2", exists)
	}
	if got := a.Mailbox().NumMessages; got != 2 {
		t.Errorf("client's message count %d, want 2", got)
	}
}

// TestIMAPCopyMoveUIDPlus: COPYUID and the MOVE's COPYUID name the right
// UIDVALIDITY and UIDs (RFC 4315 §3, RFC 6851 §4.3); a missing target says
// TRYCREATE (RFC 3501 §6.4.7, §6.3.11); EXAMINE refuses MOVE.
func TestIMAPCopyMoveUIDPlus(t *testing.T) {
	h := newHarness(t)
	c, ev := h.watched(h.info.Pharmacy)
	var src []imap.UID
	for i := 0; i < 3; i++ {
		src = append(src, appendMsg(t, c, "INBOX", note(fmt.Sprintf("ordonnance %d", i), "", 20), nil).UID)
	}
	arch, err := c.Status("Archive", &imap.StatusOptions{UIDNext: true, UIDValidity: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	mustSelect(t, c, "INBOX", false)

	cp, err := c.Copy(imap.SeqSet{{Start: 1, Stop: 2}}, "Archive").Wait()
	if err != nil {
		t.Fatalf("COPY: %v", err)
	}
	if cp.UIDValidity != arch.UIDValidity {
		t.Errorf("COPYUID validity %d, Archive has %d", cp.UIDValidity, arch.UIDValidity)
	}
	if s, _ := cp.SourceUIDs.Nums(); !slices.Equal(s, src[:2]) {
		t.Errorf("COPYUID source %v, want %v", cp.SourceUIDs, src[:2])
	}
	wantDst := []imap.UID{arch.UIDNext, arch.UIDNext + 1}
	if d, _ := cp.DestUIDs.Nums(); !slices.Equal(d, wantDst) {
		t.Errorf("COPYUID destination %v, want %v", cp.DestUIDs, wantDst)
	}

	trash, err := c.Status("Trash", &imap.StatusOptions{UIDNext: true, UIDValidity: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	mv, err := c.Move(imap.UIDSetNum(src[1]), "Trash").Wait()
	if err != nil {
		t.Fatalf("MOVE: %v", err)
	}
	if mv.UIDValidity != trash.UIDValidity {
		t.Errorf("MOVE COPYUID validity %d, Trash has %d", mv.UIDValidity, trash.UIDValidity)
	}
	if s := uidNums(mv.SourceUIDs); !slices.Equal(s, src[1:2]) {
		t.Errorf("MOVE source %v, want %v", mv.SourceUIDs, src[1:2])
	}
	if d := uidNums(mv.DestUIDs); !slices.Equal(d, []imap.UID{trash.UIDNext}) {
		t.Errorf("MOVE destination %v, want %v", mv.DestUIDs, trash.UIDNext)
	}
	if _, expunges, _ := ev.snapshot(); !slices.Equal(expunges, []uint32{2}) {
		t.Errorf("MOVE expunges %v, want [2]", expunges)
	}
	if got := uidFetch(t, c, imap.SeqSet{{Start: 1, Stop: 0}}); !slices.Equal(got, []imap.UID{src[0], src[2]}) {
		t.Errorf("INBOX after MOVE = %v", got)
	}
	for name, want := range map[string]uint32{"Archive": 2, "Trash": 1} {
		if st, err := c.Status(name, &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != want {
			t.Errorf("%s after COPY/MOVE: %+v, %v; want %d", name, st, err, want)
		}
	}

	// Missing targets: TRYCREATE, nothing moved.
	if _, err := c.Copy(imap.SeqSetNum(1), "Nulle part").Wait(); respCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("COPY to a missing mailbox: %v, want [TRYCREATE]", err)
	}
	if _, err := c.Move(imap.SeqSetNum(1), "Nulle part").Wait(); respCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("MOVE to a missing mailbox: %v, want [TRYCREATE]", err)
	}
	if _, err := appendRaw(c, "Nulle part", note("x", "", 5), nil); respCode(err) != imap.ResponseCodeTryCreate {
		t.Errorf("APPEND to a missing mailbox: %v, want [TRYCREATE]", err)
	}
	if got := uidFetch(t, c, imap.SeqSet{{Start: 1, Stop: 0}}); len(got) != 2 {
		t.Errorf("INBOX after refused MOVE = %v", got)
	}

	// EXAMINE: COPY reads and is allowed, MOVE changes the source and is not.
	mustSelect(t, c, "INBOX", true)
	if _, err := c.Move(imap.SeqSetNum(1), "Archive").Wait(); err == nil {
		t.Error("MOVE accepted after EXAMINE")
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait(); err != nil {
		t.Errorf("COPY after EXAMINE: %v", err)
	}
	if got := uidFetch(t, c, imap.SeqSet{{Start: 1, Stop: 0}}); len(got) != 2 {
		t.Errorf("INBOX after MOVE under EXAMINE = %v", got)
	}

	// APPENDUID names what STATUS then reports.
	before, err := c.Status("Drafts", &imap.StatusOptions{UIDNext: true, UIDValidity: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	ad := appendMsg(t, c, "Drafts", note("brouillon", "", 5), nil)
	if ad.UIDValidity != before.UIDValidity || ad.UID != before.UIDNext {
		t.Errorf("APPENDUID %d %d, STATUS said %d %d", ad.UIDValidity, ad.UID, before.UIDValidity, before.UIDNext)
	}
}

// TestIMAPFolders: CREATE, RENAME and DELETE in the account's own
// namespace (RFC 3501 §6.3.3–§6.3.5), including the special rename of INBOX.
func TestIMAPFolders(t *testing.T) {
	h := newHarness(t)
	c := h.imap(h.info.Pharmacy, nil)

	if err := c.Create("Ordonnances/", nil).Wait(); err != nil {
		t.Fatalf("CREATE with a trailing delimiter: %v", err)
	}
	if err := c.Create("Ordonnances/2025", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		code imap.ResponseCode
	}{
		{"Ordonnances", imap.ResponseCodeAlreadyExists},
		{"INBOX", ""},
		{"inbox", ""},
		{"a//b", ""},
		{"bad*name", ""},
	} {
		err := c.Create(tc.name, nil).Wait()
		if err == nil {
			t.Errorf("CREATE %q succeeded", tc.name)
		} else if tc.code != "" && respCode(err) != tc.code {
			t.Errorf("CREATE %q: %v, want [%s]", tc.name, err, tc.code)
		}
	}
	l, err := c.List("", "Ordonnances*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	attrs := map[string][]imap.MailboxAttr{}
	for _, d := range l {
		attrs[d.Mailbox] = d.Attrs
	}
	if !slices.Contains(attrs["Ordonnances"], imap.MailboxAttrHasChildren) ||
		!slices.Contains(attrs["Ordonnances/2025"], imap.MailboxAttrHasNoChildren) {
		t.Errorf("LIST attributes %v", attrs)
	}

	// RENAME carries the children and keeps UIDVALIDITY and the messages.
	ad := appendMsg(t, c, "Ordonnances/2025", note("janvier", "", 10), nil)
	if err := c.Rename("Ordonnances", "Dossiers", nil).Wait(); err != nil {
		t.Fatalf("RENAME: %v", err)
	}
	st, err := c.Status("Dossiers/2025", &imap.StatusOptions{NumMessages: true, UIDValidity: true}).Wait()
	if err != nil {
		t.Fatalf("STATUS of the renamed child: %v", err)
	}
	if *st.NumMessages != 1 || st.UIDValidity != ad.UIDValidity {
		t.Errorf("renamed child: %d messages, UIDVALIDITY %d (was %d)", *st.NumMessages, st.UIDValidity, ad.UIDValidity)
	}
	if got := listNames(t, c, "", "Ordonnances*", nil); len(got) != 0 {
		t.Errorf("old names still listed: %v", got)
	}
	if err := c.Rename("Nulle part", "x", nil).Wait(); respCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("RENAME of a missing mailbox: %v", err)
	}
	if err := c.Rename("Dossiers", "Archive", nil).Wait(); respCode(err) != imap.ResponseCodeAlreadyExists {
		t.Errorf("RENAME onto an existing mailbox: %v", err)
	}
	if err := c.Rename("Dossiers", "INBOX", nil).Wait(); err == nil {
		t.Error("RENAME onto INBOX succeeded")
	}

	// DELETE: INBOX cannot go; a deleted mailbox created again has a new
	// UIDVALIDITY (RFC 3501 §2.3.1.1).
	if err := c.Delete("INBOX").Wait(); err == nil {
		t.Error("DELETE INBOX succeeded")
	}
	if err := c.Delete("Nulle part").Wait(); respCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("DELETE of a missing mailbox: %v", err)
	}
	if err := c.Delete("Dossiers/2025").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Dossiers/2025", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	st2, err := c.Status("Dossiers/2025", &imap.StatusOptions{NumMessages: true, UIDValidity: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if st2.UIDValidity == ad.UIDValidity || *st2.NumMessages != 0 {
		t.Errorf("recreated mailbox: UIDVALIDITY %d (old %d), %d messages", st2.UIDValidity, ad.UIDValidity, *st2.NumMessages)
	}

	// RFC 3501 §6.3.5: renaming INBOX moves its messages to the new name
	// and leaves INBOX empty; INBOX's inferiors stay where they are.
	sendRx(t, h, h.info.Pharmacy.Address)
	appendMsg(t, c, "INBOX", note("copie", "", 10), nil)
	if err := c.Create("INBOX/Traitées", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	inbox := mustSelect(t, c, "INBOX", true)
	before := uidFetch(t, c, imap.SeqSet{{Start: 1, Stop: 0}})
	if err := c.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename("inbox", "Ancienne boîte", nil).Wait(); err != nil {
		t.Fatalf("RENAME INBOX: %v", err)
	}
	old := mustSelect(t, c, "Ancienne boîte", true)
	if old.NumMessages != 2 || old.UIDValidity != inbox.UIDValidity {
		t.Errorf("renamed INBOX: %d messages, UIDVALIDITY %d; INBOX had 2, %d", old.NumMessages, old.UIDValidity, inbox.UIDValidity)
	}
	if got := uidFetch(t, c, imap.SeqSet{{Start: 1, Stop: 0}}); !slices.Equal(got, before) {
		t.Errorf("renamed INBOX UIDs %v, were %v", got, before)
	}
	fresh := mustSelect(t, c, "INBOX", true)
	if fresh.NumMessages != 0 || fresh.UIDValidity == inbox.UIDValidity {
		t.Errorf("INBOX after its rename: %d messages, UIDVALIDITY %d (old %d)", fresh.NumMessages, fresh.UIDValidity, inbox.UIDValidity)
	}
	names := listNames(t, c, "", "*", nil)
	for _, want := range []string{"INBOX", "INBOX/Traitées", "Ancienne boîte"} {
		if !slices.Contains(names, want) {
			t.Errorf("LIST after RENAME INBOX = %v, lacks %q", names, want)
		}
	}
	// New prescriptions land in the new INBOX.
	sendRx(t, h, h.info.Pharmacy.Address)
	if st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 1 {
		t.Errorf("new INBOX after a delivery: %+v, %v", st, err)
	}
}

// TestIMAPDeleteSelectedMailbox: deleting the mailbox this session has
// selected (RFC 3501 leaves it allowed) must not break the session.
func TestIMAPDeleteSelectedMailbox(t *testing.T) {
	h := newHarness(t)
	c := h.imap(h.info.Pharmacy, nil)
	if err := c.Create("Temporaire", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, c, "Temporaire", note("x", "", 5), nil)
	mustSelect(t, c, "Temporaire", false)
	if err := c.Delete("Temporaire").Wait(); err != nil {
		t.Fatalf("DELETE of the selected mailbox: %v", err)
	}
	// Whatever the answers, the connection survives each command.
	_, _ = c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true}).Collect()
	noop(t, c)
	_ = c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close()
	noop(t, c)
	_, _ = c.Search(&imap.SearchCriteria{}, nil).Wait()
	noop(t, c)
	_, _ = c.Copy(imap.SeqSetNum(1), "Archive").Wait()
	noop(t, c)
	_, _ = c.Move(imap.SeqSetNum(1), "Archive").Wait()
	noop(t, c)
	_ = c.Expunge().Close()
	noop(t, c)
	if sel := mustSelect(t, c, "INBOX", false); sel == nil {
		t.Fatal("no SELECT data")
	}
}

// TestIMAPRenameSelectedMailbox: a session that renames the mailbox it
// has selected (or a parent of it) keeps working on the same messages.
func TestIMAPRenameSelectedMailbox(t *testing.T) {
	h := newHarness(t)
	c := h.imap(h.info.Pharmacy, nil)
	for _, name := range []string{"Projets", "Projets/2025"} {
		if err := c.Create(name, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	ad := appendMsg(t, c, "Projets/2025", note("x", "", 5), nil)
	appendMsg(t, c, "Projets/2025", note("y", "", 5), nil)
	mustSelect(t, c, "Projets/2025", false)
	if err := c.Rename("Projets", "Dossiers", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatalf("STORE after renaming the selected mailbox's parent: %v", err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatalf("EXPUNGE after the rename: %v", err)
	}
	st, err := c.Status("Dossiers/2025", &imap.StatusOptions{NumMessages: true, UIDValidity: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if *st.NumMessages != 1 || st.UIDValidity != ad.UIDValidity {
		t.Errorf("Dossiers/2025 after EXPUNGE: %d messages, UIDVALIDITY %d (want 1, %d)", *st.NumMessages, st.UIDValidity, ad.UIDValidity)
	}
	// Another session that had it selected is told the mailbox is gone
	// instead of getting an internal error.
	other := h.imap(h.info.Pharmacy, nil)
	mustSelect(t, other, "Dossiers/2025", false)
	if err := c.Rename("Dossiers/2025", "Classé", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	err = other.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close()
	if c := respCode(err); c == imap.ResponseCodeServerBug {
		t.Errorf("STORE on a mailbox another session renamed: %v", err)
	}
	noop(t, other)
}

// TestIMAPStatusAndList: STATUS items (RFC 3501 §6.3.10, RFC 8438 SIZE),
// LIST-STATUS (RFC 5819) and SPECIAL-USE attributes (RFC 6154).
func TestIMAPStatusAndList(t *testing.T) {
	h := newHarness(t)
	c := h.imap(h.info.Pharmacy, nil)
	m1, m2 := note("lu", "", 100), note("non lu", "", 300)
	appendMsg(t, c, "Archive", m1, &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}})
	last := appendMsg(t, c, "Archive", m2, nil)

	all := &imap.StatusOptions{NumMessages: true, UIDNext: true, UIDValidity: true, NumUnseen: true, Size: true}
	st, err := c.Status("Archive", all).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if *st.NumMessages != 2 || *st.NumUnseen != 1 || *st.Size != int64(len(m1)+len(m2)) ||
		st.UIDNext != last.UID+1 || st.UIDValidity != last.UIDValidity {
		t.Errorf("STATUS Archive: messages %d unseen %d size %d uidnext %d uidvalidity %d; want 2 1 %d %d %d",
			*st.NumMessages, *st.NumUnseen, *st.Size, st.UIDNext, st.UIDValidity, len(m1)+len(m2), last.UID+1, last.UIDValidity)
	}
	if _, err := c.Status("Nulle part", all).Wait(); respCode(err) != imap.ResponseCodeNonExistent {
		t.Errorf("STATUS of a missing mailbox: %v", err)
	}
	// STATUS of the selected mailbox agrees with SELECT.
	sel := mustSelect(t, c, "Archive", false)
	if sel.UIDValidity != st.UIDValidity || sel.UIDNext != st.UIDNext || sel.NumMessages != 2 {
		t.Errorf("SELECT %+v disagrees with STATUS", sel)
	}

	l, err := c.List("", "*", &imap.ListOptions{ReturnStatus: all, ReturnSpecialUse: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	special := map[string]imap.MailboxAttr{"Sent": imap.MailboxAttrSent, "Drafts": imap.MailboxAttrDrafts,
		"Trash": imap.MailboxAttrTrash, "Archive": imap.MailboxAttrArchive}
	seen := map[string]bool{}
	for _, d := range l {
		seen[d.Mailbox] = true
		if d.Status == nil || d.Status.NumMessages == nil {
			t.Errorf("LIST-STATUS: no STATUS for %q", d.Mailbox)
			continue
		}
		want := uint32(0)
		if d.Mailbox == "Archive" {
			want = 2
			if *d.Status.NumUnseen != 1 || *d.Status.Size != *st.Size || d.Status.UIDValidity != st.UIDValidity {
				t.Errorf("LIST-STATUS Archive %+v, STATUS said %+v", d.Status, st)
			}
		}
		if *d.Status.NumMessages != want {
			t.Errorf("LIST-STATUS %q: %d messages, want %d", d.Mailbox, *d.Status.NumMessages, want)
		}
		if use, ok := special[d.Mailbox]; ok && !slices.Contains(d.Attrs, use) {
			t.Errorf("%q lacks %s: %v", d.Mailbox, use, d.Attrs)
		}
		for _, use := range special {
			if special[d.Mailbox] != use && slices.Contains(d.Attrs, use) {
				t.Errorf("%q wrongly has %s", d.Mailbox, use)
			}
		}
	}
	for _, name := range defaultFolders {
		if !seen[name] {
			t.Errorf("LIST lacks %q", name)
		}
	}
	got := listNames(t, c, "", "*", &imap.ListOptions{SelectSpecialUse: true})
	if !slices.Equal(got, []string{"Archive", "Drafts", "Sent", "Trash"}) {
		t.Errorf("LIST (SPECIAL-USE) = %v", got)
	}
	// An empty pattern asks for the delimiter (RFC 3501 §6.3.8).
	// (imapclient hides the answer, whose name is empty.)
	r := h.raw(t, h.info.Pharmacy)
	if u := r.ok(`LIST "" ""`); len(u) != 1 || u[0] != `* LIST (\Noselect) "/" ""` {
		t.Errorf(`LIST "" "" = %q`, u)
	}
}

// TestIMAPSearchKeys: RFC 3501 §6.4.4 keys a practice's software uses.
func TestIMAPSearchKeys(t *testing.T) {
	h := newHarness(t)
	c := h.imap(h.info.Pharmacy, nil)
	if err := c.Create("Recherche", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 12, 0, 0, 0, time.UTC) }
	msgs := []struct {
		raw   []byte
		date  time.Time
		flags []imap.Flag
	}{
		{note("Ordonnance A", "X-Priorite: urgente\r\n", 50), day(2024, 1, 10), nil},
		{note("Compte rendu", "", 8000), day(2025, 3, 1), []imap.Flag{imap.FlagSeen}},
		{note("Ordonnance B", "Subject-Extra: Ordonnance\r\n", 500), day(2025, 6, 1), []imap.Flag{"$Dispensed"}},
	}
	var uids []imap.UID
	for _, m := range msgs {
		uids = append(uids, appendMsg(t, c, "Recherche", m.raw, &imap.AppendOptions{Time: m.date, Flags: m.flags}).UID)
	}
	mustSelect(t, c, "Recherche", true)
	hdr := func(k, v string) []imap.SearchCriteriaHeaderField {
		return []imap.SearchCriteriaHeaderField{{Key: k, Value: v}}
	}
	cases := []struct {
		name string
		c    imap.SearchCriteria
		want []uint32
	}{
		{"ALL", imap.SearchCriteria{}, []uint32{1, 2, 3}},
		{"SUBJECT ordonnance", imap.SearchCriteria{Header: hdr("Subject", "ordonnance")}, []uint32{1, 3}},
		{"NOT SUBJECT Ordonnance", imap.SearchCriteria{Not: []imap.SearchCriteria{{Header: hdr("Subject", "Ordonnance")}}}, []uint32{2}},
		{"OR SUBJECT compte HEADER X-Priorite urgente", imap.SearchCriteria{Or: [][2]imap.SearchCriteria{{
			{Header: hdr("Subject", "compte")}, {Header: hdr("X-Priorite", "urgente")}}}}, []uint32{1, 2}},
		{"HEADER X-Priorite \"\"", imap.SearchCriteria{Header: hdr("X-Priorite", "")}, []uint32{1}},
		{"LARGER 5000", imap.SearchCriteria{Larger: 5000}, []uint32{2}},
		{"SMALLER 5000", imap.SearchCriteria{Smaller: 5000}, []uint32{1, 3}},
		{"SINCE 1-Feb-2025", imap.SearchCriteria{Since: day(2025, 2, 1)}, []uint32{2, 3}},
		{"SINCE 1-Mar-2025 (the day itself)", imap.SearchCriteria{Since: day(2025, 3, 1)}, []uint32{2, 3}},
		{"BEFORE 1-Mar-2025", imap.SearchCriteria{Before: day(2025, 3, 1)}, []uint32{1}},
		{"SENTSINCE 1-Jan-2025", imap.SearchCriteria{SentSince: day(2025, 1, 1)}, []uint32{1, 2, 3}},
		{"SEEN", imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, []uint32{2}},
		{"UNSEEN", imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, []uint32{1, 3}},
		{"KEYWORD $dispensed", imap.SearchCriteria{Flag: []imap.Flag{"$dispensed"}}, []uint32{3}},
		{"UNKEYWORD $Dispensed", imap.SearchCriteria{NotFlag: []imap.Flag{"$Dispensed"}}, []uint32{1, 2}},
		{"BODY posologie", imap.SearchCriteria{Body: []string{"POSOLOGIE"}}, []uint32{1, 2, 3}},
		{"BODY ordonnance (only in headers)", imap.SearchCriteria{Body: []string{"ordonnance"}}, nil},
		{"TEXT urgente", imap.SearchCriteria{Text: []string{"urgente"}}, []uint32{1}},
		{"NOT OR LARGER 5000 KEYWORD $Dispensed", imap.SearchCriteria{Not: []imap.SearchCriteria{{Or: [][2]imap.SearchCriteria{{
			{Larger: 5000}, {Flag: []imap.Flag{"$Dispensed"}}}}}}}, []uint32{1}},
		{"2:* SUBJECT ordonnance", imap.SearchCriteria{SeqNum: []imap.SeqSet{{{Start: 2, Stop: 0}}}, Header: hdr("Subject", "ordonnance")}, []uint32{3}},
		{"UID *", imap.SearchCriteria{UID: []imap.UIDSet{{{Start: 0, Stop: 0}}}}, []uint32{3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.Search(&tc.c, nil).Wait()
			if err != nil {
				t.Fatal(err)
			}
			if got := res.AllSeqNums(); !slices.Equal(got, tc.want) {
				t.Errorf("SEARCH = %v, want %v", got, tc.want)
			}
			ures, err := c.UIDSearch(&tc.c, nil).Wait()
			if err != nil {
				t.Fatal(err)
			}
			var want []imap.UID
			for _, n := range tc.want {
				want = append(want, uids[n-1])
			}
			if got := ures.AllUIDs(); !slices.Equal(got, want) {
				t.Errorf("UID SEARCH = %v, want %v", got, want)
			}
		})
	}
}

// TestIMAPCloseExpunges: CLOSE expunges \Deleted messages silently under
// SELECT, and under EXAMINE removes nothing and is no error (RFC 3501
// §6.4.2).
func TestIMAPCloseExpunges(t *testing.T) {
	h := newHarness(t)
	c, ev := h.watched(h.info.Pharmacy)
	appendMsg(t, c, "INBOX", note("garder", "", 10), nil)
	appendMsg(t, c, "INBOX", note("jeter", "", 10), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDeleted}})

	mustSelect(t, c, "INBOX", true)
	if err := c.UnselectAndExpunge().Wait(); err != nil {
		t.Errorf("CLOSE after EXAMINE: %v", err)
	}
	if st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 2 {
		t.Errorf("after CLOSE under EXAMINE: %+v, %v; want 2 messages", st, err)
	}
	// CLOSE really left the selected state: a FETCH is refused.
	if _, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{UID: true}).Collect(); err == nil {
		t.Error("FETCH accepted after CLOSE")
	}

	// UNSELECT never expunges (RFC 3691).
	mustSelect(t, c, "INBOX", false)
	if err := c.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 2 {
		t.Errorf("after UNSELECT: %+v, %v; want 2 messages", st, err)
	}

	mustSelect(t, c, "INBOX", false)
	if err := c.UnselectAndExpunge().Wait(); err != nil {
		t.Fatalf("CLOSE after SELECT: %v", err)
	}
	if st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 1 {
		t.Errorf("after CLOSE under SELECT: %+v, %v; want 1 message", st, err)
	}
	if _, expunges, _ := ev.snapshot(); len(expunges) != 0 {
		t.Errorf("CLOSE sent EXPUNGE responses %v", expunges)
	}
	// What stayed is the one without \Deleted.
	mustSelect(t, c, "INBOX", true)
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Envelope: true, Flags: true}).Collect()
	if err != nil || len(msgs) != 1 || msgs[0].Envelope.Subject != "garder" {
		t.Errorf("left after CLOSE: %+v, %v", msgs, err)
	}
}

// listLines is the LIST (or LSUB) lines of untagged, as the server wrote
// them, in order.
func listLines(untagged []string) []string {
	var out []string
	for _, l := range untagged {
		if strings.HasPrefix(l, "* LIST ") || strings.HasPrefix(l, "* LSUB ") {
			out = append(out, l)
		}
	}
	return out
}

// TestIMAPHierarchy: a client browsing level by level (LIST "%") reaches
// every mailbox. CREATE makes the superiors a name lacks (RFC 3501
// §6.3.3), as RENAME does (§6.3.5); a parent deleted with children stays
// as a \Noselect level that cannot be deleted again (§6.3.4, §6.3.8); and
// LIST-EXTENDED reports such levels for their subscribed children (RFC
// 5258 §3.5 RECURSIVEMATCH, CHILDINFO).
func TestIMAPHierarchy(t *testing.T) {
	h := newHarness(t)
	r := h.raw(t, h.info.Pharmacy) // a fresh account: nothing but the defaults

	r.ok(`CREATE "P/C"`)
	top := listLines(r.ok(`LIST "" "%%"`))
	want := []string{
		`* LIST (\HasNoChildren \Archive) "/" "Archive"`,
		`* LIST (\HasNoChildren \Drafts) "/" "Drafts"`,
		`* LIST (\HasNoChildren) "/" INBOX`,
		`* LIST (\HasChildren) "/" "P"`,
		`* LIST (\HasNoChildren \Sent) "/" "Sent"`,
		`* LIST (\HasNoChildren \Trash) "/" "Trash"`,
	}
	if !slices.Equal(top, want) {
		t.Errorf("LIST %% after CREATE P/C:\n got %q\nwant %q", top, want)
	}
	if u := r.ok(`SELECT "P"`); !slices.Contains(u, "* 0 EXISTS") {
		t.Errorf("SELECT P (created as C's parent) = %q", u)
	}
	if l := listLines(r.ok(`LIST "P/" "%%"`)); !slices.Equal(l, []string{`* LIST (\HasNoChildren) "/" "P/C"`}) {
		t.Errorf(`LIST "P/" "%%" = %q`, l)
	}
	r.ok(`UNSELECT`)

	// DELETE of a parent with children: its messages go, the name stays
	// as a \Noselect level with its children untouched.
	r.ok(`APPEND "P" {%d+}`+"\r\n%s", len(note("p", "", 5)), note("p", "", 5))
	r.ok(`APPEND "P/C" {%d+}`+"\r\n%s", len(note("c", "", 5)), note("c", "", 5))
	r.ok(`DELETE "P"`)
	if l := listLines(r.ok(`LIST "" "P"`)); !slices.Equal(l, []string{`* LIST (\Noselect \HasChildren) "/" "P"`}) {
		t.Errorf(`LIST "" "P" after DELETE P = %q`, l)
	}
	if l := listLines(r.ok(`LIST "" "P*"`)); !slices.Equal(l, []string{`* LIST (\HasNoChildren) "/" "P/C"`}) {
		t.Errorf(`LIST "" "P*" after DELETE P = %q (the child shows; the level is implied)`, l)
	}
	// LIST-EXTENDED spelling (RFC 5258 §3): \NonExistent.
	if l := listLines(r.ok(`LIST "" "P" RETURN (SUBSCRIBED)`)); !slices.Equal(l, []string{`* LIST (\NonExistent \HasChildren) "/" "P"`}) {
		t.Errorf(`LIST "" "P" RETURN (SUBSCRIBED) = %q`, l)
	}
	for _, tc := range []struct{ cmd, code string }{
		{`SELECT "P"`, "[NONEXISTENT]"},
		{`STATUS "P" (MESSAGES)`, "[NONEXISTENT]"},
		{fmt.Sprintf("APPEND \"P\" {%d+}\r\n%s", len(note("p", "", 5)), note("p", "", 5)), "[TRYCREATE]"},
		// RFC 3501 §6.3.4: a \Noselect name with inferiors cannot be deleted.
		{`DELETE "P"`, "[HASCHILDREN]"},
		{`DELETE "Nulle/part"`, "[NONEXISTENT]"},
	} {
		if _, st := r.do("%s", tc.cmd); !strings.HasPrefix(st, "NO "+tc.code) {
			t.Errorf("%s = %q, want NO %s", tc.cmd, st, tc.code)
		}
	}
	if u := r.ok(`STATUS "P/C" (MESSAGES)`); !slices.Contains(u, `* STATUS "P/C" (MESSAGES 1)`) {
		t.Errorf("the child after DELETE P: %q", u)
	}
	// CREATE of a name below the level does not bring P back; CREATE P
	// does, empty.
	r.ok(`CREATE "P/D"`)
	if l := listLines(r.ok(`LIST "" "P"`)); !slices.Equal(l, []string{`* LIST (\Noselect \HasChildren) "/" "P"`}) {
		t.Errorf(`LIST "" "P" after CREATE P/D = %q`, l)
	}
	r.ok(`CREATE "P"`)
	if u := r.ok(`SELECT "P"`); !slices.Contains(u, "* 0 EXISTS") {
		t.Errorf("SELECT P created again = %q", u)
	}
	r.ok(`UNSELECT`)
	// Once the children are gone, the level is too.
	r.ok(`CREATE "L/M"`)
	r.ok(`DELETE "L"`)
	r.ok(`DELETE "L/M"`)
	if l := listLines(r.ok(`LIST "" "L*"`)); len(l) != 0 {
		t.Errorf("LIST after deleting L then L/M = %q", l)
	}

	// RENAME below a missing level creates it (RFC 3501 §6.3.5).
	r.ok(`CREATE "Q"`)
	r.ok(`RENAME "Q" "N/Q"`)
	if l := listLines(r.ok(`LIST "" "N"`)); !slices.Equal(l, []string{`* LIST (\HasChildren) "/" "N"`}) {
		t.Errorf(`LIST "" "N" after RENAME Q N/Q = %q`, l)
	}

	// RECURSIVEMATCH and CHILDINFO (RFC 5258 §3.5): X is deleted, X/Y
	// subscribed; S exists, unsubscribed, with S/T subscribed.
	for _, cmd := range []string{`CREATE "X/Y"`, `DELETE "X"`, `SUBSCRIBE "X/Y"`, `CREATE "S/T"`, `SUBSCRIBE "S/T"`} {
		r.ok("%s", cmd)
	}
	got := listLines(r.ok(`LIST (SUBSCRIBED RECURSIVEMATCH) "" "%%"`))
	want = []string{
		`* LIST (\HasNoChildren \Archive \Subscribed) "/" "Archive"`,
		`* LIST (\HasNoChildren \Drafts \Subscribed) "/" "Drafts"`,
		`* LIST (\HasNoChildren \Subscribed) "/" INBOX`,
		`* LIST (\HasChildren) "/" "S" (CHILDINFO ("SUBSCRIBED"))`,
		`* LIST (\HasNoChildren \Sent \Subscribed) "/" "Sent"`,
		`* LIST (\HasNoChildren \Trash \Subscribed) "/" "Trash"`,
		`* LIST (\NonExistent \HasChildren) "/" "X" (CHILDINFO ("SUBSCRIBED"))`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %%:\n got %q\nwant %q", got, want)
	}
	// Without RECURSIVEMATCH, only subscribed names.
	if l := listLines(r.ok(`LIST (SUBSCRIBED) "" "%%"`)); len(l) != 5 {
		t.Errorf("LIST (SUBSCRIBED) \"\" %% = %q, want the 5 default folders", l)
	}
	// "*" shows X/Y itself, so the level X is not returned.
	got = listLines(r.ok(`LIST (SUBSCRIBED RECURSIVEMATCH) "" "X*"`))
	if !slices.Equal(got, []string{`* LIST (\HasNoChildren \Subscribed) "/" "X/Y"`}) {
		t.Errorf(`LIST (SUBSCRIBED RECURSIVEMATCH) "" "X*" = %q`, got)
	}
	// RECURSIVEMATCH needs another selection option (RFC 5258 §3.1).
	if _, st := r.do(`LIST (RECURSIVEMATCH) "" "%%"`); !strings.HasPrefix(st, "BAD") {
		t.Errorf("LIST (RECURSIVEMATCH) alone = %q, want BAD", st)
	}

	// LSUB and UNSUBSCRIBE (RFC 3501 §6.3.7, §6.3.9).
	lsub := listLines(r.ok(`LSUB "" "*"`))
	var subscribed []string
	for _, l := range lsub {
		if !strings.HasPrefix(l, "* LSUB (") {
			t.Errorf("LSUB answered %q", l)
		}
		subscribed = append(subscribed, l[strings.LastIndex(l, `"/" `)+4:])
	}
	if wantSub := []string{`"Archive"`, `"Drafts"`, `INBOX`, `"S/T"`, `"Sent"`, `"Trash"`, `"X/Y"`}; !slices.Equal(subscribed, wantSub) {
		t.Errorf("LSUB \"\" * = %q, want %q", subscribed, wantSub)
	}
	r.ok(`UNSUBSCRIBE "S/T"`)
	r.ok(`UNSUBSCRIBE "S/T"`) // already unsubscribed: no error
	if l := listLines(r.ok(`LSUB "" "S/*"`)); len(l) != 0 {
		t.Errorf("LSUB after UNSUBSCRIBE S/T = %q", l)
	}
	if l := listLines(r.ok(`LIST (SUBSCRIBED RECURSIVEMATCH) "" "S"`)); len(l) != 0 {
		t.Errorf("S still reported for a subscribed child after UNSUBSCRIBE: %q", l)
	}
	if _, st := r.do(`UNSUBSCRIBE "Nulle part"`); !strings.HasPrefix(st, "NO [NONEXISTENT]") {
		t.Errorf("UNSUBSCRIBE of a missing mailbox = %q", st)
	}
	if l := listLines(r.ok(`LSUB "" "X/%%"`)); len(l) != 1 || !strings.HasPrefix(l[0], `* LSUB (\HasNoChildren`) || !strings.HasSuffix(l[0], `) "/" "X/Y"`) {
		t.Errorf(`LSUB "" "X/%%" = %q`, l)
	}
}

// appendRawIMAP appends note(subject) to mailbox over r with flags (an
// IMAP flag list such as `(\Seen)`, or "").
func appendRawIMAP(r *rawIMAP, mailbox, flags, subject string) {
	r.t.Helper()
	msg := note(subject, "", 20)
	if flags != "" {
		flags += " "
	}
	r.ok("APPEND %s %s{%d+}\r\n%s", quote(mailbox), flags, len(msg), msg)
}

// TestIMAPESearch: SEARCH RETURN (RFC 4731) for sequence numbers and
// UIDs, which differ here because the first message was expunged.
func TestIMAPESearch(t *testing.T) {
	h := newHarness(t)
	r := h.raw(t, h.info.Pharmacy)
	r.ok(`CREATE "Recherche"`)
	for i, flags := range []string{`(\Deleted)`, "", `(\Seen)`, "", `(\Seen)`} {
		appendRawIMAP(r, "Recherche", flags, fmt.Sprintf("message %d", i+1))
	}
	r.ok(`SELECT "Recherche"`)
	r.ok(`EXPUNGE`)
	// Sequence numbers 1–4 are UIDs 2–5; UIDs 2 and 4 are unseen.
	esearch := func(cmd string) string {
		t.Helper()
		tag := fmt.Sprintf("R%d", r.tag+1)
		var lines []string
		for _, l := range r.ok("%s", cmd) {
			if strings.HasPrefix(l, "* ESEARCH") || strings.HasPrefix(l, "* SEARCH") {
				lines = append(lines, strings.Replace(l, `(TAG "`+tag+`")`, "(TAG)", 1))
			}
		}
		if len(lines) != 1 {
			t.Errorf("%s: answers %q, want one", cmd, lines)
			return ""
		}
		return lines[0]
	}
	for _, tc := range []struct{ cmd, want string }{
		{`SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN`, `* ESEARCH (TAG) ALL 1,3 MIN 1 MAX 3 COUNT 2`},
		{`UID SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN`, `* ESEARCH (TAG) UID ALL 2,4 MIN 2 MAX 4 COUNT 2`},
		{`SEARCH RETURN (COUNT) SEEN`, `* ESEARCH (TAG) COUNT 2`},
		{`UID SEARCH RETURN (MAX) ALL`, `* ESEARCH (TAG) UID MAX 5`},
		// RFC 4731 §3.1: RETURN () is RETURN (ALL).
		{`SEARCH RETURN () ALL`, `* ESEARCH (TAG) ALL 1:4`},
		// No match: MIN, MAX and ALL are omitted, COUNT is 0.
		{`UID SEARCH RETURN (MIN MAX COUNT ALL) KEYWORD $Absent`, `* ESEARCH (TAG) UID COUNT 0`},
		// Without RETURN, the RFC 3501 answer.
		{`SEARCH UNSEEN`, `* SEARCH 1 3`},
		{`UID SEARCH UNSEEN`, `* SEARCH 2 4`},
	} {
		if got := esearch(tc.cmd); got != tc.want {
			t.Errorf("%s = %q, want %q", tc.cmd, got, tc.want)
		}
	}
}

// TestIMAPEnable: ENABLE (RFC 5161) turns on UTF8=ACCEPT (RFC 6855) and
// silently nothing else; it needs a login.
func TestIMAPEnable(t *testing.T) {
	h := newHarness(t)
	pre := h.rawDial(t)
	if _, st := pre.do("ENABLE UTF8=ACCEPT"); strings.HasPrefix(st, "OK") {
		t.Errorf("ENABLE before login = %q", st)
	}

	r := h.raw(t, h.info.Pharmacy)
	r.ok(`CREATE "Bo&AO4-te"`) // "Boîte" in modified UTF-7 (RFC 3501 §5.1.3)
	if l := listLines(r.ok(`LIST "" "Bo*"`)); !slices.Equal(l, []string{`* LIST (\HasNoChildren) "/" "Bo&AO4-te"`}) {
		t.Errorf("LIST before ENABLE UTF8=ACCEPT = %q", l)
	}
	for _, tc := range []struct{ cmd, want string }{
		// Not offered (docs/imap.md): not enabled, and no error.
		{"ENABLE CONDSTORE", "* ENABLED"},
		{"ENABLE QRESYNC X-INCONNU", "* ENABLED"},
		{"ENABLE X-INCONNU UTF8=ACCEPT", "* ENABLED UTF8=ACCEPT"},
	} {
		var enabled []string
		for _, l := range r.ok("%s", tc.cmd) {
			if strings.HasPrefix(l, "* ENABLED") {
				enabled = append(enabled, l)
			}
		}
		if !slices.Equal(enabled, []string{tc.want}) {
			t.Errorf("%s = %q, want %q", tc.cmd, enabled, tc.want)
		}
	}
	// RFC 6855 §3: mailbox names now travel as UTF-8.
	if l := listLines(r.ok(`LIST "" "Bo*"`)); !slices.Equal(l, []string{`* LIST (\HasNoChildren) "/" "Boîte"`}) {
		t.Errorf("LIST after ENABLE UTF8=ACCEPT = %q", l)
	}
}

// TestIMAPUIDExpunge: UID EXPUNGE (RFC 4315 §2.1) removes only the named
// UIDs among the \Deleted messages.
func TestIMAPUIDExpunge(t *testing.T) {
	h := newHarness(t)
	r := h.raw(t, h.info.Pharmacy)
	r.ok(`CREATE "Tri"`)
	for i, flags := range []string{`(\Deleted)`, `(\Deleted)`, `(\Deleted)`, ""} {
		appendRawIMAP(r, "Tri", flags, fmt.Sprintf("message %d", i+1))
	}
	r.ok(`SELECT "Tri"`)
	if u := r.ok(`UID EXPUNGE 2`); !slices.Equal(u, []string{"* 2 EXPUNGE"}) {
		t.Errorf("UID EXPUNGE 2 = %q, want only * 2 EXPUNGE", u)
	}
	// UID 4 is not \Deleted: nothing goes.
	if u := r.ok(`UID EXPUNGE 4`); len(u) != 0 {
		t.Errorf("UID EXPUNGE of a message without \\Deleted = %q", u)
	}
	if got := fetchedUIDs(r.ok(`UID FETCH 1:* (FLAGS)`)); !slices.Equal(got, []string{"1:1", "2:3", "3:4"}) {
		t.Errorf("left after UID EXPUNGE 2: %v, want UIDs 1, 3, 4", got)
	}
	if u := r.ok(`UID EXPUNGE 3:*`); !slices.Equal(u, []string{"* 2 EXPUNGE"}) {
		t.Errorf("UID EXPUNGE 3:* = %q", u)
	}
	if u := r.ok(`EXPUNGE`); !slices.Equal(u, []string{"* 1 EXPUNGE"}) {
		t.Errorf("EXPUNGE after the UID EXPUNGEs = %q", u)
	}
	if got := fetchedUIDs(r.ok(`UID FETCH 1:* (FLAGS)`)); !slices.Equal(got, []string{"1:4"}) {
		t.Errorf("left at the end: %v, want UID 4", got)
	}
}

// TestIMAPExamineRefusesExpunge: under EXAMINE, EXPUNGE and UID EXPUNGE
// are refused and remove nothing (RFC 3501 §6.3.2), nor do STORE or MOVE
// change anything.
func TestIMAPExamineRefusesExpunge(t *testing.T) {
	h := newHarness(t)
	r := h.raw(t, h.info.Pharmacy)
	r.ok(`CREATE "Lecture"`)
	appendRawIMAP(r, "Lecture", `(\Deleted)`, "un")
	appendRawIMAP(r, "Lecture", `(\Deleted \Seen)`, "deux")
	if _, st := r.do(`EXAMINE "Lecture"`); !strings.HasPrefix(st, "OK [READ-ONLY]") {
		t.Fatalf("EXAMINE = %q, want OK [READ-ONLY]", st)
	}
	for _, cmd := range []string{`EXPUNGE`, `UID EXPUNGE 1:*`, `STORE 1 -FLAGS (\Deleted)`, `UID MOVE 1:* "Archive"`} {
		u, st := r.do("%s", cmd)
		if !strings.HasPrefix(st, "NO") {
			t.Errorf("%s under EXAMINE = %q, want NO", cmd, st)
		}
		for _, l := range u {
			if strings.HasSuffix(l, " EXPUNGE") || strings.Contains(l, " FETCH ") {
				t.Errorf("%s under EXAMINE sent %q", cmd, l)
			}
		}
	}
	if got := fetchedUIDs(r.ok(`FETCH 1:* (UID FLAGS)`)); !slices.Equal(got, []string{"1:1", "2:2"}) {
		t.Errorf("messages after the refused commands: %v", got)
	}
	r.ok(`UNSELECT`)
	if u := r.ok(`STATUS "Lecture" (MESSAGES)`); !slices.Contains(u, `* STATUS "Lecture" (MESSAGES 2)`) {
		t.Errorf("STATUS after the refused EXPUNGEs = %q", u)
	}
	// The same EXPUNGE under SELECT does remove them.
	r.ok(`SELECT "Lecture"`)
	if u := r.ok(`EXPUNGE`); len(u) != 2 {
		t.Errorf("EXPUNGE under SELECT = %q", u)
	}
}

// TestIMAPAuthenticatePlain: AUTHENTICATE PLAIN (RFC 4616) with the
// initial response on the command line (RFC 4959 SASL-IR) and without it.
func TestIMAPAuthenticatePlain(t *testing.T) {
	h := newHarness(t)
	u := h.info.Pharmacy
	plain := func(authz, user, pass string) string {
		return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + user + "\x00" + pass))
	}

	r := h.rawDial(t)
	r.ok("AUTHENTICATE PLAIN %s", plain("", u.Address, u.Password))
	if u := r.ok(`SELECT INBOX`); !slices.ContainsFunc(u, func(l string) bool { return strings.HasSuffix(l, " EXISTS") }) {
		t.Errorf("SELECT after AUTHENTICATE = %q", u)
	}

	for _, tc := range []struct{ name, resp, want string }{
		{"wrong password", plain("", u.Address, u.Password+"x"), "NO [AUTHENTICATIONFAILED]"},
		{"another identity", plain(h.info.Prescriber.Address, u.Address, u.Password), "NO"},
		// go-imap v2.0.0-beta.8 answers these two NO [SERVERBUG] (its
		// SASL decoding returns a plain error, before any hook of ours):
		// what matters here is that they do not log in.
		{"not base64", "%%%", "NO"},
		{"not PLAIN", base64.StdEncoding.EncodeToString([]byte("sans séparateur")), "NO"},
	} {
		r := h.rawDial(t)
		if _, st := r.do("AUTHENTICATE PLAIN %s", tc.resp); !strings.HasPrefix(st, tc.want) {
			t.Errorf("%s: %q, want %s", tc.name, st, tc.want)
		}
		if _, st := r.do(`SELECT INBOX`); strings.HasPrefix(st, "OK") {
			t.Errorf("%s: SELECT accepted after a failed AUTHENTICATE", tc.name)
		}
	}

	// Without SASL-IR: an empty continuation, then the response.
	r = h.rawDial(t)
	if _, err := fmt.Fprintf(r.conn, "A1 AUTHENTICATE PLAIN\r\n"); err != nil {
		t.Fatal(err)
	}
	if l, err := r.line(); err != nil || !strings.HasPrefix(l, "+") {
		t.Fatalf("AUTHENTICATE PLAIN: %q, %v; want a continuation", l, err)
	}
	if _, err := fmt.Fprintf(r.conn, "%s\r\n", plain("", u.Address, u.Password)); err != nil {
		t.Fatal(err)
	}
	for {
		l, err := r.line()
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := strings.CutPrefix(l, "A1 "); ok {
			if !strings.HasPrefix(st, "OK") {
				t.Fatalf("AUTHENTICATE PLAIN with a continuation: %q", st)
			}
			break
		}
	}
	r.ok(`SELECT INBOX`)
}

// TestIMAPCheck: CHECK (RFC 3501 §6.4.1) succeeds in the selected state;
// every change is already durable when its command is answered.
func TestIMAPCheck(t *testing.T) {
	h := newHarness(t)
	r := h.raw(t, h.info.Pharmacy)
	r.ok(`SELECT INBOX`)
	r.ok(`CHECK`)
	appendRawIMAP(r, "INBOX", "", "après CHECK")
	// CHECK, like NOOP, lets the session learn of the new message.
	if u := r.ok(`CHECK`); len(u) > 0 && !slices.Contains(u, "* 1 EXISTS") {
		t.Errorf("CHECK answered %q", u)
	}
	if got := fetchedUIDs(r.ok(`FETCH 1:* (UID)`)); len(got) != 1 {
		t.Errorf("FETCH after CHECK: %v", got)
	}
}

// capabilityLine sends CAPABILITY and returns the names it lists.
func capabilityLine(r *rawIMAP) []string {
	r.t.Helper()
	for _, l := range r.ok("CAPABILITY") {
		if rest, ok := strings.CutPrefix(l, "* CAPABILITY "); ok {
			caps := strings.Fields(rest)
			slices.Sort(caps)
			return caps
		}
	}
	r.t.Fatal("no CAPABILITY response")
	return nil
}

// TestIMAPCapabilitiesDocumented: what the server advertises, in each
// state, is exactly the table of docs/imap.md, and nothing it lists as not
// offered.
func TestIMAPCapabilitiesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/imap.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Capabilities\n")
	if !ok {
		t.Fatal("docs/imap.md has no Capabilities section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	code := regexp.MustCompile("`([^`]+)`")
	documented := map[string]bool{}
	var notOffered []string
	for _, line := range strings.Split(section, "\n") {
		if rest, ok := strings.CutPrefix(line, "Not offered:"); ok {
			for _, m := range code.FindAllStringSubmatch(rest, -1) {
				notOffered = append(notOffered, strings.Split(m[1], "/")...)
			}
			continue
		}
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.Split(line, "|")[1]
		for _, m := range code.FindAllStringSubmatch(cell, -1) {
			documented[m[1]] = true
		}
	}
	if len(documented) < 10 || len(notOffered) < 4 {
		t.Fatalf("docs/imap.md: parsed %d capabilities, %d not offered: the table changed shape", len(documented), len(notOffered))
	}
	h := newHarness(t)
	// APPENDLIMIT=n: n is limits.max_message_bytes.
	if !documented["APPENDLIMIT=n"] {
		t.Error("docs/imap.md does not list APPENDLIMIT=n")
	}
	delete(documented, "APPENDLIMIT=n")
	documented[fmt.Sprintf("APPENDLIMIT=%d", h.cfg.Limits.MaxMessageBytes)] = true
	// The STARTTLS listener before TLS.
	conn, err := net.DialTimeout("tcp", h.addrs[relay.IMAPSTARTTLS], waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(waitLimit))
	plain := &rawIMAP{t: t, conn: conn, r: bufio.NewReader(conn)}
	if _, err := plain.line(); err != nil {
		t.Fatal(err)
	}
	states := []struct {
		name string
		caps []string
		want []string
	}{
		{"plaintext, before STARTTLS", capabilityLine(plain), []string{"IMAP4rev1", "LITERAL-", "LOGINDISABLED", "SASL-IR", "STARTTLS"}},
		{"TLS, before login", capabilityLine(h.rawDial(t)), []string{"AUTH=PLAIN", "IMAP4rev1", "LITERAL-", "SASL-IR"}},
	}
	var afterLogin []string
	for c := range documented {
		if c != "STARTTLS" && c != "LOGINDISABLED" && c != "AUTH=PLAIN" {
			afterLogin = append(afterLogin, c)
		}
	}
	slices.Sort(afterLogin)
	states = append(states, struct {
		name string
		caps []string
		want []string
	}{"after login", capabilityLine(h.raw(t, h.info.Pharmacy)), afterLogin})

	advertised := map[string]bool{}
	for _, st := range states {
		if !slices.Equal(st.caps, st.want) {
			t.Errorf("CAPABILITY %s:\n got %v\nwant %v", st.name, st.caps, st.want)
		}
		for _, c := range st.caps {
			advertised[c] = true
			if !documented[c] {
				t.Errorf("%s advertised (%s) but not in docs/imap.md's table", c, st.name)
			}
		}
	}
	for c := range documented {
		if !advertised[c] {
			t.Errorf("docs/imap.md lists %s, never advertised", c)
		}
	}
	for _, c := range notOffered {
		if advertised[c] {
			t.Errorf("docs/imap.md says %s is not offered, but it is advertised", c)
		}
	}
}

// TestIMAPFlagRefusals: a flag the store refuses (an unknown system flag,
// RFC 3501 §9 reserves them) is the client's error, NO [CANNOT], not a
// server bug; nothing changes.
func TestIMAPFlagRefusals(t *testing.T) {
	h := newHarness(t)
	r := h.raw(t, h.info.Pharmacy)
	appendRawIMAP(r, "INBOX", "", "drapeaux")
	msg := note("x", "", 5)
	for _, cmd := range []string{
		fmt.Sprintf("APPEND INBOX (\\Inconnu) {%d+}\r\n%s", len(msg), msg),
	} {
		if _, st := r.do("%s", cmd); !strings.HasPrefix(st, "NO [CANNOT]") {
			t.Errorf("%.30q = %q, want NO [CANNOT]", cmd, st)
		}
	}
	r.ok("SELECT INBOX")
	for _, cmd := range []string{`STORE 1 +FLAGS (\Inconnu)`, `UID STORE 1 FLAGS (\Seen \Inconnu)`} {
		if _, st := r.do("%s", cmd); !strings.HasPrefix(st, "NO [CANNOT]") {
			t.Errorf("%s = %q, want NO [CANNOT]", cmd, st)
		}
	}
	if u := r.ok(`FETCH 1:* (FLAGS)`); !slices.Equal(u, []string{`* 1 FETCH (FLAGS ())`}) {
		t.Errorf("after the refused commands: %q, want one message without flags", u)
	}
}

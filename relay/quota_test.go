package relay_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/relay"
	"mssrelay/relay/demo"
)

// The demo pharmacies' addresses, known before the harness exists.
const (
	pharmacyAddr  = "pharmacie.centrale@" + demo.Domain
	pharmacy2Addr = "pharmacie.gare@" + demo.Domain
)

// setQuota gives one account of c its own message quota.
func setQuota(t *testing.T, c *configs.Config, address string, messages int) {
	t.Helper()
	for i := range c.Accounts {
		if c.Accounts[i].Address == address {
			c.Accounts[i].QuotaMessages = messages
			return
		}
	}
	t.Fatalf("no account %s", address)
}

// rawSubmission is an authenticated go-smtp client, for what submit.Conn
// does in one call: here the test acts between RCPT and DATA.
func (h *harness) rawSubmission(t *testing.T) *smtp.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", h.addrs[relay.SMTPSubmission], waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, h.clientTLS())
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", h.info.Prescriber.Address, h.info.Prescriber.Password)); err != nil {
		t.Fatal(err)
	}
	return c
}

// inboxCount counts the messages in u's INBOX.
func (h *harness) inboxCount(t *testing.T, u demo.User) int {
	t.Helper()
	c := h.imap(u, nil)
	defer c.Logout()
	return len(fetchAll(t, c, "INBOX"))
}

// TestQuotaSMTP: a prescription for a full mailbox gets 452 4.2.2 (at
// RCPT, or after DATA when the mailbox filled up in between), nothing is
// filed for any recipient, and once the pharmacy expunges the same
// message is accepted.
func TestQuotaSMTP(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) {
		setQuota(t, c, pharmacyAddr, 1)
		setQuota(t, c, pharmacy2Addr, 1)
	})
	pharmacy, pharmacy2 := h.info.Pharmacy, h.info.Pharmacy2
	from := h.info.Prescriber.Address

	msg1, _ := h.prescription()
	if _, err := h.prescriber().Send(from, []string{pharmacy.Address}, msg1); err != nil {
		t.Fatalf("first prescription: %v", err)
	}

	// The mailbox holds its one message: the next is refused at RCPT, for
	// that recipient only (RFC 5321 §4.5.3.1.10), and transiently.
	msg2, number2 := h.prescription()
	_, err := h.prescriber().Send(from, []string{pharmacy.Address}, msg2)
	if code, enh := smtpCode(err); code != 452 || enh != (smtp.EnhancedCode{4, 2, 2}) {
		t.Fatalf("second prescription: %v, want 452 4.2.2", err)
	}

	// The mailbox fills between RCPT and DATA (here by an APPEND of the
	// pharmacy's own): the filing's transactional check refuses the
	// message after DATA, for every recipient, the prescriber's INBOX
	// included.
	t.Run("full after RCPT", func(t *testing.T) {
		c := h.rawSubmission(t)
		if err := c.Mail(from, nil); err != nil {
			t.Fatal(err)
		}
		for _, rcpt := range []string{from, pharmacy2.Address} {
			if err := c.Rcpt(rcpt, nil); err != nil {
				t.Fatalf("RCPT %s: %v", rcpt, err)
			}
		}
		ic := h.imap(pharmacy2, nil)
		appendMsg(t, ic, "Drafts", note("brouillon", "", 100), nil)
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		msg3, _ := h.prescription()
		if _, err := w.Write(msg3); err != nil {
			t.Fatal(err)
		}
		err = w.Close()
		if code, enh := smtpCode(err); code != 452 || enh != (smtp.EnhancedCode{4, 2, 2}) || !strings.Contains(err.Error(), pharmacy2.Address) {
			t.Fatalf("DATA: %v, want 452 4.2.2 naming %s", err, pharmacy2.Address)
		}
		if n := h.inboxCount(t, h.info.Prescriber); n != 0 {
			t.Errorf("the refused message reached the other recipient: %d messages", n)
		}
		// The session goes on: RSET and QUIT work.
		if err := c.Reset(); err != nil {
			t.Errorf("RSET after 452: %v", err)
		}
	})

	// The pharmacy expunges what it has read; the sender's retry of the
	// same message is then accepted (250) and filed once.
	c := h.imap(pharmacy, nil)
	mustSelect(t, c, "INBOX", false)
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.prescriber().Send(from, []string{pharmacy.Address}, msg2); err != nil {
		t.Fatalf("retry after expunge: %v", err)
	}
	msgs := fetchAll(t, c, "INBOX")
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].FindBodySection(&imap.FetchItemBodySection{})), number2) {
		t.Fatalf("INBOX after the retry holds %d messages, want the second prescription", len(msgs))
	}
}

// TestQuotaIMAP: APPEND and COPY past the quota get NO [OVERQUOTA] and add
// nothing; MOVE is always allowed (it adds nothing), so a full account
// can clean up and then APPEND again.
func TestQuotaIMAP(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) { setQuota(t, c, pharmacyAddr, 2) })
	c := h.imap(h.info.Pharmacy, nil)
	appendMsg(t, c, "Drafts", note("un", "", 100), nil)
	appendMsg(t, c, "Drafts", note("deux", "", 100), nil)

	_, err := appendRaw(c, "Drafts", note("trois", "", 100), nil)
	if respCode(err) != imap.ResponseCodeOverQuota {
		t.Fatalf("third APPEND: %v, want NO [OVERQUOTA]", err)
	}
	mustSelect(t, c, "Drafts", false)
	if _, err := c.Copy(imap.SeqSetNum(1), "Archive").Wait(); respCode(err) != imap.ResponseCodeOverQuota {
		t.Fatalf("COPY at the quota: %v, want NO [OVERQUOTA]", err)
	}
	if st, err := c.Status("Archive", &imap.StatusOptions{NumMessages: true}).Wait(); err != nil || *st.NumMessages != 0 {
		t.Fatalf("Archive after the refused COPY: %v %v", st, err)
	}
	// MOVE at the quota, then expunge from Trash: room again.
	if _, err := c.Move(imap.SeqSetNum(1), "Trash").Wait(); err != nil {
		t.Fatalf("MOVE at the quota: %v", err)
	}
	mustSelect(t, c, "Trash", false)
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	appendMsg(t, c, "Drafts", note("trois", "", 100), nil)
	// The quota is the account's, whatever the folder: full again.
	if _, err := appendRaw(c, "Sent", note("quatre", "", 100), nil); respCode(err) != imap.ResponseCodeOverQuota {
		t.Fatalf("APPEND to another folder of a full account: %v", err)
	}
	noop(t, c) // the session is still usable
}

// TestIMAPSessionsPerAccount: past limits.max_imap_sessions_per_account a
// LOGIN with the right password gets NO [LIMIT]; other accounts are not
// affected; a session that logs out or drops frees its slot.
func TestIMAPSessionsPerAccount(t *testing.T) {
	h := newHarnessWith(t, func(c *configs.Config) { c.Limits.MaxIMAPSessionsPerAccount = 2 })
	u := h.info.Pharmacy
	first := h.imap(u, nil)
	second := h.imap(u, nil)

	third, err := imapclient.DialTLS(h.addrs[relay.IMAPTLS], &imapclient.Options{TLSConfig: h.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { third.Close() })
	err = third.Login(u.Address, u.Password).Wait()
	if respCode(err) != imap.ResponseCodeLimit {
		t.Fatalf("third LOGIN: %v, want NO [LIMIT]", err)
	}
	// Another account logs in as usual.
	h.imap(h.info.Pharmacy2, nil)

	// LOGOUT frees a slot; the refused connection may try again. The
	// server counts the session out when the connection ends, just after
	// its BYE, so the retry may need a few attempts.
	if err := first.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	retryLogin(t, third, u)
	noop(t, third)

	// A connection that drops without LOGOUT frees its slot too.
	second.Close()
	fourth, err := imapclient.DialTLS(h.addrs[relay.IMAPTLS], &imapclient.Options{TLSConfig: h.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fourth.Close() })
	retryLogin(t, fourth, u)
	// Now two again: the next one is refused.
	fifth, err := imapclient.DialTLS(h.addrs[relay.IMAPTLS], &imapclient.Options{TLSConfig: h.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fifth.Close() })
	if err := fifth.Login(u.Address, u.Password).Wait(); respCode(err) != imap.ResponseCodeLimit {
		t.Fatalf("LOGIN over the limit again: %v", err)
	}
}

// retryLogin logs c in, retrying while the answer is NO [LIMIT] (a slot
// being freed by a connection the server has not yet seen close).
func retryLogin(t *testing.T, c *imapclient.Client, u demo.User) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		err := c.Login(u.Address, u.Password).Wait()
		if err == nil {
			return
		}
		if respCode(err) != imap.ResponseCodeLimit || time.Now().After(deadline) {
			t.Fatalf("LOGIN: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAppendTooBig: an APPEND larger than APPENDLIMIT (RFC 7889, here
// limits.max_message_bytes) is refused with NO [TOOBIG] before the client
// sends the literal, and the connection stays usable.
func TestAppendTooBig(t *testing.T) {
	const limit = 64 << 10
	h := newHarnessWith(t, func(c *configs.Config) { c.Limits.MaxMessageBytes = limit })
	c := h.raw(t, h.info.Pharmacy)
	caps, st := c.do("CAPABILITY")
	if !strings.HasPrefix(st, "OK") || !strings.Contains(strings.Join(caps, " "), fmt.Sprintf("APPENDLIMIT=%d", limit)) {
		t.Fatalf("CAPABILITY: %q", caps)
	}
	// A synchronising literal: the server answers NO instead of the "+"
	// continuation, so the client never sends the bytes.
	_, st = c.do("APPEND Drafts {%d}", limit+1)
	if !strings.HasPrefix(st, "NO [TOOBIG]") {
		t.Fatalf("APPEND over the limit: %q, want NO [TOOBIG]", st)
	}
	c.ok("NOOP")
	// Exactly at the limit is accepted.
	msg := note("limite", "", limit-400)
	msg = append(msg, strings.Repeat("x", limit-len(msg)-2)+"\r\n"...)
	if len(msg) != limit {
		t.Fatalf("test message of %d bytes", len(msg))
	}
	_ = c.conn.SetDeadline(time.Now().Add(waitLimit))
	fmt.Fprintf(c.conn, "A1 APPEND Drafts {%d}\r\n", len(msg))
	if l, err := c.line(); err != nil || !strings.HasPrefix(l, "+") {
		t.Fatalf("continuation: %q %v", l, err)
	}
	c.conn.Write(append(msg, "\r\n"...))
	for {
		l, err := c.line()
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "A1 ") {
			if !strings.HasPrefix(l, "A1 OK") {
				t.Fatalf("APPEND at the limit: %q", l)
			}
			break
		}
	}
	c.ok("NOOP")

	// A non-synchronising literal (LITERAL+, RFC 7888, which imapclient
	// uses): the client sends the bytes whatever the answer. go-imap
	// answers NO [TOOBIG] and, reading the bytes as commands, ends the
	// connection; it never stores them. Clients that read APPENDLIMIT
	// never get there.
	big := note("big", "", limit+1000)
	ic := h.imap(h.info.Pharmacy, nil)
	cmd := ic.Append("Drafts", int64(len(big)), nil)
	_, _ = cmd.Write(big)
	_ = cmd.Close()
	if _, err := cmd.Wait(); respCode(err) != imap.ResponseCodeTooBig {
		t.Fatalf("APPEND over the limit with a non-synchronising literal: %v, want NO [TOOBIG]", err)
	}
	st2, err := h.imap(h.info.Pharmacy, nil).Status("Drafts", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st2.NumMessages != 1 {
		t.Fatalf("Drafts after the refused APPENDs: %v %v, want the 1 message at the limit", st2, err)
	}
}

// TestIMAPCommandLimits: go-imap reads at most 50 KiB of command outside
// literals and buffers literals of at most 4 KiB for commands other than
// APPEND (LIBRARY-NOTES.md). An oversized LOGIN literal is refused with
// NO [TOOBIG] and the connection goes on; an oversized command line is
// refused; the server keeps serving either way.
func TestIMAPCommandLimits(t *testing.T) {
	h := newHarness(t)
	dial := func() *rawIMAP {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: waitLimit}, "tcp", h.addrs[relay.IMAPTLS], h.clientTLS())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := &rawIMAP{t: t, conn: conn, r: bufio.NewReader(conn)}
		_ = conn.SetDeadline(time.Now().Add(waitLimit))
		if l, err := c.line(); err != nil || !strings.HasPrefix(l, "* OK") {
			t.Fatalf("greeting %q: %v", l, err)
		}
		return c
	}

	t.Run("login literal", func(t *testing.T) {
		// A synchronising literal: the server must not invite the bytes
		// ("+"). go-imap answers only once the line goes on, so the test
		// ends it; a client that waits for "+" waits until the command
		// timeout closes the connection.
		c := dial()
		_, st := c.do("LOGIN {100000}\r\n")
		if strings.HasPrefix(st, "OK") || strings.HasPrefix(st, "+") {
			t.Fatalf("LOGIN with a 100000-byte literal: %q", st)
		}
		// Refused, not fatal: the connection goes on, unauthenticated,
		// and a proper login works.
		c.ok("NOOP")
		c.ok("LOGIN %s %s", quote(h.info.Pharmacy.Address), quote(h.info.Pharmacy.Password))
	})

	t.Run("login non-synchronising literal", func(t *testing.T) {
		c := dial()
		_ = c.conn.SetDeadline(time.Now().Add(waitLimit))
		fmt.Fprintf(c.conn, "L1 LOGIN {100000+}\r\n%s x\r\nL2 NOOP\r\n", strings.Repeat("a", 100000))
		for {
			l, err := c.line()
			if err != nil {
				break // closed by the server: acceptable
			}
			if strings.HasPrefix(l, "L1 OK") {
				t.Fatalf("oversized LOGIN accepted: %.80q", l)
			}
			if strings.HasPrefix(l, "L2 ") {
				break
			}
		}
		h.imap(h.info.Pharmacy, nil) // the server still serves
	})

	t.Run("command line", func(t *testing.T) {
		c := dial()
		huge := strings.Repeat("a", 60<<10)
		_ = c.conn.SetDeadline(time.Now().Add(waitLimit))
		fmt.Fprintf(c.conn, "L1 LOGIN %s %s\r\nL2 NOOP\r\n", huge, huge)
		// Whatever the server answers to the pieces of the oversized
		// line, it never accepts it, and it answers L2 or closes.
		for {
			l, err := c.line()
			if err != nil {
				break // closed: acceptable
			}
			if strings.HasPrefix(l, "L1 OK") {
				t.Fatalf("oversized LOGIN accepted: %q", l)
			}
			if strings.HasPrefix(l, "L2 ") {
				break
			}
		}
		// The server still serves.
		h.imap(h.info.Pharmacy, nil)
	})
}

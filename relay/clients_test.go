package relay_test

// Real mail clients we did not write, against a real relay: swaks (SMTP
// submission), Python's smtplib and imaplib, and mbsync (isync). Each proves
// that the relay speaks the protocols as deployed clients expect, not only as
// the go-smtp and go-imap clients do.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"mssrelay/relay"
	"mssrelay/signing"
)

// toolTimeout bounds every external client run: a hung client fails the
// test instead of stalling the suite.
const toolTimeout = 90 * time.Second

// requireTool skips the test when name is not installed, except in CI
// (CI set), where .ci/run must have installed it (Debian package pkg).
func requireTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed (CI must install the Debian package %s)", name, pkg)
		}
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
}

// requireSwaksTLS: swaks only Recommends Net::SSLeay, so an install with
// --no-install-recommends has a swaks that cannot STARTTLS.
func requireSwaksTLS(t *testing.T) {
	t.Helper()
	if r := runTool(t, nil, "swaks", "--support"); !strings.Contains(r.stdout+r.stderr, "=== TLS supported") {
		if os.Getenv("CI") != "" {
			t.Fatalf("swaks lacks TLS support (CI must install the Debian package libnet-ssleay-perl)\n%s", r.output())
		}
		t.Skipf("swaks lacks TLS support (Debian package libnet-ssleay-perl)")
	}
}

// toolRun is the outcome of one external command.
type toolRun struct {
	stdout, stderr string
	exit           int
}

// output is what a reader needs when an assertion fails.
func (r toolRun) output() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s\n--- stderr\n%s", r.exit, r.stdout, r.stderr)
}

// runTool runs name with args and env added to the environment, bounded by
// toolTimeout. A non-zero exit is a result, not an error; failing to start
// or being killed by the timeout fails the test.
func runTool(t *testing.T, env []string, name string, args ...string) toolRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second // pipes held open by a grandchild
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := toolRun{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s did not finish within %v\n%s", name, toolTimeout, r.output())
	case errors.As(err, &exit):
		r.exit = exit.ExitCode()
	case err != nil:
		t.Fatalf("running %s: %v", name, err)
	}
	return r
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// smtpData is msg as the DATA payload swaks sends verbatim with
// --no-data-fixup: dot-stuffed (RFC 5321 §4.5.2), ending with CRLF and the
// terminating "." (swaks adds the last CRLF itself).
func smtpData(msg []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(msg) {
		if line[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(line)
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString(".")
	return b.Bytes()
}

// withDotLine returns a fresh signed prescription with a line starting with
// "." in the preamble of its multipart/signed body (outside the signed
// part): the client must dot-stuff it and the relay un-stuff it (RFC 5321
// §4.5.2), or the stored bytes differ from the submitted ones.
func withDotLine(t *testing.T, h *harness) []byte {
	t.Helper()
	msg, _ := h.prescription()
	const preamble = "\r\n\r\nThis is an S/MIME signed message"
	if !bytes.Contains(msg, []byte(preamble)) {
		t.Fatalf("prescription has no preamble %q to add a dot line to", preamble)
	}
	return bytes.Replace(msg, []byte(preamble), []byte("\r\n\r\n.A preamble line starting with a dot.\r\n..And one with two."+preamble[4:]), 1)
}

// TestSwaksSubmission drives submission with swaks, an SMTP client used by
// administrators to test mail servers.
func TestSwaksSubmission(t *testing.T) {
	requireTool(t, "swaks", "swaks")
	requireSwaksTLS(t)
	h := newHarness(t)
	root := h.info.Path(h.info.RootCA)
	addr := h.addrs[relay.SMTPSubmission]
	from, to := h.info.Prescriber.Address, h.info.Pharmacy.Address

	// swaks runs the same dialogue in every case; extra selects TLS, AUTH
	// and the trust anchor.
	swaks := func(t *testing.T, msg []byte, extra ...string) toolRun {
		t.Helper()
		// --no-data-fixup: without it swaks rewrites the header, replaces
		// %TOKENS% and literal "\n" sequences, any of which would break
		// the signature or the bytes we compare.
		args := append([]string{"--server", addr, "--ehlo", "swaks.test",
			"--from", from, "--to", to,
			"--data", "@" + writeTemp(t, "data.eml", smtpData(msg)), "--no-data-fixup",
			"--timeout", "30s"}, extra...)
		return runTool(t, nil, "swaks", args...)
	}
	verifiedTLS := []string{"--tls", "--tls-verify", "--tls-ca-path", root}
	auth := []string{"--auth", "PLAIN", "--auth-user", from, "--auth-password", h.info.Prescriber.Password, "--auth-hide-password"}

	msg := withDotLine(t, h)
	t.Run("signed prescription accepted", func(t *testing.T) {
		r := swaks(t, msg, slices.Concat(verifiedTLS, auth)...)
		if r.exit != 0 {
			t.Fatalf("swaks failed\n%s", r.output())
		}
		// "<~ " marks a reply read over TLS: the 250 came after STARTTLS.
		if !strings.Contains(r.stdout, "<~  250 2.0.0 Prescription filed as record ") {
			t.Fatalf("no 250 filing reply over TLS in swaks output\n%s", r.output())
		}
		if strings.Contains(r.stdout, h.info.Prescriber.Password) {
			t.Errorf("password printed despite --auth-hide-password")
		}
		msgs := fetchAll(t, h.imap(h.info.Pharmacy, nil), "INBOX")
		if len(msgs) != 1 {
			t.Fatalf("pharmacy INBOX holds %d messages, want 1", len(msgs))
		}
		if got := msgs[0].FindBodySection(&imap.FetchItemBodySection{Peek: true}); !bytes.HasSuffix(got, msg) {
			t.Fatalf("fetched message does not end with the bytes swaks submitted")
		}
	})

	// The refusal cases send a fresh valid message, so that a wrongly
	// accepted one would show up in the INBOX count below.
	other, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	foreignRoot := writeTemp(t, "foreign-root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Root.Cert.Raw}))
	fresh, _ := h.prescription()
	unsigned := append(submitHeader(from, to), []byte("Content-Type: text/plain\r\n\r\nHello\r\n")...)
	cases := []struct {
		name  string
		msg   []byte
		args  []string
		exit  int    // swaks exit code (see swaks --help, EXIT CODES)
		reply string // in swaks output
	}{
		{"unsigned message", unsigned, slices.Concat(verifiedTLS, auth), 26, "<~* 554 5.7.0 "},
		// go-smtp advertises no AUTH on plaintext (RFC 4954 §4): swaks
		// gives up before sending credentials.
		{"AUTH without TLS", fresh, auth, 28, "Host did not advertise authentication"},
		{"MAIL without TLS or AUTH", fresh, nil, 23, "<** 530 5.7.0 "},
		{"MAIL after TLS without AUTH", fresh, verifiedTLS, 23, "<~* 530 5.7.0 "},
		{"wrong password", fresh, slices.Concat(verifiedTLS, []string{"--auth", "PLAIN", "--auth-user", from, "--auth-password", "not-the-password"}), 28, "<~* 535 5.7.8 "},
		// --tls-verify is real: a server certificate from another CA fails.
		{"server certificate from another CA", fresh, slices.Concat([]string{"--tls", "--tls-verify", "--tls-ca-path", foreignRoot}, auth), 29, "certificate verify failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := swaks(t, tc.msg, tc.args...)
			if r.exit != tc.exit || !strings.Contains(r.stdout+r.stderr, tc.reply) {
				t.Fatalf("want exit %d and %q in output\n%s", tc.exit, tc.reply, r.output())
			}
		})
	}
	if n := len(fetchAll(t, h.imap(h.info.Pharmacy, nil), "INBOX")); n != 1 {
		t.Errorf("INBOX holds %d messages, want only the accepted one", n)
	}
}

// pythonResult is what testdata/imap_client.py prints.
type pythonResult struct {
	Error             string `json:"error"`
	SMTPAuthBeforeTLS struct {
		Advertised bool   `json:"advertised"`
		StartTLS   bool   `json:"starttls"`
		Code       int    `json:"code"`
		Text       string `json:"text"`
	} `json:"smtp_auth_before_tls"`
	SMTP smtpReply `json:"smtp"`
	IMAP struct {
		TLSVersion   string   `json:"tls_version"`
		Capabilities []string `json:"capabilities"`
		Mailboxes    []struct {
			Name  string   `json:"name"`
			Attrs []string `json:"attrs"`
		} `json:"mailboxes"`
		Select           int      `json:"select"`
		SearchAll        []int    `json:"search_all"`
		SearchUnseen     []int    `json:"search_unseen"`
		BodyB64          string   `json:"body_b64"`
		UnseenAfterPeek  []int    `json:"unseen_after_peek"`
		Flags            []string `json:"flags"`
		UnseenAfterStore []int    `json:"unseen_after_store"`
		Idle             struct {
			Continuation string    `json:"continuation"`
			Submit       smtpReply `json:"submit"`
			Untagged     []string  `json:"untagged"`
			Exists       int       `json:"exists"`
			Done         string    `json:"done"`
		} `json:"idle"`
		SearchAllAfterIdle []int  `json:"search_all_after_idle"`
		Logout             string `json:"logout"`
	} `json:"imap"`
	StartTLS struct {
		CapabilitiesBefore []string `json:"capabilities_before"`
		PlainLogin         string   `json:"plain_login"`
		TLSVersion         string   `json:"tls_version"`
		CapabilitiesAfter  []string `json:"capabilities_after"`
		Login              string   `json:"login"`
		Select             int      `json:"select"`
	} `json:"starttls"`
}

type smtpReply struct {
	Code       int    `json:"code"`
	Text       string `json:"text"`
	TLSVersion string `json:"tls_version"`
}

func modernTLS(v string) bool { return v == "TLSv1.2" || v == "TLSv1.3" }

// TestPythonClients: Python's standard smtplib and imaplib, as a practice
// software written in Python would use them, submit, read, flag and idle.
func TestPythonClients(t *testing.T) {
	requireTool(t, "python3", "python3")
	h := newHarness(t)
	msg1 := withDotLine(t, h)
	msg2, _ := h.prescription()
	env := []string{
		"MSS_CA=" + h.info.Path(h.info.RootCA),
		"MSS_SMTP=" + h.addrs[relay.SMTPSubmission],
		"MSS_IMAPS=" + h.addrs[relay.IMAPTLS],
		"MSS_IMAP=" + h.addrs[relay.IMAPSTARTTLS],
		"MSS_SUBMIT_USER=" + h.info.Prescriber.Address,
		"MSS_SUBMIT_PASS=" + h.info.Prescriber.Password,
		"MSS_FROM=" + h.info.Prescriber.Address,
		"MSS_TO=" + h.info.Pharmacy.Address,
		"MSS_USER=" + h.info.Pharmacy.Address,
		"MSS_PASS=" + h.info.Pharmacy.Password,
		"MSS_MSG=" + writeTemp(t, "msg1.eml", msg1),
		"MSS_MSG2=" + writeTemp(t, "msg2.eml", msg2),
		"PYTHONDONTWRITEBYTECODE=1",
	}
	r := runTool(t, env, "python3", filepath.Join("testdata", "imap_client.py"))
	var res pythonResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("script output is not JSON: %v\n%s", err, r.output())
	}
	if res.Error != "" || r.exit != 0 {
		t.Fatalf("script failed: %s\n%s", res.Error, r.output())
	}
	if testing.Verbose() {
		short := res
		short.IMAP.BodyB64 = fmt.Sprintf("(%d base64 characters)", len(res.IMAP.BodyB64))
		b, _ := json.Marshal(short)
		t.Logf("python client results: %s", b)
	}

	// SMTP.
	if a := res.SMTPAuthBeforeTLS; a.Advertised || !a.StartTLS || a.Code != 523 || !strings.HasPrefix(a.Text, "5.7.10 ") {
		t.Errorf("AUTH before STARTTLS: advertised=%v starttls=%v reply %d %q, want not advertised, STARTTLS offered, 523 5.7.10",
			a.Advertised, a.StartTLS, a.Code, a.Text)
	}
	for _, s := range []smtpReply{res.SMTP, res.IMAP.Idle.Submit} {
		if s.Code != 250 || !strings.Contains(s.Text, "Prescription filed as record") || !modernTLS(s.TLSVersion) {
			t.Errorf("smtplib submission: %d %q over %s", s.Code, s.Text, s.TLSVersion)
		}
	}

	// IMAP over implicit TLS.
	im := res.IMAP
	if !modernTLS(im.TLSVersion) || !slices.Contains(im.Capabilities, "IDLE") {
		t.Errorf("IMAPS: TLS %s, capabilities %v", im.TLSVersion, im.Capabilities)
	}
	var names []string
	for _, mb := range im.Mailboxes {
		names = append(names, mb.Name)
	}
	for _, want := range []string{"INBOX", "Sent", "Drafts", "Trash", "Archive"} {
		if !slices.Contains(names, want) {
			t.Errorf("LIST lacks %s: %v", want, names)
		}
	}
	if im.Select != 1 || !slices.Equal(im.SearchAll, []int{1}) || !slices.Equal(im.SearchUnseen, []int{1}) {
		t.Errorf("SELECT %d, SEARCH ALL %v, UNSEEN %v; want 1, [1], [1]", im.Select, im.SearchAll, im.SearchUnseen)
	}
	if !slices.Equal(im.UnseenAfterPeek, []int{1}) {
		t.Errorf("UNSEEN after BODY.PEEK[] = %v, want [1] (PEEK must not set \\Seen)", im.UnseenAfterPeek)
	}
	// Keywords keep their case (RFC 3501 §2.3.2 flags are case-insensitive
	// for matching, but clients display what they stored).
	if !slices.Contains(im.Flags, `\Seen`) || !slices.Contains(im.Flags, "$Dispensed") {
		t.Errorf("FLAGS after STORE = %v, want \\Seen and $Dispensed", im.Flags)
	}
	if len(im.UnseenAfterStore) != 0 {
		t.Errorf("UNSEEN after STORE \\Seen = %v, want none", im.UnseenAfterStore)
	}
	if id := im.Idle; !strings.HasPrefix(id.Continuation, "+") || id.Exists != 2 || !strings.HasPrefix(id.Done, "OK") {
		t.Errorf("IDLE: continuation %q, EXISTS %d, completion %q (untagged %q); want +, 2, OK",
			id.Continuation, id.Exists, id.Done, id.Untagged)
	}
	if !slices.Equal(im.SearchAllAfterIdle, []int{1, 2}) || im.Logout != "BYE" {
		t.Errorf("after IDLE: SEARCH ALL %v, LOGOUT %q", im.SearchAllAfterIdle, im.Logout)
	}

	// IMAP on the STARTTLS port: LOGIN refused until TLS (RFC 3501 §6.2.3).
	st := res.StartTLS
	if !slices.Contains(st.CapabilitiesBefore, "LOGINDISABLED") || !slices.Contains(st.CapabilitiesBefore, "STARTTLS") {
		t.Errorf("plaintext capabilities %v, want LOGINDISABLED and STARTTLS", st.CapabilitiesBefore)
	}
	if !strings.HasPrefix(st.PlainLogin, "refused") {
		t.Errorf("LOGIN over plaintext: %s", st.PlainLogin)
	}
	if !modernTLS(st.TLSVersion) || slices.Contains(st.CapabilitiesAfter, "LOGINDISABLED") || st.Login != "OK" || st.Select != 2 {
		t.Errorf("after STARTTLS: TLS %s, capabilities %v, LOGIN %s, EXAMINE %d", st.TLSVersion, st.CapabilitiesAfter, st.Login, st.Select)
	}

	// What Python fetched is exactly what the relay stored, as go-imap sees it.
	pyBody, err := base64.StdEncoding.DecodeString(im.BodyB64)
	if err != nil {
		t.Fatal(err)
	}
	msgs := fetchAll(t, h.imap(h.info.Pharmacy, nil), "INBOX")
	if len(msgs) != 2 {
		t.Fatalf("INBOX holds %d messages, want 2", len(msgs))
	}
	stored := msgs[0].FindBodySection(&imap.FetchItemBodySection{Peek: true})
	if !bytes.Equal(pyBody, stored) {
		t.Errorf("imaplib fetched %d bytes, go-imap %d: they differ", len(pyBody), len(stored))
	}
	if !bytes.HasSuffix(pyBody, msg1) {
		t.Errorf("imaplib's copy does not end with the message smtplib submitted")
	}
	if got := msgs[1].FindBodySection(&imap.FetchItemBodySection{Peek: true}); !bytes.HasSuffix(got, msg2) {
		t.Errorf("second message does not end with what smtplib submitted while idling")
	}
	if !hasFlag(msgs[0].Flags, imap.FlagSeen) || !slices.Contains(msgs[0].Flags, "$Dispensed") {
		t.Errorf("flags stored by imaplib, seen by go-imap: %v", msgs[0].Flags)
	}
	if hasFlag(msgs[1].Flags, imap.FlagSeen) {
		t.Errorf("second message is \\Seen though nobody read it: %v", msgs[1].Flags)
	}
}

// maildirFiles lists the message files of a Maildir folder as
// "cur/name" and "new/name", sorted.
func maildirFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	for _, sub := range []string{"cur", "new"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatalf("reading Maildir: %v", err)
		}
		for _, e := range entries {
			files = append(files, sub+"/"+e.Name())
		}
	}
	sort.Strings(files)
	return files
}

// TestMbsyncMaildir: mbsync (isync), the IMAP synchroniser behind many
// mutt/neomutt and notmuch set-ups, mirrors the INBOX into a Maildir and
// pushes a flag change back.
func TestMbsyncMaildir(t *testing.T) {
	requireTool(t, "mbsync", "isync")
	h := newHarness(t)
	var sent [][]byte
	for range 2 {
		msg, _ := h.prescription()
		if _, err := h.prescriber().Send(h.info.Prescriber.Address, []string{h.info.Pharmacy.Address}, msg); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, msg)
	}

	dir := t.TempDir()
	maildir := filepath.Join(dir, "mail")
	inbox := filepath.Join(maildir, "INBOX") // as the config below names it
	// mbsync creates folders (Create Near), not the store's root.
	if err := os.Mkdir(maildir, 0o700); err != nil {
		t.Fatal(err)
	}
	u := h.info.Pharmacy
	if strings.ContainsAny(u.Password, `"\`) {
		t.Fatalf("password needs escaping in the mbsync config")
	}
	_, port, ok := strings.Cut(h.addrs[relay.IMAPTLS], ":")
	if !ok {
		t.Fatalf("IMAP address %q", h.addrs[relay.IMAPTLS])
	}
	// isync 1.4 syntax (Far/Near). Verification is on by default with
	// SSLType IMAPS; CertificateFile adds ca as a trust anchor.
	// Host is "localhost": isync matches the host name against DNS names
	// only, not IP address SANs, and tries each resolved address in turn
	// (the relay listens on 127.0.0.1).
	config := func(ca, maildir string) string {
		return fmt.Sprintf(`IMAPAccount relay
Host localhost
Port %s
User "%s"
Pass "%s"
SSLType IMAPS
SSLVersions TLSv1.2 TLSv1.3
CertificateFile "%s"
Timeout 30

IMAPStore relay-remote
Account relay

MaildirStore local
Path "%s/"
Inbox "%s/INBOX"

Channel inbox
Far :relay-remote:INBOX
Near :local:INBOX
Create Near
Sync All
SyncState *
`, port, u.Address, u.Password, ca, maildir, maildir)
	}
	// HOME in the temp dir: mbsync must not read or write the user's files.
	env := []string{"HOME=" + dir}
	cfg := writeTemp(t, "mbsyncrc", []byte(config(h.info.Path(h.info.RootCA), maildir)))
	sync := func(t *testing.T) {
		t.Helper()
		r := runTool(t, env, "mbsync", "-c", cfg, "-V", "inbox")
		if r.exit != 0 {
			t.Fatalf("mbsync failed\n%s", r.output())
		}
		if testing.Verbose() {
			t.Logf("mbsync:\n%s", r.output())
		}
	}

	// Certificate verification is real: trusting another CA, mbsync refuses
	// the server and creates nothing.
	other, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	foreignRoot := writeTemp(t, "foreign-root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Root.Cert.Raw}))
	foreignDir := filepath.Join(dir, "foreign")
	if err := os.Mkdir(foreignDir, 0o700); err != nil {
		t.Fatal(err)
	}
	r := runTool(t, env, "mbsync", "-c", writeTemp(t, "mbsyncrc-foreign", []byte(config(foreignRoot, foreignDir))), "inbox")
	if r.exit == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Fatalf("mbsync trusting another CA: want a certificate failure\n%s", r.output())
	}

	sync(t)
	first := maildirFiles(t, inbox)
	if len(first) != len(sent) {
		t.Fatalf("Maildir holds %d messages after the first sync, want %d: %v", len(first), len(sent), first)
	}
	// Each Maildir file is a server message, byte for byte up to what a
	// Maildir holds differently; map files to server UIDs.
	c := h.imap(u, nil)
	server := fetchAll(t, c, "INBOX")
	uidOf := make(map[string]imap.UID)
	for _, f := range first {
		raw, err := os.ReadFile(filepath.Join(inbox, f))
		if err != nil {
			t.Fatal(err)
		}
		local := fromMaildir(raw)
		for _, m := range server {
			if bytes.Equal(local, m.FindBodySection(&imap.FetchItemBodySection{Peek: true})) {
				uidOf[f] = m.UID
			}
		}
		if uidOf[f] == 0 {
			t.Fatalf("%s matches no server message", f)
		}
		if !bytes.HasSuffix(local, sent[0]) && !bytes.HasSuffix(local, sent[1]) {
			t.Fatalf("%s does not end with a submitted message", f)
		}
		// The Maildir copy is what mutt or notmuch would verify.
		if _, err := exec.LookPath("openssl"); err == nil {
			opensslVerify(t, h.info, raw)
		}
	}
	for _, m := range server {
		if hasFlag(m.Flags, imap.FlagSeen) {
			t.Fatalf("UID %d is \\Seen after mbsync fetched it (must fetch with PEEK): %v", m.UID, m.Flags)
		}
	}

	sync(t)
	if second := maildirFiles(t, inbox); !slices.Equal(first, second) {
		t.Fatalf("second sync changed the Maildir:\nbefore %v\nafter  %v", first, second)
	}

	// Mark the first message read the way a Maildir reader does: move it to
	// cur/ with S in its info part (":2,<flags>", flags in ASCII order).
	name := filepath.Base(first[0])
	base, info, _ := strings.Cut(name, ":2,")
	flags := []byte(info + "S")
	slices.Sort(flags)
	if err := os.Rename(filepath.Join(inbox, first[0]), filepath.Join(inbox, "cur", base+":2,"+string(flags))); err != nil {
		t.Fatal(err)
	}
	sync(t)
	for _, m := range fetchAll(t, c, "INBOX") {
		if want := m.UID == uidOf[first[0]]; hasFlag(m.Flags, imap.FlagSeen) != want {
			t.Errorf("UID %d flags %v after syncing %s read; want \\Seen %v", m.UID, m.Flags, first[0], want)
		}
	}

	// Flags set on the server reach the Maildir (server → near): \Flagged
	// and \Seen on the second message, \Seen taken off the first. The
	// Maildir keeps each file's unique part; its info part ":2,<flags>"
	// holds F for \Flagged and S for \Seen (maildir(5)).
	mustSelect(t, c, "INBOX", false)
	store := func(uid imap.UID, op imap.StoreFlagsOp, flags ...imap.Flag) {
		t.Helper()
		if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close(); err != nil {
			t.Fatalf("UID STORE %d: %v", uid, err)
		}
	}
	store(uidOf[first[1]], imap.StoreFlagsAdd, imap.FlagFlagged, imap.FlagSeen)
	store(uidOf[first[0]], imap.StoreFlagsDel, imap.FlagSeen)
	sync(t)
	infoOf := func(f string) string {
		_, info, _ := strings.Cut(filepath.Base(f), ":2,")
		return info
	}
	uniqueOf := func(f string) string {
		u, _, _ := strings.Cut(filepath.Base(f), ":2,")
		return u
	}
	third := maildirFiles(t, inbox)
	if len(third) != len(first) {
		t.Fatalf("Maildir after the server-side flag changes: %v", third)
	}
	for i, f := range first {
		want := map[int]string{0: "", 1: "FS"}[i]
		var got []string
		for _, g := range third {
			if uniqueOf(g) == uniqueOf(f) {
				got = append(got, g)
			}
		}
		if len(got) != 1 || !strings.HasPrefix(got[0], "cur/") || infoOf(got[0]) != want {
			t.Errorf("UID %d in the Maildir: %v; want one file in cur/ with flags %q", uidOf[f], got, want)
		}
	}
}

// fromMaildir undoes what mbsync changes when it writes a Maildir file:
// line ends become LF, and it adds an X-TUID header field (its own marker to
// recognise a message after an interrupted sync). What remains must be the
// server's bytes.
func fromMaildir(raw []byte) []byte {
	header, body, _ := bytes.Cut(raw, []byte("\n\n"))
	var b bytes.Buffer
	for line := range bytes.Lines(append(header, '\n')) {
		if !bytes.HasPrefix(line, []byte("X-TUID: ")) {
			b.Write(line)
		}
	}
	b.WriteString("\n")
	b.Write(body)
	return crlf(b.Bytes())
}

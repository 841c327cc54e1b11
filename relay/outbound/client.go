// Package outbound delivers messages to other MSSanté operators over SMTP
// (RFC 5321) with STARTTLS (RFC 3207) required, peer certificates verified
// against the configured health PKI and our own client certificate
// presented (mutual TLS). It knows nothing of the queue: one call of
// (*Dialer).Send is one delivery attempt of one message to one recipient,
// and it reports whether a retry may succeed.
//
// The SMTP exchange is written here on net/textproto rather than with
// go-smtp's Client because that client cannot do what MSSanté transport
// needs: it has no exported STARTTLS, so the only way to upgrade is
// NewClientStartTLS, which sends the pre-TLS EHLO as "localhost"; it arms the
// greeting with the command timeout and clears every deadline after each
// command; it takes no context; and it reports greeting, EHLO, STARTTLS and
// handshake failures alike. The exchange below is small (greeting, EHLO,
// STARTTLS, EHLO, MAIL, RCPT, DATA, QUIT) and the tests run it against
// go-smtp's server.
package outbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Stages of an attempt, as reported in Error.Stage.
const (
	StageConnect  = "connect"  // dialling
	StageGreeting = "greeting" // the server's 220 (RFC 5321 §4.3.1)
	StageEHLO     = "ehlo"     // EHLO before or after TLS
	StageSTARTTLS = "starttls" // STARTTLS not offered or refused (RFC 3207)
	StageTLS      = "tls"      // handshake, certificate verification, TLS alerts
	StageMail     = "mail"     // MAIL FROM
	StageRcpt     = "rcpt"     // RCPT TO
	StageData     = "data"     // DATA, the message and its final reply
)

// Default timeouts, used when the Dialer's are zero. RFC 5321 §4.5.3.2 asks
// clients to wait 5 minutes for the greeting and for MAIL and RCPT replies
// and 10 minutes after the final dot; a connect timeout of 30 s is shorter
// than the greeting's 5 minutes on purpose: an MSSanté operator that cannot
// greet within 30 s is treated as down and the next host is tried.
const (
	DefaultConnectTimeout = 30 * time.Second
	DefaultCommandTimeout = 5 * time.Minute
	DefaultDataTimeout    = 10 * time.Minute
)

const (
	// maxReplyBytes bounds what one server reply may occupy in memory
	// (all lines of a multi-line reply). RFC 5321 §4.5.3.1.5 limits a reply
	// line to 512 octets; an EHLO reply is a few dozen lines.
	maxReplyBytes = 32 << 10
	// maxMessageLen caps Error.Message and Result.Message: reply text is
	// written by the peer and ends up in logs and DSNs.
	maxMessageLen = 300
	// maxErrorLen caps Error.Error(), whose wrapped errors can quote
	// peer-controlled text (certificate names in x509 errors).
	maxErrorLen = 1024
	// maxPathLen is RFC 5321 §4.5.3.1.3's limit on a path (256 octets)
	// less the angle brackets.
	maxPathLen = 254
	// quitTimeout bounds the courtesy QUIT after a delivery succeeded.
	quitTimeout = 10 * time.Second
)

var (
	// ErrInvalid marks a caller error (bad address, bare CR or LF in the
	// message, missing TLS configuration, no host). Retrying cannot help:
	// IsPermanent reports true for it.
	ErrInvalid = errors.New("outbound: invalid delivery request")
	// ErrNoSTARTTLS is the Err of an Error at StageSTARTTLS when the peer
	// did not advertise STARTTLS: we never send mail in clear text.
	ErrNoSTARTTLS = errors.New("server does not offer STARTTLS")
	// ErrNo8BITMIME: the message has 8-bit bytes and the peer lacks
	// 8BITMIME (RFC 6152). Converting it to 7 bits would break the S/MIME
	// signature, so the host is skipped instead.
	ErrNo8BITMIME = errors.New("message has 8-bit data and the server does not offer 8BITMIME")
	// ErrNoSMTPUTF8: an address is not ASCII and the peer lacks SMTPUTF8
	// (RFC 6531 §3.2).
	ErrNoSMTPUTF8 = errors.New("address is not ASCII and the server does not offer SMTPUTF8")
)

// Dialer delivers one message to one recipient over SMTP with STARTTLS
// required. It holds no connection state: one Dialer may serve concurrent
// Send calls.
type Dialer struct {
	// Hostname is the name we give in EHLO: our fully qualified domain name
	// (RFC 5321 §4.1.1.1). Required.
	Hostname string
	// TLS is required: RootCAs for peer verification (the health PKI),
	// Certificates for our client certificate (mutual TLS). Each attempt
	// uses a clone with ServerName set to the host being dialled (the
	// caller's ServerName is ignored) and MinVersion raised to TLS 1.2 when
	// lower. InsecureSkipVerify and a MaxVersion below TLS 1.2 are refused.
	TLS *tls.Config
	// ConnectTimeout bounds dialling plus the server's greeting (default
	// DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// CommandTimeout bounds each command and its reply, and the TLS
	// handshake (default DefaultCommandTimeout).
	CommandTimeout time.Duration
	// DataTimeout bounds sending the message after DATA's 354 and awaiting
	// its final reply (default DefaultDataTimeout).
	DataTimeout time.Duration
	// Dial opens the TCP connection; nil uses a net.Dialer. Tests and
	// deployments behind a proxy replace it. The context carries the
	// connect deadline.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Result is the server's final reply to DATA: the message was accepted.
type Result struct {
	Host     string // "host:port" that accepted the message
	Code     int    // 2xx, normally 250
	Enhanced string // RFC 3463 code such as "2.0.0", "" when not given
	Message  string // sanitized single line, capped (often the peer's queue id)
}

// Error is a failed delivery attempt.
type Error struct {
	Host     string // "host:port" of the attempt
	Stage    string // one of the Stage constants
	Code     int    // SMTP reply code; 0 when none (network, TLS, local refusal)
	Enhanced string // RFC 3463 code such as "5.1.1", "" when not given
	Message  string // the server's text: sanitized single line, capped
	// Permanent is true only for a 5xx reply to MAIL, RCPT or DATA: the
	// receiving operator refused the message and a retry would be refused
	// again (RFC 5321 §4.2.1). Everything else (network, TLS, 4xx, a 5xx
	// to EHLO or STARTTLS, a missing STARTTLS) may be fixed on the other
	// side and is worth a retry.
	Permanent bool
	Err       error // underlying error; nil for a plain SMTP refusal
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("smtp ")
	b.WriteString(e.Host)
	b.WriteString(" ")
	b.WriteString(e.Stage)
	b.WriteString(":")
	if e.Code != 0 {
		b.WriteString(" ")
		b.WriteString(strconv.Itoa(e.Code))
		if e.Enhanced != "" {
			b.WriteString(" ")
			b.WriteString(e.Enhanced)
		}
		if e.Message != "" {
			b.WriteString(" ")
			b.WriteString(e.Message)
		}
	}
	if e.Err != nil {
		if e.Code != 0 {
			b.WriteString(";")
		}
		b.WriteString(" ")
		b.WriteString(e.Err.Error())
	}
	// Wrapped errors can quote the peer (names in its certificate): the
	// result goes to logs and DSNs, so it is one clean line.
	return sanitize(b.String(), maxErrorLen)
}

func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err means the message can never be delivered
// as requested: a permanent *Error (5xx to MAIL, RCPT or DATA) or ErrInvalid.
// The queue should bounce (RFC 3464 DSN) instead of retrying.
func IsPermanent(err error) bool {
	if errors.Is(err, ErrInvalid) {
		return true
	}
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

// Send delivers raw from `from` to `to`, trying hosts ("host:port", in
// preference order, e.g. MX order) one after the other.
//
// from may be "" for the null reverse-path "<>" (RFC 5321 §4.5.5: DSNs and
// MDNs must be sent with it so they never bounce back).
//
// raw is sent byte for byte: it must use CRLF line endings with no bare CR or
// LF (RFC 5321 §2.3.8), since SMTP would rewrite them and break an S/MIME
// signature; such a message is refused with ErrInvalid. Lines starting with
// "." are dot-stuffed on the wire and unstuffed by the receiver (RFC 5321
// §4.5.2). If raw does not end with CRLF, the CRLF that must precede the
// terminating "." is added, as every MTA does.
//
// For each host, connection, greeting, EHLO, STARTTLS and TLS failures and
// 4xx replies move on to the next host. A 5xx reply to MAIL, RCPT or DATA is
// the receiving operator's verdict on this message and stops at once with a
// permanent *Error: a backup MX of the same operator would apply the same
// policy, and trying it could only deliver twice or bounce twice. When every
// host failed, the error returned is the last one that carries an SMTP reply
// (most useful in a DSN), or the last error when none did. When ctx is done
// the connection is closed and Send returns at once with an *Error wrapping
// ctx.Err().
//
// Caller errors (see ErrInvalid) are returned before any connection.
//
// A network failure after the final "." (the reply is lost) is reported as
// transient although the peer may have accepted the message: a retry may
// then deliver it twice (RFC 5321 §6.1 accepts duplicates over losses).
func (d *Dialer) Send(ctx context.Context, hosts []string, from, to string, raw []byte) (*Result, error) {
	tmpl, err := d.tlsTemplate()
	if err != nil {
		return nil, err
	}
	if err := d.checkRequest(hosts, from, to, raw); err != nil {
		return nil, err
	}
	var last, lastReply *Error
	for _, host := range hosts {
		if err := ctx.Err(); err != nil {
			return nil, &Error{Host: host, Stage: StageConnect, Err: err}
		}
		res, e := d.attempt(ctx, host, tmpl, from, to, raw)
		if e == nil {
			return res, nil
		}
		if e.Permanent || ctx.Err() != nil {
			return nil, e
		}
		last = e
		if e.Code != 0 {
			lastReply = e
		}
	}
	if lastReply != nil {
		return nil, lastReply
	}
	return nil, last
}

// tlsTemplate validates d.TLS and returns the clone each attempt copies.
func (d *Dialer) tlsTemplate() (*tls.Config, error) {
	if d.TLS == nil {
		return nil, fmt.Errorf("%w: Dialer.TLS is nil (set RootCAs to the health PKI and Certificates to our client certificate)", ErrInvalid)
	}
	if d.TLS.InsecureSkipVerify {
		return nil, fmt.Errorf("%w: Dialer.TLS.InsecureSkipVerify is set: MSSanté requires verified peer certificates", ErrInvalid)
	}
	if d.TLS.MaxVersion != 0 && d.TLS.MaxVersion < tls.VersionTLS12 {
		return nil, fmt.Errorf("%w: Dialer.TLS.MaxVersion is below TLS 1.2, the MSSanté minimum", ErrInvalid)
	}
	cfg := d.TLS.Clone()
	if cfg.MinVersion < tls.VersionTLS12 {
		// MSSanté transport: TLS 1.2 minimum everywhere, whatever the
		// caller's configuration says.
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg, nil
}

// checkRequest refuses what no host could accept, before any connection.
func (d *Dialer) checkRequest(hosts []string, from, to string, raw []byte) error {
	if len(hosts) == 0 {
		return fmt.Errorf("%w: no host to deliver to", ErrInvalid)
	}
	for _, h := range hosts {
		if _, _, err := net.SplitHostPort(h); err != nil {
			return fmt.Errorf("%w: host %q: %v", ErrInvalid, sanitize(h, maxMessageLen), err)
		}
	}
	if d.Hostname == "" || !validToken(d.Hostname) {
		return fmt.Errorf("%w: Dialer.Hostname %q is not a valid EHLO name", ErrInvalid, sanitize(d.Hostname, maxMessageLen))
	}
	if from != "" {
		if err := checkPath(from); err != nil {
			return fmt.Errorf("%w: sender: %v", ErrInvalid, err)
		}
	}
	if err := checkPath(to); err != nil {
		return fmt.Errorf("%w: recipient: %v", ErrInvalid, err)
	}
	if len(raw) == 0 {
		return fmt.Errorf("%w: empty message", ErrInvalid)
	}
	if i := bareLineEnding(raw); i >= 0 {
		return fmt.Errorf("%w: bare CR or LF at byte %d: SMTP would rewrite it and break the signature (RFC 5321 §2.3.8)", ErrInvalid, i)
	}
	return nil
}

// checkPath accepts an address we can write between angle brackets: one
// "@", no space, control character or bracket, within RFC 5321's length.
// Quoted local parts with spaces are not supported (MSSanté addresses never
// use them).
func checkPath(addr string) error {
	switch {
	case addr == "":
		return errors.New("empty address")
	case len(addr) > maxPathLen:
		return fmt.Errorf("address longer than %d octets (RFC 5321 §4.5.3.1.3)", maxPathLen)
	case !validToken(addr) || strings.ContainsAny(addr, "<>"):
		return fmt.Errorf("address %q has a space, control character or angle bracket", sanitize(addr, maxMessageLen))
	case strings.Count(addr, "@") != 1 || strings.HasPrefix(addr, "@") || strings.HasSuffix(addr, "@"):
		return fmt.Errorf("address %q is not local@domain", sanitize(addr, maxMessageLen))
	}
	return nil
}

// validToken reports whether s has no ASCII space or control character and
// is valid UTF-8: it can go on a command line as one argument.
func validToken(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// bareLineEnding returns the offset of the first CR not followed by LF or LF
// not preceded by CR, or -1.
func bareLineEnding(raw []byte) int {
	for i, c := range raw {
		switch c {
		case '\r':
			if i+1 >= len(raw) || raw[i+1] != '\n' {
				return i
			}
		case '\n':
			if i == 0 || raw[i-1] != '\r' {
				return i
			}
		}
	}
	return -1
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func has8Bit(raw []byte) bool {
	for _, c := range raw {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// conversation is the state of one connection to one host.
type conversation struct {
	conn  net.Conn // raw TCP, then the *tls.Conn over it
	limit *budgetReader
	br    *bufio.Reader
	r     *textproto.Reader
	w     *textproto.Writer
	ext   map[string]string // EHLO keywords (upper case) → parameters
}

func (c *conversation) setConn(conn net.Conn) {
	c.conn = conn
	c.limit = &budgetReader{r: conn}
	c.br = bufio.NewReader(c.limit)
	c.r = textproto.NewReader(c.br)
	c.w = textproto.NewWriter(bufio.NewWriter(conn))
	c.ext = nil
}

// budgetReader fails once n bytes were read: a peer streaming an endless
// reply cannot exhaust memory (textproto lines have no length limit).
type budgetReader struct {
	r io.Reader
	n int
}

var errReplyTooLong = fmt.Errorf("reply longer than %d bytes", maxReplyBytes)

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errReplyTooLong
	}
	if len(p) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= n
	return n, err
}

// readReply reads one (possibly multi-line) reply under the deadline
// already set on the connection.
func (c *conversation) readReply() (int, string, error) {
	c.limit.n = maxReplyBytes
	code, msg, err := c.r.ReadResponse(0)
	if err != nil {
		var pe textproto.ProtocolError
		if errors.As(err, &pe) {
			return 0, "", fmt.Errorf("malformed reply: %s", sanitize(string(pe), maxMessageLen))
		}
		return 0, "", err
	}
	if code < 200 || code > 599 {
		return 0, "", fmt.Errorf("reply code %d out of range", code)
	}
	return code, msg, nil
}

// cmd sends one command line and reads its reply, within timeout.
func (c *conversation) cmd(timeout time.Duration, format string, args ...any) (int, string, error) {
	if err := c.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, "", err
	}
	if err := c.w.PrintfLine(format, args...); err != nil {
		return 0, "", err
	}
	return c.readReply()
}

// ehlo sends EHLO and records the extensions (RFC 5321 §4.1.1.1: one
// keyword per line after the first, parameters after a space).
func (c *conversation) ehlo(name string, timeout time.Duration) (int, string, error) {
	code, msg, err := c.cmd(timeout, "EHLO %s", name)
	if err != nil || code != 250 {
		return code, msg, err
	}
	c.ext = make(map[string]string)
	lines := strings.Split(msg, "\n")
	for _, line := range lines[1:] {
		kw, param, _ := strings.Cut(line, " ")
		c.ext[strings.ToUpper(kw)] = param
	}
	return code, msg, nil
}

func (c *conversation) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// attempt runs one SMTP conversation with host. It never returns a nil
// *Error together with a nil *Result.
func (d *Dialer) attempt(ctx context.Context, host string, tmpl *tls.Config, from, to string, raw []byte) (*Result, *Error) {
	cmdTimeout := orDefault(d.CommandTimeout, DefaultCommandTimeout)
	dataTimeout := orDefault(d.DataTimeout, DefaultDataTimeout)
	fail := func(stage string, err error) *Error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The error is most likely the closed connection: say why.
			err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		return &Error{Host: host, Stage: stage, Err: err}
	}
	refused := func(stage string, code int, msg string) *Error {
		enh, text := splitEnhanced(code, msg)
		return &Error{
			Host:     host,
			Stage:    stage,
			Code:     code,
			Enhanced: enh,
			Message:  sanitize(text, maxMessageLen),
			// RFC 5321 §4.2.1: 5yz is a permanent negative completion.
			// Only MAIL, RCPT and DATA judge the message itself; a 5xx at
			// EHLO or STARTTLS says the peer is misconfigured.
			Permanent: code/100 == 5 && (stage == StageMail || stage == StageRcpt || stage == StageData),
		}
	}

	// Connect: dialling and the greeting share ConnectTimeout.
	dialCtx, cancel := context.WithTimeout(ctx, orDefault(d.ConnectTimeout, DefaultConnectTimeout))
	defer cancel()
	connectDeadline, _ := dialCtx.Deadline()
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	rawConn, err := dial(dialCtx, "tcp", host)
	if err != nil {
		return nil, fail(StageConnect, err)
	}
	defer rawConn.Close()
	// Cancellation: closing the socket unblocks any read or write, TLS
	// included (the *tls.Conn sits on rawConn).
	stop := context.AfterFunc(ctx, func() { rawConn.Close() })
	defer stop()

	c := &conversation{}
	c.setConn(rawConn)

	// Greeting (RFC 5321 §4.3.1): 220, or 554/421 for "no service".
	if err := rawConn.SetDeadline(connectDeadline); err != nil {
		return nil, fail(StageGreeting, err)
	}
	code, msg, err := c.readReply()
	if err != nil {
		return nil, fail(StageGreeting, err)
	}
	if code != 220 {
		return nil, refused(StageGreeting, code, msg)
	}

	if code, msg, err = c.ehlo(d.Hostname, cmdTimeout); err != nil {
		return nil, fail(StageEHLO, err)
	} else if code != 250 {
		return nil, refused(StageEHLO, code, msg)
	}

	// STARTTLS is mandatory: MSSanté forbids clear-text transport, so a
	// peer that does not offer it gets nothing, not even MAIL FROM.
	if !c.has("STARTTLS") {
		return nil, fail(StageSTARTTLS, ErrNoSTARTTLS)
	}
	if code, msg, err = c.cmd(cmdTimeout, "STARTTLS"); err != nil {
		return nil, fail(StageSTARTTLS, err)
	} else if code != 220 {
		return nil, refused(StageSTARTTLS, code, msg)
	}
	// Bytes after the 220 were sent in clear text before TLS: a broken
	// peer or a man in the middle injecting replies to be taken as if they
	// came through TLS (the client side of CVE-2011-0411). tls.Client reads
	// the socket, not this buffer, so they could not be misread; refusing
	// makes the attack visible instead of silently dropping it. RFC 3207
	// §4.2: nothing from before TLS is kept.
	if c.br.Buffered() > 0 {
		return nil, fail(StageSTARTTLS, errors.New("server sent data after its STARTTLS reply, before TLS"))
	}

	cfg := tmpl.Clone()
	cfg.ServerName = serverName(host)
	tlsConn := tls.Client(rawConn, cfg)
	if err := rawConn.SetDeadline(time.Now().Add(cmdTimeout)); err != nil {
		return nil, fail(StageTLS, err)
	}
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		return nil, fail(StageTLS, err)
	}
	if v := tlsConn.ConnectionState().Version; v < tls.VersionTLS12 {
		// Unreachable with MinVersion set; kept so that no future change of
		// the template can silently allow an older protocol.
		return nil, fail(StageTLS, fmt.Errorf("negotiated %s, below TLS 1.2", tls.VersionName(v)))
	}
	c.setConn(tlsConn)

	// RFC 3207 §4.2: EHLO again over TLS; the extensions may differ.
	if code, msg, err = c.ehlo(d.Hostname, cmdTimeout); err != nil {
		// With TLS 1.3 the server checks our certificate after our side of
		// the handshake has finished: its refusal arrives here as an alert.
		stage := StageEHLO
		if isRemoteTLSAlert(err) {
			stage = StageTLS
		}
		return nil, fail(stage, err)
	} else if code != 250 {
		return nil, refused(StageEHLO, code, msg)
	}

	mail := "MAIL FROM:<" + from + ">"
	if has8Bit(raw) {
		if !c.has("8BITMIME") {
			return nil, fail(StageMail, ErrNo8BITMIME)
		}
		mail += " BODY=8BITMIME" // RFC 6152 §3
	}
	if !isASCII(from) || !isASCII(to) {
		if !c.has("SMTPUTF8") {
			return nil, fail(StageMail, ErrNoSMTPUTF8)
		}
		mail += " SMTPUTF8" // RFC 6531 §3.4
	}
	if c.has("SIZE") {
		// RFC 1870 §6: declare the size so an over-limit message is
		// refused now rather than after the transfer.
		mail += " SIZE=" + strconv.Itoa(len(raw))
	}
	if code, msg, err = c.cmd(cmdTimeout, "%s", mail); err != nil {
		return nil, fail(StageMail, err)
	} else if code/100 != 2 {
		return nil, refused(StageMail, code, msg)
	}

	// RFC 5321 §3.3: 250 or 251 (will forward).
	if code, msg, err = c.cmd(cmdTimeout, "RCPT TO:<%s>", to); err != nil {
		return nil, fail(StageRcpt, err)
	} else if code/100 != 2 {
		return nil, refused(StageRcpt, code, msg)
	}

	if code, msg, err = c.cmd(cmdTimeout, "DATA"); err != nil {
		return nil, fail(StageData, err)
	} else if code != 354 {
		return nil, refused(StageData, code, msg)
	}
	// One deadline covers the transfer and the final reply.
	if err := c.conn.SetDeadline(time.Now().Add(dataTimeout)); err != nil {
		return nil, fail(StageData, err)
	}
	// The dot writer stuffs lines starting with "." and ends with
	// CRLF "." CRLF (RFC 5321 §4.5.2); CRLF pairs pass unchanged, and bare
	// CR or LF, which it would rewrite, were refused in checkRequest.
	dw := c.w.DotWriter()
	if _, err := dw.Write(raw); err != nil {
		return nil, fail(StageData, err)
	}
	if err := dw.Close(); err != nil {
		return nil, fail(StageData, err)
	}
	if code, msg, err = c.readReply(); err != nil {
		return nil, fail(StageData, err)
	} else if code/100 != 2 {
		return nil, refused(StageData, code, msg)
	}
	enh, text := splitEnhanced(code, msg)
	res := &Result{Host: host, Code: code, Enhanced: enh, Message: sanitize(text, maxMessageLen)}

	// The message is accepted; QUIT is a courtesy (RFC 5321 §4.1.1.10)
	// whose failure changes nothing, hence the short bound and the
	// ignored error.
	_, _, _ = c.cmd(min(cmdTimeout, quitTimeout), "QUIT")
	return res, nil
}

// serverName is the name to verify the peer's certificate against: the host
// we dialled (for MX delivery, the MX name, as RFC 7672 and RFC 8461 do),
// without a trailing dot. An IP literal is verified against IP SANs.
func serverName(host string) string {
	name, _, _ := net.SplitHostPort(host) // validated in checkRequest
	return strings.TrimSuffix(name, ".")
}

// isRemoteTLSAlert reports whether err is a TLS alert sent by the peer
// (crypto/tls reports them as a net.OpError with Op "remote error").
func isRemoteTLSAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// splitEnhanced separates an RFC 3463 enhanced status code from the reply
// text. RFC 2034 §4 puts it at the start of every line; it only counts when
// its class matches the reply code's first digit.
func splitEnhanced(code int, msg string) (enhanced, text string) {
	first, _, _ := strings.Cut(msg, "\n")
	tok, _, _ := strings.Cut(first, " ")
	if !validEnhanced(tok, code) {
		return "", msg
	}
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		if rest, ok := strings.CutPrefix(l, tok); ok && (rest == "" || rest[0] == ' ') {
			lines[i] = strings.TrimPrefix(rest, " ")
		}
	}
	return tok, strings.Join(lines, "\n")
}

// validEnhanced checks class "." subject "." detail (RFC 3463 §2): class 2,
// 4 or 5 equal to the reply's first digit, subject and detail of 1 to 3
// digits.
func validEnhanced(s string, code int) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] != strconv.Itoa(code/100) {
		return false
	}
	if c := parts[0]; c != "2" && c != "4" && c != "5" {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// sanitize makes untrusted text one printable line of at most max bytes:
// invalid UTF-8 becomes U+FFFD, format characters (zero-width, bidi
// overrides that could disguise a log line) are dropped, control characters
// and runs of white space become one space, and a cut text ends with "...".
func sanitize(s string, max int) string {
	var b strings.Builder
	space := false
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unicode.Is(unicode.Cf, r) {
			continue // invisible: zero-width and bidi controls
		}
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
		if b.Len() > max+utf8.UTFMax {
			break // enough to know it will be cut
		}
	}
	out := b.String()
	if len(out) <= max {
		return out
	}
	const more = "..."
	cut := max - len(more)
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	return out[:cut] + more
}

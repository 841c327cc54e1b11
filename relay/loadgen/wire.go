package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// The load tool speaks SMTP itself instead of through go-smtp's client,
// for two reasons that both concern what is measured, not convenience:
//
//   - go-smtp's client dot-stuffs each message one byte at a time through
//     textproto's DotWriter as it sends it. On the 2-core machines this
//     tool runs on, next to the relay, that was about 9 % of all the CPU
//     of a run: the load tool was slowing down the server it measures.
//     Messages are dot-stuffed once, when the batch is prepared.
//   - go-smtp's client does not pipeline (RFC 2920). Mail servers that
//     submit in volume (Postfix, Exim) send MAIL, RCPT and DATA in one
//     write when the server offers PIPELINING; the tool does the same
//     unless told not to, so that it measures what such a client costs.

// client is one SMTP connection.
type client struct {
	conn     net.Conn // the socket or the TLS connection over it
	r        *bufio.Reader
	w        *bufio.Writer
	timeout  time.Duration
	stop     func() bool // stops the context watcher
	resumed  bool
	pipeline bool // the server offers PIPELINING and the run allows it
}

// maxReplyLines bounds a multi-line reply (an EHLO answer has a dozen).
const maxReplyLines = 100

func dial(ctx context.Context, o *SMTPOptions) (*client, error) {
	d := net.Dialer{Timeout: o.Timeout}
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	raw, err := d.DialContext(dctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	// Closing the socket is the one way to interrupt a blocked read or
	// write when the run is cancelled.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	c := &client{timeout: o.Timeout, stop: stop}
	fail := func(err error) (*client, error) {
		stop()
		raw.Close()
		return nil, err
	}
	c.setConn(raw)
	if o.TLS != nil && o.ImplicitTLS {
		if err := c.handshake(dctx, raw, o.TLS); err != nil {
			return fail(fmt.Errorf("TLS: %w", err))
		}
	}
	if _, err := c.expect("greeting", 220); err != nil {
		return fail(err)
	}
	ext, err := c.ehlo()
	if err != nil {
		return fail(err)
	}
	if o.TLS != nil && !o.ImplicitTLS {
		if _, ok := ext["STARTTLS"]; !ok {
			return fail(errors.New("STARTTLS: not offered"))
		}
		if err := c.cmd("STARTTLS", 220, "STARTTLS"); err != nil {
			return fail(fmt.Errorf("STARTTLS: %w", err))
		}
		if c.r.Buffered() > 0 {
			// RFC 3207 §4.2 forbids the server to send anything before
			// the handshake; a client must not read it as TLS.
			return fail(errors.New("STARTTLS: data received before the TLS handshake"))
		}
		if err := c.handshake(dctx, raw, o.TLS); err != nil {
			return fail(fmt.Errorf("STARTTLS: %w", err))
		}
		// RFC 3207 §4.2: forget what was learnt before TLS.
		if ext, err = c.ehlo(); err != nil {
			return fail(err)
		}
	}
	if o.User != "" {
		// RFC 4954 §4 with an initial response (RFC 4616: authzid empty).
		ir := base64.StdEncoding.EncodeToString([]byte("\x00" + o.User + "\x00" + o.Password))
		if err := c.cmd("AUTH", 235, "AUTH PLAIN %s", ir); err != nil {
			return fail(fmt.Errorf("AUTH: %w", err))
		}
	}
	_, c.pipeline = ext["PIPELINING"]
	c.pipeline = c.pipeline && !o.NoPipelining
	return c, nil
}

func (c *client) setConn(conn net.Conn) {
	c.conn = conn
	c.r = bufio.NewReaderSize(conn, 4096)
	c.w = bufio.NewWriterSize(conn, 4<<10) // a message bypasses it: bufio writes large slices through
}

func (c *client) handshake(ctx context.Context, raw net.Conn, cfg *tls.Config) error {
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	c.resumed = tc.ConnectionState().DidResume
	c.setConn(tc)
	return nil
}

// ehlo says EHLO (RFC 5321 §4.1.1.1) and returns the extensions offered,
// keyword upper-cased → parameters.
func (c *client) ehlo() (map[string]string, error) {
	if err := c.write("EHLO localhost\r\n"); err != nil {
		return nil, err
	}
	lines, err := c.expect("EHLO", 250)
	if err != nil {
		return nil, err
	}
	ext := map[string]string{}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		ext[strings.ToUpper(k)] = v
	}
	return ext, nil
}

// cmd sends one command and expects one reply code.
func (c *client) cmd(step string, want int, format string, args ...any) error {
	if err := c.write(fmt.Sprintf(format, args...) + "\r\n"); err != nil {
		return err
	}
	_, err := c.expect(step, want)
	return err
}

func (c *client) write(s string) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := c.w.WriteString(s); err != nil {
		return err
	}
	return c.w.Flush()
}

// expect reads one reply and turns any code but want into an
// *smtp.SMTPError, so refusals are counted as the server phrased them.
func (c *client) expect(step string, want int) ([]string, error) {
	code, lines, err := c.reply()
	if err != nil {
		return nil, err
	}
	if code != want {
		return nil, replyError(code, lines)
	}
	return lines, nil
}

// reply reads one reply (RFC 5321 §4.2): lines "NNN-text" then "NNN text".
func (c *client) reply() (code int, lines []string, err error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(c.timeout))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, nil, fmt.Errorf("malformed reply %q", line)
		}
		n, err := strconv.Atoi(line[:3])
		if err != nil || n < 200 || n > 599 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			return 0, nil, fmt.Errorf("malformed reply %q", line)
		}
		if code != 0 && n != code {
			return 0, nil, fmt.Errorf("reply lines with codes %d and %d", code, n)
		}
		code = n
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		lines = append(lines, text)
		if len(line) == 3 || line[3] == ' ' {
			return code, lines, nil
		}
		if len(lines) >= maxReplyLines {
			return 0, nil, fmt.Errorf("reply of more than %d lines", maxReplyLines)
		}
	}
}

// replyError is the reply as go-smtp's client would report it: the
// enhanced status code (RFC 3463) split off the first line's text.
func replyError(code int, lines []string) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: strings.Join(lines, "\n")}
	first, rest, _ := strings.Cut(lines[0], " ")
	parts := strings.Split(first, ".")
	if len(parts) == 3 && parts[0] == strconv.Itoa(code/100) {
		var ec smtp.EnhancedCode
		ok := true
		for i, p := range parts {
			if ec[i], ok = atoiSmall(p); !ok {
				break
			}
		}
		if ok {
			e.EnhancedCode = ec
			lines = append([]string{rest}, lines[1:]...)
			e.Message = strings.Join(lines, "\n")
		}
	}
	return e
}

func atoiSmall(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0 && n < 1000 && len(s) <= 3
}

// transaction runs MAIL, RCPT and DATA (RFC 5321 §3.3) and sends the
// message, prepared by Stuff. It returns when the final reply is read:
// dataStart is when DATA was sent; err is an *smtp.SMTPError for a
// refusal (step says which, and sent whether the message itself had been
// sent: then the refusal ended the transaction), anything else for a
// broken connection.
func (c *client) transaction(from, to string, wire []byte) (dataStart time.Time, step string, sent bool, err error) {
	mail := "MAIL FROM:<" + from + ">\r\n"
	rcpt := "RCPT TO:<" + to + ">\r\n"
	if c.pipeline {
		// RFC 2920 §3.1: MAIL, RCPT and DATA go in one write; the replies
		// come back in order, and a failed MAIL or RCPT makes the server
		// refuse DATA (so no message follows a refusal).
		dataStart = time.Now()
		if err := c.write(mail + rcpt + "DATA\r\n"); err != nil {
			return dataStart, "MAIL", false, err
		}
		var first error
		firstStep := ""
		for _, s := range []struct {
			step string
			want int
		}{{"MAIL", 250}, {"RCPT", 250}, {"DATA", 354}} {
			code, lines, err := c.reply()
			if err != nil {
				if first != nil {
					// A server that refused with 421 (RFC 5321 §3.8) may
					// close before the replies that follow: the refusal
					// is what happened.
					return dataStart, firstStep, false, first
				}
				return dataStart, s.step, false, err
			}
			if code != s.want && first == nil {
				first, firstStep = replyError(code, lines), s.step
			}
			if s.step == "DATA" && code == 354 && first != nil {
				// A server that accepts DATA after refusing a recipient
				// breaks RFC 2920 §3.1; end the empty message politely.
				if err := c.write(".\r\n"); err != nil {
					return dataStart, "DATA", false, err
				}
				if _, _, err := c.reply(); err != nil {
					return dataStart, "DATA", false, err
				}
			}
		}
		if first != nil {
			return dataStart, firstStep, false, first
		}
	} else {
		if err := c.cmd("MAIL", 250, "%s", strings.TrimSuffix(mail, "\r\n")); err != nil {
			return time.Time{}, "MAIL", false, err
		}
		if err := c.cmd("RCPT", 250, "%s", strings.TrimSuffix(rcpt, "\r\n")); err != nil {
			return time.Time{}, "RCPT", false, err
		}
		dataStart = time.Now()
		if err := c.cmd("DATA", 354, "DATA"); err != nil {
			return dataStart, "DATA", false, err
		}
	}
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	if _, err := c.w.Write(wire); err != nil {
		return dataStart, "DATA", true, err
	}
	if err := c.w.Flush(); err != nil {
		return dataStart, "DATA", true, err
	}
	_, err = c.expect("DATA", 250)
	return dataStart, "DATA", true, err
}

// Stuff prepares a message for DATA (RFC 5321 §4.5.2): a line starting
// with "." gets another, the message ends with CRLF, then ".\r\n". Bare
// LFs are left as they are: the tool sends what it was given.
func Stuff(data []byte) []byte {
	out := make([]byte, 0, len(data)+len(data)/64+5)
	atLineStart := true
	for len(data) > 0 {
		if atLineStart && data[0] == '.' {
			out = append(out, '.')
		}
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, data...)
			data = nil
			atLineStart = false
			break
		}
		out = append(out, data[:i+1]...)
		data = data[i+1:]
		atLineStart = true
	}
	if !atLineStart {
		out = append(out, '\r', '\n')
	}
	return append(out, '.', '\r', '\n')
}

// reset abandons a transaction (RFC 5321 §4.1.1.5).
func (c *client) reset() error { return c.cmd("RSET", 250, "RSET") }

// noop keeps an idle session alive (RFC 5321 §4.1.1.9).
func (c *client) noop() error { return c.cmd("NOOP", 250, "NOOP") }

// quit ends the session politely (RFC 5321 §4.1.1.10).
func (c *client) quit() {
	_ = c.cmd("QUIT", 221, "QUIT")
	c.close()
}

func (c *client) close() {
	c.conn.Close()
	c.stop()
}

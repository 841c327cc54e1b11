// Package submit is a small SMTP submission client used by the demo, the
// end-to-end tests and the load tool: STARTTLS or implicit TLS, AUTH PLAIN,
// one or more messages per connection.
package submit

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options describe where and as whom to submit.
type Options struct {
	Addr        string // host:port
	ImplicitTLS bool   // port 465 style; otherwise STARTTLS (port 587)
	TLS         *tls.Config
	User        string
	Password    string
	Timeout     time.Duration // per command; default 30 s
}

// Conn is an authenticated submission connection.
type Conn struct {
	c *smtp.Client
}

// Dial connects, secures the connection and authenticates.
func Dial(o Options) (*Conn, error) {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	var (
		c   *smtp.Client
		err error
	)
	if o.ImplicitTLS {
		var conn net.Conn
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", o.Addr, o.TLS)
		if err == nil {
			c = smtp.NewClient(conn)
		}
	} else {
		var conn net.Conn
		conn, err = net.DialTimeout("tcp", o.Addr, timeout)
		if err == nil {
			c, err = smtp.NewClientStartTLS(conn, o.TLS)
			if err != nil {
				conn.Close()
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", o.Addr, err)
	}
	c.CommandTimeout = timeout
	c.SubmissionTimeout = timeout
	if err := c.Auth(sasl.NewPlainClient("", o.User, o.Password)); err != nil {
		c.Close()
		return nil, fmt.Errorf("authenticating as %s: %w", o.User, err)
	}
	return &Conn{c: c}, nil
}

// Send submits one message and returns the server's reply text. A refusal
// is an *smtp.SMTPError carrying the reply code and enhanced code.
func (c *Conn) Send(from string, to []string, msg []byte) (string, error) {
	if err := c.c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, rcpt := range to {
		if err := c.c.Rcpt(rcpt, nil); err != nil {
			_ = c.c.Reset()
			return "", err
		}
	}
	w, err := c.c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// Close says QUIT and closes the connection.
func (c *Conn) Close() error {
	if err := c.c.Quit(); err != nil {
		c.c.Close()
		return err
	}
	return nil
}

// Message builds a minimal outer header block for a submission.
func Message(from, to, subject, messageID string, date time.Time) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\n",
		from, to, subject, date.Format(time.RFC1123Z), messageID)
	return b.Bytes()
}

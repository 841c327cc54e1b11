package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"mssrelay/mime"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
)

func cmdDemo(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{"expected a subcommand: send or fetch"}
	}
	switch args[0] {
	case "send":
		return demoSend(args[1:], stdout)
	case "fetch":
		return demoFetch(args[1:], stdout)
	default:
		return usageError{fmt.Sprintf("unknown demo subcommand %q (want send or fetch)", args[0])}
	}
}

// demoSend signs a sample prescription with the demo prescriber's
// certificate and submits it over STARTTLS + AUTH PLAIN.
func demoSend(args []string, stdout io.Writer) error {
	fs := newFlags("demo send", stdout, "demo send [-data DIR] [-to ADDR]")
	dataDir := fs.String("data", "mssrelay-data", "data directory of the running demo")
	to := fs.String("to", "", "recipient (default: the demo pharmacy)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	info, err := demo.Load(*dataDir)
	if err != nil {
		return err
	}
	if *to == "" {
		*to = info.Pharmacy.Address
	}
	kp, err := info.Signer()
	if err != nil {
		return fmt.Errorf("loading the prescriber's certificate: %w", err)
	}
	now := time.Now()
	rx := demo.SamplePrescription(now)
	msg, err := demo.Compose(kp, info.Prescriber.Address, *to, "Ordonnance "+rx.Number, rx.Content(), now)
	if err != nil {
		return err
	}
	opts, err := info.SubmitOptions()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Submitting prescription %s (%d bytes, signed by %s) to %s via %s ...\n",
		rx.Number, len(msg), info.Prescriber.Address, *to, opts.Addr)
	c, err := submit.Dial(opts)
	if err != nil {
		return fmt.Errorf("%w (is the relay running? start it with `go run ./cmd/mssrelay`)", err)
	}
	defer c.Close()
	reply, err := c.Send(info.Prescriber.Address, []string{*to}, msg)
	if err != nil {
		return fmt.Errorf("refused: %w", err)
	}
	fmt.Fprintf(stdout, "Accepted: 250 %s\nNext: go run ./cmd/mssrelay demo fetch\n", reply)
	return nil
}

// demoFetch logs in as the demo pharmacy over IMAPS, fetches every message
// of INBOX and verifies each signature independently of the relay.
func demoFetch(args []string, stdout io.Writer) error {
	fs := newFlags("demo fetch", stdout, "demo fetch [-data DIR] [-user ADDR]")
	dataDir := fs.String("data", "mssrelay-data", "data directory of the running demo")
	user := fs.String("user", "", "account to read (default: the demo pharmacy)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	info, err := demo.Load(*dataDir)
	if err != nil {
		return err
	}
	acct := info.Pharmacy
	for _, u := range []demo.User{info.Prescriber, info.Pharmacy, info.Pharmacy2} {
		if *user != "" && strings.EqualFold(u.Address, *user) {
			acct = u
		}
	}
	tlsCfg, err := info.ClientTLS()
	if err != nil {
		return err
	}
	trust, err := info.Trust()
	if err != nil {
		return err
	}

	c, err := imapclient.DialTLS(info.IMAPTLS, &imapclient.Options{TLSConfig: tlsCfg})
	if err != nil {
		return fmt.Errorf("connecting to %s: %w (is the relay running?)", info.IMAPTLS, err)
	}
	defer c.Close()
	if err := c.Login(acct.Address, acct.Password).Wait(); err != nil {
		return fmt.Errorf("login as %s: %w", acct.Address, err)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: INBOX holds %d message(s)\n", acct.Address, sel.NumMessages)
	if sel.NumMessages == 0 {
		fmt.Fprintln(stdout, "Nothing yet: run `go run ./cmd/mssrelay demo send` first.")
		return c.Logout().Wait()
	}
	whole := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{
		UID: true, Envelope: true, InternalDate: true, RFC822Size: true, BodySection: []*imap.FetchItemBodySection{whole},
	}).Collect()
	if err != nil {
		return err
	}
	for _, m := range msgs {
		fmt.Fprintf(stdout, "\nUID %d  received %s  %d bytes  subject %q\n", m.UID, m.InternalDate.Format(time.RFC3339), m.RFC822Size, m.Envelope.Subject)
		describe(stdout, trust, m.FindBodySection(whole))
	}
	return c.Logout().Wait()
}

// describe verifies one fetched message and prints who signed it and what
// it prescribes.
func describe(w io.Writer, trust *signing.Trust, raw []byte) {
	signed, err := mime.Split(raw)
	if err != nil {
		fmt.Fprintf(w, "  not a signed prescription: %v\n", err)
		return
	}
	from, _ := mime.HeaderField(signed.Header, "From")
	addr, _ := mime.Address(from)
	res, err := trust.Verify(signing.Request{PKCS7: signed.PKCS7, Content: signed.Content, From: addr})
	if err != nil {
		fmt.Fprintf(w, "  SIGNATURE NOT VALID: %v\n", err)
		return
	}
	fmt.Fprintf(w, "  signature verified: signer %s (IDNPS %s), issued by %s\n",
		res.Signer.Cert.Subject.CommonName, res.Signer.IDNPS, res.Signer.Cert.Issuer.CommonName)
	rx, err := mime.ExtractPrescription(res.Content)
	if err != nil {
		fmt.Fprintf(w, "  prescription unreadable: %v\n", err)
		return
	}
	fmt.Fprintf(w, "  prescription %s, authored %s, patient INS %s…, delivery %q\n",
		rx.Number, rx.AuthoredOn, rx.PatientINS[:min(len(rx.PatientINS), 5)], rx.Delivery)
	for _, it := range rx.Items {
		fmt.Fprintf(w, "   - %s: %s", it.Kind, it.Text)
		if it.Dosage != "" {
			fmt.Fprintf(w, " — %s", it.Dosage)
		}
		fmt.Fprintln(w)
	}
}

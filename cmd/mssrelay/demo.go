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
	"mssrelay/relay/claim"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
)

func cmdDemo(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{"expected a subcommand: send, fetch or claim"}
	}
	switch args[0] {
	case "send":
		return demoSend(args[1:], stdout)
	case "fetch":
		return demoFetch(args[1:], stdout)
	case "claim":
		return demoClaim(args[1:], stdout)
	default:
		return usageError{fmt.Sprintf("unknown demo subcommand %q (want send, fetch or claim)", args[0])}
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
	fmt.Fprintf(stdout, "Accepted: 250 %s\nNext: go run ./cmd/mssrelay demo fetch   # read it as %s\n"+
		"  or: go run ./cmd/mssrelay demo claim   # another pharmacy claims it from its number and the INS\n", reply, *to)
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

// demoClaim claims a prescription as the second demo pharmacy, as a
// pharmacy the patient walked into would: from the number printed on the
// patient's copy and the INS on the patient's health card
// (docs/claim.md). By default the number is the newest prescription in the
// first pharmacy's INBOX (what `demo send` just sent) and the INS the demo
// patient's. It then reads the claimant's INBOX and verifies every
// signature, as `demo fetch` does.
func demoClaim(args []string, stdout io.Writer) error {
	fs := newFlags("demo claim", stdout, "demo claim [-data DIR] [-number N] [-ins INS] [-user ADDR]")
	dataDir := fs.String("data", "mssrelay-data", "data directory of the running demo")
	number := fs.String("number", "", "prescription number (default: the newest in the demo pharmacy's INBOX)")
	ins := fs.String("ins", demo.PatientINS, "the patient's INS, as on the health card")
	user := fs.String("user", "", "executant account that claims (default: the second demo pharmacy)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	info, err := demo.Load(*dataDir)
	if err != nil {
		return err
	}
	claimant := info.Pharmacy2
	if *user != "" {
		found := false
		for _, u := range []demo.User{info.Prescriber, info.Pharmacy, info.Pharmacy2} {
			if strings.EqualFold(u.Address, *user) {
				claimant, found = u, true
			}
		}
		if !found {
			return usageError{fmt.Sprintf("%s is not a demo account", *user)}
		}
	}
	address, err := info.ClaimAddress()
	if err != nil {
		return err
	}
	if *number == "" {
		n, err := newestNumber(info, info.Pharmacy)
		if err != nil {
			return err
		}
		*number = n
		fmt.Fprintf(stdout, "Newest prescription in %s's INBOX: %s (the number the patient's copy carries)\n", info.Pharmacy.Address, n)
	}
	opts, err := info.SubmitOptionsAs(claimant)
	if err != nil {
		return err
	}
	now := time.Now()
	msg := claim.Message(claimant.Address, address, *number, *ins, fmt.Sprintf("claim.%d@%s", now.UnixNano(), demo.Domain), now)
	fmt.Fprintf(stdout, "Claiming as %s: \"%s\" to %s via %s ...\n", claimant.Address, claim.Format(*number, *ins), address, opts.Addr)
	c, err := submit.Dial(opts)
	if err != nil {
		return fmt.Errorf("%w (is the relay running? start it with `go run ./cmd/mssrelay`)", err)
	}
	defer c.Close()
	reply, err := c.Send(claimant.Address, []string{address}, msg)
	if err != nil {
		return fmt.Errorf("claim refused: %w", err)
	}
	fmt.Fprintf(stdout, "Accepted: 250 %s\n\n", reply)
	return demoFetch([]string{"-data", *dataDir, "-user", claimant.Address}, stdout)
}

// newestNumber reads the prescription number of the newest message in
// u's INBOX over IMAPS, after verifying its signature.
func newestNumber(info *demo.Info, u demo.User) (string, error) {
	tlsCfg, err := info.ClientTLS()
	if err != nil {
		return "", err
	}
	trust, err := info.Trust()
	if err != nil {
		return "", err
	}
	c, err := imapclient.DialTLS(info.IMAPTLS, &imapclient.Options{TLSConfig: tlsCfg})
	if err != nil {
		return "", fmt.Errorf("connecting to %s: %w (is the relay running?)", info.IMAPTLS, err)
	}
	defer c.Close()
	if err := c.Login(u.Address, u.Password).Wait(); err != nil {
		return "", fmt.Errorf("login as %s: %w", u.Address, err)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return "", err
	}
	if sel.NumMessages == 0 {
		return "", fmt.Errorf("%s's INBOX is empty: run `go run ./cmd/mssrelay demo send` first, or pass -number", u.Address)
	}
	whole := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(imap.SeqSetNum(sel.NumMessages), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{whole}}).Collect()
	if err != nil {
		return "", err
	}
	if len(msgs) != 1 {
		return "", fmt.Errorf("fetching the newest message of %s's INBOX: %d messages returned", u.Address, len(msgs))
	}
	_ = c.Logout().Wait()
	signed, err := mime.Split(msgs[0].FindBodySection(whole))
	if err != nil {
		return "", fmt.Errorf("the newest message is not a signed prescription: %w", err)
	}
	from, _ := mime.HeaderField(signed.Header, "From")
	addr, _ := mime.Address(from)
	res, err := trust.Verify(signing.Request{PKCS7: signed.PKCS7, Content: signed.Content, From: addr})
	if err != nil {
		return "", fmt.Errorf("the newest message's signature is not valid: %w", err)
	}
	rx, err := mime.ExtractPrescription(res.Content)
	if err != nil {
		return "", err
	}
	return rx.Number, nil
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

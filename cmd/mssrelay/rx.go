package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/store"
)

// configFlags adds -config and -data to an admin command and returns a
// loader for the configuration they name.
func configFlags(fsName string, out io.Writer, help string) (*flagSet, func() (*configs.Config, error)) {
	fs := newFlags(fsName, out, help)
	cfgPath := fs.String("config", "", "config file (default: the demo's, in -data)")
	dataDir := fs.String("data", "mssrelay-data", "data directory of the embedded demo (ignored with -config)")
	return fs, func() (*configs.Config, error) {
		p := *cfgPath
		if p == "" {
			p = filepath.Join(*dataDir, demo.ConfigFile)
		}
		return configs.Load(p)
	}
}

// openStore opens the relay's store for an admin command. bbolt allows one
// process at a time: while the relay runs, admin commands wait a little and
// then say so.
func openStore(cfg *configs.Config) (*store.Store, error) {
	st, err := store.Open(filepath.Join(cfg.Server.DataDir, relay.DBFile), store.Options{LockTimeout: 3 * time.Second})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w\n(admin commands read the store directly: stop the relay first)", err)
	}
	return st, err
}

// cmdRx implements `mssrelay rx show NUMBER`: what was filed under a
// prescription number, when, from whom, for whom and the delivery choice.
// Clinical content is printed only with -content.
func cmdRx(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "show" {
		return usageError{"expected: rx show NUMBER"}
	}
	fs, load := configFlags("rx show", stdout, "rx show [-config FILE | -data DIR] [-content] NUMBER")
	content := fs.Bool("content", false, "also print the prescription's content (patient INS, items)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"expected exactly one prescription number"}
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	rec, err := st.RecordByNumber(fs.Arg(0))
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no prescription filed under number %q", fs.Arg(0))
	} else if err != nil {
		return err
	}
	delivery := rec.Delivery
	if delivery == "" {
		delivery = "not stated"
	}
	fmt.Fprintf(stdout, "prescription %s\n  record      %d (%d bytes, digest %x…)\n  filed       %s\n  from        %s (signer %s, IDNPS %s)\n  message-id  %s\n  delivery    %s\n",
		rec.Number, rec.ID, rec.Size, rec.Digest[:6], rec.Received.Format(time.RFC3339), rec.Sender, rec.Signer, rec.IDNPS, rec.MessageID, delivery)
	for _, r := range rec.Recipients {
		fmt.Fprintf(stdout, "  delivered   INBOX of %s\n", r)
	}
	// Claims (docs/claim.md): executants that retrieved it from its number
	// and the patient's INS. Refused claims are in the audit trail
	// (`mssrelay audit export`, kind smtp.claim).
	claims, err := st.Claims(rec.ID)
	if err != nil {
		return err
	}
	for _, c := range claims {
		fmt.Fprintf(stdout, "  claimed     INBOX of %s, %s (UID %d)\n", c.Account, c.Time.UTC().Format(time.RFC3339), c.UID)
	}
	if !*content {
		return nil
	}
	raw, err := st.Bytes(rec.ID)
	if err != nil {
		return err
	}
	signed, err := mime.Split(raw)
	if err != nil {
		return err
	}
	body := signed.Content
	if body == nil {
		// Opaque: the content is inside the PKCS#7; the store keeps what
		// was verified at filing, so only the detached form is shown here.
		fmt.Fprintln(stdout, "  content     (opaque signature: use `demo fetch` or openssl to read it)")
		return nil
	}
	rx, err := mime.ExtractPrescription(body)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "  patient INS %s\n  authored    %s\n", rx.PatientINS, rx.AuthoredOn)
	for _, it := range rx.Items {
		fmt.Fprintf(stdout, "  item        %s: %s — %s\n", it.Kind, it.Text, it.Dosage)
	}
	return nil
}

// Package loadgen is the load generator behind `mssrelay bench`: it prepares
// a batch of distinct signed prescriptions before any timing starts, submits
// them over SMTP from many clients (closed loop, or open loop at a fixed
// offered rate), then reads them back over IMAP, and reports throughput,
// latency percentiles and every refusal by reply code.
//
// It is a library so that tests can drive a relay started in-process; the
// command only parses flags and prints the report.
package loadgen

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"mssrelay/mime"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
)

// Size chooses what a generated prescription carries besides the FHIR
// Bundle and the text summary.
type Size string

const (
	SizeFHIR Size = "fhir" // FHIR Bundle and text only: about 4 KiB signed
	SizePDF  Size = "pdf"  // plus a one-page PDF
	SizeFull Size = "full" // plus PDF and IHE_XDM.ZIP: 10–30 KiB, as prescribing software sends
)

// ParseSize reads a Size from a flag value.
func ParseSize(s string) (Size, error) {
	switch Size(s) {
	case SizeFHIR, SizePDF, SizeFull:
		return Size(s), nil
	}
	return "", fmt.Errorf("unknown size %q (want fhir, pdf or full)", s)
}

// Key types of the signer certificates, by flag value.
const (
	KeysRSA  = "rsa"  // RSA-2048
	KeysP256 = "p256" // ECDSA P-256
	KeysBoth = "both" // half and half, alternating
)

// Signer is one signing identity used for a share of the batch.
type Signer struct {
	Name string // "rsa-2048", "p-256" or the certificate's file name
	Key  *signing.KeyPair
}

// IssueSigners issues, from a development PKI, the S/MIME certificates the
// batch is signed with: keys is KeysRSA, KeysP256 or KeysBoth. Each
// certificate carries email in its SAN and the IDNPS "8"+rpps in its
// subject, so a relay trusting the PKI accepts its signatures for that
// prescriber (chain, e-mail and RPPS are all checked before 250).
func IssueSigners(pki *signing.DevPKI, email, rpps, name, keys string) ([]Signer, error) {
	type kind struct {
		name string
		kt   signing.KeyType
	}
	rsa2048 := kind{"rsa-2048", signing.KeyRSA2048}
	p256 := kind{"p-256", signing.KeyECDSAP256}
	var kinds []kind
	switch keys {
	case KeysRSA:
		kinds = []kind{rsa2048}
	case KeysP256:
		kinds = []kind{p256}
	case KeysBoth:
		kinds = []kind{rsa2048, p256}
	default:
		return nil, fmt.Errorf("unknown key type %q (want rsa, p256 or both)", keys)
	}
	out := make([]Signer, 0, len(kinds))
	for _, k := range kinds {
		kp, err := pki.Issue(signing.Template{Email: email, RPPS: rpps, Name: name, KeyType: k.kt})
		if err != nil {
			return nil, fmt.Errorf("issuing the %s signer certificate: %w", k.name, err)
		}
		out = append(out, Signer{Name: k.name, Key: kp})
	}
	return out, nil
}

// Config describes the batch to prepare.
type Config struct {
	N    int    // number of messages (> 0)
	From string // sender: MAIL FROM, From: and the signer's e-mail address
	To   string // the one recipient of every message

	// Signers sign the messages in turn (message i by Signers[i mod len]).
	// Required unless Plain.
	Signers []Signer
	// Plain builds unsigned messages of about the same size and shape (a
	// multipart/signed whose "signature" is random bytes), for servers
	// that only carry mail, such as Postfix in bench/compare.sh.
	Plain bool

	Size Size   // default SizeFull
	RPPS string // prescriber RPPS written in the prescription; default demo.PrescriberRPPS
	// Prescriber is the display name in the prescription; default the demo's.
	Prescriber string
	// RunID makes prescription numbers and Message-IDs unique across runs
	// against the same store (a number filed before with other content is
	// refused as a replay). Default: 8 random hex digits.
	RunID string
	// Now is the clock for Date: and the authoring time; default time.Now.
	Now func() time.Time
}

// Message is one prepared message.
type Message struct {
	Data   []byte
	Number string // prescription number, unique in the batch
	Signer string // Signer.Name, or "plain"
	wire   []byte // Data dot-stuffed and terminated for DATA (Stuff)
}

// Batch is a prepared set of messages, ready to send.
type Batch struct {
	From, To string
	Messages []Message
	Bytes    int64 // total size
	Min, Max int   // smallest and largest message
	RunID    string
	Prepared time.Duration // time spent generating and signing
}

// plainSignatureBytes is the size of the placeholder "signature" of a
// plain message: about what a detached SignedData with a leaf and an
// intermediate certificate weighs (1.2 KiB for P-256, 1.9 KiB for RSA).
const plainSignatureBytes = 1600

// Prepare generates and signs all of cfg.N messages, in parallel, so that
// no cryptography or MIME rendering happens while a run is timed.
func Prepare(cfg Config) (*Batch, error) {
	if cfg.N <= 0 {
		return nil, errors.New("prepare: the number of messages must be positive")
	}
	if cfg.From == "" || cfg.To == "" {
		return nil, errors.New("prepare: sender and recipient are required")
	}
	if !cfg.Plain && len(cfg.Signers) == 0 {
		return nil, errors.New("prepare: no signer (or set Plain)")
	}
	if cfg.Size == "" {
		cfg.Size = SizeFull
	}
	if _, err := ParseSize(string(cfg.Size)); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if cfg.RPPS == "" {
		cfg.RPPS = demo.PrescriberRPPS
	}
	if cfg.Prescriber == "" {
		cfg.Prescriber = "Dr Jeanne MARTIN"
	}
	if cfg.RunID == "" {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("prepare: run id: %w", err)
		}
		cfg.RunID = hex.EncodeToString(b[:])
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	start := time.Now()
	now := cfg.Now()
	b := &Batch{From: cfg.From, To: cfg.To, Messages: make([]Message, cfg.N), RunID: cfg.RunID}
	workers := min(runtime.GOMAXPROCS(0), cfg.N)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < cfg.N; i += workers {
				m, err := cfg.message(i, now)
				if err != nil {
					errs[w] = fmt.Errorf("prepare message %d: %w", i, err)
					return
				}
				b.Messages[i] = m
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	b.Min = len(b.Messages[0].Data)
	for _, m := range b.Messages {
		n := len(m.Data)
		b.Bytes += int64(n)
		b.Min, b.Max = min(b.Min, n), max(b.Max, n)
	}
	b.Prepared = time.Since(start)
	return b, nil
}

// message renders message i: a valid prescription (varied patient, items
// and INS from mime.NewSample) under a number unique to the run.
func (cfg *Config) message(i int, now time.Time) (Message, error) {
	s := mime.NewSample(i)
	s.Number = fmt.Sprintf("RX-LG-%s-%07d", cfg.RunID, i)
	s.RPPS = cfg.RPPS
	s.Prescriber = cfg.Prescriber
	// NewSample's authoring times run into the future; a prescription is
	// written before it is sent.
	s.Authored = now.Add(-time.Duration(i%3600) * time.Second).Truncate(time.Second)
	s.Delivery = "paper" // no forwarding to the patient: the run measures intake only
	s.PDF = cfg.Size != SizeFHIR
	s.XDM = cfg.Size == SizeFull
	content := s.Content()

	msgID := fmt.Sprintf("lg.%s.%d@%s", cfg.RunID, i, demo.Domain)
	header := submit.Message(cfg.From, cfg.To, "Ordonnance "+s.Number, msgID, now)
	var sig []byte
	signer := "plain"
	if cfg.Plain {
		sig = make([]byte, plainSignatureBytes)
		if _, err := rand.Read(sig); err != nil {
			return Message{}, err
		}
	} else {
		sg := cfg.Signers[i%len(cfg.Signers)]
		var err error
		if sig, err = signing.SignDetached(sg.Key, content); err != nil {
			return Message{}, fmt.Errorf("signing as %s: %w", sg.Name, err)
		}
		signer = sg.Name
	}
	data := mime.BuildDetached(header, content, sig)
	return Message{Data: data, Number: s.Number, Signer: signer, wire: Stuff(data)}, nil
}

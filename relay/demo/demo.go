// Package demo builds and reuses the embedded default: a data directory
// holding a development PKI shaped like the health PKI, demo accounts with
// generated passwords and the config that serves them on loopback ports.
// It also builds demo prescriptions, for `mssrelay demo send`, the tests
// and the load tool.
package demo

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay/submit"
	"mssrelay/signing"
)

// Files inside the data directory.
const (
	ConfigFile = "mssrelay.toml"
	InfoFile   = "demo.json" // accounts with their passwords: mode 0600
	pkiDir     = "pki"
)

// Default loopback ports: well-known ports plus 2000, so no root is needed.
const (
	Submission    = "127.0.0.1:2587"
	SubmissionTLS = "127.0.0.1:2465"
	IMAPTLS       = "127.0.0.1:2993"
	IMAPSTARTTLS  = "127.0.0.1:2143"
)

// The demo's people. RPPS 10101201234 is the example of MISSION.md.
const (
	Domain         = "mssante.test" // RFC 2606 reserved TLD: never a real mail domain
	PrescriberRPPS = "10101201234"
	PatientINS     = "184127512345640" // valid key (97 − n mod 97 = 40)
)

// User is a demo account and its clear password.
type User struct {
	Address  string       `json:"address"`
	Password string       `json:"password"`
	Role     configs.Role `json:"role"`
	RPPS     string       `json:"rpps,omitempty"`
	Name     string       `json:"name"`
	CertFile string       `json:"cert,omitempty"` // S/MIME signing certificate (prescribers)
	KeyFile  string       `json:"key,omitempty"`
}

// Info is what the demo commands need to know, saved as demo.json.
type Info struct {
	Dir           string   `json:"-"`
	Config        string   `json:"config"`
	RootCA        string   `json:"root_ca"`
	Intermediate  string   `json:"intermediate_ca"`
	CRLs          []string `json:"crls"`
	SignerCert    string   `json:"signer_cert"` // the relay's own organisation certificate
	SignerKey     string   `json:"signer_key"`
	SignerAddress string   `json:"signer_address"`
	Submission    string   `json:"submission"`
	SubmissionTLS string   `json:"submission_tls"`
	IMAPTLS       string   `json:"imap_tls"`
	IMAPSTARTTLS  string   `json:"imap_starttls"`
	Prescriber    User     `json:"prescriber"`
	Pharmacy      User     `json:"pharmacy"`
	Pharmacy2     User     `json:"pharmacy2"`
}

// Ports overrides the default listener addresses (tests use port 0).
type Ports struct {
	Submission, SubmissionTLS, IMAPTLS, IMAPSTARTTLS string
}

// DefaultPorts are the loopback ports of the embedded default.
func DefaultPorts() Ports {
	return Ports{Submission, SubmissionTLS, IMAPTLS, IMAPSTARTTLS}
}

// Ensure returns the demo in dir, creating it first if dir holds none. The
// config is written last, so an interrupted creation starts over cleanly.
func Ensure(dir string, ports Ports) (info *Info, created bool, err error) {
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		info, err := Load(dir)
		if err != nil {
			return nil, false, err
		}
		return info, false, info.RefreshCRLs(time.Now())
	}
	info, err = create(dir, ports)
	return info, true, err
}

// crlValidity is how long a demo CRL stays fresh. Every start of the demo
// issues new ones, so only a demo left running for a month sees them go
// stale (and then answers 451 4.7.5, as a real relay would).
const crlValidity = 30 * 24 * time.Hour

// RefreshCRLs issues new, empty CRLs for the demo's root and intermediate,
// so that the demo checks revocation exactly as production does.
func (i *Info) RefreshCRLs(now time.Time) error {
	pki, err := signing.LoadDevPKI(i.Path(pkiDir))
	if err != nil {
		return err
	}
	issuers := []*signing.KeyPair{pki.Root, pki.Intermediate}
	if len(i.CRLs) != len(issuers) {
		return fmt.Errorf("%s lists %d CRLs, want %d: remove the directory to make a new demo", InfoFile, len(i.CRLs), len(issuers))
	}
	for n, issuer := range issuers {
		crl, err := pki.IssueCRL(issuer, nil, now.Add(-time.Hour), now.Add(crlValidity))
		if err != nil {
			return err
		}
		b := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw})
		if err := writeAtomic(i.Path(i.CRLs[n]), b); err != nil {
			return err
		}
	}
	return nil
}

// writeAtomic replaces a file so that a reader (the relay's trust reload)
// never sees it half-written.
func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Load reads the demo of dir.
func Load(dir string) (*Info, error) {
	b, err := os.ReadFile(filepath.Join(dir, InfoFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s holds no demo: start the relay once with `go run ./cmd/mssrelay` (or pass -data)", dir)
		}
		return nil, err
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, InfoFile), err)
	}
	info.Dir = dir
	return &info, nil
}

// Path resolves a path of the info against the data directory.
func (i *Info) Path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(i.Dir, p)
}

func create(dir string, ports Ports) (*Info, error) {
	if err := os.MkdirAll(filepath.Join(dir, pkiDir), 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	pki, err := signing.NewDevPKI()
	if err != nil {
		return nil, fmt.Errorf("generating development PKI: %w", err)
	}
	p := func(name string) string { return filepath.Join(pkiDir, name) }
	abs := func(rel string) string { return filepath.Join(dir, rel) }
	write := func(kp *signing.KeyPair, name string) error {
		return kp.WriteFiles(abs(p(name+".pem")), abs(p(name+"-key.pem")))
	}
	if err := pki.Save(abs(pkiDir)); err != nil {
		return nil, err
	}
	server, err := pki.IssueServer("localhost", "127.0.0.1", "::1")
	if err != nil {
		return nil, err
	}
	if err := write(server, "server"); err != nil {
		return nil, err
	}

	info := &Info{
		Dir: dir, Config: ConfigFile,
		RootCA: p(signing.DevRootCertFile), Intermediate: p(signing.DevIntermediateCertFile),
		CRLs:       []string{p("dev-ca-root.crl"), p("dev-ca-intermediate.crl")},
		SignerCert: p("relay.pem"), SignerKey: p("relay-key.pem"), SignerAddress: "postmaster@" + Domain,
		Submission: ports.Submission, SubmissionTLS: ports.SubmissionTLS,
		IMAPTLS: ports.IMAPTLS, IMAPSTARTTLS: ports.IMAPSTARTTLS,
		Prescriber: User{Address: "dr.martin@" + Domain, Role: configs.RolePrescriber, RPPS: PrescriberRPPS,
			Name: "Dr Jeanne MARTIN", CertFile: p("prescriber.pem"), KeyFile: p("prescriber-key.pem")},
		Pharmacy:  User{Address: "pharmacie.centrale@" + Domain, Role: configs.RoleExecutant, Name: "Pharmacie Centrale"},
		Pharmacy2: User{Address: "pharmacie.gare@" + Domain, Role: configs.RoleExecutant, Name: "Pharmacie de la Gare"},
	}
	prescriber, err := pki.IssuePerson(info.Prescriber.Address, PrescriberRPPS, "MARTIN Jeanne")
	if err != nil {
		return nil, err
	}
	if err := write(prescriber, "prescriber"); err != nil {
		return nil, err
	}
	org, err := pki.IssueOrganisation(info.SignerAddress, "MSSRELAY DEMO RELAY")
	if err != nil {
		return nil, err
	}
	if err := write(org, "relay"); err != nil {
		return nil, err
	}
	if err := info.RefreshCRLs(time.Now()); err != nil {
		return nil, err
	}

	var accounts []configs.Account
	for _, u := range []*User{&info.Prescriber, &info.Pharmacy, &info.Pharmacy2} {
		if u.Password, err = configs.GeneratePassword(); err != nil {
			return nil, err
		}
		hash, err := configs.HashPassword(u.Password)
		if err != nil {
			return nil, err
		}
		accounts = append(accounts, configs.Account{Address: u.Address, Role: u.Role, PasswordHash: hash, RPPS: u.RPPS, Name: u.Name})
	}
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(abs(InfoFile), b, 0o600); err != nil {
		return nil, err
	}
	cfg, err := configs.RenderDemo(configs.DemoParams{
		// The mail domain of the accounts: the claim address defaults to
		// claim@ it.
		Hostname: "localhost", MailDomain: Domain, DataDir: ".",
		Cert: p("server.pem"), Key: p("server-key.pem"),
		Anchors: []string{info.RootCA}, Intermediates: []string{info.Intermediate}, CRLs: info.CRLs,
		SignerCert: info.SignerCert, SignerKey: info.SignerKey, SignerAddress: info.SignerAddress,
		Submission: ports.Submission, SubmissionTLS: ports.SubmissionTLS,
		IMAPTLS: ports.IMAPTLS, IMAPSTARTTLS: ports.IMAPSTARTTLS,
		Accounts: accounts,
	})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(abs(ConfigFile), cfg, 0o600); err != nil {
		return nil, err
	}
	return info, nil
}

// Trust loads the demo's trust material as the relay does, for the demo
// commands that verify what they fetch.
func (i *Info) Trust() (*signing.Trust, error) {
	crls := make([]string, len(i.CRLs))
	for n, c := range i.CRLs {
		crls[n] = i.Path(c)
	}
	return signing.LoadTrust([]string{i.Path(i.RootCA)}, []string{i.Path(i.Intermediate)}, crls)
}

// ClientTLS trusts the demo's development root, for the demo commands.
func (i *Info) ClientTLS() (*tls.Config, error) {
	pem, err := os.ReadFile(i.Path(i.RootCA))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", i.RootCA)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}, nil
}

// Signer loads the demo prescriber's signing key pair.
func (i *Info) Signer() (*signing.KeyPair, error) {
	return signing.LoadKeyPair(i.Path(i.Prescriber.CertFile), i.Path(i.Prescriber.KeyFile))
}

// SubmitOptions are the prescriber's submission settings.
func (i *Info) SubmitOptions() (submit.Options, error) {
	t, err := i.ClientTLS()
	if err != nil {
		return submit.Options{}, err
	}
	return submit.Options{Addr: i.Submission, TLS: t, User: i.Prescriber.Address, Password: i.Prescriber.Password}, nil
}

// SubmitOptionsAs are the submission settings of another demo account
// (an executant sending a claim).
func (i *Info) SubmitOptionsAs(u User) (submit.Options, error) {
	o, err := i.SubmitOptions()
	o.User, o.Password = u.Address, u.Password
	return o, err
}

// ClaimAddress reads the claim address from the demo's configuration
// (server.claim_address; a demo made before it existed has claim@localhost).
func (i *Info) ClaimAddress() (string, error) {
	cfg, err := configs.Load(i.Path(i.Config))
	if err != nil {
		return "", err
	}
	return cfg.Server.ClaimAddress, nil
}

// SamplePrescription is the demo's prescription with a fresh number.
func SamplePrescription(now time.Time) mime.Sample {
	return mime.Sample{
		Number:     NewNumber(now),
		PatientINS: PatientINS,
		Patient:    "DUPONT Marie",
		RPPS:       PrescriberRPPS,
		Prescriber: "Dr Jeanne MARTIN",
		Authored:   now,
		Delivery:   "paper",
		Items: []mime.Item{
			{Kind: "MedicationRequest", Text: "Amoxicilline 1 g, comprimé", Dosage: "1 comprimé matin et soir pendant 6 jours"},
			{Kind: "MedicationRequest", Text: "Paracétamol 1 g, comprimé", Dosage: "1 comprimé toutes les 6 heures si douleur, maximum 4 par jour"},
		},
	}
}

// NewNumber returns a unique prescription number.
func NewNumber(now time.Time) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return "RX-" + now.UTC().Format("20060102") + "-" + hex.EncodeToString(b[:])
}

// Compose signs content as kp (detached, SHA-256) and wraps it in a
// multipart/signed message from → to.
func Compose(kp *signing.KeyPair, from, to, subject string, content []byte, now time.Time) ([]byte, error) {
	sig, err := signing.SignDetached(kp, content)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	header := submit.Message(from, to, subject, hex.EncodeToString(id[:])+"@"+Domain, now)
	return mime.BuildDetached(header, content, sig), nil
}

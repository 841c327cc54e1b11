package configs

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"mssrelay/mime"
)

// Patients is where patients' secure mailboxes are and which patients
// asked for their prescriptions by secure messaging only ([patients]).
type Patients struct {
	// Domain is the patients' mail domain: a patient's address is
	// <INS>@Domain (default "patient.mssante.fr"). Stored in lower case.
	Domain string `toml:"domain"`
	// Registry is the file of patients who chose messaging-only delivery
	// (docs/configuration.md, "The patient registry"), resolved like the
	// other paths; "" (the default) for none. It is read and checked
	// whenever the configuration is loaded: Config.PatientRegistry returns
	// what was read.
	Registry string `toml:"registry"`
}

// DefaultPatientDomain is the domain of patients' secure mailboxes
// (MISSION: "Patient mailboxes: <INS>@patient.mssante.fr").
const DefaultPatientDomain = "patient.mssante.fr"

// Bounds of a registry file. 64 MiB holds over four million lines of
// INS; anything larger is not a registry (a wrong path, a database dump)
// and would cost memory at every reload. A line holds a 15-character INS
// and a short comment: 256 bytes is ample, and a longer line means the
// file is not in this format.
const (
	MaxRegistryBytes     = 64 << 20
	MaxRegistryLineBytes = 256
)

// Registry is the administrator's list of patients who chose
// messaging-only delivery: prescriptions for them are forwarded to
// <INS>@patients.domain instead of (not besides) a paper copy. It is
// immutable once parsed and safe for concurrent use.
type Registry struct {
	// ins holds each registered INS as packed by insValue: 8 bytes per
	// patient, where a set of strings would take several times that for
	// a registry of millions of lines.
	ins map[uint64]struct{}
}

// LoadRegistry reads and parses a registry file (see ParseRegistry). A
// file that cannot be read gives a plain error naming it; a file whose
// content is at fault gives an Errors, each problem with its line.
func LoadRegistry(path string) (*Registry, error) {
	data, err := readFileLimited(path, MaxRegistryBytes)
	if err != nil {
		return nil, fmt.Errorf("configs: patient registry: %w", err)
	}
	return ParseRegistry(path, data)
}

// ParseRegistry parses registry text; name is used in error messages.
//
// The format is UTF-8 text, one INS per line: 15 characters, 13 digits
// (the department of birth may be 2A or 2B, for Corsica) and the 2-digit
// key, written without spaces. A line may end with a "# comment"; blank
// lines and lines starting with # are ignored; an INS may appear more than
// once. Lines end with LF or CRLF; a leading UTF-8 byte order mark is
// ignored. Every problem is reported, as an Errors sorted by line (at most
// MaxReportedErrors), and no registry is returned.
//
// Messages never quote the INS of a line: a patient identifier does not
// belong in the logs the error ends up in, and the line number is enough
// to find it.
func ParseRegistry(name string, data []byte) (*Registry, error) {
	errs := &collector{file: name}
	if len(data) > MaxRegistryBytes {
		errs.add(position{}, "", "file is larger than %d bytes (64 MiB)", MaxRegistryBytes)
		return nil, errs.result()
	}
	data = bytes.TrimPrefix(data, utf8BOM)
	// A line of INS is 16 bytes or more; the cap keeps a file of comments
	// from reserving memory for millions of patients.
	r := &Registry{ins: make(map[uint64]struct{}, min(len(data)/16, 1<<20))}
	for lineNo := 1; len(data) > 0; lineNo++ {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		r.parseLine(errs, lineNo, line)
	}
	if !errs.empty() {
		return nil, errs.result()
	}
	return r, nil
}

// parseLine adds the INS of one line, or reports why it cannot.
func (r *Registry) parseLine(errs *collector, lineNo int, line []byte) {
	if len(line) > MaxRegistryLineBytes {
		errs.add(position{lineNo, 1}, "", "line is longer than %d bytes", MaxRegistryLineBytes)
		return
	}
	if !utf8.Valid(line) {
		errs.add(position{lineNo, 1}, "", "not valid UTF-8")
		return
	}
	s := string(line)
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = s[:i] // a comment line leaves nothing
	}
	ins := strings.TrimLeft(s, " \t")
	col := len(s) - len(ins) + 1
	ins = strings.TrimRight(ins, " \t")
	if ins == "" {
		return
	}
	v, problem := parseINS(ins)
	if problem != "" {
		errs.add(position{lineNo, col}, "", "%s", problem)
		return
	}
	r.ins[v] = struct{}{}
}

// corsicaA and corsicaB mark, above the 13 digits, an INS whose department
// of birth is 2A or 2B. The letter itself is packed as the digit 0: the
// mark keeps such an INS apart from the one with department 20 and the
// same other digits.
const (
	corsicaA = 1 << 60
	corsicaB = 2 << 60
)

// parseINS checks an INS with mime.ValidINS and packs its first 13
// characters into a number (the key is implied by them), or says what is
// wrong with it, for a person, without quoting it.
func parseINS(s string) (uint64, string) {
	if !mime.ValidINS(s) {
		return 0, insProblem(s)
	}
	var n, mark uint64
	for i := range 13 {
		c := s[i]
		if c > '9' { // 2A or 2B at positions 6-7, as mime.ValidINS allows
			mark = corsicaB
			if c == 'A' || c == 'a' {
				mark = corsicaA
			}
			c = '0'
		}
		n = n*10 + uint64(c-'0') // 10^13 < 2^44: below the marks
	}
	return n | mark, ""
}

// insProblem explains why mime.ValidINS refused s. It does not say what
// the key should be: a typo in the 13 digits would then be "fixed" by
// copying the key, registering another patient.
func insProblem(s string) string {
	const form = "an INS is 13 digits, with 2A or 2B for a department of birth in Corsica, then a 2-digit key"
	switch {
	case strings.ContainsAny(s, " \t"):
		return "write the INS without spaces (" + form + ")"
	case utf8.RuneCountInString(s) != 15:
		return fmt.Sprintf("not an INS: %d characters instead of 15 (%s)", utf8.RuneCountInString(s), form)
	}
	if _, err := mime.ComputeINSKey(s[:13]); err != nil {
		return "not an INS: characters other than digits (" + form + ")"
	}
	if k := s[13:]; k[0] < '0' || k[0] > '9' || k[1] < '0' || k[1] > '9' {
		return "not an INS: the key (last two characters) is not two digits"
	}
	return "invalid INS: the key (last two digits) does not match the first 13 characters; check the number against the patient's record"
}

// MessagingOnly reports whether the patient with this INS is registered
// for messaging-only delivery. A nil registry holds no one; an invalid INS
// is never registered.
func (r *Registry) MessagingOnly(ins string) bool {
	if r == nil {
		return false
	}
	v, problem := parseINS(ins)
	if problem != "" {
		return false
	}
	_, ok := r.ins[v]
	return ok
}

// Len returns how many distinct patients are registered (0 for nil).
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	return len(r.ins)
}

// PatientRegistry returns the registry read from patients.registry when
// the configuration was loaded, or nil when there is none (MessagingOnly
// is then false for everyone). A Config built by hand has none.
func (c *Config) PatientRegistry() *Registry {
	if c == nil {
		return nil
	}
	return c.registry
}

// patients checks [patients] and reads the registry.
func (v *validator) patients() {
	p := &v.cfg.Patients
	if !v.has("patients.domain") {
		p.Domain = DefaultPatientDomain
	} else if err := checkDNSName(p.Domain); err != nil {
		v.fail("patients.domain", "%q: %v", p.Domain, err)
		p.Domain = ""
	} else {
		p.Domain = strings.ToLower(p.Domain)
	}
	if p.Domain != "" && strings.EqualFold(p.Domain, v.cfg.Server.MailDomain) {
		// Local addresses are delivered to [[account]] mailboxes: the
		// patients' would be refused as unknown accounts instead of
		// forwarded.
		key := "patients.domain"
		if !v.has(key) {
			key = "server.mail_domain"
		}
		v.fail(key, "patients.domain and server.mail_domain are both %q: patients' mailboxes are at another operator's, "+
			"and mail to the local domain is never forwarded", p.Domain)
	}

	if p.Registry == "" {
		return // absent or written empty: no registry
	}
	p.Registry = v.path(p.Registry)
	data, err := readFileLimited(p.Registry, MaxRegistryBytes)
	if err != nil {
		v.fail("patients.registry", "%v", err)
		return
	}
	reg, err := ParseRegistry(p.Registry, data)
	if err != nil {
		// Each problem of the registry at the line of the key, naming
		// the registry's own file:line.
		var errs Errors
		if !errors.As(err, &errs) {
			v.fail("patients.registry", "%v", err)
			return
		}
		for _, e := range errs {
			v.fail("patients.registry", "%s", e.Error())
		}
		return
	}
	v.cfg.registry = reg
}

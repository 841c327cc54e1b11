// Package operators holds the MSSanté operators' whitelist: the domains
// this relay accepts mail from and relays to. The national agency publishes
// it as an XML list of domain names with a detached CMS signature, which is
// verified before the list is used; an administrator may instead give a
// plain text file, one domain a line.
package operators

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"mssrelay/filestamp"
	"mssrelay/signing"
)

// Limits on the files read. The agency's list names a few hundred
// operators' domains, some tens of KiB; the caps only stop a runaway file.
const (
	// MaxListSize bounds a list file (XML or text).
	MaxListSize = 16 << 20
	// maxSignatureFileSize bounds the signature file as read; VerifyDocument
	// applies its own, smaller, limit to what it holds.
	maxSignatureFileSize = 4 << 20
	// maxLineLength bounds a line of a text list: a domain is at most 253
	// bytes (RFC 1035 2.3.4), the rest is room for a comment.
	maxLineLength = 1024
	// maxXMLElements bounds the elements of an XML list, whatever their
	// size: a list of 16 MiB of "<a/>" would otherwise be 4 million
	// elements to walk.
	maxXMLElements = 1 << 19
	// maxXMLDepth bounds nesting: the list is three levels deep.
	maxXMLDepth = 32
	// maxNomLength bounds the text of one Nom element before it is
	// trimmed: a domain and some indentation.
	maxNomLength = 1024
	// maxDomainLength is the longest domain name in text form
	// (RFC 1035 2.3.4: 255 octets on the wire, 253 characters written).
	maxDomainLength = 253
)

const utf8BOM = "\xEF\xBB\xBF"

// Whitelist is a set of domain names, in lower case. A nil *Whitelist
// allows nothing. It is immutable once built and safe for concurrent use.
type Whitelist struct {
	domains map[string]struct{}
}

// Allows reports whether domain is listed. The comparison ignores ASCII
// case (RFC 4343) and one trailing dot, and is otherwise exact: a
// subdomain of a listed domain is not allowed unless listed itself (each
// operator registers the domains it serves). Non-ASCII input never matches:
// an internationalised domain must be given, and listed, as A-labels
// (RFC 5890), and Unicode case folding could otherwise match a look-alike
// (KELVIN SIGN folds to "k").
func (w *Whitelist) Allows(domain string) bool {
	if w == nil {
		return false
	}
	d, ok := lowerASCII(strings.TrimSuffix(domain, "."))
	if !ok {
		return false
	}
	_, ok = w.domains[d]
	return ok
}

// Len returns the number of distinct domains.
func (w *Whitelist) Len() int {
	if w == nil {
		return 0
	}
	return len(w.domains)
}

// Domains returns the listed domains, sorted.
func (w *Whitelist) Domains() []string {
	if w == nil {
		return nil
	}
	out := make([]string, 0, len(w.domains))
	for d := range w.domains {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// ParseText parses a text list: one domain a line; "#" starts a comment
// that runs to the end of the line; blank lines, surrounding white space,
// CRLF line ends and a UTF-8 byte order mark are ignored; a domain listed
// twice counts once. Errors name name:line. A list without any domain is
// refused: installed, it would cut the relay off from every operator.
func ParseText(name string, data []byte) (*Whitelist, error) {
	if len(data) > MaxListSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, MaxListSize)
	}
	data = bytes.TrimPrefix(data, []byte(utf8BOM))
	w := &Whitelist{domains: make(map[string]struct{})}
	for n := 1; len(data) > 0; n++ {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		if len(line) > maxLineLength {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, n, maxLineLength)
		}
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		field := bytes.TrimSpace(line)
		if len(field) == 0 {
			continue
		}
		if i := bytes.IndexFunc(field, isSpace); i >= 0 {
			return nil, fmt.Errorf("%s:%d: one domain a line, found %s", name, n, quote(string(field)))
		}
		d, err := checkDomain(string(field))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		w.domains[d] = struct{}{}
	}
	if len(w.domains) == 0 {
		return nil, fmt.Errorf("%s: the list names no domain", name)
	}
	return w, nil
}

// ParseXML parses the agency's XML list: the text of every Nom element
// whose parent is a Domaine element (the XPath //Domaine/Nom), trimmed,
// is a domain. Elements are matched by local name, whatever their
// namespace; everything else in the document is ignored. Errors name
// name:line.
//
// The parser refuses what a list has no use for and an attacker might:
// any DOCTYPE or other <!…> declaration (encoding/xml neither fetches
// external entities nor expands declared ones, but a list that declares
// them is not the agency's), undeclared entities (encoding/xml in strict
// mode), more than one root element, text outside it, an element inside a
// Nom, more than maxXMLElements elements or maxXMLDepth levels. Encodings
// other than UTF-8, ISO-8859-1 and US-ASCII are refused. One malformed
// domain refuses the whole list rather than installing a list that is not
// the one published. A list without any domain is refused.
func ParseXML(name string, data []byte) (*Whitelist, error) {
	if len(data) > MaxListSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, MaxListSize)
	}
	// XML 1.0 4.3.3 allows a UTF-8 byte order mark; encoding/xml would
	// take it for text before the root element.
	data = bytes.TrimPrefix(data, []byte(utf8BOM))
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	d.CharsetReader = charsetReader
	w := &Whitelist{domains: make(map[string]struct{})}
	var (
		stack    []string // local names of the open elements
		elements int
		rootSeen bool
		nomDepth int // depth of the open Nom element, 0 when none
		nomLine  int
		nom      []byte
	)
	line := func() int { l, _ := d.InputPos(); return l }
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				return nil, fmt.Errorf("%s:%d: XML: %s", name, se.Line, se.Msg)
			}
			return nil, fmt.Errorf("%s:%d: XML: %w", name, line(), err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			elements++
			if elements > maxXMLElements {
				return nil, fmt.Errorf("%s:%d: more than %d XML elements", name, line(), maxXMLElements)
			}
			if len(stack) == 0 && rootSeen {
				return nil, fmt.Errorf("%s:%d: a second root element <%s>", name, line(), t.Name.Local)
			}
			if nomDepth > 0 {
				return nil, fmt.Errorf("%s:%d: element <%s> inside <Nom>: a Nom holds a domain name only", name, line(), t.Name.Local)
			}
			if len(stack) >= maxXMLDepth {
				return nil, fmt.Errorf("%s:%d: XML nested deeper than %d levels", name, line(), maxXMLDepth)
			}
			rootSeen = true
			if t.Name.Local == "Nom" && len(stack) > 0 && stack[len(stack)-1] == "Domaine" {
				nomDepth, nomLine, nom = len(stack)+1, line(), nom[:0]
			}
			stack = append(stack, t.Name.Local)
		case xml.EndElement:
			// Token has checked that it closes the innermost open element.
			if nomDepth == len(stack) {
				dom, err := checkDomain(string(bytes.TrimSpace(nom)))
				if err != nil {
					return nil, fmt.Errorf("%s:%d: <Domaine><Nom>: %w", name, nomLine, err)
				}
				w.domains[dom] = struct{}{}
				nomDepth = 0
			}
			stack = stack[:len(stack)-1]
		case xml.CharData:
			switch {
			case nomDepth > 0:
				if len(nom)+len(t) > maxNomLength {
					return nil, fmt.Errorf("%s:%d: <Nom> longer than %d bytes", name, nomLine, maxNomLength)
				}
				nom = append(nom, t...)
			case len(stack) == 0 && len(bytes.TrimSpace(t)) > 0:
				return nil, fmt.Errorf("%s:%d: text outside the root element", name, line())
			}
		case xml.Directive:
			return nil, fmt.Errorf("%s:%d: XML declarations (<!DOCTYPE …>, <!ENTITY …>) are refused in the list", name, line())
		case xml.ProcInst, xml.Comment:
			// The <?xml …?> declaration (its encoding is applied by the
			// decoder) and comments carry nothing for us.
		}
	}
	if !rootSeen {
		return nil, fmt.Errorf("%s: no XML element", name)
	}
	if len(w.domains) == 0 {
		return nil, fmt.Errorf("%s: the list names no domain (no <Domaine><Nom> element)", name)
	}
	return w, nil
}

// checkDomain checks the syntax of a domain name and returns it in lower
// case: LDH labels of 1 to 63 characters that neither start nor end with a
// hyphen (RFC 1035 2.3.1, RFC 1123 2.1), at least two labels (a relay
// never serves a bare top-level domain), at most 253 characters, a last
// label that is not all digits (RFC 3696 2: so that an IPv4 address is not
// taken for a domain). One trailing dot (the absolute form) is dropped.
func checkDomain(s string) (string, error) {
	s = strings.TrimSuffix(s, ".")
	switch {
	case s == "":
		return "", errors.New("empty domain name")
	case len(s) > maxDomainLength:
		return "", fmt.Errorf("domain name %s is longer than %d characters", quote(s), maxDomainLength)
	case !strings.Contains(s, "."):
		return "", fmt.Errorf("domain name %s has a single label (a dot is required)", quote(s))
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" {
			return "", fmt.Errorf("domain name %s has an empty label", quote(s))
		}
		if len(l) > 63 {
			return "", fmt.Errorf("domain name %s has a label longer than 63 characters", quote(s))
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("domain name %s has a label that starts or ends with a hyphen", quote(s))
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("domain name %s contains %s: letters, digits, hyphens and dots only (internationalised names as xn-- A-labels)",
					quote(s), quoteChar(l[i:]))
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", fmt.Errorf("domain name %s ends with an all-numeric label (an IP address is not a domain)", quote(s))
	}
	out, _ := lowerASCII(s)
	return out, nil
}

// lowerASCII lower-cases A-Z and reports false when s is not ASCII.
func lowerASCII(s string) (string, bool) {
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return "", false
		}
		if c >= 'A' && c <= 'Z' {
			if b == nil {
				b = []byte(s)
			}
			b[i] = c + 'a' - 'A'
		}
	}
	if b == nil {
		return s, true
	}
	return string(b), true
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\v' || r == '\f' || r == '\r' }

// quote renders untrusted text for an error message, cut short.
func quote(s string) string {
	const limit = 80
	if len(s) > limit {
		return fmt.Sprintf("%q… (%d bytes)", s[:limit], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// quoteChar renders the character starting s (which may be invalid UTF-8).
func quoteChar(s string) string {
	r, size := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && size <= 1 {
		return fmt.Sprintf("byte 0x%02X", s[0])
	}
	return fmt.Sprintf("%q", r)
}

// charsetReader lets the XML decoder read lists declared ISO-8859-1 or
// US-ASCII besides UTF-8 (French publishers still use Latin-1). Domain
// names are ASCII either way; other text is only skipped.
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(label) {
	case "iso-8859-1", "iso_8859-1", "latin1", "l1", "us-ascii", "ascii":
		return &latin1Reader{r: in}, nil
	}
	return nil, fmt.Errorf("encoding %q is not supported (UTF-8, ISO-8859-1 or US-ASCII)", label)
}

// latin1Reader decodes ISO-8859-1 to UTF-8: every byte is the code point
// of the same value.
type latin1Reader struct {
	r       io.Reader
	pending []byte
	scratch [2048]byte
}

func (l *latin1Reader) Read(p []byte) (int, error) {
	if len(l.pending) == 0 {
		n, err := l.r.Read(l.scratch[:])
		if n == 0 {
			return 0, err
		}
		out := l.pending[:0]
		for _, c := range l.scratch[:n] {
			out = utf8.AppendRune(out, rune(c))
		}
		l.pending = out
	}
	n := copy(p, l.pending)
	l.pending = l.pending[n:]
	return n, nil
}

// Source names the files of a whitelist and how to trust them.
type Source struct {
	// Path is the list: XML when it ends in ".xml" (any case), else text.
	Path string
	// Signature is the file of the detached CMS signature of Path (DER or
	// PEM). Required for an XML list: the agency signs what it publishes,
	// and an unsigned XML list is refused. Optional for a text list, which
	// the administrator writes; verified when given.
	Signature string
	// Trust verifies the signature (signing.Trust.VerifyDocument): chain to
	// the health PKI now, CRLs, key usage.
	Trust *signing.Trust
	// CheckSigner, when set, is called with the certificate of a valid
	// signature and refuses the list by returning an error. Every
	// certificate of the health PKI chains to the same anchors, so without
	// it any professional's certificate can sign a list that verifies:
	// set it to pin the publisher (its organisation, its subject).
	CheckSigner func(*x509.Certificate) error
	// Now is the clock for certificate validity; nil means time.Now.
	Now func() time.Time
}

func (s *Source) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Source) isXML() bool { return strings.EqualFold(filepath.Ext(s.Path), ".xml") }

// check refuses a Source that cannot load anything, before any file is
// read.
func (s *Source) check() error {
	switch {
	case s.Path == "":
		return errors.New("operators whitelist: no list file")
	case s.isXML() && s.Signature == "":
		return fmt.Errorf("operators whitelist %s: an XML list must come with its detached signature file: unsigned XML lists are refused", s.Path)
	case s.Signature != "" && s.Trust == nil:
		return fmt.Errorf("operators whitelist %s: a signature file is given but no trust store to verify it", s.Path)
	}
	return nil
}

// Load reads, verifies and parses the files once.
func (s *Source) Load() (*Whitelist, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	snap, err := s.read()
	if err != nil {
		return nil, err
	}
	l, err := s.build(snap)
	if err != nil {
		return nil, err
	}
	return l.list, nil
}

// snapshot is one version of the files: their bytes and stamps.
type snapshot struct {
	list, sig           []byte
	listStamp, sigStamp filestamp.Stamp // sigStamp is zero without a signature file
	hash                [32]byte        // of list and signature together
}

// loaded is a list built from a snapshot.
type loaded struct {
	list   *Whitelist
	signer *x509.Certificate // nil for an unsigned text list
	hash   [32]byte
}

// read reads the list and its signature. Each file is stamped from its
// open descriptor before it is read, so a write that lands during the read
// shows in the next stat.
func (s *Source) read() (*snapshot, error) {
	var snap snapshot
	var err error
	snap.list, snap.listStamp, err = filestamp.Read(s.Path, MaxListSize, time.Now())
	if err != nil {
		return nil, fmt.Errorf("operators whitelist: %w", err)
	}
	if s.Signature != "" {
		snap.sig, snap.sigStamp, err = filestamp.Read(s.Signature, maxSignatureFileSize, time.Now())
		if err != nil {
			return nil, fmt.Errorf("operators whitelist %s: signature: %w", s.Path, err)
		}
	}
	// Length-prefixed, so that no split of the same bytes between the two
	// files hashes the same.
	h := sha256.New()
	var n [8]byte
	for _, b := range [][]byte{snap.list, snap.sig} {
		for i := range n {
			n[i] = byte(uint64(len(b)) >> (8 * i))
		}
		h.Write(n[:])
		h.Write(b)
	}
	h.Sum(snap.hash[:0])
	return &snap, nil
}

// build verifies the signature over the exact bytes read, then parses
// them: an XML parser sees only what the publisher signed.
func (s *Source) build(snap *snapshot) (*loaded, error) {
	out := &loaded{hash: snap.hash}
	if s.Signature != "" {
		cert, err := s.Trust.VerifyDocument(snap.sig, snap.list, s.now())
		if err != nil {
			return nil, fmt.Errorf("operators whitelist %s: signature %s: %w", s.Path, s.Signature, err)
		}
		if s.CheckSigner != nil {
			if err := s.CheckSigner(cert); err != nil {
				return nil, fmt.Errorf("operators whitelist %s: signer %q refused: %w", s.Path, cert.Subject.String(), err)
			}
		}
		out.signer = cert
	}
	var err error
	if s.isXML() {
		out.list, err = ParseXML(s.Path, snap.list)
	} else {
		out.list, err = ParseText(s.Path, snap.list)
	}
	if err != nil {
		return nil, fmt.Errorf("operators whitelist: %w", err)
	}
	return out, nil
}

// Holder keeps the whitelist in force and replaces it when its files
// change. A list that fails to load (broken file, bad signature, half
// written pair) is logged and the previous list stays in force. Safe for
// concurrent use: Current never blocks.
type Holder struct {
	src Source
	log *slog.Logger
	cur atomic.Pointer[Whitelist]

	// mu serialises loads: a poll and a forced reload (SIGHUP) running
	// together could otherwise install an older list after a newer one.
	// It guards the fields below.
	mu sync.Mutex
	// seen describes the last version examined, loaded or refused, so
	// that a broken version is not re-read and re-logged at every poll.
	seenList, seenSig filestamp.Stamp
	seenHash          [32]byte
	// retry is set when the last examined version was refused for a
	// reason that may go away without the files changing (revocation
	// status unknown: a CRL not yet fetched).
	retry bool
	// lastErr is the last failure logged; a failure that persists is
	// logged once.
	lastErr string
}

// NewHolder loads the list once; the error is that of the first load (the
// relay must not start relaying without its whitelist). log may be nil.
func NewHolder(src Source, log *slog.Logger) (*Holder, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := src.check(); err != nil {
		return nil, err
	}
	h := &Holder{src: src, log: log}
	h.mu.Lock()
	defer h.mu.Unlock()
	snap, err := h.src.read()
	if err != nil {
		return nil, err
	}
	if err := h.install(snap); err != nil {
		return nil, err
	}
	return h, nil
}

// Current returns the list in force, never nil.
func (h *Holder) Current() *Whitelist { return h.cur.Load() }

// Allows reports whether the list in force lists domain (nil-safe).
func (h *Holder) Allows(domain string) bool {
	if h == nil {
		return false
	}
	return h.Current().Allows(domain)
}

// ReloadIfChanged is one poll: when the list or its signature file changed
// (size, modification time, file replaced, or, for a file modified within
// the last two seconds, content), it loads them. reloaded says whether a
// new list is now in force. A new version whose content hashes the same as
// the last one examined (a touch, a copy of the same files) is not loaded
// again.
//
// On failure the previous list stays in force. The error is returned by
// the poll that examined the failing version (and by every poll while a
// file is missing, or while the failure is temporary: revocation status
// unknown, retried at each poll); it has been logged already, once per
// distinct failure, so the caller only counts it.
//
// An in-place rewrite that keeps size, modification time and inode is not
// seen; Reload (SIGHUP) reads the files whatever their stamps.
func (h *Holder) ReloadIfChanged() (reloaded bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list, err := filestamp.Stat(h.src.Path, time.Now())
	if err != nil {
		return false, h.fail(fmt.Errorf("operators whitelist: %w", err))
	}
	var sig filestamp.Stamp
	if h.src.Signature != "" {
		if sig, err = filestamp.Stat(h.src.Signature, time.Now()); err != nil {
			return false, h.fail(fmt.Errorf("operators whitelist %s: signature: %w", h.src.Path, err))
		}
	}
	if !h.retry && list.Same(h.seenList) && sig.Same(h.seenSig) && !h.seenList.Racy && !h.seenSig.Racy {
		h.lastErr = "" // the files are back as examined: a new failure is news
		return false, nil
	}
	snap, err := h.src.read()
	if err != nil {
		return false, h.fail(err)
	}
	if !h.retry && snap.hash == h.seenHash {
		// Same bytes under new stamps: remember the stamps, nothing to do.
		h.seenList, h.seenSig = snap.listStamp, snap.sigStamp
		h.lastErr = ""
		return false, nil
	}
	if err := h.install(snap); err != nil {
		return false, err
	}
	return true, nil
}

// Reload reads, verifies and installs the files whatever their stamps (an
// administrator's SIGHUP; after a trust store reload, since new CRLs may
// change the verdict on the same files). On failure the previous list
// stays; the failure is logged and returned.
func (h *Holder) Reload() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	snap, err := h.src.read()
	if err != nil {
		return h.fail(err)
	}
	return h.install(snap)
}

// install verifies and parses snap, and puts it in force. h.mu is held.
func (h *Holder) install(snap *snapshot) error {
	h.seenList, h.seenSig, h.seenHash = snap.listStamp, snap.sigStamp, snap.hash
	l, err := h.src.build(snap)
	if err != nil {
		var se *signing.Error
		h.retry = errors.As(err, &se) && se.Temporary()
		return h.fail(err)
	}
	h.retry = false
	h.lastErr = ""
	h.cur.Store(l.list)
	attrs := []any{"path", h.src.Path, "domains", l.list.Len(), "sha256", hex.EncodeToString(l.hash[:8])}
	if l.signer != nil {
		attrs = append(attrs, "signer", l.signer.Subject.String(), "signer_not_after", l.signer.NotAfter.UTC().Format(time.RFC3339))
	}
	h.log.Info("operators whitelist loaded", attrs...)
	return nil
}

// fail logs err unless it is the failure logged last, and returns it.
// Before the first list is in force (NewHolder) nothing is logged: the
// caller reports the error.
func (h *Holder) fail(err error) error {
	if h.cur.Load() == nil || err.Error() == h.lastErr {
		return err
	}
	h.lastErr = err.Error()
	h.log.Error("operators whitelist not loaded, the previous list stays in force",
		"path", h.src.Path, "domains_in_force", h.cur.Load().Len(), "err", err)
	return err
}

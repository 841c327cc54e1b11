package operators

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mssrelay/signing"
)

var sampleDomains = []string{"ght-nord.example", "mssante.fr", "operateur-a.example"}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSamples(t *testing.T) {
	for _, tc := range []struct {
		file  string
		parse func(string, []byte) (*Whitelist, error)
	}{
		{"ListeDomaines.xml", ParseXML},
		{"domains.txt", ParseText},
	} {
		w, err := tc.parse(tc.file, readTestdata(t, tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if got := w.Domains(); !slices.Equal(got, sampleDomains) {
			t.Errorf("%s: domains %q, want %q", tc.file, got, sampleDomains)
		}
	}
}

func TestAllows(t *testing.T) {
	w, err := ParseText("list", []byte("mssante.fr\nOperateur-A.example\nxn--mdecin-bva.example\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		domain string
		want   bool
	}{
		{"mssante.fr", true},
		{"MSSANTE.FR", true},
		{"operateur-a.EXAMPLE", true},
		{"mssante.fr.", true}, // absolute form
		{"xn--mdecin-bva.example", true},
		{"medecin.mssante.fr", false}, // a subdomain is not listed
		{"fr", false},
		{"ssante.fr", false},
		{"mssante.fr.evil.example", false},
		{"mssante.fr..", false},
		{"", false},
		{"médecin.example", false},           // U-label: only A-labels are compared
		{"\u212Aoperateur-a.example", false}, // KELVIN SIGN must not fold to k
		{"mssante\x00.fr", false},
	}
	for _, tc := range tests {
		if got := w.Allows(tc.domain); got != tc.want {
			t.Errorf("Allows(%q) = %v, want %v", tc.domain, got, tc.want)
		}
	}
	if w.Len() != 3 {
		t.Errorf("Len = %d, want 3", w.Len())
	}
	var none *Whitelist
	if none.Allows("mssante.fr") || none.Len() != 0 || none.Domains() != nil {
		t.Error("a nil whitelist allows something")
	}
	var h *Holder
	if h.Allows("mssante.fr") {
		t.Error("a nil holder allows something")
	}
}

func TestParseTextAccepts(t *testing.T) {
	data := "\xEF\xBB\xBF# Liste des opérateurs\r\n" +
		"mssante.fr\r\n" +
		"  \tOperateur-A.example  # commentaire\r\n" +
		"\r\n" +
		"OPERATEUR-A.EXAMPLE\n" + // duplicate, other case
		"ght-nord.example." + // absolute form, no final newline
		""
	w, err := ParseText("list.txt", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Domains(); !slices.Equal(got, sampleDomains) {
		t.Errorf("domains %q, want %q", got, sampleDomains)
	}
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	if len(long) != 253 {
		t.Fatalf("test domain is %d long", len(long))
	}
	if w, err := ParseText("list.txt", []byte(long+"\n1st.example\n")); err != nil || !w.Allows(long) || !w.Allows("1st.example") {
		t.Errorf("253-character domain and leading digit: %v", err)
	}
}

func TestParseTextRefusals(t *testing.T) {
	long254 := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 62)
	tests := []struct {
		name, data, want string
	}{
		{"underscore", "ok.example\nbad_name.example\n", "list:2: "},
		{"two domains on a line", "a.example b.example\n", "list:1: one domain a line"},
		{"tab inside", "a.example\tb.example\n", "list:1: one domain a line"},
		{"single label", "\n\nlocalhost\n", "list:3: "},
		{"empty label", "a..example\n", "empty label"},
		{"leading dot", ".example.fr\n", "empty label"},
		{"leading hyphen", "-a.example\n", "hyphen"},
		{"trailing hyphen", "a-.example\n", "hyphen"},
		{"label of 64", strings.Repeat("a", 64) + ".example\n", "longer than 63"},
		{"domain of 254", long254 + "\n", "longer than 253"},
		{"IPv4 address", "192.168.10.1\n", "all-numeric"},
		{"numeric TLD", "mssante.123\n", "all-numeric"},
		{"U-label", "médecin.example\n", "list:1: "},
		{"NUL", "mss\x00ante.fr\n", `'\x00'`},
		{"invalid UTF-8", "mss\xffante.fr\n", "byte 0xFF"},
		{"at sign", "user@mssante.fr\n", "'@'"},
		{"URL", "https://mssante.fr\n", "':'"},
		{"long line", "mssante.fr\n" + strings.Repeat(" ", maxLineLength) + "#\n", "list:2: line longer than 1024"},
		{"no domain", "", "names no domain"},
		{"comments only", "# nothing yet\n\n   \n", "names no domain"},
		{"just a dot", ".\n", "empty domain"},
		{"oversized", strings.Repeat("#\n", MaxListSize/2+1), "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := ParseText("list", []byte(tc.data))
			if err == nil {
				t.Fatalf("accepted %q", w.Domains())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestParseXMLAccepts(t *testing.T) {
	tests := []struct {
		name, data string
		want       []string
	}{
		{"namespaced, CDATA, comments, whitespace",
			`<?xml version="1.0"?><ns:ListeDomaines xmlns:ns="urn:example:liste">` +
				"<!-- c --><ns:Domaine>\n <ns:Nom><![CDATA[ mssante.fr ]]></ns:Nom></ns:Domaine>" +
				"<Domaine><Nom>\n\tMSSANTE.fr\n</Nom><Nom>ght-nord.example</Nom></Domaine></ns:ListeDomaines>",
			[]string{"ght-nord.example", "mssante.fr"}},
		{"Domaine at any depth, Nom elsewhere ignored",
			"<Racine><Nom>Agence</Nom><Lot><Lot><Domaine><Nom>a.example</Nom><Description><Nom>not a domain</Nom></Description></Domaine></Lot></Lot></Racine>",
			[]string{"a.example"}},
		{"ISO-8859-1",
			"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><L><Domaine><Libell\xe9>Op\xe9rateur</Libell\xe9><Nom>a.example</Nom></Domaine></L>",
			[]string{"a.example"}},
		{"BOM and a character reference",
			"\xEF\xBB\xBF<L><Domaine><Nom>&#x61;.example</Nom></Domaine></L>",
			[]string{"a.example"}},
		{"stylesheet processing instruction",
			`<?xml version="1.0" encoding="utf-8"?><?xml-stylesheet href="l.xsl"?><L><Domaine><Nom>a.example</Nom></Domaine></L>`,
			[]string{"a.example"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := ParseXML("list.xml", []byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if got := w.Domains(); !slices.Equal(got, tc.want) {
				t.Errorf("domains %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseXMLRefusals(t *testing.T) {
	deep := strings.Repeat("<a>", maxXMLDepth+1) + strings.Repeat("</a>", maxXMLDepth+1)
	many := "<L><Domaine><Nom>a.example</Nom></Domaine>" + strings.Repeat("<x/>", maxXMLElements) + "</L>"
	tests := []struct {
		name, data, want string
	}{
		{"DOCTYPE", `<?xml version="1.0"?><!DOCTYPE L><L><Domaine><Nom>a.example</Nom></Domaine></L>`, "list.xml:1: XML declarations"},
		{"external entity",
			"<?xml version=\"1.0\"?>\n<!DOCTYPE L [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<L><Domaine><Nom>&x;</Nom></Domaine></L>",
			"XML declarations"},
		{"entity expansion",
			"<!DOCTYPE L [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;\">]><L><Domaine><Nom>&b;.example</Nom></Domaine></L>",
			"XML declarations"},
		{"undeclared entity", "<L><Domaine><Nom>&x;.example</Nom></Domaine></L>", "list.xml:1: XML: "},
		{"no Domaine", "<ListeDomaines></ListeDomaines>", "names no domain"},
		{"Nom outside Domaine", "<L><Nom>a.example</Nom></L>", "names no domain"},
		{"empty Nom", "<L>\n<Domaine><Nom>  </Nom></Domaine></L>", "list.xml:2: <Domaine><Nom>: empty domain"},
		{"bad domain with its line", "<L>\n<Domaine><Nom>a.example</Nom></Domaine>\n<Domaine>\n<Nom>bad_domain.example</Nom></Domaine></L>", "list.xml:4: "},
		{"element inside Nom", "<L><Domaine><Nom>a.<b>x</b>example</Nom></Domaine></L>", "inside <Nom>"},
		{"long Nom", "<L><Domaine><Nom>" + strings.Repeat(" ", maxNomLength) + "a.example</Nom></Domaine></L>", "longer than 1024"},
		{"two roots", "<L><Domaine><Nom>a.example</Nom></Domaine></L><L/>", "second root"},
		{"text after the root", "<L><Domaine><Nom>a.example</Nom></Domaine></L>b.example", "text outside"},
		{"unclosed", "<L><Domaine><Nom>a.example</Nom></Domaine>", "XML: "},
		{"mismatched tags", "<L><Domaine><Nom>a.example</Domaine></Nom></L>", "XML: "},
		{"too deep", deep, "deeper than 32"},
		{"too many elements", many, "more than 524288 XML elements"},
		{"unsupported encoding", `<?xml version="1.0" encoding="windows-1252"?><L/>`, "not supported"},
		{"empty document", "", "no XML element"},
		{"not XML", "mssante.fr\n", "text outside"},
		{"oversized", strings.Repeat(" ", MaxListSize+1), "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := ParseXML("list.xml", []byte(tc.data))
			if err == nil {
				t.Fatalf("accepted %q", w.Domains())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// pkiFiles is a development PKI written as trust files (anchors,
// intermediates, CRLs), as the relay configures it.
type pkiFiles struct {
	pki       *signing.DevPKI
	publisher *signing.KeyPair
	trust     *signing.Trust
	dir       string
	crlFile   string
}

func newPKIFiles(t testing.TB) *pkiFiles {
	t.Helper()
	p, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := p.IssueOrganisation("liste-blanche@agence.example", "AGENCE DEV LISTE BLANCHE")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &pkiFiles{pki: p, publisher: pub, dir: dir, crlFile: filepath.Join(dir, "crls.pem")}
	root, inter := filepath.Join(dir, "root.pem"), filepath.Join(dir, "inter.pem")
	writeFile(t, root, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Root.Cert.Raw}))
	writeFile(t, inter, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Intermediate.Cert.Raw}))
	f.writeCRLs(t)
	f.trust, err = signing.LoadTrustWith(signing.LoadTrustOptions{Anchors: []string{root}, Intermediates: []string{inter}, CRLs: []string{f.crlFile}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// writeCRLs writes fresh CRLs of both CAs, the intermediate's listing
// revoked.
func (f *pkiFiles) writeCRLs(t testing.TB, revoked ...*x509.Certificate) {
	t.Helper()
	now := time.Now()
	var buf bytes.Buffer
	for _, ca := range []*signing.KeyPair{f.pki.Root, f.pki.Intermediate} {
		var rev []*x509.Certificate
		if ca == f.pki.Intermediate {
			rev = revoked
		}
		l, err := f.pki.IssueCRL(ca, rev, now.Add(-time.Hour), now.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: l.Raw}))
	}
	writeFile(t, f.crlFile, buf.Bytes())
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sign(t testing.TB, kp *signing.KeyPair, data []byte) []byte {
	t.Helper()
	sig, err := signing.SignDetached(kp, data)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func xmlList(domains ...string) []byte {
	var b strings.Builder
	b.WriteString("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListeDomaines>\n")
	for _, d := range domains {
		fmt.Fprintf(&b, "  <Domaine><Nom>%s</Nom></Domaine>\n", d)
	}
	b.WriteString("</ListeDomaines>\n")
	return []byte(b.String())
}

// publish writes a list and its signature by kp (nil: no signature file
// written) into dir and returns their paths.
func publish(t testing.TB, dir string, kp *signing.KeyPair, list []byte) (listPath, sigPath string) {
	t.Helper()
	listPath, sigPath = filepath.Join(dir, "ListeDomaines.xml"), filepath.Join(dir, "ListeDomaines.xml.p7s")
	writeFile(t, listPath, list)
	if kp != nil {
		writeFile(t, sigPath, sign(t, kp, list))
	}
	return listPath, sigPath
}

func reasonOf(err error) signing.Reason {
	var se *signing.Error
	if errors.As(err, &se) {
		return se.Reason
	}
	return 0
}

func TestSourceLoad(t *testing.T) {
	f := newPKIFiles(t)
	dir := t.TempDir()
	listPath, sigPath := publish(t, dir, f.publisher, readTestdata(t, "ListeDomaines.xml"))
	w, err := (&Source{Path: listPath, Signature: sigPath, Trust: f.trust}).Load()
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Domains(); !slices.Equal(got, sampleDomains) {
		t.Errorf("domains %q, want %q", got, sampleDomains)
	}
	// PEM signature, upper-case extension.
	upper := filepath.Join(dir, "LISTE.XML")
	writeFile(t, upper, xmlList("a.example"))
	pemSig := filepath.Join(dir, "LISTE.XML.pem")
	writeFile(t, pemSig, pem.EncodeToMemory(&pem.Block{Type: "CMS", Bytes: sign(t, f.publisher, xmlList("a.example"))}))
	if w, err := (&Source{Path: upper, Signature: pemSig, Trust: f.trust}).Load(); err != nil || !w.Allows("a.example") {
		t.Errorf("PEM-signed .XML list: %v", err)
	}
	// A text list, unsigned and signed.
	text := filepath.Join(dir, "domains.txt")
	writeFile(t, text, readTestdata(t, "domains.txt"))
	if w, err := (&Source{Path: text}).Load(); err != nil || w.Len() != 3 {
		t.Errorf("unsigned text list: %v", err)
	}
	textSig := filepath.Join(dir, "domains.txt.p7s")
	writeFile(t, textSig, sign(t, f.publisher, readTestdata(t, "domains.txt")))
	if w, err := (&Source{Path: text, Signature: textSig, Trust: f.trust}).Load(); err != nil || w.Len() != 3 {
		t.Errorf("signed text list: %v", err)
	}
	// CheckSigner sees the publisher's certificate.
	var seen *x509.Certificate
	pin := func(c *x509.Certificate) error { seen = c; return nil }
	if _, err := (&Source{Path: listPath, Signature: sigPath, Trust: f.trust, CheckSigner: pin}).Load(); err != nil {
		t.Fatal(err)
	}
	if seen == nil || !seen.Equal(f.publisher.Cert) {
		t.Errorf("CheckSigner was given %v, not the publisher's certificate", seen)
	}
}

func TestSourceRefusals(t *testing.T) {
	f := newPKIFiles(t)
	other, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.IssueOrganisation("liste-blanche@agence.example", "AGENCE DEV LISTE BLANCHE")
	if err != nil {
		t.Fatal(err)
	}
	revokedPub, err := f.pki.IssueOrganisation("ancien@agence.example", "ANCIEN EDITEUR")
	if err != nil {
		t.Fatal(err)
	}
	expiredPub, err := f.pki.Issue(signing.Template{Name: "EDITEUR EXPIRE", NotBefore: time.Now().AddDate(-2, 0, 0), NotAfter: time.Now().AddDate(0, 0, -1)})
	if err != nil {
		t.Fatal(err)
	}
	f.writeCRLs(t, revokedPub.Cert)
	if err := f.trust.Reload(); err != nil {
		t.Fatal(err)
	}
	list := xmlList("mssante.fr", "a.example")

	type setup func(t *testing.T, dir string) Source
	signedBy := func(kp *signing.KeyPair, content []byte) setup {
		return func(t *testing.T, dir string) Source {
			lp, sp := publish(t, dir, kp, content)
			return Source{Path: lp, Signature: sp, Trust: f.trust}
		}
	}
	tests := []struct {
		name       string
		setup      setup
		want       string
		wantReason signing.Reason
	}{
		{"unsigned XML list", func(t *testing.T, dir string) Source {
			lp, _ := publish(t, dir, nil, list)
			return Source{Path: lp, Trust: f.trust}
		}, "unsigned XML lists are refused", 0},
		{"signature file missing", func(t *testing.T, dir string) Source {
			lp, sp := publish(t, dir, nil, list)
			return Source{Path: lp, Signature: sp, Trust: f.trust}
		}, "no such file", 0},
		{"signature without a trust store", func(t *testing.T, dir string) Source {
			lp, sp := publish(t, dir, f.publisher, list)
			return Source{Path: lp, Signature: sp}
		}, "no trust store", 0},
		{"no list file named", func(t *testing.T, dir string) Source { return Source{} }, "no list file", 0},
		{"list file missing", func(t *testing.T, dir string) Source {
			return Source{Path: filepath.Join(dir, "absent.txt")}
		}, "no such file", 0},
		{"list is a directory", func(t *testing.T, dir string) Source {
			p := filepath.Join(dir, "d.txt")
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
			return Source{Path: p}
		}, "not a regular file", 0},
		{"signer outside the trust", signedBy(stranger, list), "signature", signing.ReasonUntrusted},
		{"revoked signer", signedBy(revokedPub, list), "revoked", signing.ReasonRevoked},
		{"expired signer", signedBy(expiredPub, list), "expired", signing.ReasonExpired},
		{"XML tampered after signing", func(t *testing.T, dir string) Source {
			lp, sp := publish(t, dir, f.publisher, list)
			writeFile(t, lp, bytes.Replace(list, []byte("a.example"), []byte("evil.example"), 1))
			return Source{Path: lp, Signature: sp, Trust: f.trust}
		}, "signature", signing.ReasonBadSignature},
		{"signature of another list", func(t *testing.T, dir string) Source {
			lp, sp := publish(t, dir, f.publisher, list)
			writeFile(t, sp, sign(t, f.publisher, xmlList("evil.example")))
			return Source{Path: lp, Signature: sp, Trust: f.trust}
		}, "signature", signing.ReasonBadSignature},
		{"garbage signature", func(t *testing.T, dir string) Source {
			lp, sp := publish(t, dir, nil, list)
			writeFile(t, sp, []byte("not a signature"))
			return Source{Path: lp, Signature: sp, Trust: f.trust}
		}, "signature", signing.ReasonMalformed},
		{"signed but not a list", signedBy(f.publisher, []byte("<ListeDomaines/>")), "names no domain", 0},
		{"signed DOCTYPE", signedBy(f.publisher, []byte(`<!DOCTYPE L><L><Domaine><Nom>a.example</Nom></Domaine></L>`)), "XML declarations", 0},
		{"signer refused by CheckSigner", func(t *testing.T, dir string) Source {
			lp, sp := publish(t, dir, f.publisher, list)
			return Source{Path: lp, Signature: sp, Trust: f.trust, CheckSigner: func(c *x509.Certificate) error {
				return errors.New("not the agency")
			}}
		}, "not the agency", 0},
		{"text list with a bad signature", func(t *testing.T, dir string) Source {
			lp := filepath.Join(dir, "domains.txt")
			sp := lp + ".p7s"
			writeFile(t, lp, []byte("mssante.fr\n"))
			writeFile(t, sp, sign(t, f.publisher, []byte("evil.example\n")))
			return Source{Path: lp, Signature: sp, Trust: f.trust}
		}, "signature", signing.ReasonBadSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.setup(t, t.TempDir())
			w, err := src.Load()
			if err == nil {
				t.Fatalf("accepted %q", w.Domains())
			}
			if w != nil {
				t.Error("a refusal returned a list")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if got := reasonOf(err); got != tc.wantReason {
				t.Errorf("signing reason %v, want %v (%v)", got, tc.wantReason, err)
			}
			// NewHolder refuses the same first load.
			if h, err := NewHolder(src, nil); err == nil || h != nil {
				t.Errorf("NewHolder accepted what Load refused")
			}
		})
	}
}

// logRecorder keeps the error records a Holder logs.
type logRecorder struct {
	mu     sync.Mutex
	errors []string
	infos  int
}

func newRecorder() (*logRecorder, *slog.Logger) {
	r := &logRecorder{}
	return r, slog.New(recHandler{r})
}

type recHandler struct{ r *logRecorder }

func (h recHandler) Enabled(_ context.Context, _ slog.Level) bool { return true }
func (h recHandler) Handle(_ context.Context, rec slog.Record) error {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	if rec.Level >= slog.LevelError {
		msg := rec.Message
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				msg += ": " + a.Value.String()
			}
			return true
		})
		h.r.errors = append(h.r.errors, msg)
	} else {
		h.r.infos++
	}
	return nil
}
func (h recHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recHandler) WithGroup(string) slog.Handler      { return h }

func (r *logRecorder) errorCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errors)
}

func mustReload(t *testing.T, h *Holder, want bool) {
	t.Helper()
	got, err := h.ReloadIfChanged()
	if err != nil {
		t.Fatalf("ReloadIfChanged: %v", err)
	}
	if got != want {
		t.Fatalf("ReloadIfChanged reloaded = %v, want %v", got, want)
	}
}

func TestHolderText(t *testing.T) {
	rec, log := newRecorder()
	path := filepath.Join(t.TempDir(), "domains.txt")
	writeFile(t, path, []byte("mssante.fr\n"))
	h, err := NewHolder(Source{Path: path}, log)
	if err != nil {
		t.Fatal(err)
	}
	first := h.Current()
	if !first.Allows("mssante.fr") || first.Len() != 1 {
		t.Fatalf("first list %q", first.Domains())
	}
	mustReload(t, h, false)

	// The same bytes written again (a touch, a copy) are no new list.
	writeFile(t, path, []byte("mssante.fr\n"))
	mustReload(t, h, false)
	if h.Current() != first {
		t.Error("rewriting the same content replaced the list")
	}

	// A new list is picked up.
	writeFile(t, path, []byte("mssante.fr\na.example\n"))
	mustReload(t, h, true)
	second := h.Current()
	if !second.Allows("a.example") || second.Len() != 2 {
		t.Fatalf("second list %q", second.Domains())
	}
	mustReload(t, h, false)

	// A broken list is refused, logged once, and the previous one stays.
	writeFile(t, path, []byte("mssante.fr\nnot a domain\n"))
	reloaded, err := h.ReloadIfChanged()
	if err == nil || reloaded {
		t.Fatalf("broken list: reloaded %v, err %v", reloaded, err)
	}
	if !strings.Contains(err.Error(), "domains.txt:2:") {
		t.Errorf("error %q does not name the line", err)
	}
	if h.Current() != second {
		t.Error("the previous list was not kept")
	}
	for range 3 {
		if reloaded, err := h.ReloadIfChanged(); reloaded || err != nil {
			t.Fatalf("polling the same broken list: reloaded %v, err %v", reloaded, err)
		}
	}
	if n := rec.errorCount(); n != 1 {
		t.Errorf("%d error records for one broken version, want 1: %q", n, rec.errors)
	}

	// The file disappears: an error, the list stays, logged once.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := h.ReloadIfChanged(); err == nil {
			t.Fatal("a missing file is no error")
		}
	}
	if h.Current() != second {
		t.Error("the previous list was not kept")
	}
	if n := rec.errorCount(); n != 2 {
		t.Errorf("%d error records, want 2: %q", n, rec.errors)
	}

	// Fixed: picked up, through a rename over the path as editors do.
	tmp := path + ".new"
	writeFile(t, tmp, []byte("b.example\n"))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	mustReload(t, h, true)
	if !h.Allows("b.example") || h.Allows("mssante.fr") {
		t.Errorf("fixed list %q", h.Current().Domains())
	}

	// Reload reads whatever the stamps say.
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, []byte(""))
	if err := h.Reload(); err == nil {
		t.Error("forced reload of an empty list succeeded")
	}
	if !h.Allows("b.example") {
		t.Error("a failed forced reload replaced the list")
	}
}

func TestHolderSignedXML(t *testing.T) {
	f := newPKIFiles(t)
	dir := t.TempDir()
	v1 := xmlList("mssante.fr")
	listPath, sigPath := publish(t, dir, f.publisher, v1)
	h, err := NewHolder(Source{Path: listPath, Signature: sigPath, Trust: f.trust}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := h.Current()

	// The list is replaced before its signature (a two-file update): the
	// pair does not verify, the old list stays.
	v2 := xmlList("mssante.fr", "a.example")
	writeFile(t, listPath, v2)
	reloaded, err := h.ReloadIfChanged()
	if reloaded || reasonOf(err) != signing.ReasonBadSignature {
		t.Fatalf("list without its new signature: reloaded %v, err %v", reloaded, err)
	}
	if h.Current() != first || h.Allows("a.example") {
		t.Fatal("an unverified list was installed")
	}
	// The signature lands: the pair verifies.
	writeFile(t, sigPath, sign(t, f.publisher, v2))
	mustReload(t, h, true)
	if !h.Allows("a.example") {
		t.Errorf("new list %q", h.Current().Domains())
	}

	// A list signed by a certificate outside the trust is refused.
	other, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.IssueOrganisation("x@agence.example", "AUTRE")
	if err != nil {
		t.Fatal(err)
	}
	v3 := xmlList("evil.example")
	writeFile(t, listPath, v3)
	writeFile(t, sigPath, sign(t, stranger, v3))
	if _, err := h.ReloadIfChanged(); reasonOf(err) != signing.ReasonUntrusted {
		t.Fatalf("stranger's list: %v", err)
	}
	if h.Allows("evil.example") || !h.Allows("a.example") {
		t.Error("the stranger's list was installed")
	}
}

// TestHolderRetriesTemporaryFailure: a list refused because revocation
// status is unknown (CRL past nextUpdate) is tried again at the next poll
// even though its files did not change.
func TestHolderRetriesTemporaryFailure(t *testing.T) {
	f := newPKIFiles(t)
	dir := t.TempDir()
	listPath, sigPath := publish(t, dir, f.publisher, xmlList("mssante.fr"))
	var clock atomic.Pointer[time.Time]
	now := time.Now()
	clock.Store(&now)
	src := Source{Path: listPath, Signature: sigPath, Trust: f.trust, Now: func() time.Time { return *clock.Load() }}
	h, err := NewHolder(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2 := xmlList("mssante.fr", "a.example")
	writeFile(t, listPath, v2)
	writeFile(t, sigPath, sign(t, f.publisher, v2))
	stale := now.Add(48 * time.Hour) // past the CRLs' nextUpdate
	clock.Store(&stale)
	if _, err := h.ReloadIfChanged(); reasonOf(err) != signing.ReasonRevocationUnknown {
		t.Fatalf("with stale CRLs: %v", err)
	}
	if h.Allows("a.example") {
		t.Fatal("installed without a revocation check")
	}
	clock.Store(&now) // as if fresh CRLs had been fetched
	mustReload(t, h, true)
	if !h.Allows("a.example") {
		t.Error("the retried list is not in force")
	}
}

// TestHolderConcurrent: readers see a whole list at every moment while
// reloads run (run with -race).
func TestHolderConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "domains.txt")
	writeFile(t, path, []byte("a.example\nb.example\n"))
	h, err := NewHolder(Source{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if w := h.Current(); w.Len() != 2 || !w.Allows("a.example") {
					t.Errorf("reader saw %q", w.Domains())
					return
				}
			}
		})
	}
	for i := range 50 {
		writeFile(t, path, fmt.Appendf(nil, "a.example\nv%d.example\n", i))
		if _, err := h.ReloadIfChanged(); err != nil {
			t.Error(err)
		}
		if err := h.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if !h.Allows("v49.example") {
		t.Errorf("last list %q", h.Current().Domains())
	}
}

// FuzzParseText: never panics; an accepted list is non-empty, holds only
// valid lower-case domains, allows each of them, and reads back the same
// from its own text form.
func FuzzParseText(f *testing.F) {
	f.Add(readTestdata(f, "domains.txt"))
	f.Add([]byte("\xEF\xBB\xBFa.example\r\n# c\r\nB.EXAMPLE.\n"))
	f.Add([]byte("a..b\n"))
	f.Add([]byte("192.168.0.1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseText("fuzz", data)
		if err != nil {
			if w != nil {
				t.Fatal("a refusal returned a list")
			}
			return
		}
		checkList(t, w)
		again, err := ParseText("again", []byte(strings.Join(w.Domains(), "\n")))
		if err != nil || !slices.Equal(again.Domains(), w.Domains()) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzParseXML: never panics; an accepted list is non-empty, holds only
// valid lower-case domains, and reads back the same from the canonical XML
// form.
func FuzzParseXML(f *testing.F) {
	f.Add(readTestdata(f, "ListeDomaines.xml"))
	f.Add(xmlList("a.example", "B.example"))
	f.Add([]byte(`<!DOCTYPE L [<!ENTITY a "x">]><L><Domaine><Nom>&a;.fr</Nom></Domaine></L>`))
	f.Add([]byte("<?xml version=\"1.0\" encoding=\"latin1\"?><L><Domaine><Nom>\xe9.fr</Nom></Domaine></L>"))
	f.Add([]byte("<a><Domaine><Nom><![CDATA[x.y]]></Nom></Domaine></a>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseXML("fuzz.xml", data)
		if err != nil {
			if w != nil {
				t.Fatal("a refusal returned a list")
			}
			return
		}
		checkList(t, w)
		again, err := ParseXML("again.xml", xmlList(w.Domains()...))
		if err != nil || !slices.Equal(again.Domains(), w.Domains()) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func checkList(t *testing.T, w *Whitelist) {
	t.Helper()
	if w.Len() == 0 || len(w.Domains()) != w.Len() {
		t.Fatalf("accepted list of %d domains", w.Len())
	}
	for _, d := range w.Domains() {
		if c, err := checkDomain(d); err != nil || c != d {
			t.Fatalf("listed %q is not a canonical domain (%v)", d, err)
		}
		if !w.Allows(d) || !w.Allows(strings.ToUpper(d)) {
			t.Fatalf("listed %q is not allowed", d)
		}
	}
}

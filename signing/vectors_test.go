package signing_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"mssrelay/mime"
	"mssrelay/signing"
)

// Test vectors made by the OpenSSL command line (testdata/openssl/gen.sh):
// committed, so they are checked whether or not openssl is installed. The
// MANIFEST there names each vector and the verdict Verify must give.

const (
	vectorDir  = "testdata/openssl"
	vectorFrom = "dr.vector@mssante.test"
	vectorRPPS = "10101201234"
	// maxVectorBytes keeps the committed vectors small.
	maxVectorBytes = 200 << 10
)

// vectorNow is inside the validity of the whole vector PKI (2025-01-01 to
// 2125-01-01) and after the signing-time attribute openssl writes (the time
// gen.sh ran): a nearer date would make vectors regenerated after it
// "future-signing-time".
var vectorNow = time.Date(2100, 6, 1, 0, 0, 0, 0, time.UTC)

// vectorSupportFiles are the files of the vector directory that are not
// vectors: the PKI, the contents, and the documentation.
var vectorSupportFiles = []string{
	"MANIFEST", "README.md", "gen.sh", ".gitattributes",
	"root.pem", "intermediate.pem", "rsa-signer.pem", "ecdsa-signer.pem",
	"root-crl.pem", "intermediate-crl.pem",
	"content.eml", "content-tampered.eml",
}

// vector is one line of MANIFEST.
type vector struct {
	line    int
	file    string
	form    string // der, ber or smime
	content string // detached content file, "" when inside the vector
	chain   bool   // the intermediate travels in the message
	verdict string // "ok" or a signing.Reason name
}

func (v vector) name() string {
	if v.content != "" && v.content != "content.eml" {
		return v.file + "+" + v.content
	}
	return v.file
}

// readManifest parses dir/MANIFEST: tab-separated file, form, content,
// chain, verdict; "#" starts a comment line.
func readManifest(t *testing.T, dir string) []vector {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "MANIFEST"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []vector
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 5 {
			t.Fatalf("MANIFEST:%d: %d fields, want 5: %q", n, len(fields), line)
		}
		v := vector{line: n, file: fields[0], form: fields[1], verdict: fields[4]}
		if fields[2] != "-" {
			v.content = fields[2]
		}
		switch fields[3] {
		case "yes":
			v.chain = true
		case "no":
		default:
			t.Fatalf("MANIFEST:%d: chain %q, want yes or no", n, fields[3])
		}
		switch v.form {
		case "der", "ber", "smime":
		default:
			t.Fatalf("MANIFEST:%d: form %q, want der, ber or smime", n, v.form)
		}
		if v.form == "smime" && v.content != "" {
			t.Fatalf("MANIFEST:%d: an S/MIME message carries its own content", n)
		}
		if v.verdict != "ok" {
			if _, ok := reasonByName(v.verdict); !ok {
				t.Fatalf("MANIFEST:%d: verdict %q is neither ok nor a signing.Reason name", n, v.verdict)
			}
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("MANIFEST lists no vector")
	}
	return out
}

// reasonByName maps a Reason's String() back to the Reason.
func reasonByName(name string) (signing.Reason, bool) {
	for r := signing.ReasonMalformed; r <= signing.ReasonIDNPSMismatch; r++ {
		if r.String() == name {
			return r, true
		}
	}
	return 0, false
}

// verdictOf returns "ok" for a nil error, the Reason name of a *signing.Error,
// and fails the test for anything else (Verify returns only *signing.Error).
func verdictOf(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return "ok"
	}
	var se *signing.Error
	if !errors.As(err, &se) {
		t.Fatalf("Verify returned %T (%v), want *signing.Error", err, err)
	}
	return se.Reason.String()
}

// trustConfig chooses what vectorTrust configures besides the root.
type trustConfig struct {
	intermediate bool // intermediate.pem as an intermediate, with its CRL
	// interOptional lists intermediate.pem as CRL-optional without
	// configuring it as an intermediate: its CRL cannot be loaded then (a
	// CRL's issuer must be a configured CA).
	interOptional bool
}

func vectorTrust(t *testing.T, dir string, c trustConfig) *signing.Trust {
	t.Helper()
	opts := signing.LoadTrustOptions{
		Anchors: []string{filepath.Join(dir, "root.pem")},
		CRLs:    []string{filepath.Join(dir, "root-crl.pem")},
	}
	if c.intermediate {
		opts.Intermediates = []string{filepath.Join(dir, "intermediate.pem")}
		opts.CRLs = append(opts.CRLs, filepath.Join(dir, "intermediate-crl.pem"))
	}
	if c.interOptional {
		opts.CRLOptionalIssuers = []string{filepath.Join(dir, "intermediate.pem")}
	}
	tr, err := signing.LoadTrustWith(opts)
	if err != nil {
		t.Fatalf("LoadTrustWith: %v", err)
	}
	return tr
}

// toCRLF turns bare LF into CRLF, as a mail transport does with OpenSSL's
// S/MIME output (RFC 5321 2.3.8: lines end in CRLF on the wire). Existing
// CRLF pairs, such as those of the signed content, are left alone.
func toCRLF(b []byte) []byte {
	out := make([]byte, 0, len(b)+bytes.Count(b, []byte("\n")))
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// vectorRequest builds the Request for v as the relay would: a DER/BER blob
// with its detached content file, or an S/MIME message scanned and split by
// the mime package with From taken from its header.
func vectorRequest(t *testing.T, dir string, v vector) signing.Request {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, v.file))
	if err != nil {
		t.Fatal(err)
	}
	req := signing.Request{From: vectorFrom, RPPS: vectorRPPS, Now: vectorNow}
	switch v.form {
	case "der", "ber":
		// DER has definite lengths; openssl -stream writes the outer
		// SEQUENCE with the indefinite-length form (X.690 8.1.3.6).
		if indefinite := len(raw) > 1 && raw[1] == 0x80; indefinite != (v.form == "ber") {
			t.Fatalf("%s: form %s but indefinite length = %v", v.file, v.form, indefinite)
		}
		req.PKCS7 = raw
		if v.content != "" {
			if req.Content, err = os.ReadFile(filepath.Join(dir, v.content)); err != nil {
				t.Fatal(err)
			}
		}
	case "smime":
		msg := toCRLF(raw)
		if err := mime.Scan(msg, mime.DefaultLimits()); err != nil {
			t.Fatalf("mime.Scan: %v", err)
		}
		s, err := mime.Split(msg)
		if err != nil {
			t.Fatalf("mime.Split: %v", err)
		}
		req.PKCS7, req.Content = s.PKCS7, s.Content
		from, ok := mime.HeaderField(s.Header, "From")
		if !ok {
			t.Fatalf("%s: no From: header", v.file)
		}
		if req.From, err = mime.Address(from); err != nil {
			t.Fatalf("%s: From: %v", v.file, err)
		}
		if wantDetached := strings.Contains(v.file, "detached"); (s.Form == mime.Detached) != wantDetached {
			t.Fatalf("%s: mime form %v, detached in the name = %v", v.file, s.Form, wantDetached)
		}
		if s.Form == mime.Detached && s.Micalg != "sha-256" {
			t.Errorf("%s: micalg %q, want sha-256", v.file, s.Micalg)
		}
	}
	return req
}

// TestOpenSSLVectors verifies every vector of the MANIFEST with the full
// trust configuration and checks the verdict, and for accepted vectors what
// the result says about the signer.
func TestOpenSSLVectors(t *testing.T) {
	vectors := readManifest(t, vectorDir)
	checkVectors(t, vectorDir, vectors)
}

func checkVectors(t *testing.T, dir string, vectors []vector) {
	t.Helper()
	tr := vectorTrust(t, dir, trustConfig{intermediate: true})
	content, err := os.ReadFile(filepath.Join(dir, "content.eml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vectors {
		t.Run(v.name(), func(t *testing.T) {
			res, err := tr.Verify(vectorRequest(t, dir, v))
			if got := verdictOf(t, err); got != v.verdict {
				t.Fatalf("MANIFEST:%d: verdict %s (%v), want %s", v.line, got, err, v.verdict)
			}
			if err != nil {
				return
			}
			if !bytes.Equal(res.Content, content) {
				t.Errorf("signed content differs from content.eml:\n%q", res.Content)
			}
			if got := res.Signer.RPPS(); got != vectorRPPS {
				t.Errorf("signer RPPS %q, want %s", got, vectorRPPS)
			}
			if !slices.Contains(res.Signer.Emails, vectorFrom) {
				t.Errorf("signer e-mails %q, want %s", res.Signer.Emails, vectorFrom)
			}
			if n := len(res.Signer.Chain); n != 3 {
				t.Errorf("chain of %d certificates, want leaf, intermediate, root", n)
			}
		})
	}
}

// TestOpenSSLAgreesWithVectors: OpenSSL itself, given the same trust (root,
// intermediate, both CRLs, checked for every certificate of the chain, at
// the same time), accepts every vector except the tampered ones. So the
// sha1 and noattr refusals are the relay's policy, not broken files.
func TestOpenSSLAgreesWithVectors(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not found in PATH")
	}
	// OpenSSL 3.0's cms -verify builds chains only from the store and the
	// message's certificates (-certfile does not help), and reads CRLs from
	// the -CAfile: one file holds all four.
	var store []byte
	for _, f := range []string{"root.pem", "intermediate.pem", "root-crl.pem", "intermediate-crl.pem"} {
		b, err := os.ReadFile(filepath.Join(vectorDir, f))
		if err != nil {
			t.Fatal(err)
		}
		store = append(store, b...)
	}
	storeFile := filepath.Join(t.TempDir(), "store.pem")
	if err := os.WriteFile(storeFile, store, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range readManifest(t, vectorDir) {
		t.Run(v.name(), func(t *testing.T) {
			args := []string{"cms", "-verify", "-purpose", "smimesign", "-CAfile", storeFile, "-crl_check_all",
				"-attime", fmt.Sprint(vectorNow.Unix()), "-in", filepath.Join(vectorDir, v.file), "-out", os.DevNull}
			if v.form != "smime" {
				args = append(args, "-inform", "DER", "-binary")
			}
			if v.content != "" {
				args = append(args, "-content", filepath.Join(vectorDir, v.content))
			}
			out, err := exec.Command(bin, args...).CombinedOutput()
			if want := v.verdict != "bad-signature"; (err == nil) != want {
				t.Fatalf("openssl accepts = %v, want %v (our verdict %s):\n%s", err == nil, want, v.verdict, out)
			}
		})
	}
}

// TestOpenSSLVectorsWithoutIntermediate: with only the root configured, a
// message must bring the intermediate itself. One that does verifies (when
// the intermediate's certificates need no CRL) and one that does not is
// Untrusted. With every issuer needing a CRL, the intermediate's CRL
// cannot even be configured (its issuer is not a configured CA), so a
// message with the chain is refused as revocation-unknown: an operator
// must configure the intermediates it expects.
func TestOpenSSLVectorsWithoutIntermediate(t *testing.T) {
	optional := vectorTrust(t, vectorDir, trustConfig{interOptional: true})
	strict := vectorTrust(t, vectorDir, trustConfig{})
	var withChain, without int
	for _, v := range readManifest(t, vectorDir) {
		if v.verdict != "ok" {
			continue
		}
		if v.chain {
			withChain++
		} else {
			without++
		}
		t.Run(v.name(), func(t *testing.T) {
			wantOptional, wantStrict := "untrusted", "untrusted"
			if v.chain {
				wantOptional, wantStrict = "ok", "revocation-unknown"
			}
			_, err := optional.Verify(vectorRequest(t, vectorDir, v))
			if got := verdictOf(t, err); got != wantOptional {
				t.Errorf("root only, intermediate CRL-optional: %s (%v), want %s", got, err, wantOptional)
			}
			_, err = strict.Verify(vectorRequest(t, vectorDir, v))
			if got := verdictOf(t, err); got != wantStrict {
				t.Errorf("root only, every issuer needs a CRL: %s (%v), want %s", got, err, wantStrict)
			}
		})
	}
	if withChain == 0 || without == 0 {
		t.Fatalf("MANIFEST has %d accepted vectors with the chain and %d without; need both", withChain, without)
	}
}

// TestOpenSSLVectorsRefusedRequests: a good vector is refused when the
// request, not the signature, is wrong.
func TestOpenSSLVectorsRefusedRequests(t *testing.T) {
	tr := vectorTrust(t, vectorDir, trustConfig{intermediate: true})
	good := vector{file: "ecdsa-opaque-chain.p7m", form: "der", chain: true, verdict: "ok"}
	if _, err := tr.Verify(vectorRequest(t, vectorDir, good)); err != nil {
		t.Fatalf("the base vector does not verify: %v", err)
	}
	tests := []struct {
		name   string
		change func(*signing.Request)
		want   signing.Reason
	}{
		{"other From", func(r *signing.Request) { r.From = "dr.other@mssante.test" }, signing.ReasonEmailMismatch},
		{"other RPPS", func(r *signing.Request) { r.RPPS = "10101209999" }, signing.ReasonIDNPSMismatch},
		{"before validity", func(r *signing.Request) { r.Now = time.Date(2024, 12, 31, 0, 0, 0, 0, time.UTC) }, signing.ReasonExpired},
		{"after validity", func(r *signing.Request) { r.Now = time.Date(2125, 1, 2, 0, 0, 0, 0, time.UTC) }, signing.ReasonExpired},
		{"detached content given for an opaque signature", func(r *signing.Request) { r.Content = []byte("x") }, signing.ReasonMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := vectorRequest(t, vectorDir, good)
			tc.change(&req)
			_, err := tr.Verify(req)
			if got := verdictOf(t, err); got != tc.want.String() {
				t.Fatalf("verdict %s (%v), want %s", got, err, tc.want)
			}
		})
	}
}

// TestOpenSSLVectorsManifest checks the vector directory itself: it holds
// exactly the manifest's vectors and the support files, covers the matrix
// the issue asks for, stays small, and documents its generator.
func TestOpenSSLVectorsManifest(t *testing.T) {
	vectors := readManifest(t, vectorDir)
	checkVectorFiles(t, vectorDir, vectors, true)

	// Every key type × form × chain is accepted, so is each key type's
	// -keyid signature, and each refusal exists for each key type.
	have := make(map[string]string)
	for _, v := range vectors {
		have[v.name()] = v.verdict
	}
	for _, k := range []string{"rsa", "ecdsa"} {
		for _, c := range []string{"chain", "nochain"} {
			for _, f := range []string{"detached-%s.p7s", "opaque-%s.p7m", "opaque-ber-%s.p7m", "smime-detached-%s.eml", "smime-opaque-%s.eml"} {
				name := k + "-" + fmt.Sprintf(f, c)
				if have[name] != "ok" {
					t.Errorf("MANIFEST: %s has verdict %q, want ok", name, have[name])
				}
			}
		}
		for name, want := range map[string]string{
			k + "-keyid.p7s":  "ok", // signer named by subject key identifier (RFC 5652 5.3)
			k + "-sha1.p7s":   "algorithm",
			k + "-noattr.p7s": "malformed",
			k + "-detached-chain.p7s+content-tampered.eml": "bad-signature",
		} {
			if have[name] != want {
				t.Errorf("MANIFEST: %s has verdict %q, want %s", name, have[name], want)
			}
		}
	}

	// The tampered content differs from the signed one in exactly one byte.
	a, errA := os.ReadFile(filepath.Join(vectorDir, "content.eml"))
	b, errB := os.ReadFile(filepath.Join(vectorDir, "content-tampered.eml"))
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if len(a) != len(b) {
		t.Fatalf("content-tampered.eml has %d bytes, content.eml %d", len(b), len(a))
	}
	diff := 0
	for i := range a {
		if a[i] != b[i] {
			diff++
		}
	}
	if diff != 1 {
		t.Errorf("content-tampered.eml differs in %d bytes, want 1", diff)
	}
	if !bytes.Contains(a, []byte("\r\n")) || bytes.Count(a, []byte("\n")) != bytes.Count(a, []byte("\r\n")) {
		t.Error("content.eml must have CRLF line ends only (RFC 8551 3.1.1 canonical form)")
	}

	// The generator is executable and documented.
	fi, err := os.Stat(filepath.Join(vectorDir, "gen.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("gen.sh mode %v is not executable", fi.Mode().Perm())
	}
	readme, err := os.ReadFile(filepath.Join(vectorDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"gen.sh", "MANIFEST"} {
		if !bytes.Contains(readme, []byte(s)) {
			t.Errorf("README.md does not mention %s", s)
		}
	}
}

// checkVectorFiles checks that dir holds exactly the vectors of the
// manifest and the support files (no stale vector of an older run), under
// the size budget. docs says whether the hand-written files (README.md,
// gen.sh, .gitattributes) must be there: gen.sh does not write them.
func checkVectorFiles(t *testing.T, dir string, vectors []vector, docs bool) {
	t.Helper()
	want := make(map[string]bool)
	for _, f := range vectorSupportFiles {
		want[f] = true
	}
	if !docs {
		delete(want, "README.md")
		delete(want, "gen.sh")
		delete(want, ".gitattributes")
	}
	for _, v := range vectors {
		want[v.file] = true
		if v.content != "" {
			want[v.content] = true
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("%s: %s is neither in MANIFEST nor a support file (stale? rerun gen.sh)", dir, e.Name())
			continue
		}
		delete(want, e.Name())
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	for f := range want {
		t.Errorf("%s: %s is missing", dir, f)
	}
	if total > maxVectorBytes {
		t.Errorf("%s holds %d bytes, budget %d", dir, total, maxVectorBytes)
	}
}

// TestGenScriptRegenerates runs gen.sh into a temporary directory and
// checks its output like the committed one: the script must keep working
// with the openssl at hand, clean up after its previous run, and produce the
// same MANIFEST (same files, same verdicts) as the one committed.
func TestGenScriptRegenerates(t *testing.T) {
	if testing.Short() {
		t.Skip("runs openssl key generation (seconds); skipped with -short")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not found in PATH")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found in PATH")
	}
	// The directory starts with the MANIFEST of a pretend older run naming
	// a vector gen.sh no longer makes: the run must remove it, so that a
	// rerun over the committed directory leaves no stale file.
	dir := t.TempDir()
	stale := filepath.Join(dir, "old-vector.p7s")
	if err := os.WriteFile(stale, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), []byte("# older run\nold-vector.p7s\tder\tcontent.eml\tyes\tok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bash, filepath.Join(vectorDir, "gen.sh"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	committed, err := os.ReadFile(filepath.Join(vectorDir, "MANIFEST"))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := os.ReadFile(filepath.Join(dir, "MANIFEST"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(committed, fresh) {
		t.Errorf("gen.sh writes a MANIFEST that differs from the committed one: rerun gen.sh and commit\n--- committed\n%s\n--- fresh\n%s", committed, fresh)
	}
	vectors := readManifest(t, dir)
	checkVectorFiles(t, dir, vectors, false)
	checkVectors(t, dir, vectors)
}

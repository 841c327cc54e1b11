package signing

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"mssrelay/filestamp"
)

// TestRevocationPolicy: every issuer of a chain needs a fresh CRL unless it
// is CRL-optional; a CRL that is loaded is consulted whatever the policy.
func TestRevocationPolicy(t *testing.T) {
	now := time.Now()
	p := mustPKI(t)
	good := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	revoked := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	// A second intermediate, not configured: it travels in the message.
	subCA := mustIssue(t, p, Template{Name: "MSSRELAY DEV AC ETABLISSEMENTS", IsCA: true, Issuer: p.Root})
	underSub := mustIssue(t, p, Template{Email: drEmail, RPPS: drRPPS, Name: drName, Issuer: subCA})
	crl := func(issuer *KeyPair, revoked []*x509.Certificate, this, next time.Time) *x509.RevocationList {
		t.Helper()
		l, err := p.IssueCRL(issuer, revoked, this, next)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	rootFresh := crl(p.Root, nil, now.Add(-time.Hour), now.Add(24*time.Hour))
	rootRevokesInter := crl(p.Root, []*x509.Certificate{p.Intermediate.Cert}, now.Add(-time.Hour), now.Add(24*time.Hour))
	interFresh := crl(nil, nil, now.Add(-time.Hour), now.Add(24*time.Hour))
	interRevokes := crl(nil, []*x509.Certificate{revoked.Cert}, now.Add(-time.Hour), now.Add(24*time.Hour))
	interStale := crl(nil, nil, now.Add(-48*time.Hour), now.Add(-time.Hour))
	interStaleRevokes := crl(nil, []*x509.Certificate{revoked.Cert}, now.Add(-48*time.Hour), now.Add(-time.Hour))

	root, inter := p.Root.Cert, p.Intermediate.Cert
	type crls = []*x509.RevocationList
	type certs = []*x509.Certificate
	tests := []struct {
		name     string
		crls     crls
		optional certs
		signer   *KeyPair
		want     Reason // 0: accepted
		wantSub  string
	}{
		{"all issuers CRL-optional, no CRL", nil, certs{root, inter}, good, 0, ""},
		{"default: no CRL at all", nil, nil, good, ReasonRevocationUnknown, "no CRL of issuer"},
		{"intermediate's CRL missing", crls{rootFresh}, nil, good, ReasonRevocationUnknown, DevIntermediateName},
		{"root's CRL missing", crls{interFresh}, nil, good, ReasonRevocationUnknown, DevRootName},
		{"root optional, intermediate's CRL missing", nil, certs{root}, good, ReasonRevocationUnknown, DevIntermediateName},
		{"intermediate optional, root's CRL fresh", crls{rootFresh}, certs{inter}, good, 0, ""},
		{"stale CRL", crls{rootFresh, interStale}, nil, good, ReasonRevocationUnknown, "expired at"},
		{"fresh CRLs not listing the signer", crls{rootFresh, interFresh}, nil, good, 0, ""},
		{"signer revoked", crls{rootFresh, interRevokes}, nil, revoked, ReasonRevoked, "revoked"},
		{"intermediate revoked by the root", crls{rootRevokesInter, interFresh}, nil, good, ReasonRevoked, DevIntermediateName},
		{"revoked in a stale CRL", crls{rootFresh, interStaleRevokes}, nil, revoked, ReasonRevoked, "revoked"},
		{"optional issuer's CRL still consulted", crls{interRevokes}, certs{root, inter}, revoked, ReasonRevoked, "revoked"},
		{"optional issuer's stale CRL is no refusal", crls{interStale}, certs{root, inter}, good, 0, ""},
		{"unconfigured intermediate from the message", crls{rootFresh, interFresh}, nil, underSub, ReasonRevocationUnknown, "ETABLISSEMENTS"},
		{"unconfigured intermediate, CRL-optional", crls{rootFresh}, certs{subCA.Cert}, underSub, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			trust, err := NewTrustWith(TrustMaterial{Anchors: certs{root}, Intermediates: certs{inter}, CRLs: tc.crls, CRLOptionalIssuers: tc.optional})
			if err != nil {
				t.Fatal(err)
			}
			_, err = trust.Verify(Request{PKCS7: makeSig(t, tc.signer, testContent, sigOpts{}), Content: testContent, From: drEmail, RPPS: drRPPS})
			if got := reasonOf(t, err); got != tc.want {
				t.Fatalf("reason %v (%v), want %v", got, err, tc.want)
			}
			if err == nil {
				return
			}
			var e *Error
			errors.As(err, &e)
			if !strings.Contains(e.Detail, tc.wantSub) {
				t.Errorf("detail %q does not mention %q", e.Detail, tc.wantSub)
			}
			if e.Temporary() != (tc.want == ReasonRevocationUnknown) {
				t.Errorf("Temporary() = %v for %v", e.Temporary(), tc.want)
			}
		})
	}

	// NewTrust keeps its signature and takes the default: every issuer.
	trust := mustTrust(t, certs{root}, certs{inter}, nil)
	_, err := trust.Verify(Request{PKCS7: makeSig(t, good, testContent, sigOpts{}), Content: testContent})
	if got := reasonOf(t, err); got != ReasonRevocationUnknown {
		t.Errorf("NewTrust without CRLs: reason %v, want revocation-unknown", got)
	}
	if _, err := NewTrustWith(TrustMaterial{Anchors: certs{root}, CRLOptionalIssuers: certs{good.Cert}}); err == nil ||
		!strings.Contains(err.Error(), "not a CA") {
		t.Errorf("a leaf as CRL-optional issuer: %v, want a refusal", err)
	}
	if _, err := NewTrustWith(TrustMaterial{Anchors: certs{root}, CRLOptionalIssuers: certs{nil}}); err == nil {
		t.Errorf("a nil CRL-optional issuer was accepted")
	}
}

func TestTrustCRLs(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	p := mustPKI(t)
	kp := mustIssue(t, p, Template{Email: drEmail})
	rootCRL, err := p.IssueCRL(p.Root, nil, now.Add(-time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	interCRL, err := p.IssueCRL(nil, []*x509.Certificate{kp.Cert}, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	trust := mustTrust(t, []*x509.Certificate{p.Root.Cert}, []*x509.Certificate{p.Intermediate.Cert}, []*x509.RevocationList{rootCRL, interCRL})
	got := trust.CRLs()
	if len(got) != 2 {
		t.Fatalf("CRLs() = %+v, want 2", got)
	}
	if !strings.Contains(got[0].Issuer, DevIntermediateName) || !got[0].NextUpdate.Equal(now.Add(24*time.Hour)) || got[0].Revoked != 1 {
		t.Errorf("first (soonest) CRL = %+v, want the intermediate's, 1 revoked", got[0])
	}
	if !strings.Contains(got[1].Issuer, DevRootName) || got[1].Revoked != 0 || !got[1].ThisUpdate.Equal(now.Add(-time.Hour)) {
		t.Errorf("second CRL = %+v, want the root's", got[1])
	}
	if !trust.ChecksRevocation() || mustTrustNoCRL(t, p, []*x509.Certificate{p.Root.Cert}, nil).ChecksRevocation() {
		t.Errorf("ChecksRevocation does not say whether a CRL is loaded")
	}
}

// trustFiles is a trust store on disk: root, intermediate, their CRLs and
// a CRL-optional issuer file, with modification times set explicitly so
// that no stamp is racy.
type trustFiles struct {
	dir                            string
	p                              *DevPKI
	root, inter, rootCRL, interCRL string
	optional                       string
	now                            time.Time
	tick                           int
}

func newTrustFiles(t *testing.T) *trustFiles {
	t.Helper()
	f := &trustFiles{dir: t.TempDir(), p: mustPKI(t), now: time.Now()}
	f.root = filepath.Join(f.dir, "root.pem")
	f.inter = filepath.Join(f.dir, "inter.pem")
	f.rootCRL = filepath.Join(f.dir, "root.crl")
	f.interCRL = filepath.Join(f.dir, "inter.crl")
	f.optional = filepath.Join(f.dir, "optional.pem")
	writePEMCerts(t, f.root, f.p.Root.Cert)
	writePEMCerts(t, f.inter, f.p.Intermediate.Cert)
	// An unrelated CA as CRL-optional issuer: its file is watched too.
	writePEMCerts(t, f.optional, mustPKI(t).Root.Cert)
	f.writeCRL(t, f.rootCRL, f.p.Root, nil)
	f.writeCRL(t, f.interCRL, nil, nil)
	for _, path := range []string{f.root, f.inter, f.optional} {
		f.age(t, path)
	}
	return f
}

// age sets path's times to a distinct moment well before f.now.
func (f *trustFiles) age(t *testing.T, path string) {
	t.Helper()
	f.tick++
	at := f.now.Add(-time.Hour + time.Duration(f.tick)*time.Second)
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

func (f *trustFiles) writeCRL(t *testing.T, path string, issuer *KeyPair, revoked []*x509.Certificate) {
	t.Helper()
	l, err := f.p.IssueCRL(issuer, revoked, f.now.Add(-time.Hour), f.now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	writeCRL(t, path, l, true)
	f.age(t, path)
}

func (f *trustFiles) load(t *testing.T) *Trust {
	t.Helper()
	trust, err := loadTrust(LoadTrustOptions{
		Anchors: []string{f.root}, Intermediates: []string{f.inter},
		CRLs: []string{f.rootCRL, f.interCRL}, CRLOptionalIssuers: []string{f.optional},
	}, func() time.Time { return f.now })
	if err != nil {
		t.Fatal(err)
	}
	return trust
}

func wantChanged(t *testing.T, trust *Trust, want bool, when string) {
	t.Helper()
	got, err := trust.Changed()
	if err != nil {
		t.Fatalf("%s: Changed: %v", when, err)
	}
	if got != want {
		t.Fatalf("%s: Changed() = %v, want %v", when, got, want)
	}
}

// TestTrustChanged: a change to any configured file is reported until a
// Reload succeeds; an untouched store reports none.
func TestTrustChanged(t *testing.T) {
	type change struct {
		name string
		do   func(t *testing.T, f *trustFiles)
	}
	changes := []change{
		{"new intermediate CRL", func(t *testing.T, f *trustFiles) {
			f.writeCRL(t, f.interCRL, nil, []*x509.Certificate{f.p.Root.Cert})
		}},
		{"new root CRL", func(t *testing.T, f *trustFiles) { f.writeCRL(t, f.rootCRL, f.p.Root, nil) }},
		{"anchor rewritten", func(t *testing.T, f *trustFiles) {
			writePEMCerts(t, f.root, f.p.Root.Cert, f.p.Root.Cert)
			f.age(t, f.root)
		}},
		{"intermediate touched", func(t *testing.T, f *trustFiles) { f.age(t, f.inter) }},
		{"CRL-optional issuer rewritten", func(t *testing.T, f *trustFiles) {
			writePEMCerts(t, f.optional, f.p.Intermediate.Cert)
			f.age(t, f.optional)
		}},
		{"replaced by rename, same size and times", func(t *testing.T, f *trustFiles) {
			fi, err := os.Stat(f.inter)
			if err != nil {
				t.Fatal(err)
			}
			tmp := f.inter + ".new"
			data, err := os.ReadFile(f.inter)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(tmp, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, f.inter); err != nil {
				t.Fatal(err)
			}
		}},
		{"CRL removed", func(t *testing.T, f *trustFiles) {
			if err := os.Remove(f.interCRL); err != nil {
				t.Fatal(err)
			}
		}},
	}
	if runtime.GOOS == "linux" {
		// Same size, modification time put back (cp -p, touch -r): only the
		// inode change time tells.
		changes = append(changes, change{"same-size rewrite, mtime restored", func(t *testing.T, f *trustFiles) {
			fi, err := os.Stat(f.optional)
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(f.optional)
			if err != nil {
				t.Fatal(err)
			}
			i := len(data) / 2
			for data[i] < 'a' || data[i] > 'z' {
				i++
			}
			data[i] -= 'a' - 'A' // one base64 letter changes case: same size
			if err := os.WriteFile(f.optional, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if after, err := os.Stat(f.optional); err != nil || after.Size() != fi.Size() {
				t.Fatalf("size changed (%v): the case does not test the change time", err)
			}
			if err := os.Chtimes(f.optional, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
		}})
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			f := newTrustFiles(t)
			trust := f.load(t)
			wantChanged(t, trust, false, "after load")
			c.do(t, f)
			wantChanged(t, trust, true, "after the change")
			wantChanged(t, trust, true, "asked again") // Changed itself does not acknowledge
		})
	}
	if _, err := NewTrust([]*x509.Certificate{mustPKI(t).Root.Cert}, nil, nil); err != nil {
		t.Fatal(err)
	}
	built := mustTrust(t, []*x509.Certificate{mustPKI(t).Root.Cert}, nil, nil)
	wantChanged(t, built, false, "NewTrust")
}

// TestTrustReloadCycle: poll, reload, a broken file keeps the old material
// (and keeps Changed true), a fixed file takes effect; each successful
// Reload empties the verdict cache.
func TestTrustReloadCycle(t *testing.T) {
	f := newTrustFiles(t)
	kp := mustIssue(t, f.p, Template{Email: drEmail, RPPS: drRPPS, Name: drName})
	trust := f.load(t)
	req := Request{PKCS7: makeSig(t, kp, testContent, sigOpts{noChain: true}), Content: testContent, From: drEmail, RPPS: drRPPS}
	if _, err := trust.Verify(req); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if n := trust.state.Load().cache.len(); n != 1 {
		t.Fatalf("cache holds %d verdicts, want 1", n)
	}

	// The intermediate's CRL now lists the signer.
	f.writeCRL(t, f.interCRL, nil, []*x509.Certificate{kp.Cert})
	wantChanged(t, trust, true, "new CRL")
	if err := trust.Reload(); err != nil {
		t.Fatal(err)
	}
	wantChanged(t, trust, false, "after Reload")
	if n := trust.state.Load().cache.len(); n != 0 {
		t.Errorf("cache holds %d verdicts after Reload, want 0", n)
	}
	_, err := trust.Verify(req)
	if got := reasonOf(t, err); got != ReasonRevoked {
		t.Fatalf("after Reload: reason %v (%v), want revoked", got, err)
	}

	// A truncated CRL (a copy in progress): Reload fails, the material in
	// force stays, and Changed keeps asking for a reload.
	if err := os.WriteFile(f.interCRL, []byte("-----BEGIN X509 CRL-----\nMII\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.age(t, f.interCRL)
	wantChanged(t, trust, true, "truncated CRL")
	if err := trust.Reload(); err == nil || !strings.Contains(err.Error(), f.interCRL) {
		t.Fatalf("Reload of a truncated CRL: %v, want an error naming the file", err)
	}
	wantChanged(t, trust, true, "after the failed Reload")
	_, err = trust.Verify(req)
	if got := reasonOf(t, err); got != ReasonRevoked {
		t.Fatalf("after the failed Reload: reason %v (%v), want revoked (old material)", got, err)
	}

	if reloaded, err := trust.ReloadIfChanged(); reloaded || err == nil {
		t.Fatalf("ReloadIfChanged on the truncated CRL = %v, %v; want an error", reloaded, err)
	}

	// The copy completes with a CRL that no longer lists the signer.
	f.writeCRL(t, f.interCRL, nil, nil)
	if reloaded, err := trust.ReloadIfChanged(); !reloaded || err != nil {
		t.Fatalf("ReloadIfChanged after the fix = %v, %v; want a reload", reloaded, err)
	}
	if reloaded, err := trust.ReloadIfChanged(); reloaded || err != nil {
		t.Fatalf("ReloadIfChanged without change = %v, %v; want nothing", reloaded, err)
	}
	wantChanged(t, trust, false, "after the fix")
	if _, err := trust.Verify(req); err != nil {
		t.Fatalf("after the fix: %v", err)
	}

	// A missing CRL file: reported, and Reload says which.
	if err := os.Remove(f.rootCRL); err != nil {
		t.Fatal(err)
	}
	wantChanged(t, trust, true, "CRL removed")
	if err := trust.Reload(); err == nil || !strings.Contains(err.Error(), "root.crl") {
		t.Fatalf("Reload without the root CRL: %v", err)
	}
	if _, err := trust.Verify(req); err != nil {
		t.Fatalf("the old material should still be in force: %v", err)
	}
}

// TestTrustRacyStamp: a file read within filestamp.RacyWindow of its modification
// could change again within the same timestamp tick; it is reported
// changed until a Reload reads it outside the window.
func TestTrustRacyStamp(t *testing.T) {
	f := newTrustFiles(t)
	recent := f.now.Add(-filestamp.RacyWindow / 2)
	if err := os.Chtimes(f.interCRL, recent, recent); err != nil {
		t.Fatal(err)
	}
	trust := f.load(t)
	wantChanged(t, trust, true, "racy stamp")
	f.now = f.now.Add(time.Minute)
	if err := trust.Reload(); err != nil {
		t.Fatal(err)
	}
	wantChanged(t, trust, false, "read again after the window")

	// A modification time far in the future (a clock-skewed copy) is no
	// race: the next write gets a time near now.
	future := f.now.Add(time.Hour)
	if err := os.Chtimes(f.interCRL, future, future); err != nil {
		t.Fatal(err)
	}
	if err := trust.Reload(); err != nil {
		t.Fatal(err)
	}
	wantChanged(t, trust, false, "future modification time")
}

func TestLoadTrustNonRegular(t *testing.T) {
	dir := t.TempDir()
	p := mustPKI(t)
	root := filepath.Join(dir, "root.pem")
	writePEMCerts(t, root, p.Root.Cert)
	_, err := LoadTrustWith(LoadTrustOptions{Anchors: []string{root}, CRLs: []string{dir}})
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory as CRL: %v", err)
	}
	leaf := mustIssue(t, p, Template{Email: drEmail})
	leafPEM := filepath.Join(dir, "leaf.pem")
	writePEMCerts(t, leafPEM, leaf.Cert)
	_, err = LoadTrustWith(LoadTrustOptions{Anchors: []string{root}, CRLOptionalIssuers: []string{leafPEM}})
	if err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("a leaf as CRL-optional issuer: %v", err)
	}
	_, err = LoadTrustWith(LoadTrustOptions{Anchors: []string{root}, CRLOptionalIssuers: []string{filepath.Join(dir, "nope.pem")}})
	if err == nil || !strings.Contains(err.Error(), "CRL-optional issuers") || !strings.Contains(err.Error(), "nope.pem") {
		t.Errorf("a missing CRL-optional issuer file: %v", err)
	}
}

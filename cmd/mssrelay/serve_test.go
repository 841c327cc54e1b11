package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mssrelay/relay/demo"
)

// lockedBuffer is an output the serve goroutine writes while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freeDemoPorts makes a new demo listen on ports the system picks, never
// the demo's well-known ones.
var freeDemoPorts = demo.Ports{
	Submission: "127.0.0.1:0", SubmissionTLS: "127.0.0.1:0",
	IMAPTLS: "127.0.0.1:0", IMAPSTARTTLS: "127.0.0.1:0",
}

// served is one run of the no-argument serve command.
type served struct {
	out, errOut *lockedBuffer
	done        chan error
	cancel      context.CancelFunc
}

// startServe runs `mssrelay serve -data dir` (what `mssrelay` with no
// arguments runs, -data aside) until the help is printed: from then on
// the relay serves and signals are caught.
func startServe(t *testing.T, dir string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{out: &lockedBuffer{}, errOut: &lockedBuffer{}, done: make(chan error, 1), cancel: cancel}
	go func() { s.done <- serve(ctx, []string{"-data", dir}, s.out, s.errOut, freeDemoPorts) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	// Poll the output: the command offers nothing else to wait on. The
	// bound is a safety net, not the assertion.
	for deadline := time.Now().Add(time.Minute); !strings.Contains(s.out.String(), "Stop with Ctrl-C."); time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-s.done:
			t.Fatalf("serve returned before serving: %v\n%s%s", err, s.out, s.errOut)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve printed no help:\n%s%s", s.out, s.errOut)
		}
	}
	return s
}

// wait returns serve's result once it has stopped.
func (s *served) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30 s")
		return nil
	}
}

var (
	smtpLine = regexp.MustCompile(`SMTP submission: (\S+) \(STARTTLS\), (\S+) \(implicit TLS\)`)
	imapLine = regexp.MustCompile(`IMAP: +(\S+) \(implicit TLS\), (\S+) \(STARTTLS\)`)
)

// demoAddrs reads the listener addresses from the printed help and points
// demo.json at them, so that `demo send` and `demo fetch` reach this run
// (the config says port 0).
func demoAddrs(t *testing.T, dir, out string) *demo.Info {
	t.Helper()
	sm, im := smtpLine.FindStringSubmatch(out), imapLine.FindStringSubmatch(out)
	if sm == nil || im == nil {
		t.Fatalf("the help names no SMTP or IMAP addresses:\n%s", out)
	}
	info, err := demo.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	info.Submission, info.SubmissionTLS, info.IMAPTLS, info.IMAPSTARTTLS = sm[1], sm[2], im[1], im[2]
	for _, a := range []string{sm[1], sm[2], im[1], im[2]} {
		if strings.HasSuffix(a, ":0") || a == "" {
			t.Errorf("the help prints %q, not the bound address", a)
		}
	}
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, demo.InfoFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return info
}

// greeting reads a new client's first line on addr.
func greeting(t *testing.T, info *demo.Info, addr string, implicitTLS bool) string {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second)) // safety net
	conn := raw
	if implicitTLS {
		cfg, err := info.ClientTLS()
		if err != nil {
			t.Fatal(err)
		}
		conn = tls.Client(raw, cfg) // verifies the demo's server certificate
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("greeting on %s: %v", addr, err)
	}
	return line
}

// TestServeEmbeddedDemo: `mssrelay` with no arguments creates the demo
// directory (PKI, accounts, config), prints where things are and what to
// do next, and serves SMTP and IMAP on what it prints; `demo send` and
// `demo fetch` work against it. A second run reuses the directory as it
// is (same passwords, same PKI, same store) and stops on SIGTERM.
func TestServeEmbeddedDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mssrelay-data") // does not exist yet

	first := startServe(t, dir)
	out := first.out.String()
	info := demoAddrs(t, dir, out)
	for _, want := range []string{
		"Created a demo relay in " + dir + " (development PKI, demo accounts, config).",
		"mssrelay demo is running.",
		"config:          " + filepath.Join(dir, demo.ConfigFile),
		"development CA:  " + info.Path(info.RootCA),
		"Accounts (passwords are in " + filepath.Join(dir, demo.InfoFile) + "):",
		"go run ./cmd/mssrelay demo send",
		"go run ./cmd/mssrelay demo fetch",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first run's output lacks %q:\n%s", want, out)
		}
	}
	for _, u := range []demo.User{info.Prescriber, info.Pharmacy, info.Pharmacy2} {
		if !regexp.MustCompile(regexp.QuoteMeta(u.Address) + ` +password ` + regexp.QuoteMeta(u.Password) + "\n").MatchString(out) {
			t.Errorf("the help does not give %s's password from %s:\n%s", u.Address, demo.InfoFile, out)
		}
	}
	for _, f := range []string{demo.ConfigFile, demo.InfoFile, info.RootCA, info.Prescriber.CertFile, info.Prescriber.KeyFile} {
		if _, err := os.Stat(info.Path(f)); err != nil {
			t.Errorf("the demo directory lacks %s: %v", f, err)
		}
	}
	// The help is printed once the ports are bound; the relay logs each
	// listener as it starts serving it, which may come a moment later.
	// The bound is a safety net, not the assertion.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(first.errOut.String(), "listening"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("no structured log of the listeners on stderr:\n%s", first.errOut)
			break
		}
	}

	// It serves what it prints: RFC 5321 §4.2 banner, RFC 3501 §7.1.1
	// greeting, on both ports of each.
	for _, c := range []struct {
		addr        string
		implicitTLS bool
		want        string
	}{
		{info.Submission, false, "220 localhost "},
		{info.SubmissionTLS, true, "220 localhost "},
		{info.IMAPTLS, true, "* OK "},
		{info.IMAPSTARTTLS, false, "* OK "},
	} {
		if got := greeting(t, info, c.addr, c.implicitTLS); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s greets %q, want %q…", c.addr, got, c.want)
		}
	}

	// The demo's story: send, then fetch shows it verified.
	code, sendOut, errOut := runCmd(t, "", "demo", "send", "-data", dir)
	if code != 0 {
		t.Fatalf("demo send: exit %d %s%s", code, sendOut, errOut)
	}
	number := regexp.MustCompile(`Submitting prescription (RX-\S+)`).FindStringSubmatch(sendOut)
	if number == nil {
		t.Fatalf("demo send names no prescription:\n%s", sendOut)
	}
	code, fetchOut, errOut := runCmd(t, "", "demo", "fetch", "-data", dir)
	if code != 0 || !strings.Contains(fetchOut, "prescription "+number[1]+",") || !strings.Contains(fetchOut, "signature verified") {
		t.Fatalf("demo fetch: exit %d, want prescription %s with its signature verified:\n%s%s", code, number[1], fetchOut, errOut)
	}

	first.cancel()
	if err := first.wait(t); err != nil {
		t.Fatalf("first run: %v\n%s", err, first.errOut)
	}

	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(info.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	kept := map[string][]byte{}
	for _, f := range []string{demo.ConfigFile, info.RootCA, info.Intermediate, info.Prescriber.CertFile, info.Prescriber.KeyFile, "pki/server.pem"} {
		kept[f] = read(f)
	}

	second := startServe(t, dir)
	out2 := second.out.String()
	if !strings.Contains(out2, "Reusing the demo relay in "+dir+".") || strings.Contains(out2, "Created") {
		t.Errorf("second run does not say it reuses %s:\n%s", dir, out2)
	}
	info2 := demoAddrs(t, dir, out2)
	for _, p := range [][2]demo.User{{info.Prescriber, info2.Prescriber}, {info.Pharmacy, info2.Pharmacy}, {info.Pharmacy2, info2.Pharmacy2}} {
		if p[0].Password != p[1].Password || !strings.Contains(out2, p[0].Password) {
			t.Errorf("%s: the second run has another password", p[0].Address)
		}
	}
	for f, b := range kept {
		if !bytes.Equal(read(f), b) {
			t.Errorf("the second run rewrote %s", f)
		}
	}
	// The same store: what the first run filed is still there.
	code, fetchOut, errOut = runCmd(t, "", "demo", "fetch", "-data", dir)
	if code != 0 || !strings.Contains(fetchOut, "INBOX holds 1 message(s)") || !strings.Contains(fetchOut, "prescription "+number[1]+",") {
		t.Errorf("demo fetch on the second run: exit %d\n%s%s", code, fetchOut, errOut)
	}

	// SIGTERM stops it cleanly (serve caught it before printing the help).
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.wait(t); err != nil {
		t.Fatalf("second run after SIGTERM: %v", err)
	}
	if !strings.Contains(second.errOut.String(), `msg=stopped`) {
		t.Errorf("the relay did not log its stop after SIGTERM:\n%s", second.errOut)
	}
}

// TestDemoFetch: `demo fetch` on an empty INBOX says what to do; after
// `demo send` it shows the prescription, its verified signer and its
// items, with the INS truncated.
func TestDemoFetch(t *testing.T) {
	dir, info, _ := runDemoRelay(t)
	code, out, errOut := runCmd(t, "", "demo", "fetch", "-data", dir)
	if code != 0 || !strings.Contains(out, info.Pharmacy.Address+": INBOX holds 0 message(s)") || !strings.Contains(out, "demo send` first") {
		t.Fatalf("demo fetch on an empty INBOX: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = runCmd(t, "", "demo", "send", "-data", dir)
	if code != 0 {
		t.Fatalf("demo send: exit %d %s%s", code, out, errOut)
	}
	number := regexp.MustCompile(`Submitting prescription (RX-\S+)`).FindStringSubmatch(out)
	if number == nil {
		t.Fatalf("demo send names no prescription:\n%s", out)
	}

	code, out, errOut = runCmd(t, "", "demo", "fetch", "-data", dir)
	if code != 0 {
		t.Fatalf("demo fetch: exit %d %s%s", code, out, errOut)
	}
	rx := demo.SamplePrescription(time.Now())
	for _, want := range []string{
		info.Pharmacy.Address + ": INBOX holds 1 message(s)",
		`subject "Ordonnance ` + number[1] + `"`,
		"signature verified: signer 8" + demo.PrescriberRPPS + "/MARTIN Jeanne (IDNPS 8" + demo.PrescriberRPPS + "), issued by ",
		"prescription " + number[1] + ",",
		"patient INS " + demo.PatientINS[:5] + "…",
		rx.Items[0].Text + " — " + rx.Items[0].Dosage,
		rx.Items[1].Text,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo fetch output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NOT VALID") || strings.Contains(out, demo.PatientINS) {
		t.Errorf("demo fetch: a signature does not verify, or the full INS is shown:\n%s", out)
	}
}

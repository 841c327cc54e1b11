package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"mssrelay/configs"
	"mssrelay/relay"
	"mssrelay/relay/demo"
)

// runDemoRelay starts a relay in-process on a fresh demo directory, on
// random loopback ports, and points the demo's demo.json at them so that
// the demo commands talk to it. stop stops it (also done at cleanup).
func runDemoRelay(t *testing.T) (dir string, info *demo.Info, stop func()) {
	t.Helper()
	dir = t.TempDir()
	info, _, err := demo.Ensure(dir, demo.Ports{Submission: "127.0.0.1:0", SubmissionTLS: "127.0.0.1:0", IMAPTLS: "127.0.0.1:0", IMAPSTARTTLS: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(filepath.Join(dir, demo.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	a := r.Addrs()
	info.Submission, info.SubmissionTLS, info.IMAPTLS, info.IMAPSTARTTLS =
		a[relay.SMTPSubmission], a[relay.SMTPSubmissionTLS], a[relay.IMAPTLS], a[relay.IMAPSTARTTLS]
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, demo.InfoFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("relay did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return dir, info, stop
}

// TestDemoClaim: the demo's story end to end with the real commands — a
// prescription sent to the first pharmacy is claimed by the second from
// its number and the INS, appears in its INBOX with the signature intact,
// and `rx show` (relay stopped) says who claimed it.
func TestDemoClaim(t *testing.T) {
	dir, info, stop := runDemoRelay(t)
	code, out, errOut := runCmd(t, "", "demo", "send", "-data", dir)
	if code != 0 {
		t.Fatalf("demo send: exit %d %s%s", code, out, errOut)
	}
	code, out, errOut = runCmd(t, "", "demo", "claim", "-data", dir)
	if code != 0 {
		t.Fatalf("demo claim: exit %d %s%s", code, out, errOut)
	}
	for _, want := range []string{
		"Newest prescription in " + info.Pharmacy.Address + "'s INBOX: RX-",
		"Claiming as " + info.Pharmacy2.Address,
		"to claim@" + demo.Domain,
		"Accepted: 250 2.0.0 Prescription RX-",
		info.Pharmacy2.Address + ": INBOX holds 1 message(s)",
		"signature verified",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo claim output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NOT VALID") {
		t.Errorf("a claimed copy does not verify:\n%s", out)
	}
	number := out[strings.Index(out, "INBOX: ")+len("INBOX: "):]
	number = number[:strings.IndexByte(number, ' ')]

	// A wrong INS is refused, with the reply in the error.
	code, _, errOut = runCmd(t, "", "demo", "claim", "-data", dir, "-number", number, "-ins", "284037512345600")
	if code != 1 || !strings.Contains(errOut, "claim refused") || !strings.Contains(errOut, "554") {
		t.Errorf("bad INS: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCmd(t, "", "demo", "claim", "-data", dir, "-user", "nobody@example.org"); code != 2 || !strings.Contains(errOut, "not a demo account") {
		t.Errorf("unknown user: exit %d %q", code, errOut)
	}

	// rx show reads the store: the relay must be stopped.
	stop()
	code, out, errOut = runCmd(t, "", "rx", "show", "-data", dir, number)
	if code != 0 {
		t.Fatalf("rx show: exit %d %s", code, errOut)
	}
	if !strings.Contains(out, "claimed     by "+info.Pharmacy2.Address+", ") || !strings.Contains(out, "(filed in its INBOX as UID 1)") {
		t.Errorf("rx show does not list the claim:\n%s", out)
	}
}

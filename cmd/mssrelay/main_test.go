package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/store"
)

func runCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageAndVersion(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"version"}, 0, "mssrelay dev"},
		{[]string{"help"}, 0, "Usage:"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"check-config"}, 2, "exactly one config file"},
		{[]string{"demo"}, 2, "expected a subcommand"},
		{[]string{"demo", "dance"}, 2, "unknown demo subcommand"},
		{[]string{"rx"}, 2, "rx show NUMBER"},
		{[]string{"serve", "extra"}, 2, "unexpected argument"},
	}
	for _, tc := range cases {
		code, out, errOut := runCmd(t, "", tc.args...)
		if code != tc.code || !strings.Contains(out+errOut, tc.want) {
			t.Errorf("%v: exit %d, output %q%q; want exit %d containing %q", tc.args, code, out, errOut, tc.code, tc.want)
		}
	}
}

func TestHashPassword(t *testing.T) {
	code, out, errOut := runCmd(t, "correct horse battery\n", "hash-password")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	acct := configs.Account{PasswordHash: strings.TrimSpace(out)}
	if !acct.CheckPassword("correct horse battery") || acct.CheckPassword("correct horse") {
		t.Errorf("hash %q does not check the password it was made from", out)
	}
	if code, _, _ := runCmd(t, "\n", "hash-password"); code != 2 {
		t.Errorf("empty password: exit %d, want 2", code)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := demo.Ensure(dir, demo.DefaultPorts()); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, demo.ConfigFile)
	code, out, errOut := runCmd(t, "", "check-config", good)
	if code != 0 || !strings.Contains(out, "OK (3 accounts") {
		t.Fatalf("check-config on the demo config: exit %d, %q %q", code, out, errOut)
	}

	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, append(b, []byte("\n[server2]\nx = 1\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd(t, "", "check-config", bad)
	if code != 1 || !strings.Contains(errOut, "bad.toml:") || !strings.Contains(errOut, "server2") {
		t.Errorf("check-config on a bad file: exit %d, %q", code, errOut)
	}
}

// TestRxShow files a real signed prescription into a demo store and reads
// it back with `rx show`; clinical content appears only with -content.
func TestRxShow(t *testing.T) {
	dir := t.TempDir()
	info, _, err := demo.Ensure(dir, demo.DefaultPorts())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := info.Signer()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rx := demo.SamplePrescription(now)
	rx.Delivery = "messaging-only"
	msg, err := demo.Compose(kp, info.Prescriber.Address, info.Pharmacy.Address, "Ordonnance", rx.Content(), now)
	if err != nil {
		t.Fatal(err)
	}
	fileDirectly(t, dir, info, rx, msg, msg, now)

	code, out, errOut := runCmd(t, "", "rx", "show", "-data", dir, rx.Number)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"prescription " + rx.Number, "messaging-only", "INBOX of " + info.Pharmacy.Address, info.Prescriber.Address} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, rx.PatientINS) || strings.Contains(out, "Amoxicilline") {
		t.Errorf("clinical content shown without -content:\n%s", out)
	}
	code, out, _ = runCmd(t, "", "rx", "show", "-data", dir, "-content", rx.Number)
	if code != 0 || !strings.Contains(out, rx.PatientINS) || !strings.Contains(out, "Amoxicilline") {
		t.Errorf("-content: exit %d\n%s", code, out)
	}
	if code, _, errOut := runCmd(t, "", "rx", "show", "-data", dir, "RX-NOPE"); code != 1 || !strings.Contains(errOut, "no prescription") {
		t.Errorf("unknown number: exit %d %q", code, errOut)
	}
}

// TestDemoReused: a second start reuses the demo's directory as it is.
func TestDemoReused(t *testing.T) {
	dir := t.TempDir()
	first, created, err := demo.Ensure(dir, demo.DefaultPorts())
	if err != nil || !created {
		t.Fatalf("first Ensure: created=%v err=%v", created, err)
	}
	second, created, err := demo.Ensure(dir, demo.DefaultPorts())
	if err != nil || created {
		t.Fatalf("second Ensure: created=%v err=%v", created, err)
	}
	if first.Prescriber.Password != second.Prescriber.Password || first.RootCA != second.RootCA {
		t.Error("second run did not reuse the demo's accounts and PKI")
	}
}

// fileDirectly files msg, a prescription from the demo prescriber to the
// demo pharmacy, straight into the store of the demo in dir (the relay
// not running), as the relay's intake would; digest is what the filing's
// digest covers.
func fileDirectly(t *testing.T, dir string, info *demo.Info, rx mime.Sample, msg, digest []byte, now time.Time) {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.File(context.Background(), &store.Filing{
		Raw: msg, Received: now, Sender: info.Prescriber.Address, Recipients: []string{info.Pharmacy.Address},
		Number: rx.Number, Digest: sha256.Sum256(digest), Signer: info.Prescriber.Address, IDNPS: "8" + demo.PrescriberRPPS,
		PatientINS: rx.PatientINS, Delivery: rx.Delivery,
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

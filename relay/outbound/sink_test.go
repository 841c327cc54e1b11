package outbound

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// smtpSink finds Postfix's smtp-sink (installed by .ci/run with the
// postfix package): a real, independent SMTP server that offers no
// STARTTLS.
func smtpSink(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"smtp-sink", "/usr/sbin/smtp-sink"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("smtp-sink not installed (CI installs postfix)")
	}
	t.Skip("smtp-sink not installed (Debian package postfix)")
	return ""
}

// TestPlaintextPeerGetsNothing: a copy of a prescription never travels in
// clear text. Against Postfix's smtp-sink, which does not offer STARTTLS,
// the attempt fails before MAIL (transient: the peer may fix its
// configuration) and the sink records no transaction.
func TestPlaintextPeerGetsNothing(t *testing.T) {
	bin := smtpSink(t)
	dump := t.TempDir()
	if err := os.Chmod(dump, 0o777); err != nil { // smtp-sink drops to nobody when run as root
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"-d", filepath.Join(dump, "%M."), "-h", "sink.example.test"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	cmd := exec.Command(bin, append(args, addr, "10")...)
	out, _ := os.Create(filepath.Join(t.TempDir(), "sink.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); out.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(out.Name())
			t.Fatalf("smtp-sink not listening on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}

	f := newFixture(t)
	_, err = f.dialer().Send(context.Background(), []string{addr}, sender, recipient, signedMessage(t))
	var e *Error
	if !errors.As(err, &e) || e.Stage != StageSTARTTLS || e.Permanent || IsPermanent(err) {
		t.Fatalf("Send to a plaintext peer: %v, want a transient STARTTLS failure", err)
	}
	files, err := os.ReadDir(dump)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 0 {
		t.Errorf("smtp-sink recorded %d transactions; nothing may be sent without TLS", len(files))
	}
}

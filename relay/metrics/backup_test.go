package metrics

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mssrelay/store"
)

// backupStore is a real store in a temp data directory with a few filings
// and audit events.
func backupStore(t *testing.T) (*store.Store, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "mssrelay.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for i := 1; i <= 3; i++ {
		raw := []byte(fmt.Sprintf("From: dr@example.org\r\n\r\nprescription %d\r\n", i))
		if _, err := st.File(context.Background(), &store.Filing{
			Raw: raw, Sender: "dr@example.org", Recipients: []string{"pharma@example.org"},
			Number: fmt.Sprintf("RX-%d", i), Digest: sha256.Sum256(raw),
			Audit: []store.AuditEvent{{Kind: store.AuditSMTPAccept, Outcome: "250"}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	return st, dir
}

func staged(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".admin-backup-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestBackupEndpoint fetches a backup from a real store over a loopback
// HTTP server, as `mssrelay backup` does, and checks the copy is the
// database: it verifies, holds the records and the same audit head.
func TestBackupEndpoint(t *testing.T) {
	st, dir := backupStore(t)
	tok, err := NewBackupToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	type done struct {
		remote string
		n      int64
		err    error
	}
	// Done runs on the server's goroutine, after the last byte was
	// written: the client may see the end of the body first.
	dones := make(chan done, 4)
	srv := httptest.NewServer(Handler(New(Sources{Store: st}), HandlerOptions{Backup: &BackupOptions{
		Snapshot: st.Backup, Dir: dir, Token: tok,
		Done: func(remote string, n int64, err error) { dones <- done{remote, n, err} },
	}}))
	defer srv.Close()

	read, err := ReadBackupToken(dir)
	if err != nil || read != tok {
		t.Fatalf("ReadBackupToken = %q, %v", read, err)
	}
	out := filepath.Join(t.TempDir(), "copy.db")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	n, err := FetchBackup(context.Background(), nil, srv.URL, read, f)
	if cerr := f.Close(); err != nil || cerr != nil {
		t.Fatalf("FetchBackup: %v %v", err, cerr)
	}
	info, err := store.VerifyFile(out)
	if err != nil {
		t.Fatalf("the fetched backup does not verify: %v", err)
	}
	if info.Size != n || info.Records != 3 || info.AuditRecords != 3 {
		t.Errorf("fetched %d bytes, backup %+v", n, info)
	}
	if _, head, _ := st.AuditHead(); head != info.AuditHead {
		t.Error("the backup's audit head is not the store's")
	}
	copyStore, err := store.Open(out, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := copyStore.RecordByNumber("RX-2")
	copyStore.Close()
	if err != nil || rec.Sender != "dr@example.org" {
		t.Errorf("record in the copy: %+v, %v", rec, err)
	}
	srv.Close() // waits for the handler to return
	if s := staged(t, dir); len(s) != 0 {
		t.Errorf("staging files left in the data directory: %v", s)
	}
	if d := <-dones; d.err != nil || d.n != n || !strings.HasPrefix(d.remote, "127.0.0.1:") || len(dones) != 0 {
		t.Errorf("Done called with %+v (%d more calls)", d, len(dones))
	}
}

// TestBackupEndpointRefusals: the route exists only when configured, and
// then only for loopback clients holding the token, one at a time.
func TestBackupEndpointRefusals(t *testing.T) {
	st, dir := backupStore(t)
	const tok = "s3cret-token"
	opts := &BackupOptions{Snapshot: st.Backup, Dir: dir, Token: tok}
	on := Handler(nil, HandlerOptions{Backup: opts})
	cases := []struct {
		name, method, remote, auth string
		h                          http.Handler
		code                       int
		contains                   string
	}{
		{"disabled", "POST", "127.0.0.1:5000", "Bearer " + tok, Handler(nil, HandlerOptions{}), 404, ""},
		{"no token configured", "POST", "127.0.0.1:5000", "Bearer ", Handler(nil, HandlerOptions{Backup: &BackupOptions{Snapshot: st.Backup, Dir: dir}}), 404, ""},
		{"no staging dir", "POST", "127.0.0.1:5000", "Bearer " + tok, Handler(nil, HandlerOptions{Backup: &BackupOptions{Snapshot: st.Backup, Token: tok}}), 404, ""},
		{"GET", "GET", "127.0.0.1:5000", "Bearer " + tok, on, 405, ""},
		{"remote client", "POST", "192.0.2.7:5000", "Bearer " + tok, on, 403, "loopback clients only"},
		{"IPv4-mapped remote", "POST", "[::ffff:192.0.2.7]:5000", "Bearer " + tok, on, 403, ""},
		{"no authorization", "POST", "127.0.0.1:5000", "", on, 401, BackupTokenFile},
		{"wrong token", "POST", "[::1]:5000", "Bearer nope", on, 401, ""},
		{"basic auth", "POST", "127.0.0.1:5000", "Basic " + tok, on, 401, ""},
		{"token prefix", "POST", "127.0.0.1:5000", "Bearer " + tok[:4], on, 401, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, "/backup", nil)
			req.RemoteAddr = c.remote
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			rec := httptest.NewRecorder()
			c.h.ServeHTTP(rec, req)
			if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.contains) {
				t.Errorf("%d %q, want %d containing %q", rec.Code, rec.Body.String(), c.code, c.contains)
			}
			if rec.Code != 200 && rec.Body.Len() > 1000 {
				t.Error("a refused request got a body that looks like a database")
			}
		})
	}
	// The index lists the route only when it is served.
	if _, body := get(t, on, "GET", "/"); !strings.Contains(body, "/backup") {
		t.Errorf("index %q does not list /backup", body)
	}
	if _, body := get(t, Handler(nil, HandlerOptions{}), "GET", "/"); strings.Contains(body, "/backup") {
		t.Errorf("index %q lists a disabled /backup", body)
	}
}

// TestBackupEndpointBusyAndFailure: a second backup while one is staged
// gets 409; a snapshot that fails gets 500 and leaves no staging file.
func TestBackupEndpointBusyAndFailure(t *testing.T) {
	dir := t.TempDir()
	entered, release := make(chan struct{}), make(chan struct{})
	fail := errors.New("disk full")
	snap := func(w io.Writer) (int64, error) {
		close(entered)
		<-release
		_, _ = w.Write([]byte("partial"))
		return 7, fail
	}
	h := Handler(nil, HandlerOptions{Backup: &BackupOptions{Snapshot: snap, Dir: dir, Token: "t"}})
	post := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/backup", nil)
		req.RemoteAddr = "127.0.0.1:4000"
		req.Header.Set("Authorization", "Bearer t")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- post() }()
	<-entered
	if rec := post(); rec.Code != http.StatusConflict {
		t.Errorf("concurrent backup: %d %q, want 409", rec.Code, rec.Body.String())
	}
	if len(staged(t, dir)) != 1 {
		t.Errorf("staging files while a backup runs: %v", staged(t, dir))
	}
	close(release)
	rec := <-first
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "partial") {
		t.Errorf("failed snapshot: %d %q, want 500 without data", rec.Code, rec.Body.String())
	}
	if s := staged(t, dir); len(s) != 0 {
		t.Errorf("staging files left after a failure: %v", s)
	}
}

// TestFetchBackupChecks: the client refuses a transfer that does not
// match what the relay announced.
func TestFetchBackupChecks(t *testing.T) {
	body := []byte("database bytes")
	good := sha256.Sum256(body)
	cases := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"refused", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "backup needs the token", http.StatusUnauthorized)
		}, "401 Unauthorized: backup needs the token"},
		{"wrong checksum", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(BackupSHA256Header, strings.Repeat("0", 64))
			_, _ = w.Write(body)
		}, "SHA-256"},
		{"no checksum", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(body)
		}, "SHA-256"},
		{"cut short", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(BackupSHA256Header, hex.EncodeToString(good[:]))
			w.Header().Set("Content-Length", "100")
			_, _ = w.Write(body)
		}, "backup transfer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.handler)
			defer srv.Close()
			var got bytes.Buffer
			_, err := FetchBackup(context.Background(), nil, srv.URL, "tok", &got)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("FetchBackup: %v; want an error containing %q", err, c.want)
			}
		})
	}
}

func TestBackupToken(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadBackupToken(dir); err == nil {
		t.Error("ReadBackupToken without a token file succeeded")
	}
	a, err := NewBackupToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBackupToken(dir)
	if err != nil || a == b || len(b) != 64 {
		t.Fatalf("tokens %q %q, %v: want two distinct 256-bit tokens", a, b, err)
	}
	fi, err := os.Stat(filepath.Join(dir, BackupTokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file %v, %v: want mode 0600", fi, err)
	}
	if got, err := ReadBackupToken(dir); err != nil || got != b {
		t.Errorf("ReadBackupToken = %q, %v; want the latest token", got, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("token directory holds %d files", len(ents))
	}
}

func TestAdminBaseURL(t *testing.T) {
	for _, c := range []struct{ listen, want string }{
		{"127.0.0.1:9187", "http://127.0.0.1:9187"},
		{":9187", "http://127.0.0.1:9187"},
		{"0.0.0.0:9187", "http://127.0.0.1:9187"},
		{"[::]:9187", "http://[::1]:9187"},
		{"[::1]:9187", "http://[::1]:9187"},
		{"localhost:9187", "http://localhost:9187"},
	} {
		if got, err := AdminBaseURL(c.listen); err != nil || got != c.want {
			t.Errorf("AdminBaseURL(%q) = %q, %v; want %q", c.listen, got, err, c.want)
		}
	}
	if _, err := AdminBaseURL("9187"); err == nil {
		t.Error("AdminBaseURL without a port separator succeeded")
	}
}

func TestCtxWriterStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var buf bytes.Buffer
	w := &ctxWriter{ctx: ctx, w: &buf}
	if _, err := w.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.Write([]byte("b")); !errors.Is(err, context.Canceled) || buf.String() != "a" {
		t.Errorf("write after cancel: %v, buffer %q", err, buf.String())
	}
}

// TestBackupOutlivesWriteTimeout: staging a large database takes longer
// than the admin server's WriteTimeout; the handler lifts the deadline
// while staging and sets one per chunk, so the backup still arrives.
func TestBackupOutlivesWriteTimeout(t *testing.T) {
	st, dir := backupStore(t)
	slow := func(w io.Writer) (int64, error) {
		// Five times the server's write timeout below: without the
		// handler's own deadlines the response could not be written.
		time.Sleep(250 * time.Millisecond)
		return st.Backup(w)
	}
	srv := httptest.NewUnstartedServer(Handler(nil, HandlerOptions{Backup: &BackupOptions{Snapshot: slow, Dir: dir, Token: "t"}}))
	srv.Config.WriteTimeout = 50 * time.Millisecond
	srv.Start()
	defer srv.Close()
	var buf bytes.Buffer
	n, err := FetchBackup(context.Background(), nil, srv.URL, "t", &buf)
	if err != nil || n == 0 || int64(buf.Len()) != n {
		t.Fatalf("FetchBackup through a 50ms WriteTimeout: %d bytes, %v", n, err)
	}
}

package metrics

// POST /backup: a hot backup of the store from a running relay.
//
// bbolt lets one process open the database, so while the relay runs
// `mssrelay backup` cannot read it and asks the relay instead. The
// snapshot is written by one read transaction into a staging file in the
// data directory (local disk, fast), and only then, with the transaction
// closed, streamed to the client: a slow or stalled client never holds a
// read transaction open (LIBRARY-NOTES: that blocks the writer's remaps).
//
// The response is the whole database, health data included, while the
// admin endpoint has no authentication of its own. So the backup route
// demands two things more than the other routes:
//
//   - a bearer token that the relay writes at each start into the data
//     directory (BackupTokenFile, mode 0600): whoever can read it can read
//     the database file anyway;
//   - a client on the loopback interface, even when admin.allow_remote
//     lets other routes be reached from elsewhere: plain HTTP must not
//     carry the database off the host.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BackupTokenFile is the name, in the data directory, of the file holding
// the token that POST /backup requires.
const BackupTokenFile = "admin-backup.token"

// BackupSHA256Header carries the hex SHA-256 of the snapshot in the
// response, so that the client can check what it received end to end.
const BackupSHA256Header = "X-Mssrelay-Backup-Sha256"

// Backup stream bounds: the write deadline is pushed forward by
// backupChunkDeadline for every backupChunk sent, so a large database
// streams for as long as it takes while a client that stops reading is
// dropped.
const (
	backupChunk         = 1 << 20
	backupChunkDeadline = time.Minute
)

// BackupOptions enable POST /backup. Snapshot, Dir and Token are all
// required: without any of them the route is not served (404).
type BackupOptions struct {
	// Snapshot writes a consistent copy of the database to w
	// ((*store.Store).Backup).
	Snapshot func(w io.Writer) (int64, error)
	// Dir is where the snapshot is staged before it is sent: the data
	// directory (same disk as the store, same permissions; it needs free
	// space for one copy of the database).
	Dir string
	// Token must be presented as "Authorization: Bearer <Token>"
	// (NewBackupToken).
	Token string
	// Done, when set, is called after each request that passed the checks,
	// with the client's address, the bytes sent and the error if any
	// (the relay's audit trail). Failures are also logged to
	// HandlerOptions.Log.
	Done func(remote string, n int64, err error)
}

// NewBackupToken makes a random token, writes it to dir/BackupTokenFile
// (mode 0600, replacing an older one atomically) and returns it.
func NewBackupToken(dir string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("backup token: %w", err)
	}
	tok := hex.EncodeToString(b)
	f, err := os.CreateTemp(dir, "."+BackupTokenFile+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("backup token: %w", err)
	}
	_, err = f.WriteString(tok + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, BackupTokenFile))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("backup token: %w", err)
	}
	return tok, nil
}

// ReadBackupToken reads the token a running relay wrote in dir.
func ReadBackupToken(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, BackupTokenFile))
	if err != nil {
		return "", fmt.Errorf("backup token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("backup token: %s is empty", filepath.Join(dir, BackupTokenFile))
	}
	return tok, nil
}

// backupHandler serves POST /backup.
type backupHandler struct {
	opts BackupOptions
	log  *slog.Logger
	busy sync.Mutex // one backup at a time: each stages a full copy
}

func (h *backupHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !loopbackPeer(r.RemoteAddr) {
		plain(w, http.StatusForbidden, "backup is served to loopback clients only: run mssrelay backup on the relay's host")
		return
	}
	if !h.authorized(r.Header.Get("Authorization")) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mssrelay backup"`)
		plain(w, http.StatusUnauthorized, "backup needs the token from "+BackupTokenFile+" in the data directory")
		return
	}
	if !h.busy.TryLock() {
		plain(w, http.StatusConflict, "a backup is already running")
		return
	}
	defer h.busy.Unlock()
	n, err := h.serve(w, r)
	if err != nil && h.log != nil {
		h.log.Error("backup failed", "remote", r.RemoteAddr, "bytes", n, "err", err)
	}
	if h.opts.Done != nil {
		h.opts.Done(r.RemoteAddr, n, err)
	}
}

func (h *backupHandler) authorized(header string) bool {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	// An empty configured token must not match an empty presented one.
	return ok && h.opts.Token != "" && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(h.opts.Token)) == 1
}

// serve stages the snapshot and streams it; it returns the bytes sent.
func (h *backupHandler) serve(w http.ResponseWriter, r *http.Request) (int64, error) {
	rc := http.NewResponseController(w)
	// No deadline while the snapshot is staged (the client waits for the
	// headers); deadlines per chunk once it streams.
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, fmt.Errorf("clear write deadline: %w", err)
	}
	f, err := os.CreateTemp(h.opts.Dir, ".admin-backup-*")
	if err != nil {
		plain(w, http.StatusInternalServerError, "backup failed: cannot stage the snapshot")
		return 0, fmt.Errorf("stage backup: %w", err)
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	sum := sha256.New()
	size, err := h.opts.Snapshot(&ctxWriter{ctx: r.Context(), w: io.MultiWriter(f, sum)})
	if err != nil {
		plain(w, http.StatusInternalServerError, "backup failed: the snapshot could not be written (see the relay's log)")
		return 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		plain(w, http.StatusInternalServerError, "backup failed: cannot read the staged snapshot")
		return 0, fmt.Errorf("stage backup: %w", err)
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.FormatInt(size, 10))
	hd.Set("Content-Disposition", `attachment; filename="mssrelay-backup.db"`)
	hd.Set("Cache-Control", "no-store")
	hd.Set(BackupSHA256Header, hex.EncodeToString(sum.Sum(nil)))
	w.WriteHeader(http.StatusOK)
	var sent int64
	buf := make([]byte, backupChunk)
	for {
		if err := rc.SetWriteDeadline(time.Now().Add(backupChunkDeadline)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return sent, fmt.Errorf("set write deadline: %w", err)
		}
		k, rerr := f.Read(buf)
		if k > 0 {
			wk, werr := w.Write(buf[:k])
			sent += int64(wk)
			if werr != nil {
				return sent, fmt.Errorf("send backup: %w", werr)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return sent, fmt.Errorf("read staged backup: %w", rerr)
		}
	}
	if sent != size {
		return sent, fmt.Errorf("sent %d bytes of a %d-byte snapshot", sent, size)
	}
	return sent, nil
}

// ctxWriter fails once ctx is done, so that a client that hangs up (or a
// server closing) ends the snapshot's read transaction early.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// loopbackPeer reports whether a request's RemoteAddr is on loopback.
func loopbackPeer(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// AdminBaseURL turns admin.listen into the URL a client on the same host
// uses: a wildcard host (every interface) becomes the loopback address of
// its family.
func AdminBaseURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("admin.listen %q: %w", listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// FetchBackup asks a running relay's admin endpoint (baseURL, see
// AdminBaseURL) for a snapshot and writes it to w. It checks the length
// and the SHA-256 the relay announced; an error means w holds no usable
// backup. The relay stages the whole snapshot before answering, so the
// wait for the response headers grows with the database.
func FetchBackup(ctx context.Context, client *http.Client, baseURL, token string, w io.Writer) (int64, error) {
	if client == nil {
		client = &http.Client{Transport: &http.Transport{
			Proxy:                 nil, // never through a proxy: the admin endpoint is local
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ResponseHeaderTimeout: 30 * time.Minute,
		}}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(baseURL, "/")+"/backup", nil)
	if err != nil {
		return 0, fmt.Errorf("backup request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("backup request to %s: %w", baseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return 0, fmt.Errorf("backup request to %s: %s: %s", baseURL, resp.Status, strings.TrimSpace(string(msg)))
	}
	want := resp.Header.Get(BackupSHA256Header)
	var sum hash.Hash = sha256.New()
	n, err := io.Copy(io.MultiWriter(w, sum), resp.Body)
	if err != nil {
		return n, fmt.Errorf("backup transfer after %d bytes: %w", n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("backup transfer: %d bytes received, %d announced", n, resp.ContentLength)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); want == "" || got != want {
		return n, fmt.Errorf("backup transfer: SHA-256 %s, the relay announced %q", got, want)
	}
	return n, nil
}

func backupEnabled(o *BackupOptions) bool {
	return o != nil && o.Snapshot != nil && o.Dir != "" && o.Token != ""
}

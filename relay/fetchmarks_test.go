package relay

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"mssrelay/store"
)

// TestFetchMarksAfterClose: a session that outlived the shutdown drain
// may still report a fetch; it is dropped, not a panic.
func TestFetchMarksAfterClose(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "m.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f := newFetchMarks(st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.record("a@example.org", []uint64{1})
	f.close()
	f.record("a@example.org", []uint64{1}) // must not panic
	f.close()                              // idempotent
}

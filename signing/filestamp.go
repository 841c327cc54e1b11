package signing

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// racyWindow is how recent a file's modification time may be, when it is
// read, for its stamp to be trusted. Some file systems keep timestamps to
// the second (FAT: two seconds): a file rewritten with the same size within
// the same tick as the stamp would look unchanged. A stamp taken inside the
// window is marked racy and reported as changed once more, so the file is
// read again after the tick has passed (the "racy git" problem and its
// answer).
const racyWindow = 2 * time.Second

// fileStamp identifies one version of a file without reading it: a CRL can
// be megabytes, and Changed runs every reload interval.
type fileStamp struct {
	path  string
	size  int64
	mtime int64 // UnixNano
	dev   uint64
	ino   uint64 // a new inode: the file was replaced (rename, symlink swap)
	ctime int64  // inode change time where the system has one; 0 elsewhere
	racy  bool
}

func stampOf(path string, fi fs.FileInfo, readAt time.Time) fileStamp {
	s := fileStamp{path: path, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	s.dev, s.ino, s.ctime = sysStat(fi)
	// A modification time far from now (a file copied with its times from
	// a machine whose clock is off) is no race: the next write gets a time
	// near now, which differs.
	d := readAt.Sub(fi.ModTime())
	s.racy = d < racyWindow && d > -racyWindow
	return s
}

// same reports whether two stamps of one path describe the same version.
func (s fileStamp) same(o fileStamp) bool {
	return s.size == o.size && s.mtime == o.mtime && s.dev == o.dev && s.ino == o.ino && s.ctime == o.ctime
}

// readStamped reads a regular file of at most maxPEMFileSize bytes and
// stamps the version it read. The stamp comes from the open descriptor,
// before reading: a write that lands during the read changes the file's
// times after the stamp, so the next Changed reports it.
func readStamped(path string, now time.Time) ([]byte, fileStamp, error) {
	// Refuse a FIFO or a device before opening it: opening a FIFO blocks
	// until a writer comes.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fileStamp{}, fmt.Errorf("%s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fileStamp{}, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, fileStamp{}, fmt.Errorf("stat %s: %w", path, err)
	}
	stamp := stampOf(path, fi, now)
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFileSize+1))
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxPEMFileSize {
		return nil, fileStamp{}, fmt.Errorf("%s: larger than %d bytes", path, maxPEMFileSize)
	}
	return data, stamp, nil
}

// Changed reports whether a file given to LoadTrust or LoadTrustWith
// (anchors, intermediates, CRLs, CRL-optional issuers) changed since the
// material in force was read: another size, modification time, inode
// change time or inode (replaced by rename or a symlink swap), or the file
// is gone. Files are only stat'ed, never read, so the relay may call it
// every few seconds; when it reports true, the relay calls Reload.
//
// After a failed Reload the material in force is still the older one, so
// Changed goes on reporting true: the poller retries, and logs the error,
// until the files are fixed. A file read within two seconds of its last
// modification is reported changed once more (see racyWindow). For a Trust
// made by NewTrust, Changed is always false.
func (t *Trust) Changed() (bool, error) {
	st := t.state.Load()
	now := t.now()
	for _, s := range st.stamps {
		if s.racy {
			return true, nil
		}
		fi, err := os.Stat(s.path)
		if errors.Is(err, fs.ErrNotExist) {
			// Reload will fail and say so: report the change so it is tried.
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("trust: checking %s: %w", s.path, err)
		}
		if !s.same(stampOf(s.path, fi, now)) {
			return true, nil
		}
	}
	return false, nil
}

// now is the clock of the racy-stamp check; tests replace it.
func (t *Trust) now() time.Time {
	if t.clock != nil {
		return t.clock()
	}
	return time.Now()
}

// ReloadIfChanged is one tick of the relay's poll: it reloads when Changed
// reports a change. reloaded says whether new material is now in force; on
// error the previous material stays (see Reload).
func (t *Trust) ReloadIfChanged() (reloaded bool, err error) {
	changed, err := t.Changed()
	if err != nil || !changed {
		return false, err
	}
	if err := t.Reload(); err != nil {
		return false, err
	}
	return true, nil
}

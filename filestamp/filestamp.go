// Package filestamp tells whether a file changed without reading it: the
// relay polls its trust files, CRLs and the operators' whitelist every few
// seconds, and re-reads one only when its stamp moved.
package filestamp

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// RacyWindow is how recent a file's modification time may be, when it is
// read, for its stamp to be trusted. Some file systems keep timestamps to
// the second (FAT: two seconds): a file rewritten with the same size within
// the same tick as the stamp would look unchanged. A stamp taken inside the
// window is marked racy, and callers treat it as changed once more so that
// the file is read again after the tick has passed (the "racy git"
// problem and its answer).
const RacyWindow = 2 * time.Second

// Stamp identifies one version of a file. The zero Stamp stands for "no
// file" and is Same only as another zero Stamp.
type Stamp struct {
	Path  string
	size  int64
	mtime int64 // UnixNano
	dev   uint64
	ino   uint64 // a new inode: the file was replaced (rename, symlink swap)
	ctime int64  // inode change time where the system has one; 0 elsewhere
	// Racy: the file was modified within RacyWindow of the stamp.
	Racy bool
}

// Of stamps fi, the information of path, read at readAt.
func Of(path string, fi fs.FileInfo, readAt time.Time) Stamp {
	s := Stamp{Path: path, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	s.dev, s.ino, s.ctime = sysStat(fi)
	// A modification time far from now (a file copied with its times from
	// a machine whose clock is off) is no race: the next write gets a time
	// near now, which differs.
	d := readAt.Sub(fi.ModTime())
	s.Racy = d < RacyWindow && d > -RacyWindow
	return s
}

// Stat stamps path as it is now.
func Stat(path string, now time.Time) (Stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Stamp{}, err
	}
	return Of(path, fi, now), nil
}

// Same reports whether two stamps describe the same version.
func (s Stamp) Same(o Stamp) bool {
	return s.size == o.size && s.mtime == o.mtime && s.dev == o.dev && s.ino == o.ino && s.ctime == o.ctime
}

// Read reads a regular file of at most limit bytes and stamps the version
// it read. The stamp comes from the open descriptor, before reading: a
// write that lands during the read changes the file's times after the
// stamp, so the next poll reports it. A FIFO or a device is refused before
// it is opened (opening a FIFO blocks until a writer comes).
func Read(path string, limit int64, now time.Time) ([]byte, Stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, Stamp{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, Stamp{}, fmt.Errorf("%s: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, Stamp{}, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, Stamp{}, fmt.Errorf("stat %s: %w", path, err)
	}
	stamp := Of(path, fi, now)
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, Stamp{}, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, Stamp{}, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return data, stamp, nil
}

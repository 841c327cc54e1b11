package signing

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"mssrelay/filestamp"
)

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
// modification is reported changed once more (filestamp.RacyWindow). For a Trust
// made by NewTrust, Changed is always false.
func (t *Trust) Changed() (bool, error) {
	st := t.state.Load()
	now := t.now()
	for _, s := range st.stamps {
		if s.Racy {
			return true, nil
		}
		fi, err := os.Stat(s.Path)
		if errors.Is(err, fs.ErrNotExist) {
			// Reload will fail and say so: report the change so it is tried.
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("trust: checking %s: %w", s.Path, err)
		}
		if !s.Same(filestamp.Of(s.Path, fi, now)) {
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

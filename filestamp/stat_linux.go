package filestamp

import (
	"io/fs"
	"syscall"
)

// sysStat returns the device, inode and inode change time of fi. The
// change time cannot be set by a user (touch -r, cp -p restore mtime, not
// ctime): it catches a same-size rewrite whose mtime was put back.
func sysStat(fi fs.FileInfo) (dev, ino uint64, ctime int64) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, 0
	}
	return uint64(st.Dev), st.Ino, st.Ctim.Nano()
}

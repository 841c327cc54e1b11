package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
)

// MaxConfigBytes bounds a config file. A real one is a few KiB; the bound
// keeps a wrong path (a log, a disk image) from being read whole.
const MaxConfigBytes = 1 << 20

// utf8BOM is stripped from the start of a file: some editors write it, TOML
// does not allow it, and refusing it would be unhelpful.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// Load reads, parses and validates a config file. Relative paths in it
// resolve against the file's directory. When the file itself is at fault
// the error is an Errors listing every problem with its line.
func Load(path string) (*Config, error) {
	data, err := readFileLimited(path, MaxConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	return Parse(path, filepath.Dir(path), data)
}

// Parse parses and validates config text; name is used in error messages
// and relative paths resolve against dir ("" means the current directory).
// Files the config names (certificate, key, trust anchors) are opened to
// check them. When the text is at fault the error is an Errors, sorted by
// line, at most MaxReportedErrors long.
func Parse(name, dir string, data []byte) (*Config, error) {
	errs := &collector{file: name}
	if len(data) > MaxConfigBytes {
		errs.add(position{}, "", "file is larger than %d bytes", MaxConfigBytes)
		return nil, errs.result()
	}
	if dir == "" {
		dir = "."
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("configs: resolving directory %q: %w", dir, err)
	}
	data = bytes.TrimPrefix(data, utf8BOM)

	// 1. Shape: syntax, unknown keys, value types, with positions.
	w := newWalker(data, errs)
	w.run()
	if !errs.empty() {
		// Go on with what is left, to report the problems of meaning in
		// the same run; not after a syntax error, which leaves nothing
		// reliable.
		if data = w.cleaned(); data == nil {
			return nil, errs.result()
		}
	}

	// 2. Decode. The walk accepted what is left, so this should not fail;
	// when it does (a TOML rule the walk does not model, such as an
	// integer beyond 64 bits) go-toml's own position is reported.
	var cfg Config
	if err := decode(data, &cfg); err != nil {
		addDecodeError(errs, err)
		return nil, errs.result()
	}
	cfg.File = name

	// 3. Meaning: defaults, paths, ranges, files, accounts.
	v := &validator{cfg: &cfg, defs: w.defs, bad: w.bad, errs: errs, dir: absDir}
	v.run()
	if !errs.empty() {
		return nil, errs.result()
	}
	return &cfg, nil
}

// decode runs go-toml's strict decoder.
func decode(data []byte, cfg *Config) (err error) {
	defer func() {
		// Third-party parser on untrusted text: a bug must not crash the
		// daemon.
		if r := recover(); r != nil {
			err = fmt.Errorf("TOML decoder failed: %v", r)
		}
	}()
	return toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(cfg)
}

func addDecodeError(errs *collector, err error) {
	var missing *toml.StrictMissingError
	var derr *toml.DecodeError
	switch {
	case errors.As(err, &missing):
		for i := range missing.Errors {
			e := &missing.Errors[i]
			line, col := e.Position()
			errs.add(position{line, col}, keyPath(e.Key()), "unknown key")
		}
	case errors.As(err, &derr):
		line, col := derr.Position()
		errs.add(position{line, col}, keyPath(derr.Key()), "%s", strings.TrimPrefix(derr.Error(), "toml: "))
	default:
		errs.add(position{}, "", "%v", err)
	}
}

// readFileLimited reads a regular file of at most max bytes. It refuses
// anything else before opening it: a FIFO or a device such as /dev/zero
// named by mistake would otherwise block or never end.
func readFileLimited(path string, max int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fileError(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fileError(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return data, nil
}

// fileError drops the name of the system call from a *fs.PathError:
// "stat /etc/x.pem: no such file or directory" reads as
// "/etc/x.pem: no such file or directory". The cause stays wrapped.
func fileError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

package configs

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// MaxReportedErrors is how many problems one Load or Parse reports. An
// administrator fixes them all in one pass; past this many the file is
// probably not a mssrelay config at all and a longer list would bury the
// first, most useful lines.
const MaxReportedErrors = 20

// maxCollectedErrors bounds the memory spent on a hostile or garbage input
// before sorting and truncating to MaxReportedErrors.
const maxCollectedErrors = 1000

// FieldError is one problem in a config file, located at the key that
// causes it.
type FieldError struct {
	File string // file name as given to Load or Parse
	Line int    // 1-based; 0 when the problem has no place in the file (a missing section)
	Col  int    // 1-based byte column; 0 when Line is 0
	Key  string // key path such as "tls.cert" or "account[2].address"; "" for syntax errors
	Msg  string // what is wrong, for a person
}

// Error renders "file:line:col: key: message", the form editors and
// terminals turn into a link to the line.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a config file, sorted by position, one
// per line when printed. Load and Parse return it (as error) whenever the
// file itself is at fault; retrieve it with errors.As.
type Errors []*FieldError

// Error joins the problems, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes each *FieldError to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// collector accumulates problems for one file.
type collector struct {
	file  string
	errs  []*FieldError
	total int
}

func (c *collector) add(p position, key, format string, args ...any) {
	c.total++
	if len(c.errs) >= maxCollectedErrors {
		return
	}
	c.errs = append(c.errs, &FieldError{
		File: c.file, Line: p.line, Col: p.col, Key: key,
		Msg: escapeControls(fmt.Sprintf(format, args...)),
	})
}

// escapeControls keeps a message on one line: messages quote values and
// paths from the file, and a path with a line break in it must not forge
// a second error line in the report.
func escapeControls(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isControl(r) {
			fmt.Fprintf(&b, `\u%04X`, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || r == 0x85 || r == 0x2028 || r == 0x2029 }

func (c *collector) empty() bool { return c.total == 0 }

// result sorts the problems by position (those without a line first, in the
// order found) and truncates the list to MaxReportedErrors, ending it with a
// line saying how many were left out.
func (c *collector) result() error {
	if c.total == 0 {
		return nil
	}
	errs := slices.Clone(c.errs)
	slices.SortStableFunc(errs, func(a, b *FieldError) int {
		if r := cmp.Compare(a.Line, b.Line); r != 0 {
			return r
		}
		return cmp.Compare(a.Col, b.Col)
	})
	if len(errs) > MaxReportedErrors {
		errs = errs[:MaxReportedErrors]
	}
	if more := c.total - len(errs); more > 0 {
		errs = append(errs, &FieldError{
			File: c.file,
			Msg:  fmt.Sprintf("too many errors: %d more not shown", more),
		})
	}
	return Errors(errs)
}

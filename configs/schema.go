package configs

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// The schema check walks the TOML syntax tree (go-toml's unstable parser)
// against the Config struct before anything is decoded. go-toml's decoder
// stops at the first value of the wrong type, and then forgets the unknown
// keys it had seen; walking the tree ourselves finds every unknown key and
// every mistyped value in one pass, each with its line, and records where
// every key is written so that the semantic checks can point at it too.

// position is a place in the config text; 1-based line and byte column.
type position struct{ line, col int }

// lineIndex holds the offset at which each line starts, so that an offset
// turns into a line:column in O(log n) (go-toml's Parser.Shape rescans from
// the start of the document on each call).
type lineIndex []int

func newLineIndex(data []byte) lineIndex {
	idx := lineIndex{0}
	for i, b := range data {
		if b == '\n' {
			idx = append(idx, i+1)
		}
	}
	return idx
}

func (li lineIndex) at(off int) position {
	if off < 0 {
		off = 0
	}
	// The number of line starts at or before off is the 1-based line.
	n := sort.Search(len(li), func(i int) bool { return li[i] > off })
	return position{line: n, col: off - li[n-1] + 1}
}

// defKind says how a key path came to be defined; TOML (v1.0.0, "Table")
// forbids defining a table or a key twice, and go-toml reports only the
// first such error, without the earlier place.
type defKind int

const (
	defHeader    defKind = iota // [table] or [[array]] header
	defImplicit                 // parent of a dotted key: a.b = 1 defines a
	defValue                    // key = value (including inline tables and arrays)
	defArrayElem                // one [[array]] element or array item
)

// def is where a key path is first written.
type def struct {
	pos  position
	kind defKind
}

// fieldKind is the TOML shape a Go field accepts.
type fieldKind int

const (
	kindUnsupported fieldKind = iota
	kindString
	kindInt
	kindBool
	kindText // a string decoded by encoding.TextUnmarshaler (Duration)
	kindStringList
	kindTable
	kindTableArray
)

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

func kindOf(t reflect.Type) fieldKind {
	if t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(textUnmarshalerType) {
		return kindText
	}
	switch t.Kind() {
	case reflect.String:
		return kindString
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return kindInt
	case reflect.Bool:
		return kindBool
	case reflect.Struct:
		return kindTable
	case reflect.Slice:
		switch kindOf(t.Elem()) {
		case kindString:
			return kindStringList
		case kindTable:
			return kindTableArray
		}
	}
	return kindUnsupported
}

// expected names what a field of kind k accepts, for error messages.
func expected(k fieldKind) string {
	switch k {
	case kindString:
		return "a string"
	case kindInt:
		return "an integer"
	case kindBool:
		return "true or false"
	case kindText:
		return `a quoted duration such as "60s" or "5m"`
	case kindStringList:
		return "an array of strings"
	case kindTable:
		return "a table"
	case kindTableArray:
		return "an array of tables"
	}
	return "nothing (this field cannot be set)"
}

// nodeKindName names a TOML value kind for error messages. It does not call
// unstable.Kind.String, which panics on kinds it does not know.
func nodeKindName(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "a string"
	case unstable.Integer:
		return "an integer"
	case unstable.Float:
		return "a float"
	case unstable.Bool:
		return "a boolean"
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "an inline table"
	case unstable.LocalDate, unstable.LocalTime, unstable.LocalDateTime, unstable.DateTime:
		return "a date/time"
	}
	return "an unexpected value"
}

// tomlName returns the key a struct field is written as, or "" when the
// field is not part of the file.
func tomlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// lookupField finds the field of struct type t written as name. TOML keys
// are case-sensitive (TOML v1.0.0, "Keys"), so unlike go-toml's decoder this
// does not fall back to a case-insensitive match: "Hostname" is an unknown
// key, not a synonym.
func lookupField(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if n := tomlName(f); n != "" && n == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// fieldNames lists the keys struct type t accepts, in declaration order.
func fieldNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		if n := tomlName(t.Field(i)); n != "" {
			names = append(names, n)
		}
	}
	return names
}

// keyPart is one part of a possibly dotted key.
type keyPart struct {
	name string
	pos  position
}

// walker checks one document against the Config schema.
type walker struct {
	data  []byte
	lines lineIndex
	errs  *collector
	root  reflect.Type

	// defs maps every key path written in the file ("tls.cert",
	// "account[2].address", "smtp.submission[0]") to where it is first
	// written.
	defs map[string]def
	// arrays counts the [[header]] elements seen per array path.
	arrays map[string]int

	// bad holds the key paths the walk refused, and blank the byte ranges
	// of their expressions. Blanking them (see cleaned) lets the rest of the
	// document be decoded and checked for meaning in the same run, so that
	// one run reports every problem; bad keeps the meaning checks from
	// reporting a refused key a second time, as missing.
	bad   map[string]bool
	blank []unstable.Range

	// cur is the path of the table the following key/values belong to, and
	// curType its struct type; curType is nil when the header was refused,
	// so that its keys are skipped rather than reported a second time.
	cur     string
	curType reflect.Type

	syntax bool // the document is not valid TOML
}

func newWalker(data []byte, errs *collector) *walker {
	return &walker{
		data:    data,
		lines:   newLineIndex(data),
		errs:    errs,
		root:    reflect.TypeFor[Config](),
		defs:    make(map[string]def),
		arrays:  make(map[string]int),
		bad:     make(map[string]bool),
		curType: reflect.TypeFor[Config](),
	}
}

// run walks the whole document. A syntax error ends the walk: the problems
// found before it are kept.
func (w *walker) run() {
	defer func() {
		// go-toml's parser is third-party code fed with untrusted text; a
		// bug in it must turn into a refused config, not a crashed daemon.
		if r := recover(); r != nil {
			w.errs.add(position{}, "", "TOML parser failed: %v", r)
			w.syntax = true
		}
	}()
	var p unstable.Parser
	p.Reset(w.data)
	for p.NextExpression() {
		e := p.Expression()
		before := w.errs.total
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			if e.Kind == unstable.Table {
				w.table(e)
			} else {
				w.arrayTable(e)
			}
			if w.curType == nil {
				// go-toml leaves headers without a range: blank the
				// header's line (a header cannot span lines).
				w.blank = append(w.blank, w.lineRange(e))
			}
		case unstable.KeyValue:
			if w.curType == nil {
				// Under a refused header: already reported there.
				w.blank = append(w.blank, e.Raw)
				continue
			}
			w.keyValue(w.cur, w.curType, e)
			if w.errs.total > before {
				w.blank = append(w.blank, e.Raw)
			}
		}
	}
	if err := p.Error(); err != nil {
		w.syntaxError(err)
		w.syntax = true
	}
}

// lineRange is the range of the line on which header e starts.
func (w *walker) lineRange(e *unstable.Node) unstable.Range {
	it := e.Key()
	if !it.Next() {
		return unstable.Range{}
	}
	off := int(it.Node().Raw.Offset)
	start := w.lines[w.lines.at(off).line-1]
	end := bytes.IndexByte(w.data[start:], '\n')
	if end < 0 {
		end = len(w.data) - start
	}
	return unstable.Range{Offset: uint32(start), Length: uint32(end)}
}

// cleaned returns a copy of the document with the refused expressions
// blanked out: every byte but line breaks becomes a space, so positions
// in the rest of the document do not move. It is nil after a syntax
// error, when the rest of the document cannot be trusted.
func (w *walker) cleaned() []byte {
	if w.syntax {
		return nil
	}
	out := bytes.Clone(w.data)
	for _, r := range w.blank {
		end := int(r.Offset) + int(r.Length)
		if end > len(out) {
			end = len(out)
		}
		for i := int(r.Offset); i < end; i++ {
			if out[i] != '\n' && out[i] != '\r' {
				out[i] = ' '
			}
		}
	}
	return out
}

func (w *walker) syntaxError(err error) {
	var perr *unstable.ParserError
	if !errors.As(err, &perr) {
		w.errs.add(position{}, "", "invalid TOML: %v", err)
		return
	}
	// The highlight is a subslice of the document: the difference of
	// capacities is its offset. Clamp rather than trust it.
	off := cap(w.data) - cap(perr.Highlight)
	if perr.Highlight == nil || off > len(w.data) {
		off = len(w.data)
	}
	w.errs.add(w.lines.at(off), keyPath(perr.Key), "invalid TOML: %s", perr.Message)
}

// offsetPos converts a node's range to a position; ok is false for nodes
// that carry no range (go-toml leaves arrays without one).
func (w *walker) rangePos(r unstable.Range) (position, bool) {
	if r.Offset == 0 && r.Length == 0 {
		return position{}, false
	}
	return w.lines.at(int(r.Offset)), true
}

func (w *walker) parts(n *unstable.Node) []keyPart {
	var parts []keyPart
	it := n.Key()
	for it.Next() {
		k := it.Node()
		// Key nodes always carry their range (a key is at least one byte).
		parts = append(parts, keyPart{name: string(k.Data), pos: w.lines.at(int(k.Raw.Offset))})
	}
	return parts
}

// fail reports a problem with the key at path and marks it refused.
func (w *walker) fail(p position, path, format string, args ...any) {
	w.bad[path] = true
	w.errs.add(p, path, format, args...)
}

func (w *walker) define(path string, p position, k defKind) {
	if _, ok := w.defs[path]; !ok {
		w.defs[path] = def{pos: p, kind: k}
	}
}

func (w *walker) unknown(path string, p position, t reflect.Type, name string) {
	names := fieldNames(t)
	if s := suggest(name, names); s != "" {
		w.fail(p, path, "unknown key; did you mean %s?", keyPathPart(s))
		return
	}
	w.fail(p, path, "unknown key; known keys here: %s", strings.Join(names, ", "))
}

// descend resolves parts as nested tables from (base, t), as a [table]
// header or the parents of a dotted key do. An array of tables resolves to
// its last element (TOML v1.0.0, "Array of Tables": [a.b] after [[a]]
// extends the last a).
func (w *walker) descend(base string, t reflect.Type, parts []keyPart, dotted bool) (string, reflect.Type, bool) {
	path := base
	for _, part := range parts {
		f, ok := lookupField(t, part.name)
		path = joinKey(path, part.name)
		if !ok {
			w.unknown(path, part.pos, t, part.name)
			return "", nil, false
		}
		switch kindOf(f.Type) {
		case kindTable:
			t = f.Type
			if dotted {
				if d, seen := w.defs[path]; seen && d.kind == defValue {
					w.fail(part.pos, path, "table already defined inline at line %d", d.pos.line)
					return "", nil, false
				}
				w.define(path, part.pos, defImplicit)
			}
		case kindTableArray:
			n := w.arrays[path]
			if dotted || n == 0 {
				w.fail(part.pos, path, "is an array of tables: write each element under its own [[%s]] header", path)
				return "", nil, false
			}
			path = fmt.Sprintf("%s[%d]", path, n-1)
			t = f.Type.Elem()
		default:
			w.fail(part.pos, path, "expected %s, not a table", expected(kindOf(f.Type)))
			return "", nil, false
		}
	}
	return path, t, true
}

// table handles a [table] header.
func (w *walker) table(e *unstable.Node) {
	w.curType = nil
	parts := w.parts(e)
	if len(parts) == 0 {
		return
	}
	parent, pt, ok := w.descend("", w.root, parts[:len(parts)-1], false)
	if !ok {
		return
	}
	last := parts[len(parts)-1]
	path := joinKey(parent, last.name)
	f, ok := lookupField(pt, last.name)
	if !ok {
		w.unknown(path, last.pos, pt, last.name)
		return
	}
	switch k := kindOf(f.Type); k {
	case kindTable:
	case kindTableArray:
		w.fail(last.pos, path, "is an array of tables: write [[%s]], not [%s]", path, path)
		return
	default:
		w.fail(last.pos, path, "expected %s, not a table", expected(k))
		return
	}
	if d, seen := w.defs[path]; seen {
		// Also after dotted keys: "tls.cert = ..." then "[tls]" is a
		// redefinition (TOML v1.0.0, "Table").
		w.fail(last.pos, path, "table defined twice (first at line %d)", d.pos.line)
		return
	}
	w.defs[path] = def{pos: last.pos, kind: defHeader}
	w.cur, w.curType = path, f.Type
}

// arrayTable handles a [[array]] header: a new element of an array of
// tables.
func (w *walker) arrayTable(e *unstable.Node) {
	w.curType = nil
	parts := w.parts(e)
	if len(parts) == 0 {
		return
	}
	parent, pt, ok := w.descend("", w.root, parts[:len(parts)-1], false)
	if !ok {
		return
	}
	last := parts[len(parts)-1]
	path := joinKey(parent, last.name)
	f, ok := lookupField(pt, last.name)
	if !ok {
		w.unknown(path, last.pos, pt, last.name)
		return
	}
	if k := kindOf(f.Type); k != kindTableArray {
		w.fail(last.pos, path, "expected %s, not an array of tables", expected(k))
		return
	}
	if d, seen := w.defs[path]; seen && d.kind != defHeader {
		w.fail(last.pos, path, "already defined as an array at line %d", d.pos.line)
		return
	}
	n := w.arrays[path]
	w.arrays[path] = n + 1
	w.define(path, last.pos, defHeader)
	elem := fmt.Sprintf("%s[%d]", path, n)
	w.define(elem, last.pos, defArrayElem)
	w.cur, w.curType = elem, f.Type.Elem()
}

// keyValue checks a key = value under table base of struct type t.
func (w *walker) keyValue(base string, t reflect.Type, e *unstable.Node) {
	parts := w.parts(e)
	if len(parts) == 0 {
		return
	}
	parent, pt, ok := w.descend(base, t, parts[:len(parts)-1], true)
	if !ok {
		return
	}
	last := parts[len(parts)-1]
	path := joinKey(parent, last.name)
	f, ok := lookupField(pt, last.name)
	if !ok {
		w.unknown(path, last.pos, pt, last.name)
		return
	}
	if d, seen := w.defs[path]; seen {
		w.fail(last.pos, path, "defined twice (first at line %d)", d.pos.line)
		return
	}
	w.defs[path] = def{pos: last.pos, kind: defValue}
	w.value(path, f.Type, e.Value(), last.pos)
}

// value checks that v has the shape Go type t accepts.
func (w *walker) value(path string, t reflect.Type, v *unstable.Node, keyPos position) {
	k := kindOf(t)
	at := keyPos
	if p, ok := w.rangePos(v.Raw); ok {
		at = p
	}
	mismatch := func(p position, key string, got unstable.Kind) {
		w.fail(p, key, "expected %s, got %s", expected(k), nodeKindName(got))
	}
	switch k {
	case kindString:
		if v.Kind != unstable.String {
			mismatch(at, path, v.Kind)
		}
	case kindInt:
		if v.Kind != unstable.Integer {
			mismatch(at, path, v.Kind)
		}
	case kindBool:
		if v.Kind != unstable.Bool {
			mismatch(at, path, v.Kind)
		}
	case kindText:
		if v.Kind != unstable.String {
			mismatch(at, path, v.Kind)
			return
		}
		u, ok := reflect.New(t).Interface().(encoding.TextUnmarshaler)
		if !ok {
			return
		}
		if err := u.UnmarshalText(v.Data); err != nil {
			w.fail(at, path, "%v; expected %s", err, expected(k))
		}
	case kindStringList:
		if v.Kind != unstable.Array {
			mismatch(at, path, v.Kind)
			return
		}
		w.arrayElems(path, v, keyPos, func(ep string, p position, c *unstable.Node) {
			if c.Kind != unstable.String {
				w.fail(p, ep, "expected a string, got %s", nodeKindName(c.Kind))
			}
		})
	case kindTable:
		if v.Kind != unstable.InlineTable {
			mismatch(at, path, v.Kind)
			return
		}
		w.inlineTable(path, t, v)
	case kindTableArray:
		if v.Kind != unstable.Array {
			mismatch(at, path, v.Kind)
			return
		}
		w.arrayElems(path, v, keyPos, func(ep string, p position, c *unstable.Node) {
			if c.Kind != unstable.InlineTable {
				w.fail(p, ep, "expected a table, got %s", nodeKindName(c.Kind))
				return
			}
			w.inlineTable(ep, t.Elem(), c)
		})
	default:
		w.fail(at, path, "cannot be set in the file")
	}
}

// arrayElems records each element of an array value as path[i] at its
// own position (the key's when the parser gives none) and hands it to fn;
// comments inside the array are skipped.
func (w *walker) arrayElems(path string, v *unstable.Node, keyPos position, fn func(ep string, p position, c *unstable.Node)) {
	i := 0
	it := v.Children()
	for it.Next() {
		c := it.Node()
		if c.Kind == unstable.Comment {
			continue
		}
		ep := fmt.Sprintf("%s[%d]", path, i)
		i++
		p, ok := w.rangePos(c.Raw)
		if !ok {
			p = keyPos
		}
		w.define(ep, p, defArrayElem)
		fn(ep, p, c)
	}
}

func (w *walker) inlineTable(path string, t reflect.Type, v *unstable.Node) {
	it := v.Children()
	for it.Next() {
		if c := it.Node(); c.Kind == unstable.KeyValue {
			w.keyValue(path, t, c)
		}
	}
}

// joinKey appends a key part to a dotted path, quoting it when TOML would.
func joinKey(base, name string) string {
	if base == "" {
		return keyPathPart(name)
	}
	return base + "." + keyPathPart(name)
}

// keyPath renders a key given as parts.
func keyPath(parts []string) string {
	var path string
	for _, p := range parts {
		path = joinKey(path, p)
	}
	return path
}

// keyPathPart returns name as written in TOML: bare when it can be, quoted
// otherwise. Quoting escapes control characters, so a hostile key cannot
// forge extra lines in an error report.
func keyPathPart(name string) string {
	if name == "" {
		return `""`
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return tomlString(name)
		}
	}
	return name
}

// suggest returns the name in names closest to s when it is close enough
// to be a typo (edit distance at most 2, or equal ignoring case).
func suggest(s string, names []string) string {
	if len(s) > 64 {
		return ""
	}
	best, bestD := "", 3
	for _, n := range names {
		if strings.EqualFold(s, n) {
			return n
		}
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// tomlString quotes s as a TOML basic string (TOML v1.0.0, "String"): Go's
// strconv.Quote is not suitable, TOML has no \x, \a or \v escapes.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

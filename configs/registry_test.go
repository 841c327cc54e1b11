package configs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"mssrelay/mime"
)

// Valid INS for the tests (keys computed as 97 - n mod 97).
const (
	insA      = "185057800608491"
	insB      = "279029912345609"
	ins2A     = "185052A12345633" // Corsica: 2A counts as 19 for the key
	ins2B     = "185052B12345660"
	ins19     = "185051912345633" // same key as ins2A: a different patient
	ins18     = "185051812345660" // same key as ins2B
	ins20     = "185052012345606" // department 20 with the digits of ins2A
	insNotReg = "162047511612378"
)

func TestTestINSAreValid(t *testing.T) {
	for _, s := range []string{insA, insB, ins2A, ins2B, ins18, ins19, ins20, insNotReg} {
		if !mime.ValidINS(s) {
			t.Errorf("test INS %s is not valid", s)
		}
	}
}

func TestParseRegistryValid(t *testing.T) {
	text := "\xef\xbb\xbf# Patients who chose messaging-only delivery\r\n" +
		insA + "\r\n" +
		"\n" +
		"   \t\n" +
		"  " + insB + "   # recorded at the patient's request\n" +
		ins2A + "#no space before the comment\n" +
		"\t# an indented comment line: " + insNotReg + "\n" +
		strings.ToLower(ins2B) + "\n" +
		insA + " # a duplicate is fine\n" +
		insB // no final line break
	r, err := ParseRegistry("patients.txt", []byte(text))
	if err != nil {
		t.Fatalf("ParseRegistry: %v", err)
	}
	if got := r.Len(); got != 4 {
		t.Errorf("Len() = %d, want 4 (duplicates counted once)", got)
	}
	for _, c := range []struct {
		ins  string
		want bool
	}{
		{insA, true},
		{insB, true},
		{ins2A, true},
		{strings.ToLower(ins2A), true}, // 2a is 2A
		{ins2B, true},
		{insNotReg, false}, // only in a comment
		{ins19, false},     // same key as 2A, another patient
		{ins20, false},     // the packed digits of 2A without its mark
		{"", false},
		{insA[:14], false},
		{insA[:13] + "00", false}, // registered digits, wrong key
		{insA + " ", false},
		{"18505780060849X", false},
	} {
		if got := r.MessagingOnly(c.ins); got != c.want {
			t.Errorf("MessagingOnly(%q) = %v, want %v", c.ins, got, c.want)
		}
	}
}

// TestRegistryCorsicaDistinct: 2A, 2B, 19, 18 and 20 with the same other
// digits are five patients.
func TestRegistryCorsicaDistinct(t *testing.T) {
	all := []string{ins2A, ins2B, ins18, ins19, ins20}
	for _, reg := range all {
		r, err := ParseRegistry("r", []byte(reg+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		for _, other := range all {
			if got := r.MessagingOnly(other); got != (other == reg) {
				t.Errorf("registry of %s: MessagingOnly(%s) = %v", reg, other, got)
			}
		}
	}
}

func TestRegistryEmptyAndNil(t *testing.T) {
	for _, text := range []string{"", "\n\n", "# nothing yet\n", "\xef\xbb\xbf"} {
		r, err := ParseRegistry("r", []byte(text))
		if err != nil || r == nil || r.Len() != 0 || r.MessagingOnly(insA) {
			t.Errorf("%q: %v, %+v", text, err, r)
		}
	}
	var r *Registry
	if r.MessagingOnly(insA) || r.Len() != 0 {
		t.Errorf("a nil registry must hold no one")
	}
	var c *Config
	if c.PatientRegistry() != nil {
		t.Errorf("nil Config has a registry")
	}
}

func TestParseRegistryRefusals(t *testing.T) {
	longComment := insA + " # " + strings.Repeat("x", MaxRegistryLineBytes)
	exactly := insA + " #" + strings.Repeat("x", MaxRegistryLineBytes-len(insA)-2)
	if len(exactly) != MaxRegistryLineBytes {
		t.Fatalf("test line is %d bytes", len(exactly))
	}
	cases := []struct {
		name      string
		text      string
		line, col int
		msg       string
	}{
		{"wrong key", "# c\n" + insA[:13] + "92\n", 2, 1, "the key (last two digits) does not match"},
		{"wrong digit", insA[:3] + "9" + insA[4:] + "\n", 1, 1, "does not match"},
		{"wrong key after comment lines", "\n\n   " + insB[:13] + "10 # x\n", 3, 4, "does not match"},
		{"too short", insA[:14] + "\n", 1, 1, "14 characters instead of 15"},
		{"too long", insA + "1\n", 1, 1, "16 characters instead of 15"},
		{"spaces inside", "1 85 05 78 006 084 91\n", 1, 1, "without spaces"},
		{"tab inside", insA[:7] + "\t" + insA[7:] + "\n", 1, 1, "without spaces"},
		{"letters", "1850578006084AB\n", 1, 1, "not two digits"},
		{"letter in number", "18505780X608491\n", 1, 1, "characters other than digits"},
		{"2C is not Corsica", "185052C12345633\n", 1, 1, "characters other than digits"},
		{"A without 2", "185051A12345633\n", 1, 1, "characters other than digits"},
		{"non-ASCII digits", "１８５０５７８００６０８４９１\n", 1, 1, "not an INS"},
		{"NIR only", "1850578006084\n", 1, 1, "13 characters instead of 15"},
		{"a word", "patient\n", 1, 1, "7 characters instead of 15"},
		{"line too long", insA + "\n" + longComment + "\n", 2, 1, "longer than 256 bytes"},
		{"line too long without break", longComment, 1, 1, "longer than 256 bytes"},
		{"invalid UTF-8", insA + " # caf\xe9\n", 1, 1, "not valid UTF-8"},
		{"NUL", insA[:5] + "\x00" + insA[6:] + "\n", 1, 1, "characters other than digits"},
		{"exactly the limit then one too long", exactly + "\n" + exactly + "x\n", 2, 1, "longer than 256 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := ParseRegistry("patients.txt", []byte(c.text))
			if r != nil {
				t.Errorf("a registry was returned with the error")
			}
			wantErr(t, err, "patients.txt", c.line, "", c.msg)
			var errs Errors
			if errors.As(err, &errs) {
				for _, e := range errs {
					if e.Line == c.line && e.Col != c.col {
						t.Errorf("column %d, want %d", e.Col, c.col)
					}
					// The INS of a line is never repeated in a message.
					for _, ins := range []string{insA, insB, insA[:13], insB[:13]} {
						if strings.Contains(e.Error(), ins) {
							t.Errorf("message quotes an INS: %s", e)
						}
					}
				}
			}
		})
	}
}

// TestParseRegistryReportsEveryLine: every bad line is listed, sorted,
// capped like the config's errors.
func TestParseRegistryReportsEveryLine(t *testing.T) {
	text := insA + "\nbad\n" + insB + "\nworse\n"
	_, err := ParseRegistry("r.txt", []byte(text))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 || errs[0].Line != 2 || errs[1].Line != 4 {
		t.Fatalf("want lines 2 and 4, got:\n%v", err)
	}
	if want := "r.txt:2:1: not an INS"; !strings.HasPrefix(errs[0].Error(), want) {
		t.Errorf("got %q, want prefix %q", errs[0].Error(), want)
	}

	_, err = ParseRegistry("r.txt", bytes.Repeat([]byte("bad\n"), 100))
	if !errors.As(err, &errs) || len(errs) != MaxReportedErrors+1 || !strings.Contains(errs[MaxReportedErrors].Msg, "80 more not shown") {
		t.Errorf("want %d errors and a count of the rest, got %d:\n%v", MaxReportedErrors, len(errs), err)
	}
}

func TestParseRegistryTooLarge(t *testing.T) {
	_, err := ParseRegistry("r.txt", make([]byte, MaxRegistryBytes+1))
	wantErr(t, err, "r.txt", 0, "", "larger than 67108864 bytes")
}

func TestLoadRegistry(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "patients.txt")
	writeFile(t, path, []byte(insA+"\n"+insB+"\n"))
	r, err := LoadRegistry(path)
	if err != nil || r.Len() != 2 || !r.MessagingOnly(insB) {
		t.Fatalf("LoadRegistry: %v, %+v", err, r)
	}

	writeFile(t, path, []byte(insA+"\n"+insA[:14]+"\n"))
	_, err = LoadRegistry(path)
	wantErr(t, err, path, 2, "", "14 characters")

	big := filepath.Join(dir, "big.txt")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxRegistryBytes + 1); err != nil { // sparse: no 64 MiB written
		t.Fatal(err)
	}
	f.Close()
	for _, c := range []struct{ path, msg string }{
		{filepath.Join(dir, "missing.txt"), "no such file"},
		{dir, "not a regular file"},
		{big, "larger than"},
	} {
		_, err := LoadRegistry(c.path)
		if err == nil || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("LoadRegistry(%s): %v; want an error naming the file and %q", c.path, err, c.msg)
		}
	}
}

// TestConfigLoadsRegistry: patients.registry is read at load time, its
// path resolved against the config's directory; a bad registry is a
// config error at the key, naming the registry's line.
func TestConfigLoadsRegistry(t *testing.T) {
	dir := fixtureDir(t)
	writeFile(t, filepath.Join(dir, "reg", "patients.txt"), []byte("# test\n"+insA+"\n"))
	writeFile(t, filepath.Join(dir, "bad.txt"), []byte(insA+"\n\n"+insA[:13]+"00\nnope\n"))
	baseLines := strings.Count(base(t), "\n")

	cfg, err := Parse("m.toml", dir, []byte(base(t)+"[patients]\nregistry = \"reg/patients.txt\"\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	reg := cfg.PatientRegistry()
	if cfg.Patients.Registry != filepath.Join(dir, "reg", "patients.txt") || reg.Len() != 1 || !reg.MessagingOnly(insA) || reg.MessagingOnly(insB) {
		t.Errorf("registry %q: %d patients", cfg.Patients.Registry, reg.Len())
	}

	// Absent or empty: no registry, no error.
	for _, extra := range []string{"", "[patients]\nregistry = \"\"\n"} {
		cfg, err := Parse("m.toml", dir, []byte(base(t)+extra))
		if err != nil || cfg.PatientRegistry() != nil || cfg.Patients.Registry != "" {
			t.Errorf("%q: %v, registry %v", extra, err, cfg.PatientRegistry())
		}
	}

	_, err = Parse("m.toml", dir, []byte(base(t)+"[patients]\nregistry = \"bad.txt\"\n"))
	bad := filepath.Join(dir, "bad.txt")
	wantErr(t, err, "m.toml", baseLines+2, "patients.registry", bad+":3:1: invalid INS")
	wantErr(t, err, "m.toml", baseLines+2, "patients.registry", bad+":4:1: not an INS")

	_, err = Parse("m.toml", dir, []byte(base(t)+"[patients]\nregistry = \"missing.txt\"\n"))
	wantErr(t, err, "m.toml", baseLines+2, "patients.registry", "no such file")
}

// FuzzParseRegistry: arbitrary bytes never panic; an accepted file
// registers exactly its INS lines, a refused one gives well-formed errors.
func FuzzParseRegistry(f *testing.F) {
	f.Add([]byte(insA + "\n" + insB + " # x\r\n\n# c\n" + ins2A))
	f.Add([]byte("\xef\xbb\xbf" + strings.ToLower(ins2B) + "\n" + insA[:13] + "00\n"))
	f.Add([]byte("1 85 05 78 006 084 91\n\xff\n" + strings.Repeat("#", 300)))
	f.Add([]byte(ins19 + "#" + ins20 + "\n\t" + ins20 + "\t\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRegistry("fuzz.txt", data)
		lines := strings.Split(strings.TrimPrefix(string(data), "\xef\xbb\xbf"), "\n")
		if err != nil {
			var errs Errors
			if r != nil || !errors.As(err, &errs) || len(errs) == 0 || len(errs) > MaxReportedErrors+1 {
				t.Fatalf("refusal: registry %v, %T %v", r, err, err)
			}
			for _, e := range errs {
				if e.File != "fuzz.txt" || e.Line < 0 || e.Line > len(lines) || (e.Line > 0 && e.Col < 1) || strings.ContainsAny(e.Error(), "\r\n") {
					t.Fatalf("malformed error %q", e.Error())
				}
			}
			return
		}
		// Accepted: every line is blank, a comment, or an INS now
		// registered; nothing else is.
		n := 0
		for _, l := range lines {
			if len(l) > MaxRegistryLineBytes+1 || !utf8.ValidString(l) {
				t.Fatalf("accepted a line of %d bytes or invalid UTF-8", len(l))
			}
			ins, _, _ := strings.Cut(l, "#")
			ins = strings.Trim(ins, " \t\r")
			if ins == "" {
				continue
			}
			n++
			if !mime.ValidINS(ins) || !r.MessagingOnly(ins) {
				t.Fatalf("line %q accepted but not registered", l)
			}
		}
		if r.Len() > n {
			t.Fatalf("Len() = %d for %d INS lines", r.Len(), n)
		}
	})
}

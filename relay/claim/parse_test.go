package claim

import (
	"errors"
	"strings"
	"testing"
	"time"

	"mssrelay/mime"
)

const ins = "184127512345640" // valid key

func TestParseLine(t *testing.T) {
	ok := []struct {
		line, number, ins string
	}{
		{"CLAIM RX-20261127-abcdef 184127512345640", "RX-20261127-abcdef", ins},
		{"claim RX-1 184127512345640", "RX-1", ins},
		{"  Claim\tRX.1_a  184127512345640  ", "RX.1_a", ins},
		{"CLAIM RX-1 1 84 12 75 123 456 40", "RX-1", ins}, // as the health card prints it
		{"CLAIM RX-1 1841275123456\t40", "RX-1", ins},
		{"CLAIM RX-1 284122A123456" + key(t, "284122A123456"), "RX-1", "284122A123456" + key(t, "284122A123456")},
		{"CLAIM RX-1 284122a123456" + key(t, "284122A123456"), "RX-1", "284122A123456" + key(t, "284122A123456")}, // Corsica, lower case
		{"CLAIM " + strings.Repeat("9", 64) + " " + ins, strings.Repeat("9", 64), ins},
	}
	for _, c := range ok {
		n, i, err := ParseLine(c.line)
		if err != nil || n != c.number || i != c.ins {
			t.Errorf("ParseLine(%q) = %q, %q, %v; want %q, %q", c.line, n, i, err, c.number, c.ins)
		}
	}
	bad := []struct {
		line, why string
	}{
		{"", "does not start with CLAIM"},
		{"RX-1 184127512345640", "does not start with CLAIM"},
		{"Re: CLAIM RX-1 184127512345640", "does not start with CLAIM"},
		{"CLAIMRX-1 184127512345640", "followed by a space"},
		{"CLAIM: RX-1 184127512345640", "followed by a space"},
		{"CLAIM", "followed by a space"},
		{"CLAIM RX-1", "INS is missing"},
		{"CLAIM RX-1 ", "0 characters"},
		{"CLAIM RX/1 184127512345640", "prescription number"},
		{"CLAIM RX-é 184127512345640", "prescription number"},
		{"CLAIM " + strings.Repeat("9", 65) + " " + ins, "prescription number"},
		{"CLAIM RX-1 18412751234564", "14 characters"},
		{"CLAIM RX-1 1841275123456400", "16 characters"},
		{"CLAIM RX-1 184127512345641", "key does not match"},
		{"CLAIM RX-1 18412751234564X", "only digits"},
		{"CLAIM RX-1 184127512345640 please", "nothing may follow"},
		{"CLAIM RX-1 184127512345640 RX-2", "nothing may follow"},
		{"CLAIM RX-1 A84127512345640", "not valid"},
		{"CLAIM RX-1 " + strings.Repeat(" ", MaxLineBytes) + ins, "longer than"},
	}
	for _, c := range bad {
		_, _, err := ParseLine(c.line)
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("ParseLine(%q) err = %v; want a syntax error saying %q", c.line, err, c.why)
		}
	}
}

func key(t *testing.T, first13 string) string {
	t.Helper()
	k, err := mime.ComputeINSKey(first13)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseMessage(t *testing.T) {
	good := Message("pharma@example.org", "claim@example.org", "RX-1", ins, "id@example.org", time.Unix(0, 0))
	cases := []struct {
		name   string
		msg    string
		number string // "" when refused
		why    string
	}{
		{"as built by Message", string(good), "RX-1", ""},
		{"Subject only", "Subject: CLAIM RX-1 184127512345640\r\n\r\n", "RX-1", ""},
		{"folded Subject", "Subject: CLAIM RX-1\r\n 184127512345640\r\n\r\n", "RX-1", ""},
		{"encoded Subject", "Subject: =?utf-8?q?CLAIM_RX-1_184127512345640?=\r\n\r\n", "RX-1", ""},
		{"first body line", "Subject: Réclamation\r\n\r\n\r\n  \r\nCLAIM RX-1 184127512345640\r\nMerci\r\n", "RX-1", ""},
		{"no Subject, body", "From: a@example.org\r\n\r\nclaim RX-1 184127512345640", "RX-1", ""},
		{"bare LF", "Subject: hello\n\nCLAIM RX-1 184127512345640\n", "RX-1", ""},
		{"no header at all", "\r\nCLAIM RX-1 184127512345640\r\n", "RX-1", ""},
		{"text/plain body", "Content-Type: text/plain; charset=utf-8\r\n\r\nCLAIM RX-1 184127512345640\r\n", "RX-1", ""},
		{"bad Subject wins over a good body", "Subject: CLAIM RX-1 184127512345641\r\n\r\nCLAIM RX-1 184127512345640\r\n", "", "key does not match"},
		{"first line is something else", "Subject: x\r\n\r\nBonjour\r\nCLAIM RX-1 184127512345640\r\n", "", "neither the Subject nor the first line"},
		{"HTML body not read", "Content-Type: text/html\r\n\r\nCLAIM RX-1 184127512345640\r\n", "", "not plain text"},
		{"base64 body not read", "Content-Transfer-Encoding: base64\r\n\r\nQ0xBSU0=\r\n", "", "not plain text"},
		{"empty", "", "", "neither"},
		{"too large", "Subject: CLAIM RX-1 184127512345640\r\n\r\n" + strings.Repeat("x", MaxMessageBytes), "", "at most"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, i, err := ParseMessage([]byte(c.msg))
			if c.number != "" {
				if err != nil || n != c.number || i != ins {
					t.Fatalf("= %q, %q, %v; want %q", n, i, err, c.number)
				}
				return
			}
			if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("err = %v; want a syntax error saying %q", err, c.why)
			}
		})
	}
}

// FuzzParseMessage: any input is parsed without panic, and whatever is
// accepted is a valid number and INS that Format writes back to a line
// ParseLine reads identically.
func FuzzParseMessage(f *testing.F) {
	f.Add([]byte("Subject: CLAIM RX-1 184127512345640\r\n\r\n"))
	f.Add([]byte("Subject: x\r\n\r\nclaim RX-1 1 84 12 75 123 456 40\r\n"))
	f.Add([]byte("Subject: =?utf-8?b?Q0xBSU0gUlgtMSAxODQxMjc1MTIzNDU2NDA=?=\r\n\r\n"))
	f.Add([]byte("Content-Type: text/plain\r\n\r\n\r\nCLAIM RX-1 2B\r\n"))
	f.Add(Message("a@example.org", "claim@example.org", "RX-20261127-abcdef", ins, "x@y", time.Unix(0, 0)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		n, i, err := ParseMessage(raw)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v is not ErrSyntax", err)
			}
			return
		}
		if !validNumber(n) || len(n) > maxNumberBytes || !mime.ValidINS(i) {
			t.Fatalf("accepted number %q, INS %q", n, i)
		}
		n2, i2, err := ParseLine(Format(n, i))
		if err != nil || n2 != n || i2 != i {
			t.Fatalf("Format(%q, %q) reads back as %q, %q, %v", n, i, n2, i2, err)
		}
	})
}

func FuzzParseLine(f *testing.F) {
	f.Add("CLAIM RX-1 184127512345640")
	f.Add("claim  a 1 84 12 75 123 456 40 ")
	f.Add("CLAIM RX 284122A12345600")
	f.Fuzz(func(t *testing.T, line string) {
		n, i, err := ParseLine(line)
		if err != nil {
			return
		}
		if !validNumber(n) || !mime.ValidINS(i) || strings.ContainsAny(i, " \tab") {
			t.Fatalf("ParseLine(%q) accepted %q, %q", line, n, i)
		}
		if !strings.Contains(line, n) {
			t.Fatalf("number %q is not in the line %q", n, line)
		}
	})
}

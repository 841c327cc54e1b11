package store

import (
	"fmt"
	"sort"
	"strings"
)

// Inbox is the canonical spelling of the one mailbox every account has.
const Inbox = "INBOX"

// Separator is the hierarchy delimiter of mailbox names (RFC 3501 §5.1.1).
const Separator = "/"

// canonName checks a mailbox name and returns its stored spelling.
//
// Names are UTF-8 (go-imap decodes modified UTF-7 on the wire), at most
// MaxMailboxNameBytes, without control characters or the LIST wildcards
// "*" and "%" (RFC 3501 §6.3.8: a name holding them could not be listed
// unambiguously), with no empty hierarchy component. "INBOX" is
// case-insensitive (RFC 3501 §5.1); it is stored as "INBOX", also as the
// first component of a child ("inbox/x" is "INBOX/x") so that the two
// spellings cannot name two mailboxes.
func canonName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > MaxMailboxNameBytes {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, MaxMailboxNameBytes)
	}
	if !validText(name) {
		return "", fmt.Errorf("%w: not UTF-8 or holds control characters", ErrInvalidName)
	}
	if strings.ContainsAny(name, "*%") {
		return "", fmt.Errorf("%w: holds a LIST wildcard", ErrInvalidName)
	}
	if strings.HasPrefix(name, Separator) || strings.HasSuffix(name, Separator) || strings.Contains(name, Separator+Separator) {
		return "", fmt.Errorf("%w: empty hierarchy component", ErrInvalidName)
	}
	first, _, _ := strings.Cut(name, Separator)
	if first != Inbox && strings.EqualFold(first, Inbox) {
		name = Inbox + name[len(first):]
	}
	return name, nil
}

// newName is canonName for a name to create: INBOX itself always exists
// and cannot be created or renamed onto (RFC 3501 §6.3.3, §6.3.5).
func newName(name string) (string, error) {
	n, err := canonName(name)
	if err != nil {
		return "", err
	}
	if n == Inbox {
		return "", fmt.Errorf("%w: INBOX is reserved", ErrInvalidName)
	}
	return n, nil
}

func checkAccount(account string) error {
	if account == "" || len(account) > MaxAccountBytes || !validText(account) {
		return fmt.Errorf("%w: account name", ErrInvalid)
	}
	return nil
}

// System flags of RFC 3501 §2.3.2, in canonical spelling. \Recent is a
// session property the server computes (§2.3.2): never stored.
var systemFlags = []string{`\Answered`, `\Deleted`, `\Draft`, `\Flagged`, `\Seen`}

const (
	flagSeen    = `\Seen`
	flagDeleted = `\Deleted`
	flagRecent  = `\Recent`
)

// normFlags validates flags, puts system flags in canonical case, drops
// \Recent and removes duplicates (keywords compare case-insensitively,
// RFC 3501 §2.3.2; the first spelling wins). The result is sorted.
func normFlags(in []string) ([]string, error) {
	if len(in) > 4*MaxFlags {
		return nil, fmt.Errorf("%w: more than %d flags", ErrInvalidFlag, MaxFlags)
	}
	out := make([]string, 0, len(in))
	for _, f := range in {
		if f == "" || len(f) > MaxFlagBytes {
			return nil, fmt.Errorf("%w: empty or longer than %d bytes", ErrInvalidFlag, MaxFlagBytes)
		}
		if f[0] == '\\' {
			if strings.EqualFold(f, flagRecent) {
				continue
			}
			canon := ""
			for _, s := range systemFlags {
				if strings.EqualFold(f, s) {
					canon = s
					break
				}
			}
			if canon == "" {
				// "\" flag-extension is reserved for future RFCs (§9).
				return nil, fmt.Errorf("%w: unknown system flag %q", ErrInvalidFlag, f)
			}
			f = canon
		} else if !validKeyword(f) {
			return nil, fmt.Errorf("%w: keyword %q is not an atom", ErrInvalidFlag, f)
		}
		if indexFold(out, f) < 0 {
			out = append(out, f)
		}
	}
	if len(out) > MaxFlags {
		return nil, fmt.Errorf("%w: more than %d flags", ErrInvalidFlag, MaxFlags)
	}
	sort.Strings(out)
	return out, nil
}

// validKeyword: flag-keyword = atom (RFC 3501 §9): CHAR (%x01-7F) except
// atom-specials "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]".
func validKeyword(f string) bool {
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return f != ""
}

func indexFold(list []string, f string) int {
	for i, g := range list {
		if strings.EqualFold(g, f) {
			return i
		}
	}
	return -1
}

func hasFlag(list []string, f string) bool { return indexFold(list, f) >= 0 }

// applyFlags combines an entry's flags with normalised flags. Existing
// spellings win over new ones so a keyword keeps its first-seen case.
func applyFlags(cur []string, op FlagOp, flags []string) []string {
	var out []string
	switch op {
	case FlagsSet:
		out = make([]string, 0, len(flags))
		for _, f := range flags {
			if i := indexFold(cur, f); i >= 0 {
				f = cur[i]
			}
			out = append(out, f)
		}
	case FlagsAdd:
		out = append(make([]string, 0, len(cur)+len(flags)), cur...)
		for _, f := range flags {
			if indexFold(out, f) < 0 {
				out = append(out, f)
			}
		}
	case FlagsRemove:
		out = make([]string, 0, len(cur))
		for _, f := range cur {
			if indexFold(flags, f) < 0 {
				out = append(out, f)
			}
		}
	}
	sort.Strings(out)
	return out
}

func sameFlags(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sortedUIDs returns uids ascending without duplicates or zeros.
func sortedUIDs(uids []uint32) ([]uint32, error) {
	if len(uids) > MaxUIDs {
		return nil, fmt.Errorf("%w: more than %d UIDs", ErrInvalid, MaxUIDs)
	}
	out := append(make([]uint32, 0, len(uids)), uids...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	w := 0
	for _, u := range out {
		if u == 0 || (w > 0 && out[w-1] == u) {
			continue
		}
		out[w] = u
		w++
	}
	return out[:w], nil
}

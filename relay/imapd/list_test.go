package imapd

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"mssrelay/store"
)

// TestListData: which names LIST returns, with which attributes, when the
// hierarchy has levels that are not mailboxes (RFC 3501 §6.3.8, RFC 5258).
func TestListData(t *testing.T) {
	// P is only a level (P/C exists, P does not: a deleted parent); X and
	// X/Y too; Q is a mailbox, unsubscribed, with a subscribed child.
	boxes := []store.MailboxInfo{
		{Name: "Archive", SpecialUse: `\Archive`, Subscribed: true},
		{Name: "INBOX", Subscribed: true},
		{Name: "P/C", Subscribed: true},
		{Name: "Q"},
		{Name: "Q/R", Subscribed: true},
		{Name: "X/Y/Z"},
	}
	subRec := &imap.ListOptions{SelectSubscribed: true, SelectRecursiveMatch: true}
	tests := []struct {
		name     string
		ref      string
		patterns []string
		options  *imap.ListOptions
		want     string
	}{
		{"percent returns the levels as Noselect", "", []string{"%"}, &imap.ListOptions{},
			`Archive (\HasNoChildren \Archive); INBOX (\HasNoChildren); P (\Noselect \HasChildren); Q (\HasChildren); X (\Noselect \HasChildren)`},
		{"star shows the mailboxes below, not the levels", "", []string{"*"}, &imap.ListOptions{},
			`Archive (\HasNoChildren \Archive); INBOX (\HasNoChildren); P/C (\HasNoChildren); Q (\HasChildren); Q/R (\HasNoChildren); X/Y/Z (\HasNoChildren)`},
		{"a level below a level", "", []string{"X/%"}, &imap.ListOptions{},
			`X/Y (\Noselect \HasChildren)`},
		{"reference and percent", "X", []string{"%"}, &imap.ListOptions{},
			`X/Y (\Noselect \HasChildren)`},
		{"a level named exactly", "", []string{"P"}, &imap.ListOptions{},
			`P (\Noselect \HasChildren)`},
		{"a pattern that also shows the child", "", []string{"P", "P/*"}, &imap.ListOptions{},
			`P/C (\HasNoChildren)`},
		{"LIST-EXTENDED says NonExistent", "", []string{"%"}, &imap.ListOptions{ReturnSubscribed: true},
			`Archive (\HasNoChildren \Archive \Subscribed); INBOX (\HasNoChildren \Subscribed); P (\NonExistent \HasChildren); Q (\HasChildren); X (\NonExistent \HasChildren)`},
		{"SUBSCRIBED alone", "", []string{"%"}, &imap.ListOptions{SelectSubscribed: true},
			`Archive (\HasNoChildren \Archive \Subscribed); INBOX (\HasNoChildren \Subscribed)`},
		{"SUBSCRIBED RECURSIVEMATCH percent", "", []string{"%"}, subRec,
			`Archive (\HasNoChildren \Archive \Subscribed); INBOX (\HasNoChildren \Subscribed); P (\NonExistent \HasChildren) CHILDINFO; Q (\HasChildren) CHILDINFO`},
		{"SUBSCRIBED RECURSIVEMATCH star", "", []string{"*"}, subRec,
			`Archive (\HasNoChildren \Archive \Subscribed); INBOX (\HasNoChildren \Subscribed); P/C (\HasNoChildren \Subscribed); Q (\HasChildren) CHILDINFO; Q/R (\HasNoChildren \Subscribed)`},
		{"SPECIAL-USE", "", []string{"%"}, &imap.ListOptions{SelectSpecialUse: true},
			`Archive (\HasNoChildren \Archive)`},
		{"nothing matches", "", []string{"Z%"}, &imap.ListOptions{}, ``},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, d := range listData(boxes, tc.ref, tc.patterns, tc.options) {
				s := fmt.Sprintf("%s %v", d.Mailbox, d.Attrs)
				s = strings.Replace(s, "[", "(", 1)
				s = strings.Replace(s, "]", ")", 1)
				if d.ChildInfo != nil && d.ChildInfo.Subscribed {
					s += " CHILDINFO"
				}
				if d.Delim != delim {
					t.Errorf("%s: delimiter %q", d.Mailbox, d.Delim)
				}
				got = append(got, s)
			}
			if g := strings.Join(got, "; "); g != tc.want {
				t.Errorf("LIST %q %q %+v\n got %s\nwant %s", tc.ref, tc.patterns, tc.options, g, tc.want)
			}
		})
	}
}

// TestMailboxErrorCodes: store refusals the client caused get their RFC
// 5530 code, with the store's detail and not as [SERVERBUG].
func TestMailboxErrorCodes(t *testing.T) {
	s := &session{}
	tests := []struct {
		err  error
		code imap.ResponseCode
		text string
	}{
		{fmt.Errorf("store: mailbox %q: %w", "x", store.ErrNotFound), imap.ResponseCodeNonExistent, "No such mailbox"},
		{fmt.Errorf("store: mailbox %q: %w", "x", store.ErrExists), imap.ResponseCodeAlreadyExists, "Mailbox already exists"},
		{fmt.Errorf("%w: more than %d mailboxes", store.ErrTooLarge, store.MaxMailboxes), imap.ResponseCodeLimit, "Limit reached: more than 1000 mailboxes"},
		{fmt.Errorf("%w: unknown system flag %q", store.ErrInvalidFlag, `\Foo`), imap.ResponseCodeCannot, `Flag refused: unknown system flag "\\Foo"`},
		{fmt.Errorf("wrapped: %w", store.ErrInvalidFlag), imap.ResponseCodeCannot, "Flag refused: see the server's limits"},
		{store.ErrOverQuota, imap.ResponseCodeOverQuota, ""},
	}
	for _, tc := range tests {
		var ie *imap.Error
		if err := s.mailboxError(tc.err); !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo || ie.Code != tc.code {
			t.Errorf("mailboxError(%v) = %v, want NO [%s]", tc.err, err, tc.code)
			continue
		}
		if tc.text != "" && ie.Text != tc.text {
			t.Errorf("mailboxError(%v) text %q, want %q", tc.err, ie.Text, tc.text)
		}
	}
}

package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"mssrelay/configs"
)

func cmdCheckConfig(args []string, stdout io.Writer) error {
	fs := newFlags("check-config", stdout, "check-config FILE")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"expected exactly one config file"}
	}
	cfg, err := configs.Load(fs.Arg(0))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: OK (%d accounts, %d SMTP and %d IMAP listeners)\n", fs.Arg(0), len(cfg.Accounts),
		len(cfg.SMTP.Submission)+len(cfg.SMTP.SubmissionTLS), len(cfg.IMAP.TLS)+len(cfg.IMAP.STARTTLS))
	return nil
}

// cmdHashPassword reads the password on a terminal without echo (asked
// twice), or one line on standard input when it is a pipe, so that it never
// appears in the shell history or the process list, and prints its hash
// for the password_hash key of an account.
func cmdHashPassword(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlags("hash-password", stdout, "hash-password   (prompts on a terminal, or reads one line on stdin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var pw string
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p1, err := prompt(f, "Password: ")
		if err != nil {
			return err
		}
		p2, err := prompt(f, "Again: ")
		if err != nil {
			return err
		}
		if p1 != p2 {
			return usageError{"the two passwords differ"}
		}
		pw = p1
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("reading the password: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	if pw == "" {
		return usageError{"no password given"}
	}
	h, err := configs.HashPassword(pw)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, h)
	return nil
}

func prompt(f *os.File, label string) (string, error) {
	fmt.Fprint(os.Stderr, label)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return string(b), nil
}

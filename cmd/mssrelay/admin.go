package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

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

// cmdHashPassword reads one password line on stdin (so it never appears in
// the shell history or the process list) and prints its hash for the
// password_hash key of an account.
func cmdHashPassword(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := newFlags("hash-password", stdout, "hash-password < password-file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("reading the password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return usageError{"no password on standard input"}
	}
	h, err := configs.HashPassword(pw)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, h)
	return nil
}

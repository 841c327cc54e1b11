package loadgen

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// WriteText prints the SMTP report as a table for people.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }

	conn := "connections reused for the whole run"
	switch {
	case r.PerConn == 1:
		conn = "one connection per message"
	case r.PerConn > 1:
		conn = fmt.Sprintf("%d messages per connection", r.PerConn)
	}
	loop := "closed loop"
	if r.OfferedRate > 0 {
		loop = fmt.Sprintf("open loop at %.0f msgs/s offered", r.OfferedRate)
	}
	p("SMTP %s (%s): %d clients, %s, %s\n", r.Target, r.Security, r.Concurrency, conn, loop)
	p("  messages\t%d, %.1f KiB on average (%.1f–%.1f KiB)\n", r.Messages,
		float64(r.Bytes)/float64(max(r.Messages, 1))/1024, float64(r.MinSize)/1024, float64(r.MaxSize)/1024)
	p("  accepted\t%d in %.2f s: %.1f msgs/s, %.2f MiB/s\n", r.Accepted, r.Seconds, r.Throughput, r.MiBps)
	p("  refused\t%d\n", sum(r.Refused))
	for _, k := range sortedKeys(r.Refused) {
		p("    %s\t%d\t%s\n", k, r.Refused[k], r.RefusalText[k])
	}
	p("  connection errors\t%d\n", sum(r.Errors))
	for _, k := range sortedKeys(r.Errors) {
		p("    %s\t%d\n", k, r.Errors[k])
	}
	if r.NotSent > 0 {
		p("  not sent (timeout)\t%d\n", r.NotSent)
	}
	if r.Security == "plain" {
		p("  connections\t%d\n", r.Connections)
	} else {
		p("  connections\t%d (TLS sessions resumed: %d)\n", r.Connections, r.Resumed)
	}
	p("  pipelined\t%d of %d transactions (RFC 2920: MAIL, RCPT, DATA in one write)\n", r.Pipelined, r.Messages-r.NotSent)
	header := false
	row := func(name string, l Latency) {
		if l.Count == 0 {
			return
		}
		if !header {
			p("\n  latency (ms)\tp50\tp95\tp99\tmax\tmean\tcount\n")
			header = true
		}
		p("  %s\t%s\t%s\t%s\t%s\t%s\t%d\n", name, fmtMs(l.P50), fmtMs(l.P95), fmtMs(l.P99), fmtMs(l.Max), fmtMs(l.Mean), l.Count)
	}
	if r.Response != nil {
		row("due → 250 (open loop)", *r.Response)
	}
	row("DATA → 250", r.Data)
	row("MAIL → 250", r.Transaction)
	names := make([]string, 0, len(r.BySigner))
	for k := range r.BySigner {
		names = append(names, k)
	}
	slices.Sort(names)
	if len(names) > 1 {
		for _, k := range names {
			row("DATA → 250, "+k, r.BySigner[k].Data)
		}
	}
	row("connect ("+r.Security+")", r.Connect)
	return tw.Flush()
}

// WriteText prints the IMAP report for people.
func (r *IMAPReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }
	p("IMAP %s: %d clients, UID FETCH BODY.PEEK[] of %s\n", r.Target, r.Concurrency, r.Mailbox)
	p("  fetched\t%d of %d messages, %.2f MiB in %.2f s: %.1f msgs/s, %.2f MiB/s\n",
		r.Fetched, r.Exists, mib(r.Bytes), r.Seconds, r.Rate, r.MiBps)
	p("  errors\t%d\n", sum(r.Errors))
	for _, k := range sortedKeys(r.Errors) {
		p("    %s\t%d\n", k, r.Errors[k])
	}
	if r.Login.Count > 0 {
		p("  login+EXAMINE (ms)\tp50 %s\tmax %s\n", fmtMs(r.Login.P50), fmtMs(r.Login.Max))
	}
	return tw.Flush()
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

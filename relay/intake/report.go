package intake

import (
	"context"
	"fmt"

	"mssrelay/mime"
	"mssrelay/store"
)

// AcceptReport files a report another operator sent from the null
// reverse-path (a DSN or MDN about a message one of our prescribers sent)
// into the one recipient's INBOX. It is no prescription: it is scanned
// within the limits and must be a report or an automatic message, but it
// is not verified, indexed or forwarded; like an APPEND, it is a record
// of the recipient's own. The other operator was authenticated by its
// certificate before (smtp.relay).
func (in *Intake) AcceptReport(ctx context.Context, env *Envelope, raw []byte) error {
	if len(env.Recipients) != 1 {
		return fmt.Errorf("intake: a report has one recipient, not %d", len(env.Recipients))
	}
	to := env.Recipients[0].Address
	subject := fmt.Sprintf("report size=%d to=%s", len(raw), to)
	refused := func(r *Refusal) error {
		in.audit(store.AuditEvent{Kind: store.AuditSMTPRefuse, Actor: "operator:" + env.Peer, Remote: env.RemoteAddr,
			Subject: subject, Outcome: r.outcome(), Detail: r.Message})
		return r
	}
	if err := mime.Scan(raw, in.Limits); err != nil {
		return refused(fromMIME(err))
	}
	if !mime.IsAutomatic(raw) {
		return refused(refuse(550, [3]int{5, 7, 1}, "not_a_report",
			"Mail from the null sender must be a delivery or disposition report", nil))
	}
	received := in.now()
	stored := append(in.traceHeaders(env, received), raw...)
	var meta []byte
	if in.Meta != nil {
		meta = in.Meta(stored)
	}
	if _, err := in.Store.Append(to, store.Inbox, stored, nil, received, meta); err != nil {
		return refused(fromStore(err))
	}
	in.audit(store.AuditEvent{Kind: store.AuditSMTPAccept, Actor: "operator:" + env.Peer, Remote: env.RemoteAddr,
		Subject: subject, Outcome: "250", Time: received})
	return nil
}

package intake

import (
	"errors"
	"fmt"

	"mssrelay/mime"
	"mssrelay/signing"
	"mssrelay/store"
)

// Refusal is a message the relay will not file: an SMTP reply code, an RFC
// 3463 enhanced status code and a reason a person understands. The SMTP
// session turns it into a bare *smtp.SMTPError at its boundary.
type Refusal struct {
	Code     int    // 4xx transient, 5xx permanent
	Enhanced [3]int // RFC 3463 class.subject.detail
	Message  string // shown to the sender
	Reason   string // short machine-readable label for logs and metrics
	Err      error  // underlying cause, for logs only
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Message)
}

func (r *Refusal) Unwrap() error { return r.Err }

// outcome is the reply as the audit trail records it: code, enhanced
// code and the reason label, e.g. "554 5.7.7 sig_integrity".
func (r *Refusal) outcome() string {
	if r == nil {
		return "refused"
	}
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Reason)
}

// Temporary reports whether the sender should retry.
func (r *Refusal) Temporary() bool { return r.Code/100 == 4 }

func refuse(code int, enh [3]int, reason, msg string, err error) *Refusal {
	return &Refusal{Code: code, Enhanced: enh, Message: msg, Reason: reason, Err: err}
}

// Structural refusals. RFC 3463: X.3.4 message too big for system, X.6.0
// other media error (malformed), X.7.0 other security (not signed).
func fromMIME(err error) *Refusal {
	var me *mime.Error
	if !errors.As(err, &me) {
		return refuse(554, [3]int{5, 6, 0}, "malformed", "Malformed message", err)
	}
	switch me.Kind {
	case mime.KindTooLarge:
		return refuse(552, [3]int{5, 3, 4}, "too_large", "Message too large: "+me.Detail, err)
	case mime.KindLimit:
		return refuse(552, [3]int{5, 3, 4}, "structure_limit", "Message exceeds a structure limit: "+me.Detail, err)
	case mime.KindNotSigned:
		return refuse(554, [3]int{5, 7, 0}, "not_signed", "Prescriptions must be S/MIME signed: "+me.Detail, err)
	case mime.KindPrescription:
		return refuse(554, [3]int{5, 6, 0}, "bad_prescription", "Invalid prescription: "+me.Detail, err)
	default:
		return refuse(554, [3]int{5, 6, 0}, "malformed", "Malformed message: "+me.Detail, err)
	}
}

// Signature refusals, one reply per reason (docs/security-model.md).
// RFC 3463 (and RFC 5248's registry): X.7.5 cryptographic failure, X.7.7
// message integrity failure, X.7.1 delivery not authorized.
func fromSigning(err error) *Refusal {
	var se *signing.Error
	if !errors.As(err, &se) {
		return refuse(451, [3]int{4, 7, 5}, "verify_error", "Signature could not be checked, try again later", err)
	}
	msg := "Signature refused: " + se.Detail
	switch se.Reason {
	case signing.ReasonMalformed:
		return refuse(554, [3]int{5, 7, 5}, "sig_malformed", msg, err)
	case signing.ReasonSignerCount:
		return refuse(554, [3]int{5, 7, 5}, "sig_signer_count", msg, err)
	case signing.ReasonAlgorithm:
		return refuse(554, [3]int{5, 7, 5}, "sig_algorithm", msg, err)
	case signing.ReasonBadSignature:
		return refuse(554, [3]int{5, 7, 7}, "sig_integrity", msg, err)
	case signing.ReasonUntrusted:
		return refuse(554, [3]int{5, 7, 1}, "sig_untrusted", msg, err)
	case signing.ReasonExpired:
		return refuse(554, [3]int{5, 7, 1}, "sig_expired", msg, err)
	case signing.ReasonFutureSigningTime:
		return refuse(554, [3]int{5, 7, 1}, "sig_future", msg, err)
	case signing.ReasonKeyUsage:
		return refuse(554, [3]int{5, 7, 1}, "sig_key_usage", msg, err)
	case signing.ReasonRevoked:
		return refuse(554, [3]int{5, 7, 1}, "sig_revoked", msg, err)
	case signing.ReasonRevocationUnknown:
		return refuse(451, [3]int{4, 7, 5}, "sig_revocation_unknown", "Revocation status unavailable, try again later: "+se.Detail, err)
	case signing.ReasonEmailMismatch:
		return refuse(554, [3]int{5, 7, 1}, "sig_email_mismatch", msg, err)
	case signing.ReasonIDNPSMismatch:
		return refuse(554, [3]int{5, 7, 1}, "sig_idnps_mismatch", msg, err)
	default:
		return refuse(554, [3]int{5, 7, 0}, "sig_other", msg, err)
	}
}

func fromStore(err error) *Refusal {
	if errors.Is(err, store.ErrReplay) {
		return refuse(554, [3]int{5, 7, 1}, "replay",
			"A prescription with this number (or Message-ID) was already filed with different content", err)
	}
	// RFC 3463 X.2.2 mailbox full, transient (4.2.2): the sender keeps
	// the message and retries; nothing was filed for any recipient. The
	// recipient is named: the sender wrote the address, and with several
	// recipients it tells which one to call.
	var qe *store.QuotaError
	if errors.As(err, &qe) {
		return refuse(452, [3]int{4, 2, 2}, "over_quota", "Mailbox full: "+qe.Account+", try again later", err)
	}
	if errors.Is(err, store.ErrOverQuota) {
		return refuse(452, [3]int{4, 2, 2}, "over_quota", "Mailbox full, try again later", err)
	}
	// RFC 3463 X.3.0: mail system, other; transient so nothing is lost.
	return refuse(451, [3]int{4, 3, 0}, "store_error", "Temporary storage failure, try again later", err)
}

package intake

import (
	"strings"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/store"
)

// Forwarding is the patient forwarding policy (docs/forwarding.md).
type Forwarding struct {
	// PatientDomain is the patients' mail domain: a patient's address
	// is <INS>@PatientDomain.
	PatientDomain string
	// Registry lists the patients who told the administrator they chose
	// messaging-only delivery (nil: none).
	Registry *configs.Registry
}

// SetForwarding installs the forwarding policy (at start and on reload).
func (in *Intake) SetForwarding(f *Forwarding) { in.forwarding.Store(f) }

// PatientAddress reports whether addr is in the patients' domain and
// returns its local part, which must be a valid INS (mime.ValidINS) for the
// address to be a patient's.
func (in *Intake) PatientAddress(addr string) (ins string, ok bool) {
	f := in.forwarding.Load()
	if f == nil || f.PatientDomain == "" {
		return "", false
	}
	local, domain, found := strings.Cut(addr, "@")
	if !found || !strings.EqualFold(domain, f.PatientDomain) {
		return "", false
	}
	return local, true
}

// Reasons a copy is not forwarded, as the prescriber reads them in the
// DSN and the administrator in `rx show`.
const (
	reasonNotQualified = "the patient's identity is not qualified (X-MSS-INS is not O)"
	reasonHidden       = "the document is marked not visible to the patient"
	reasonOtherINS     = "the patient address's INS is not the prescription's"
)

// plan decides, for an accepted prescription, the outbound jobs that are
// filed with it and the history that explains them:
//
//   - a copy for the patient when the signed prescription says
//     X-Ordonnance-Delivery: messaging-only, when the registry records that
//     choice for its INS, or when the prescriber wrote to the patient's
//     address; never when the identity is not qualified (X-MSS-INS), when
//     the document is hidden from the patient, or to an address whose INS
//     is not the prescription's: those get a DSN telling the prescriber that
//     a paper copy is needed;
//   - an MDN "processed" per local recipient when Disposition-Notification-To
//     asks for one and equals the Return-Path (RFC 8098 §2.1: otherwise the
//     request could make the relay write to a third party), never in answer
//     to a report or an automatic message (RFC 3834, RFC 3464 §1).
func (in *Intake) plan(env *Envelope, outer, content []byte, rx *mime.Prescription) ([]store.Job, []store.RxEvent) {
	var (
		jobs   []store.Job
		events []store.RxEvent
	)
	prescriber := env.Sender()
	notForwarded := func(addr, reason string) {
		events = append(events, store.RxEvent{Kind: store.RxNotForwarded, Actor: addr, Detail: reason})
		jobs = append(jobs, store.Job{Kind: store.JobDSN, To: prescriber, Actor: addr, Status: mime.StatusFailed,
			Code: "5.7.1", Reason: reason})
	}

	for _, r := range env.Remotes {
		jobs = append(jobs, store.Job{Kind: store.JobRelay, From: prescriber, To: r})
		events = append(events, store.RxEvent{Kind: store.RxRelayQueued, Actor: r})
	}

	// Forwarding to the patient is the sender's operator's: mail from
	// another operator is not forwarded again from here.
	var why []string
	if env.Account != nil && rx.Delivery == mime.DeliveryMessagingOnly {
		why = append(why, "signed")
	}
	f := in.forwarding.Load()
	if env.Account != nil && f != nil && f.Registry.MessagingOnly(rx.PatientINS) {
		why = append(why, "registry")
	}
	addressed := false
	for _, p := range env.Patients {
		ins, _ := in.PatientAddress(p)
		if ins != rx.PatientINS {
			notForwarded(p, reasonOtherINS)
			continue
		}
		if !addressed {
			why = append(why, "addressed")
			addressed = true
		}
	}
	if len(why) > 0 {
		domain := configs.DefaultPatientDomain
		if f != nil && f.PatientDomain != "" {
			domain = f.PatientDomain
		}
		patient := rx.PatientINS + "@" + domain
		switch qualified, _ := mime.QualifiedIdentity(outer, content); {
		case !qualified:
			notForwarded(patient, reasonNotQualified)
		case rx.HiddenFromPatient:
			notForwarded(patient, reasonHidden)
		default:
			detail := strings.Join(why, "+")
			jobs = append(jobs, store.Job{Kind: store.JobForward, From: prescriber, To: patient, Status: detail})
			events = append(events, store.RxEvent{Kind: store.RxForwardQueued, Actor: patient, Detail: detail})
		}
	}

	if dnt, ok := mime.DispositionNotificationTo(outer); ok && SameAddress(dnt, env.MailFrom) &&
		!mime.IsAutomatic(outer) && !mime.IsAutomatic(content) {
		for _, r := range env.Recipients {
			jobs = append(jobs, store.Job{Kind: store.JobMDN, To: dnt, Actor: r.Address})
		}
	}
	return jobs, events
}

package configs

import (
	"strings"
)

// Operators is how this relay deals with the other MSSanté operators
// ([operators]): the whitelist of operator domains it accepts mail from
// (smtp.relay) and relays local prescribers' mail to.
type Operators struct {
	// Whitelist is the list of operator domains: a text file (one domain a
	// line) or the agency's XML list (//Domaine/Nom, a name ending in
	// .xml), whose detached signature Signature must verify against the
	// trust anchors. Reloaded when the files change and on SIGHUP.
	Whitelist string `toml:"whitelist"`
	Signature string `toml:"signature"`
	// Publisher, when set, is the e-mail address or the subject common
	// name the whitelist's signing certificate must carry: without it any
	// certificate chained to the trust anchors may sign the list.
	Publisher string `toml:"publisher"`
}

// Relaying reports whether mail is exchanged with other operators.
func (o Operators) Relaying() bool { return o.Whitelist != "" }

// operators checks [operators] and smtp.relay.
func (v *validator) operators() {
	o := &v.cfg.Operators
	if len(v.cfg.SMTP.Relay) > 0 && o.Whitelist == "" {
		v.fail("smtp.relay", "needs operators.whitelist: the operator domains that may deliver mail here")
	}
	if o.Whitelist == "" {
		if o.Signature != "" {
			v.fail("operators.signature", "set without operators.whitelist")
		}
		return
	}
	o.Whitelist = v.path(o.Whitelist)
	if _, err := readFileLimited(o.Whitelist, maxTrustFileBytes); err != nil {
		v.fail("operators.whitelist", "%v", err)
	}
	isXML := strings.EqualFold(pathExt(o.Whitelist), ".xml")
	switch {
	case o.Signature != "":
		o.Signature = v.path(o.Signature)
		if _, err := readFileLimited(o.Signature, maxPEMFileBytes); err != nil {
			v.fail("operators.signature", "%v", err)
		}
	case isXML:
		v.fail("operators.whitelist", "an XML whitelist must come with its detached signature: set operators.signature")
	}
	if strings.ContainsAny(o.Publisher, "\r\n\x00") {
		v.fail("operators.publisher", "must be one line")
	}
}

func pathExt(p string) string {
	if i := strings.LastIndexByte(p, '.'); i >= 0 && !strings.ContainsAny(p[i:], `/\`) {
		return p[i:]
	}
	return ""
}

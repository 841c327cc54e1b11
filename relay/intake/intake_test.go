package intake

import (
	"testing"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/signing"
)

// TestCheckPrescriber: the IDNPS written in the prescription must be the
// signer's (when the certificate names one) and the account's (when the
// account has an RPPS). Each mismatch has its own reason label, which the
// audit trail records ("554 5.7.1 rx_signer_mismatch").
//
// rx_account_mismatch is defensive: on submission the signature check
// already requires the signer's IDNPS to be the account's
// (sig_idnps_mismatch), so over SMTP it is reached only if that check is
// ever relaxed. It is exercised here directly.
func TestCheckPrescriber(t *testing.T) {
	const (
		rpps  = "10101201234"
		idnps = "8" + rpps
		other = "810101209999"
	)
	account := &configs.Account{Address: "dr@example.test", Role: configs.RolePrescriber, RPPS: rpps}
	noRPPS := &configs.Account{Address: "dr@example.test", Role: configs.RolePrescriber}
	tests := []struct {
		name    string
		rx      string // IDNPS in the prescription
		signer  string // IDNPS in the certificate ("" none)
		account *configs.Account
		reason  string // "" when accepted
	}{
		{"all three agree", idnps, idnps, account, ""},
		{"from another operator, signer agrees", idnps, idnps, nil, ""},
		{"account without RPPS, signer agrees", idnps, idnps, noRPPS, ""},
		{"prescription names another prescriber than the signer", other, idnps, account, "rx_signer_mismatch"},
		{"from another operator, prescription names another prescriber", other, idnps, nil, "rx_signer_mismatch"},
		{"signer agrees, account registered for another RPPS", other, other, account, "rx_account_mismatch"},
		{"signer without IDNPS, account agrees", idnps, "", account, ""},
		{"signer without IDNPS, account registered for another RPPS", other, "", account, "rx_account_mismatch"},
		// Without an account, a signer without IDNPS is refused earlier
		// (rx_signer_not_professional, in accept): nothing to compare here.
		{"signer without IDNPS, no account", other, "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := checkPrescriber(&mime.Prescription{IDNPS: tt.rx}, &signing.Signer{IDNPS: tt.signer}, tt.account)
			if tt.reason == "" {
				if r != nil {
					t.Fatalf("refused: %v (%s)", r, r.Reason)
				}
				return
			}
			if r == nil {
				t.Fatalf("accepted, want %s", tt.reason)
			}
			if r.Reason != tt.reason || r.Code != 554 || r.Enhanced != [3]int{5, 7, 1} || r.Temporary() {
				t.Fatalf("got %d %v %s, want 554 5.7.1 %s", r.Code, r.Enhanced, r.Reason, tt.reason)
			}
			if got, want := r.outcome(), "554 5.7.1 "+tt.reason; got != want {
				t.Errorf("audit outcome %q, want %q", got, want)
			}
			if r.Message == "" {
				t.Error("no message for the sender")
			}
		})
	}
}

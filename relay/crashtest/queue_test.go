package crashtest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mssrelay/configs"
	"mssrelay/mime"
	"mssrelay/relay"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
	"mssrelay/store"
)

// stallingOperator is the patients' operator: its first DATA never
// completes (the daemon is killed during it), later ones are accepted.
type stallingOperator struct {
	addr     string
	rootFile string
	inData   chan struct{} // closed when the first DATA begins
	release  chan struct{}

	mu  sync.Mutex
	n   int
	got [][]byte
}

type opSession struct{ op *stallingOperator }

func (s opSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s opSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s opSession) Reset()                               {}
func (s opSession) Logout() error                        { return nil }
func (s opSession) Data(r io.Reader) error {
	s.op.mu.Lock()
	s.op.n++
	first := s.op.n == 1
	s.op.mu.Unlock()
	if first {
		close(s.op.inData)
		<-s.op.release
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "never answered"}
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.op.mu.Lock()
	s.op.got = append(s.op.got, b)
	s.op.mu.Unlock()
	return nil
}

func (o *stallingOperator) received() [][]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([][]byte(nil), o.got...)
}

func startStallingOperator(t *testing.T, info *demo.Info) *stallingOperator {
	t.Helper()
	pki, err := signing.NewDevPKI()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.Save(dir); err != nil {
		t.Fatal(err)
	}
	kp, err := pki.IssueServer("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
	for _, c := range kp.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	clientCAs := x509.NewCertPool()
	for _, f := range []string{info.RootCA, info.Intermediate} {
		b, err := os.ReadFile(info.Path(f))
		if err != nil {
			t.Fatal(err)
		}
		clientCAs.AppendCertsFromPEM(b)
	}
	op := &stallingOperator{rootFile: filepath.Join(dir, signing.DevRootCertFile),
		inData: make(chan struct{}), release: make(chan struct{})}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return opSession{op}, nil }))
	s.Domain = "mx.patient.test"
	s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: clientCAs, MinVersion: tls.VersionTLS12}
	s.MaxLineLength = 0
	s.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { close(op.release); s.Close() })
	op.addr = l.Addr().String()
	return op
}

// TestQueueSurvivesKill: the daemon is killed with SIGKILL while it is in
// the middle of forwarding a copy to the patients' operator; restarted, it
// delivers the copy (the job was written with the filing, the attempt
// before it was made), byte-identical in its signed part.
func TestQueueSurvivesKill(t *testing.T) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	dir := t.TempDir()
	info, _, err := demo.Ensure(dir, freePorts(t, rng))
	if err != nil {
		t.Fatal(err)
	}
	op := startStallingOperator(t, info)
	cfgPath := filepath.Join(dir, demo.ConfigFile)
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[outbound]\nretry_min = \"1s\"\nretry_max = \"2s\"\ncas = [%q]\n\n[[outbound.route]]\ndomain = %q\nhosts = [%q]\n",
		op.rootFile, configs.DefaultPatientDomain, op.addr)
	f.Close()

	d := &daemon{t: t, bin: buildBinary(t), dir: dir, info: info}
	d.start(true)
	kp, err := info.Signer()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sample := demo.SamplePrescription(now)
	sample.Delivery, sample.MSSINS = mime.DeliveryMessagingOnly, "O"
	msg, err := demo.Compose(kp, info.Prescriber.Address, info.Pharmacy.Address, "Ordonnance", sample.Content(), now)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := info.SubmitOptions()
	if err != nil {
		t.Fatal(err)
	}
	c, err := submit.Dial(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(info.Prescriber.Address, []string{info.Pharmacy.Address}, msg); err != nil {
		t.Fatal(err)
	}
	c.Close()

	select {
	case <-op.inData:
	case <-time.After(startBound):
		d.dumpLog()
		t.Fatal("the daemon never started forwarding")
	}
	d.kill() // mid-DATA: the operator never answered
	d.start(true)
	deadline := time.Now().Add(startBound)
	for len(op.received()) == 0 {
		if time.Now().After(deadline) {
			d.dumpLog()
			t.Fatal("the restarted daemon did not deliver the copy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := d.terminate(); code != 0 {
		t.Fatalf("daemon exit code %d", code)
	}
	got := op.received()
	if len(got) != 1 || !bytes.HasSuffix(got[0], msg) {
		t.Fatalf("%d copies delivered; the first ends as submitted: %v", len(got), len(got) > 0 && bytes.HasSuffix(got[0], msg))
	}
	st, err := store.Open(filepath.Join(dir, relay.DBFile), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if jobs, err := st.Jobs(); err != nil || len(jobs) != 0 {
		t.Fatalf("queue after delivery: %+v %v", jobs, err)
	}
	rec, err := st.RecordByNumber(sample.Number)
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := st.RecordEvents(rec.ID)
	if last := evs[len(evs)-1]; last.Kind != store.RxForwarded {
		t.Errorf("last history event %+v", last)
	}
}

//go:build unix

// Package crashtest proves the promise "nothing that got 250 is ever lost"
// against the real binary: it runs `mssrelay serve` as a subprocess, submits
// prescriptions from many connections, kills the daemon with SIGKILL at
// random moments, restarts it and checks the mailbox over IMAP.
//
// SIGKILL tests a process crash: what the daemon wrote reached the kernel
// but the page cache survives. A power loss (fsync honesty) needs a VM or a
// failing block device and is out of reach of a unit test.
//
// Environment:
//
//	MSSRELAY_CRASH_ROUNDS  number of kill/restart rounds (default 8, 3 with -short)
//	MSSRELAY_CRASH_SEED    seed of the random choices (default: from the clock;
//	                       the seed is logged). Timing still varies between
//	                       runs: the seed fixes the choices, not the schedule.
package crashtest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
	"github.com/smallstep/pkcs7"

	"mssrelay/mime"
	"mssrelay/relay/demo"
	"mssrelay/relay/submit"
	"mssrelay/signing"
)

const (
	defaultRounds = 8
	shortRounds   = 3
	// workers is the number of concurrent submission connections: enough
	// for the store's group commit to batch several filings in one bbolt
	// transaction, so that a kill can land in the middle of a batch.
	workers = 8
	// perRound is how many fresh prescriptions are signed for each load
	// phase: more than the relay files before the kill on a 2-core machine,
	// so that the workers are still busy when it comes.
	perRound = 400
	// resendOneIn: one send in resendOneIn repeats an accepted message, to
	// exercise "accepted once, not filed twice" under load.
	resendOneIn = 8
	// maxKillDelay bounds the random wait between the first 250 of a load
	// phase and the signal.
	maxKillDelay = 300 * time.Millisecond
	// earlyKillOneIn: before one round in earlyKillOneIn the daemon is
	// also killed within maxEarlyKill of its start, while it opens the
	// store and creates the accounts' mailboxes (a write transaction).
	earlyKillOneIn = 3
	maxEarlyKill   = 40 * time.Millisecond
	// budget bounds the default run: no new round starts past it. An
	// explicit MSSRELAY_CRASH_ROUNDS lifts it (the go test -timeout still
	// applies).
	budget = 40 * time.Second

	// Liveness bounds, not timed assertions: they turn a hung daemon into
	// a failure that names the phase instead of a go test timeout.
	startBound   = 30 * time.Second
	stopBound    = 40 * time.Second // above the default limits.shutdown_timeout (15 s)
	firstBound   = 30 * time.Second
	commandBound = 30 * time.Second
)

// recordRE reads the record id out of the relay's 250 replies
// ("Prescription filed as record N", "Already filed as record N (not filed twice)").
var recordRE = regexp.MustCompile(`record (\d+)`)

// TestCrashSafety: every prescription that got 250 survives SIGKILL at any
// moment, intact (its signature still verifies), readable over IMAP, under
// the UID it was first seen with, exactly once; a resend of one whose reply
// was lost is answered 250 and not filed twice; SIGTERM exits 0 and keeps
// what it acknowledged while draining.
func TestCrashSafety(t *testing.T) {
	rounds, limited := defaultRounds, true
	if testing.Short() {
		rounds = shortRounds
	}
	if v := os.Getenv("MSSRELAY_CRASH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("MSSRELAY_CRASH_ROUNDS=%q: want a positive integer", v)
		}
		rounds, limited = n, false
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("MSSRELAY_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("MSSRELAY_CRASH_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (MSSRELAY_CRASH_SEED=%d repeats the random choices), %d rounds", seed, seed, rounds)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	began := time.Now()
	e := newEnv(t, rng)
	e.phase = "start"
	e.d.start(true)
	e.check("initial")

	done := 0
	for round := 1; round <= rounds; round++ {
		if limited && time.Since(began) > budget {
			t.Logf("time budget of %s spent: stopping after %d rounds", budget, done)
			break
		}
		if dl, ok := t.Deadline(); ok && time.Until(dl) < 3*stopBound {
			t.Logf("go test deadline near: stopping after %d rounds", done)
			break
		}
		e.phase = fmt.Sprintf("round %d", round)
		e.resendUnknown()
		e.load(e.d.kill)
		if e.rng.IntN(earlyKillOneIn) == 0 {
			e.d.killEarly(time.Duration(e.rng.Int64N(int64(maxEarlyKill))))
		}
		e.d.start(true)
		e.check(e.phase + ", after restart")
		if t.Failed() {
			t.FailNow()
		}
		done++
	}

	// What was in flight at the last kill, then a graceful stop under
	// load: SIGTERM drains the transactions in DATA and exits 0; whatever
	// got 250 during the drain is there after the next start.
	e.phase = "graceful stop"
	e.resendUnknown()
	e.check(e.phase + ", before the load")
	e.load(func() {
		if code := e.d.terminate(); code != 0 {
			t.Errorf("SIGTERM under load: exit code %d, want 0", code)
		}
	})
	e.d.start(true)
	e.check(e.phase + ", after restart")
	e.phase = "final"
	drained := e.resendUnknown()
	e.check("final")
	if code := e.d.terminate(); code != 0 {
		t.Errorf("SIGTERM when idle: exit code %d, want 0", code)
	}

	// README: on SIGTERM "transactions in DATA finish". A prescription
	// the relay filed during the drain must have had its 250 delivered;
	// one it filed while the client saw the connection drop is not lost
	// (the resend above was answered "not filed twice") but the drain
	// broke its promise.
	t.Run("graceful stop delivers the 250 of what it filed", func(t *testing.T) {
		if len(drained) == 0 {
			return
		}
		msg := fmt.Sprintf("%d prescription(s) filed during the SIGTERM drain, connection closed before their 250: %s",
			len(drained), strings.Join(drained, ", "))
		t.Error(msg)
	})
	t.Logf("%d rounds, %d starts (%d killed while starting); %d prescriptions accepted; %d resends of accepted ones "+
		"answered \"not filed twice\"; %d outcomes unknown at a stop, resent after it: %d had been filed, %d were filed by the resend; %s",
		done, e.d.starts, e.d.earlyKills, len(e.accepted), e.dupReplies.Load(),
		e.unknownTotal, e.unknownWasFiled, e.unknownNewlyFiled, time.Since(began).Round(time.Millisecond))
}

// env is the state of one crash test: the daemon, what was sent, what the
// relay answered and what IMAP showed so far.
type env struct {
	t     *testing.T
	rng   *rand.Rand // test goroutine only; each worker gets its own
	d     *daemon
	info  *demo.Info
	kp    *signing.KeyPair
	roots *x509.CertPool
	phase string // for messages: "round 3", "graceful stop"…

	// clock orders events across goroutines without wall time: a message
	// whose 250 was read before another's DATA began must have the lower
	// UID (the store assigns UIDs in commit order).
	clock      atomic.Uint64
	dupReplies atomic.Int64

	mu       sync.Mutex
	msgs     map[string]*message // every message ever sent, by prescription number
	accepted []*message          // got 250, in the order of the 250s
	unknown  map[string]*message // sent, neither 250 nor a permanent refusal
	records  map[uint64]string   // record id → number, from the 250 replies
	// transient counts the 4xx replies of the current load by reply text,
	// to explain a load phase without a single 250.
	transient map[string]int

	unknownTotal, unknownWasFiled, unknownNewlyFiled int

	// The mailbox as IMAP showed it so far (test goroutine only).
	uidValidity uint32
	uids        map[string]uint32 // number → UID
	maxUID      uint32
	lastUIDNext imap.UID
}

// message is one signed prescription and what became of it.
type message struct {
	number     string
	raw        []byte
	firstSent  uint64 // clock when its first DATA began
	acceptedAt uint64 // clock when its first 250 was read (0: none yet)
	record     uint64 // record id of that 250
}

func newEnv(t *testing.T, rng *rand.Rand) *env {
	t.Helper()
	dir := t.TempDir()
	info, _, err := demo.Ensure(dir, freePorts(t, rng))
	if err != nil {
		t.Fatalf("demo.Ensure: %v", err)
	}
	kp, err := info.Signer()
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(info.Path(info.RootCA))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("%s holds no certificate", info.RootCA)
	}
	return &env{
		t: t, rng: rng, info: info, kp: kp, roots: roots,
		d:       &daemon{t: t, bin: buildBinary(t), dir: dir, info: info},
		msgs:    map[string]*message{},
		unknown: map[string]*message{},
		records: map[uint64]string{},
		uids:    map[string]uint32{},
	}
}

// sign prepares n fresh prescriptions before a load starts, so that the
// CPU spent signing does not compete with the daemon during the load.
func (e *env) sign(n int) []*message {
	e.t.Helper()
	now := time.Now()
	out := make([]*message, n)
	for i := range out {
		rx := demo.SamplePrescription(now)
		raw, err := demo.Compose(e.kp, e.info.Prescriber.Address, e.info.Pharmacy.Address, "Ordonnance "+rx.Number, rx.Content(), now)
		if err != nil {
			e.t.Fatalf("composing a prescription: %v", err)
		}
		out[i] = &message{number: rx.Number, raw: raw}
	}
	return out
}

// load runs the workers against the daemon, waits for the first 250 of the
// phase, waits a random moment and calls stop (which kills or terminates
// the daemon), then waits for every worker to notice.
func (e *env) load(stop func()) {
	t := e.t
	t.Helper()
	fresh := make(chan *message, perRound)
	for _, m := range e.sign(perRound) {
		fresh <- m
	}
	close(fresh)
	opts, err := e.info.SubmitOptions()
	if err != nil {
		t.Fatal(err)
	}
	opts.Timeout = commandBound

	e.mu.Lock()
	before := len(e.accepted)
	e.transient = map[string]int{}
	e.mu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{e: e, id: i, opts: opts, fresh: fresh,
			rng:           rand.New(rand.NewPCG(e.rng.Uint64(), e.rng.Uint64())),
			firstAccepted: func() { once.Do(func() { close(first) }) }}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	delay := time.Duration(e.rng.Int64N(int64(maxKillDelay)))
	select {
	case <-first:
	case <-allDone:
		t.Errorf("%s: every worker stopped before any 250 (transient refusals: %v)", e.phase, e.transientSummary())
	case <-e.d.exited:
		t.Errorf("%s: the daemon exited on its own during the load: %v", e.phase, e.d.cmd.ProcessState)
	case <-time.After(firstBound):
		t.Errorf("%s: no 250 within %s of the load starting", e.phase, firstBound)
	}
	select {
	case <-time.After(delay):
	case <-allDone:
	}
	// Stop the workers first: a send already under way stays in flight
	// and meets the signal; none starts after it, so that a worker that
	// cannot connect is an error, not a race with the signal.
	cancel()
	stop()
	<-allDone
	if t.Failed() {
		e.d.dumpLog()
		t.FailNow()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t.Logf("%s: stopped %s after the first 250; %d accepted in this load, %d outcomes unknown, transient refusals: %v",
		e.phase, delay.Round(time.Millisecond), len(e.accepted)-before, len(e.unknown), e.transient)
}

func (e *env) transientSummary() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fmt.Sprint(e.transient)
}

// worker is one submission connection, redialled when the relay drops it.
type worker struct {
	e             *env
	id            int
	opts          submit.Options
	fresh         <-chan *message
	rng           *rand.Rand
	firstAccepted func()
}

func (w *worker) run(ctx context.Context) {
	e := w.e
	for ctx.Err() == nil {
		c, err := submit.Dial(w.opts)
		if err != nil {
			if ctx.Err() == nil {
				e.t.Errorf("%s: worker %d: %v", e.phase, w.id, err)
			}
			return
		}
		for alive := true; alive && ctx.Err() == nil; {
			m, resend := w.next()
			if m == nil {
				c.Close()
				return
			}
			alive = w.send(c, m, resend)
		}
		c.Close()
	}
}

// next picks an accepted message to resend now and then, else a fresh one
// (nil when the phase's supply is spent).
func (w *worker) next() (m *message, resend bool) {
	e := w.e
	if w.rng.IntN(resendOneIn) == 0 {
		e.mu.Lock()
		if n := len(e.accepted); n > 0 {
			m = e.accepted[w.rng.IntN(n)]
		}
		e.mu.Unlock()
		if m != nil {
			return m, true
		}
	}
	return <-w.fresh, false
}

// send submits m and records the outcome; it reports whether the
// connection is still usable.
func (w *worker) send(c *submit.Conn, m *message, resend bool) bool {
	e := w.e
	sent := e.clock.Add(1)
	if !resend {
		e.mu.Lock()
		m.firstSent = sent
		e.msgs[m.number] = m
		e.mu.Unlock()
	}
	reply, err := c.Send(e.info.Prescriber.Address, []string{e.info.Pharmacy.Address}, m.raw)
	var se *smtp.SMTPError
	switch {
	case err == nil && resend:
		e.dupReplies.Add(1)
		e.checkDuplicateReply(m, reply)
		return true
	case err == nil:
		e.accept(m, reply, "Prescription filed as record")
		w.firstAccepted()
		return true
	case errors.As(err, &se) && se.Code >= 500:
		// Every message is valid: a permanent refusal is a bug, and one
		// during a crash is the worst kind (the sender gives up).
		e.t.Errorf("%s: %s refused: %v", e.phase, m.number, err)
		return true
	default:
		// The connection died mid-transaction or the relay answered 4xx
		// (421 while shutting down): unknown until a resend.
		e.mu.Lock()
		if se != nil {
			e.transient[fmt.Sprintf("%d %v %s", se.Code, se.EnhancedCode, se.Message)]++
		}
		if !resend {
			e.unknown[m.number] = m
			e.unknownTotal++
		}
		e.mu.Unlock()
		return se != nil && se.Code != 421
	}
}

// accept records the first 250 of m; want is text the reply must carry.
func (e *env) accept(m *message, reply, want string) {
	at := e.clock.Add(1)
	id, ok := recordID(reply)
	if !ok || !strings.Contains(reply, want) {
		e.t.Errorf("%s: %s: 250 reply %q, want %q and a record id", e.phase, m.number, reply, want)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if other, dup := e.records[id]; ok && dup && other != m.number {
		e.t.Errorf("%s: record %d reported for both %s and %s", e.phase, id, other, m.number)
	}
	e.records[id] = m.number
	m.acceptedAt, m.record = at, id
	e.accepted = append(e.accepted, m)
	delete(e.unknown, m.number)
}

// checkDuplicateReply: a resend of an accepted message names the record
// the first 250 named.
func (e *env) checkDuplicateReply(m *message, reply string) {
	e.mu.Lock()
	want := m.record
	e.mu.Unlock()
	id, ok := recordID(reply)
	if !strings.Contains(reply, "not filed twice") || !ok || id != want {
		e.t.Errorf("%s: resend of %s (record %d): reply %q, want the same record, not filed twice", e.phase, m.number, want, reply)
	}
}

func recordID(reply string) (uint64, bool) {
	sm := recordRE.FindStringSubmatch(reply)
	if sm == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(sm[1], 10, 64)
	return n, err == nil
}

// resendUnknown resends, on the restarted daemon, every message whose
// outcome was unknown, as a client that lost the reply does. Each must be
// answered 250: "not filed twice" when IMAP already showed it (the commit
// happened, the reply was lost), "filed" when it did not. It returns the
// numbers of those that had been filed.
func (e *env) resendUnknown() (wasFiled []string) {
	t := e.t
	t.Helper()
	e.mu.Lock()
	pending := make([]*message, 0, len(e.unknown))
	for _, m := range e.unknown {
		pending = append(pending, m)
	}
	e.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	slices.SortFunc(pending, func(a, b *message) int { return cmp.Compare(a.firstSent, b.firstSent) })
	opts, err := e.info.SubmitOptions()
	if err != nil {
		t.Fatal(err)
	}
	opts.Timeout = commandBound
	c, err := submit.Dial(opts)
	if err != nil {
		t.Fatalf("%s: resending: %v", e.phase, err)
	}
	defer c.Close()
	for _, m := range pending {
		want := "Prescription filed as record"
		if _, seen := e.uids[m.number]; seen {
			want = "not filed twice"
			e.unknownWasFiled++
			wasFiled = append(wasFiled, m.number)
		} else {
			e.unknownNewlyFiled++
		}
		reply, err := c.Send(e.info.Prescriber.Address, []string{e.info.Pharmacy.Address}, m.raw)
		if err != nil {
			t.Fatalf("%s: resending %s after the restart: %v", e.phase, m.number, err)
		}
		e.accept(m, reply, want)
	}
	return wasFiled
}

// check reads the pharmacy's INBOX over IMAP and asserts the invariants
// against everything the relay acknowledged and every earlier check.
func (e *env) check(when string) {
	t := e.t
	t.Helper()
	sel, fetched := e.fetchInbox(when)

	// RFC 9051 §2.3.1.1: UIDVALIDITY stays while UIDs are kept, and
	// UIDNEXT never goes down.
	if e.uidValidity == 0 {
		e.uidValidity = sel.UIDValidity
	} else if sel.UIDValidity != e.uidValidity {
		t.Errorf("%s: UIDVALIDITY %d, was %d", when, sel.UIDValidity, e.uidValidity)
	}
	if sel.UIDNext < e.lastUIDNext {
		t.Errorf("%s: UIDNEXT went down from %d to %d", when, e.lastUIDNext, sel.UIDNext)
	}
	e.lastUIDNext = sel.UIDNext

	e.mu.Lock()
	defer e.mu.Unlock()
	prevMax := e.maxUID
	seen := map[string]uint32{}
	var lastUID uint32
	for _, f := range fetched {
		uid := uint32(f.UID)
		if uid <= lastUID {
			t.Errorf("%s: UID %d follows UID %d", when, uid, lastUID)
		}
		lastUID = uid
		if imap.UID(uid) >= sel.UIDNext {
			t.Errorf("%s: UID %d not below UIDNEXT %d", when, uid, sel.UIDNext)
		}
		raw := f.FindBodySection(&imap.FetchItemBodySection{Peek: true})
		number := e.verify(when, uid, raw)
		if number == "" {
			continue
		}
		if other, dup := seen[number]; dup {
			t.Errorf("%s: %s filed twice: UIDs %d and %d", when, number, other, uid)
			continue
		}
		seen[number] = uid
		m, ok := e.msgs[number]
		if !ok {
			t.Errorf("%s: UID %d holds %s, which was never sent", when, uid, number)
			continue
		}
		// The relay prepends trace fields and changes nothing else.
		if !bytes.HasSuffix(raw, m.raw) {
			t.Errorf("%s: UID %d (%s): fetched bytes do not end with the submitted message", when, uid, number)
		}
		if old, known := e.uids[number]; known {
			if old != uid {
				t.Errorf("%s: %s moved from UID %d to UID %d", when, number, old, uid)
			}
			continue
		}
		// A message first seen now was filed after everything seen before.
		if uid <= prevMax {
			t.Errorf("%s: %s first seen with UID %d, not above the highest UID seen before (%d): a UID was reused",
				when, number, uid, prevMax)
		}
		e.uids[number] = uid
		e.maxUID = max(e.maxUID, uid)
	}
	for number, uid := range e.uids {
		if _, ok := seen[number]; !ok {
			t.Errorf("%s: %s (UID %d) vanished", when, number, uid)
		}
	}
	for _, m := range e.accepted {
		if _, ok := seen[m.number]; !ok {
			t.Errorf("%s: %s got 250 (record %d) and is not in INBOX: LOST", when, m.number, m.record)
		}
	}
	e.checkCausality(when, seen)
	t.Logf("%s: INBOX holds %d (UIDNEXT %d); %d accepted, %d unknown", when, len(fetched), sel.UIDNext, len(e.accepted), len(e.unknown))
}

// fetchInbox logs in as the pharmacy, EXAMINEs INBOX and fetches every
// message with its UID and whole body.
func (e *env) fetchInbox(when string) (*imap.SelectData, []*imapclient.FetchMessageBuffer) {
	t := e.t
	t.Helper()
	tlsCfg, err := e.info.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	c, err := imapclient.DialTLS(e.info.IMAPTLS, &imapclient.Options{TLSConfig: tlsCfg, Dialer: &net.Dialer{Timeout: commandBound}})
	if err != nil {
		t.Fatalf("%s: dial IMAP: %v", when, err)
	}
	defer c.Close()
	// imapclient has no command deadline: closing the connection turns a
	// hung server into an error instead of a go test timeout.
	watchdog := time.AfterFunc(2*commandBound, func() { c.Close() })
	defer watchdog.Stop()
	if err := c.Login(e.info.Pharmacy.Address, e.info.Pharmacy.Password).Wait(); err != nil {
		t.Fatalf("%s: IMAP LOGIN: %v", when, err)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("%s: EXAMINE INBOX: %v", when, err)
	}
	var fetched []*imapclient.FetchMessageBuffer
	if sel.NumMessages > 0 {
		fetched, err = c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{
			UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}},
		}).Collect()
		if err != nil {
			t.Fatalf("%s: FETCH: %v", when, err)
		}
	}
	if uint32(len(fetched)) != sel.NumMessages {
		t.Errorf("%s: EXAMINE said %d messages, FETCH 1:* returned %d", when, sel.NumMessages, len(fetched))
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("%s: LOGOUT: %v", when, err)
	}
	return sel, fetched
}

// verify checks one fetched message as an executant's software would and
// returns its prescription number ("" when it failed). The signature is
// checked with the PKCS#7 library and the demo root directly, not with
// package signing: this proves the bytes are intact whatever the relay's
// acceptance policy (CRLs, usages) is, as `openssl cms -verify` would.
func (e *env) verify(when string, uid uint32, raw []byte) string {
	t := e.t
	signed, err := mime.Split(raw)
	if err != nil {
		t.Errorf("%s: UID %d: splitting: %v", when, uid, err)
		return ""
	}
	p7, err := pkcs7.Parse(signed.PKCS7)
	if err != nil {
		t.Errorf("%s: UID %d: parsing the signature: %v", when, uid, err)
		return ""
	}
	p7.Content = signed.Content
	if err := p7.VerifyWithChainAtTime(e.roots, time.Now()); err != nil {
		t.Errorf("%s: UID %d: signature no longer verifies: %v", when, uid, err)
		return ""
	}
	if s := p7.GetOnlySigner(); s == nil || !slices.Contains(s.EmailAddresses, e.info.Prescriber.Address) {
		t.Errorf("%s: UID %d: not signed by %s", when, uid, e.info.Prescriber.Address)
	}
	rx, err := mime.ExtractPrescription(signed.Content)
	if err != nil {
		t.Errorf("%s: UID %d: prescription: %v", when, uid, err)
		return ""
	}
	return rx.Number
}

// checkCausality: if A's 250 was read before B's first DATA began, A was
// committed before B, so UID(A) < UID(B). Checked for every such pair in
// O(n log n): the accepted sorted by acceptance, with a running maximum.
func (e *env) checkCausality(when string, seen map[string]uint32) {
	type acc struct {
		at  uint64
		uid uint32
	}
	var as []acc
	for _, m := range e.accepted {
		if uid, ok := seen[m.number]; ok {
			as = append(as, acc{m.acceptedAt, uid})
		}
	}
	slices.SortFunc(as, func(a, b acc) int { return cmp.Compare(a.at, b.at) })
	runningMax := make([]uint32, len(as))
	for i, a := range as {
		runningMax[i] = a.uid
		if i > 0 {
			runningMax[i] = max(runningMax[i], runningMax[i-1])
		}
	}
	for number, uid := range seen {
		m := e.msgs[number]
		if m == nil {
			continue
		}
		k, _ := slices.BinarySearchFunc(as, m.firstSent, func(a acc, at uint64) int { return cmp.Compare(a.at, at) })
		if k > 0 && runningMax[k-1] >= uid {
			e.t.Errorf("%s: %s has UID %d, but a message accepted before it was first sent has UID %d",
				when, number, uid, runningMax[k-1])
		}
	}
}

// daemon is one `mssrelay serve` subprocess at a time over the same data
// directory and ports.
type daemon struct {
	t                  *testing.T
	bin                string
	dir                string
	info               *demo.Info
	starts, earlyKills int

	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has been waited for
	logPath string
}

// start runs the daemon; with wait, it returns once every listener
// accepts connections.
func (d *daemon) start(wait bool) {
	t := d.t
	t.Helper()
	d.starts++
	d.logPath = filepath.Join(d.dir, fmt.Sprintf("daemon-%02d.log", d.starts))
	f, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(d.bin, "serve", "-config", filepath.Join(d.dir, demo.ConfigFile))
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting the daemon: %v", err)
	}
	f.Close() // the child has its own descriptor
	d.cmd = cmd
	exited := make(chan struct{})
	d.exited = exited
	go func() {
		_ = cmd.Wait() // the outcome is read from cmd.ProcessState
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill() // our own child, by its pid
			<-exited
		}
	})
	if !wait {
		return
	}

	deadline := time.Now().Add(startBound)
	for _, a := range []string{d.info.Submission, d.info.SubmissionTLS, d.info.IMAPTLS, d.info.IMAPSTARTTLS} {
		for {
			select {
			case <-exited:
				d.dumpLog()
				t.Fatalf("start %d: the daemon exited before listening: %v", d.starts, cmd.ProcessState)
			default:
			}
			conn, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				d.dumpLog()
				t.Fatalf("start %d: %s not accepting within %s: %v", d.starts, a, startBound, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// killEarly starts the daemon and kills it after delay, whatever it is
// doing by then (loading the config, opening the store, creating
// mailboxes).
func (d *daemon) killEarly(delay time.Duration) {
	d.t.Helper()
	d.earlyKills++
	d.start(false)
	select {
	case <-time.After(delay):
	case <-d.exited:
		d.dumpLog()
		d.t.Fatalf("start %d: the daemon exited on its own within %s: %v", d.starts, delay, d.cmd.ProcessState)
	}
	d.kill()
}

// kill sends SIGKILL and asserts that the daemon was still running to
// receive it.
func (d *daemon) kill() {
	t := d.t
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("SIGKILL: %v", err)
	}
	d.wait()
	ws, ok := d.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		d.dumpLog()
		t.Errorf("start %d: the daemon had already exited when killed: %v", d.starts, d.cmd.ProcessState)
	}
}

// terminate sends SIGTERM and returns the exit code.
func (d *daemon) terminate() int {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatalf("SIGTERM: %v", err)
	}
	d.wait()
	code := d.cmd.ProcessState.ExitCode()
	if code != 0 {
		d.dumpLog()
	}
	return code
}

func (d *daemon) wait() {
	d.t.Helper()
	select {
	case <-d.exited:
	case <-time.After(stopBound):
		d.dumpLog()
		d.t.Fatalf("start %d: the daemon did not exit within %s of the signal", d.starts, stopBound)
	}
}

// dumpLog shows the end of the current daemon's log.
func (d *daemon) dumpLog() {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		d.t.Logf("daemon log: %v", err)
		return
	}
	const tail = 6 << 10
	if len(b) > tail {
		b = b[len(b)-tail:]
	}
	d.t.Logf("end of %s:\n%s", d.logPath, b)
}

// freePorts picks four loopback ports for the daemon. It must bind the
// same ports on every restart, so port 0 in the config would not do. The
// ports are taken below the kernel's ephemeral range when it is known:
// there no outgoing connection (ours or another process's) can grab one
// while the daemon is down between a kill and the restart.
func freePorts(t *testing.T, rng *rand.Rand) demo.Ports {
	t.Helper()
	lo, hi := 0, 0 // 0: let the kernel choose
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if first, err := strconv.Atoi(f[0]); err == nil && first > 12000 {
				lo, hi = 10000, first
			}
		}
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for tries := 0; len(ls) < 4; tries++ {
		port := 0
		if lo != 0 && tries < 200 {
			port = lo + rng.IntN(hi-lo)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			if port != 0 {
				continue // taken: try another
			}
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	a := func(i int) string { return ls[i].Addr().String() }
	return demo.Ports{Submission: a(0), SubmissionTLS: a(1), IMAPTLS: a(2), IMAPSTARTTLS: a(3)}
}

// buildBinary builds cmd/mssrelay for this test run: the daemon under test
// is the real binary, with its own signal handling.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go command is not on PATH, cannot build the daemon: %v", err)
	}
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("not inside the mssrelay module (go env GOMOD = %q)", gomod)
	}
	bin := filepath.Join(t.TempDir(), "mssrelay")
	cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/mssrelay")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/mssrelay: %v\n%s", err, out)
	}
	return bin
}

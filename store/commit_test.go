package store

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"

	"go.etcd.io/bbolt"
)

// blockLeader starts a write that holds the commit until release is
// closed, so that the test can queue calls behind it deterministically.
func blockLeader(t *testing.T, s *Store) (release func(), done <-chan error) {
	t.Helper()
	started := make(chan struct{})
	rel := make(chan struct{})
	errc := make(chan error, 1)
	var once sync.Once
	go func() {
		errc <- s.write(0, func(w *wtx) error {
			once.Do(func() { close(started) })
			<-rel
			w.mark()
			return w.tx.Bucket(bucketMeta).Put([]byte("test-leader"), []byte("x"))
		})
	}()
	<-started
	return func() { close(rel) }, errc
}

// waitPending waits until n calls are queued behind the leader.
func waitPending(s *Store, n int) {
	for {
		s.mu.Lock()
		k := len(s.pending)
		s.mu.Unlock()
		if k >= n {
			return
		}
		runtime.Gosched()
	}
}

func TestGroupCommitSharesCommit(t *testing.T) {
	s, _ := openTemp(t)
	release, leaderDone := blockLeader(t, s)
	before := s.Stats().Commits
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.File(context.Background(), testFiling(i, "a@example.org"))
		}()
	}
	waitPending(s, n)
	release()
	wg.Wait()
	if err := <-leaderDone; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("filing %d: %v", i, err)
		}
	}
	// The leader's commit, then one commit for all twenty followers.
	if got := s.Stats().Commits - before; got != 2 {
		t.Fatalf("%d commits, want 2", got)
	}
	if info, _ := s.Mailbox("a@example.org", Inbox); info.Messages != n {
		t.Fatalf("INBOX has %d messages, want %d", info.Messages, n)
	}
}

func TestGroupCommitIsolatesFailures(t *testing.T) {
	s, _ := openTemp(t)
	mustFile(t, s, testFiling(1, "a@example.org"))
	release, leaderDone := blockLeader(t, s)
	before := s.Stats().Commits

	var wg sync.WaitGroup
	errs := make([]error, 5)
	queue := func(i int, fn func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn() }()
		waitPending(s, i+1) // fixes the order in the batch
	}
	queue(0, func() error { _, err := s.File(context.Background(), testFiling(2, "a@example.org")); return err })
	replay := testFiling(1, "a@example.org")
	replay.Digest[0] ^= 0xff
	queue(1, func() error {
		// The fast path would refuse this before queueing; go straight to
		// the write path to test the in-batch refusal.
		return s.write(0, func(w *wtx) error { _, _, err := findResend(w.tx, replay); return err })
	})
	errDirty := errors.New("fails after writing")
	queue(2, func() error {
		return s.write(0, func(w *wtx) error {
			w.mark()
			if err := w.tx.Bucket(bucketMeta).Put([]byte("test-dirty"), []byte("x")); err != nil {
				return err
			}
			return errDirty
		})
	})
	queue(3, func() error { _, err := s.File(context.Background(), testFiling(3, "a@example.org")); return err })
	queue(4, func() error {
		return s.write(0, func(w *wtx) error {
			w.mark()
			panic("boom") // must not take the batch down
		})
	})
	release()
	wg.Wait()
	if err := <-leaderDone; err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[3] != nil {
		t.Fatalf("good filings failed: %v, %v", errs[0], errs[3])
	}
	if !errors.Is(errs[1], ErrReplay) {
		t.Errorf("replay: %v", errs[1])
	}
	if !errors.Is(errs[2], errDirty) {
		t.Errorf("dirty op: %v", errs[2])
	}
	if errs[4] == nil {
		t.Errorf("panicking op returned nil")
	}
	if got := s.Stats().Commits - before; got != 2 {
		t.Errorf("%d commits, want 2 (rollbacks cost none)", got)
	}
	err := s.view(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta).Get([]byte("test-dirty")) != nil {
			return errors.New("writes of the failed op were committed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Mailbox("a@example.org", Inbox); info.Messages != 3 {
		t.Fatalf("INBOX has %d, want 3", info.Messages)
	}
}

func TestCloseWaitsForQueuedWrites(t *testing.T) {
	s, path := openTemp(t)
	release, leaderDone := blockLeader(t, s)
	fileErr := make(chan error, 1)
	go func() { _, err := s.File(context.Background(), testFiling(9, "a@example.org")); fileErr <- err }()
	waitPending(s, 1)
	closeErr := make(chan error, 1)
	go func() { closeErr <- s.Close() }()
	for {
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			break
		}
		runtime.Gosched()
	}
	if _, err := s.File(context.Background(), testFiling(10, "a@example.org")); !errors.Is(err, ErrClosed) {
		t.Errorf("File after Close began: %v", err)
	}
	release()
	if err := <-leaderDone; err != nil {
		t.Fatal(err)
	}
	if err := <-fileErr; err != nil {
		t.Fatalf("queued filing: %v", err)
	}
	if err := <-closeErr; err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Record(1); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v", err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.RecordByNumber(testFiling(9).Number); err != nil {
		t.Fatalf("queued filing lost: %v", err)
	}
}

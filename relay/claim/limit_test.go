package claim

import (
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)} }

// TestLimiterHourly: max claims in any sliding hour per account; a refused
// claim is not counted; other accounts are not affected.
func TestLimiterHourly(t *testing.T) {
	clk := newClock()
	l := newLimiter(3, time.Second, clk.now)
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("claim %d refused", i+1)
		}
		clk.add(10 * time.Minute)
	}
	ok, retry := l.allow("a")
	if ok {
		t.Fatal("fourth claim within the hour allowed")
	}
	if retry != 30*time.Minute {
		t.Errorf("retry in %v, want 30m (the first claim leaves the window then)", retry)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Error("another account is limited too")
	}
	// Hammering while limited does not extend the wait.
	for i := 0; i < 10; i++ {
		l.allow("a")
	}
	clk.add(30 * time.Minute)
	if ok, _ := l.allow("a"); !ok {
		t.Error("still limited once the first claim left the window")
	}
	if ok, _ := l.allow("a"); ok {
		t.Error("a second slot opened when only one claim left the window")
	}
}

// TestLimiterDelays: each failure doubles the delay up to 32 times the
// first; a success or 15 quiet minutes start over.
func TestLimiterDelays(t *testing.T) {
	clk := newClock()
	base := 250 * time.Millisecond
	l := newLimiter(100, base, clk.now)
	var got []time.Duration
	for i := 0; i < 8; i++ {
		got = append(got, l.fail("a"))
		clk.add(time.Second)
	}
	want := []time.Duration{base, 2 * base, 4 * base, 8 * base, 16 * base, 32 * base, 32 * base, 32 * base}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
	if d := l.fail("b"); d != base {
		t.Errorf("other account's first failure delayed %v", d)
	}
	l.succeed("a")
	if d := l.fail("a"); d != base {
		t.Errorf("after a success: %v, want %v", d, base)
	}
	l.fail("a")
	clk.add(failureWindow + time.Second)
	if d := l.fail("a"); d != base {
		t.Errorf("after 15 quiet minutes: %v, want %v", d, base)
	}
	if d := newLimiter(1, 0, clk.now).fail("a"); d != 0 {
		t.Errorf("failure_delay 0 gives %v", d)
	}
}

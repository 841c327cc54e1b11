package outbound

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func constant(f float64) func() float64 { return func() float64 { return f } }

func TestBackoff(t *testing.T) {
	const (
		min = time.Minute
		max = 4 * time.Hour
	)
	// just below 1: the largest value rnd may return
	almostOne := math.Nextafter(1, 0)
	tests := []struct {
		name     string
		n        int
		min, max time.Duration
		rnd      float64
		want     time.Duration
	}{
		{"first retry, lowest jitter", 1, min, max, 0, 30 * time.Second},
		{"first retry, middle jitter", 1, min, max, 0.5, 45 * time.Second},
		{"second retry doubles", 2, min, max, 0, time.Minute},
		{"third retry", 3, min, max, 0, 2 * time.Minute},
		{"ninth retry: 256 min capped at 240", 9, min, max, 0, 2 * time.Hour},
		{"eighth retry: 128 min under the cap", 8, min, max, 0, 64 * time.Minute},
		{"huge n stays at max", 1 << 40, min, max, 0, 2 * time.Hour},
		{"MaxInt n", math.MaxInt, min, max, 0, 2 * time.Hour},
		{"n zero counts as one", 0, min, max, 0, 30 * time.Second},
		{"negative n counts as one", -5, min, max, 0, 30 * time.Second},
		{"min zero: no delay", 3, 0, max, 0.5, 0},
		{"min negative: no delay", 3, -time.Second, max, 0.5, 0},
		{"max below min is raised", 5, time.Hour, time.Minute, 0, 30 * time.Minute},
		{"rnd negative clamps to d/2", 1, min, max, -3, 30 * time.Second},
		{"rnd NaN clamps to d/2", 1, min, max, math.NaN(), 30 * time.Second},
		{"rnd above one clamps to d", 1, min, max, 7, time.Minute},
		{"rnd one gives d", 2, min, max, 1, 2 * time.Minute},
		// d = 2^63−1: half is 2^62−1, and (1−2^−53)·2^62 = 2^62−512 exactly.
		{"max near the int64 limit", 100, time.Second, math.MaxInt64, almostOne, math.MaxInt64 - 512},
		{"doubling min would overflow", 3, math.MaxInt64 - 1, math.MaxInt64, 0, math.MaxInt64 / 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Backoff(tc.n, tc.min, tc.max, constant(tc.rnd))
			if got != tc.want {
				t.Errorf("Backoff(%d, %v, %v, %v) = %v, want %v", tc.n, tc.min, tc.max, tc.rnd, got, tc.want)
			}
		})
	}
}

// TestBackoffBounds: for every n, the delay lies in [d/2, d] where d is
// min·2^(n−1) capped at max, whatever the random source returns; and the
// upper bound never decreases with n.
func TestBackoffBounds(t *testing.T) {
	const (
		min = 30 * time.Second
		max = 6 * time.Hour
	)
	r := rand.New(rand.NewPCG(1, 2))
	prevHigh := time.Duration(0)
	for n := 1; n <= 80; n++ {
		d := min
		for i := 1; i < n && d < max; i++ {
			d *= 2
		}
		d = time.Duration(math.Min(float64(d), float64(max)))
		high := Backoff(n, min, max, constant(math.Nextafter(1, 0)))
		if high < prevHigh {
			t.Fatalf("n=%d: upper delay %v below that of n-1 (%v)", n, high, prevHigh)
		}
		prevHigh = high
		for range 50 {
			got := Backoff(n, min, max, r.Float64)
			if got < d/2 || got > d {
				t.Fatalf("n=%d: Backoff = %v outside [%v, %v]", n, got, d/2, d)
			}
		}
	}
	if got := Backoff(1, time.Second, time.Minute, nil); got < 500*time.Millisecond || got > time.Second {
		t.Errorf("nil rnd: %v outside [0.5s, 1s]", got)
	}
}

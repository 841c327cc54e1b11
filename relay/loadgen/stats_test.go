package loadgen

import (
	"context"
	"testing"
	"time"
)

func TestSummarise(t *testing.T) {
	ms := time.Millisecond
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100-i) * ms // 100 … 1 ms, unsorted
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Latency
	}{
		{"empty", nil, Latency{}},
		{"one", []time.Duration{7 * ms}, Latency{Count: 1, Mean: 7 * ms, P50: 7 * ms, P95: 7 * ms, P99: 7 * ms, Max: 7 * ms}},
		{"1..100 ms", hundred, Latency{Count: 100, Mean: 50500 * time.Microsecond, P50: 50 * ms, P95: 95 * ms, P99: 99 * ms, Max: 100 * ms}},
		{"two", []time.Duration{2 * ms, 1 * ms}, Latency{Count: 2, Mean: 1500 * time.Microsecond, P50: 1 * ms, P95: 2 * ms, P99: 2 * ms, Max: 2 * ms}},
	}
	for _, tt := range tests {
		if got := summarise(tt.in); got != tt.want {
			t.Errorf("%s: summarise = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestSchedule checks the open loop's timetable: every message released
// once, in order, message i due at start + i/rate.
func TestSchedule(t *testing.T) {
	const n, rate = 50, 100000.0
	jobs := make(chan job, n)
	start := time.Now()
	schedule(context.Background(), jobs, n, rate, start)
	i := 0
	for j := range jobs {
		want := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if j.i != i || !j.due.Equal(want) {
			t.Fatalf("job %d: got (%d, due %v), want due %v", i, j.i, j.due.Sub(start), want.Sub(start))
		}
		i++
	}
	if i != n {
		t.Errorf("%d jobs released, want %d", i, n)
	}
}

// TestScheduleStopsOnCancel checks that a cancelled schedule closes its
// channel without releasing the rest.
func TestScheduleStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	jobs := make(chan job, 10)
	schedule(ctx, jobs, 10, 0.001, time.Now()) // message 1 due in 1000 s
	got := 0
	for range jobs {
		got++
	}
	if got != 1 {
		t.Errorf("%d jobs released after cancel, want only the first (due at once)", got)
	}
}

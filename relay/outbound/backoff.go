package outbound

import (
	"math/rand/v2"
	"time"
)

// Backoff returns the delay before attempt n+1 after n failed attempts
// (n ≥ 1; smaller n counts as 1): min doubled n−1 times, capped at max, then
// jittered to a uniformly random value in [d/2, d]. rnd returns a value in
// [0, 1) (nil: math/rand/v2.Float64); values outside that range are clamped,
// so a faulty source can neither shorten the delay below d/2 nor exceed d.
//
// The jitter spreads the retries of many messages that failed together (a
// peer operator down for an hour) so they do not all hit it again in the
// same second when it returns; RFC 5321 §4.5.4.1 asks for a retry interval
// of at least 30 minutes overall, which the caller's min and max express.
//
// min ≤ 0 gives 0 (no delay); max < min is raised to min. Large n cannot
// overflow: doubling stops as soon as it reaches max.
func Backoff(n int, min, max time.Duration, rnd func() float64) time.Duration {
	if min <= 0 {
		return 0
	}
	if max < min {
		max = min
	}
	if n < 1 {
		n = 1
	}
	d := min
	for i := 1; i < n && d < max; i++ {
		if d > max/2 {
			// Doubling would pass max (or overflow int64): stop here.
			d = max
			break
		}
		d *= 2
	}
	if d > max {
		d = max
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	f := rnd()
	if !(f >= 0) { // also catches NaN
		f = 0
	}
	if f > 1 {
		f = 1
	}
	half := d / 2
	out := half + time.Duration(f*float64(d-half))
	// Near the int64 limit float64 rounding can push the sum past d (or
	// wrap it): keep the documented bound.
	if out > d || out < half {
		out = d
	}
	return out
}

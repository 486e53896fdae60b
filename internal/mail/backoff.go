package mail

import (
	"math/rand/v2"
	"time"
)

// Bounds of DefaultBackoff.
const (
	MinBackoff = time.Second
	MaxBackoff = 5 * time.Minute
)

// DefaultBackoff is the delay before the next try of a record that failed
// attempt times (attempt >= 1): 1s, 2s, 4s ... doubling, with ±20% jitter so
// records that failed together do not retry in lockstep, and kept within
// [MinBackoff, MaxBackoff]. Safe for concurrent use.
func DefaultBackoff(attempt int) time.Duration {
	d := MaxBackoff
	if attempt < 1 {
		attempt = 1
	}
	if attempt <= 20 {
		d = min(MinBackoff<<(attempt-1), MaxBackoff)
	}
	jittered := time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(max(jittered, MinBackoff), MaxBackoff)
}

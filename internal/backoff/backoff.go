// Package backoff is the one rule for delays that grow with repeated
// failures: the build server's reconnects, the metaserver's retries of a
// build after an infrastructure failure and its put-aside of a losing
// volunteer, and the mail sender's retries.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Exponential delays start at Base after the first failure, double with
// each further one and stop growing at Max. A delay is then multiplied by a
// random factor in [Low, High] (no jitter when High is 0), so that parties
// that failed together do not retry in lockstep, and kept within [Min, Max].
// The zero value gives no delay. Safe for concurrent use.
type Exponential struct {
	Base, Max time.Duration
	Low, High float64
	Min       time.Duration
}

// Delay is the delay after failures failures (failures >= 1; less counts
// as 1).
func (e Exponential) Delay(failures int) time.Duration {
	shift := max(failures, 1) - 1
	d := e.Max
	if shift < 62 {
		if grown := e.Base << shift; grown > 0 && grown>>shift == e.Base {
			d = min(grown, e.Max)
		}
	}
	if e.High > 0 {
		d = time.Duration(float64(d) * (e.Low + (e.High-e.Low)*rand.Float64()))
	}
	return min(max(d, e.Min), e.Max)
}

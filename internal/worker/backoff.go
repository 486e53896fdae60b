package worker

import (
	"math/rand/v2"
	"time"
)

// Reconnect backoff: the first retry comes after about backoffMin, each
// further failure doubles the delay up to backoffMax, and each delay is
// jittered down to half so that volunteers cut off together by a metaserver
// restart do not reconnect in lockstep. A session that stayed up for
// backoffStable resets the delay.
const (
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 10 * time.Second
	backoffStable = 10 * time.Second
)

// backoff computes reconnect delays; not safe for concurrent use.
type backoff struct{ failures int }

// next returns the delay before the next attempt and counts a failure.
func (b *backoff) next() time.Duration {
	d := backoffMin << min(b.failures, 16)
	if d > backoffMax || d <= 0 {
		d = backoffMax
	}
	b.failures++
	return d/2 + rand.N(d/2+1)
}

// reset forgets past failures.
func (b *backoff) reset() { b.failures = 0 }

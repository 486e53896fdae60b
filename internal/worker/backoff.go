package worker

import (
	"time"

	"github.com/kilnbuild/kiln/internal/backoff"
)

// Reconnect backoff: the first retry comes after about 100 ms, each further
// failure doubles the delay up to 10 s, and each delay is jittered down to
// half so that volunteers cut off together by a metaserver restart do not
// reconnect in lockstep. A session that stayed up for backoffStable resets
// the delay.
var reconnectDelay = backoff.Exponential{Base: 100 * time.Millisecond, Max: 10 * time.Second, Low: 0.5, High: 1}

const backoffStable = 10 * time.Second

// reconnects counts failed connections in a row; not safe for concurrent use.
type reconnects struct{ failures int }

// next returns the delay before the next attempt and counts a failure.
func (b *reconnects) next() time.Duration {
	b.failures++
	return reconnectDelay.Delay(b.failures)
}

// reset forgets past failures.
func (b *reconnects) reset() { b.failures = 0 }

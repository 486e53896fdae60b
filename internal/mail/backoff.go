package mail

import (
	"time"

	"github.com/kilnbuild/kiln/internal/backoff"
)

// Bounds of DefaultBackoff.
const (
	MinBackoff = time.Second
	MaxBackoff = 5 * time.Minute
)

var retryDelay = backoff.Exponential{Base: MinBackoff, Max: MaxBackoff, Low: 0.8, High: 1.2, Min: MinBackoff}

// DefaultBackoff is the delay before the next try of a record that failed
// attempt times (attempt >= 1): 1s, 2s, 4s ... doubling, with ±20% jitter so
// records that failed together do not retry in lockstep, and kept within
// [MinBackoff, MaxBackoff]. Safe for concurrent use.
func DefaultBackoff(attempt int) time.Duration { return retryDelay.Delay(attempt) }

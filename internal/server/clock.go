package server

import (
	"context"
	"time"

	"github.com/jonboulle/clockwork"
)

// The metaserver reads time only through its clock (Config.Clock): what it
// decides from time (leases and the reconnect grace, time limits plus
// TimeoutGrace, exclusions, put-aside, retry delays, expiry of unmatched
// builds, pending uploads, group sweeps, samples, rate limits, enrollment
// token expiry, the committer's pauses on a full disk, the Hello timeout,
// the bounds on diffoscope, the archive diff and a project's first clone
// through withTimeout) and what it records (every timestamp it stores; the
// commit and dispatch durations of its metrics too). Its timers and tickers run
// on the same clock, so a test that gives a clockwork.FakeClock moves the
// whole server through time with Advance instead of sleeping, and a
// deadline can be tested on both sides of its boundary.
//
// What is not on it: deadlines of gRPC calls, which the caller sets, and
// the packages the server uses that keep their own time (gitmirror's fetch
// freshness, cas's re-verification of blobs).

// clockOrReal returns c, or the real clock when c is nil.
func clockOrReal(c clockwork.Clock) clockwork.Clock {
	if c == nil {
		return clockwork.NewRealClock()
	}
	return c
}

// withTimeout is context.WithTimeout on clock. On the real clock it is
// context.WithTimeout itself; on another clock the context is cancelled
// when clock reaches the timeout, with context.DeadlineExceeded as its
// cause (context.Cause), and has no Deadline. (Not clockwork.WithTimeout:
// in v0.5.0 its context's Err blocks until the context is done, which
// breaks every caller that polls Err.)
func withTimeout(ctx context.Context, clock clockwork.Clock, d time.Duration) (context.Context, context.CancelFunc) {
	if _, fake := clock.(*clockwork.FakeClock); !fake {
		return context.WithTimeout(ctx, d)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	t := clock.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
	return ctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

// now is the server's current time, on its clock.
func (s *Server) now() time.Time { return s.clock.Now() }

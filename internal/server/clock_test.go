package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/protobuf/types/known/timestamppb"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Tests of time-dependent behaviour give the server a fake clock
// (withFakeClock) and move it with advance instead of sleeping: a deadline
// is then tested on both of its sides, to the nanosecond, and the test
// takes no longer than its messages.

// withFakeClock returns cfg with a fake clock (starting at the real time,
// so that records seeded with timestamppb.Now fit).
func withFakeClock(cfg Config) Config {
	cfg.Clock = clockwork.NewFakeClock()
	return cfg
}

// fake returns the fake clock the test server was started with.
func (ts *testServer) fake() *clockwork.FakeClock {
	ts.t.Helper()
	fc, ok := ts.srv.clock.(*clockwork.FakeClock)
	if !ok {
		ts.t.Fatal("the test server runs on the real clock; start it withFakeClock")
	}
	return fc
}

// advance moves the server's fake clock by d, firing the timers and
// tickers due meanwhile, then runs one lease round at the new time, as the
// lease loop's next tick would: what the move made due (a lapsed lease,
// an overdue attempt, an ended exclusion or put-aside, an unmatched build's
// expiry) is decided when advance returns. The fired timers run on their
// own goroutines; wait for their effects by their messages.
func (ts *testServer) advance(d time.Duration) {
	ts.t.Helper()
	fc := ts.fake()
	fc.Advance(d)
	ts.srv.mu.Lock()
	ts.srv.leaseRoundLocked(fc.Now())
	ts.srv.mu.Unlock()
}

// waitGone waits until the server has ended build server name's session
// (its connection closed): its reconnect grace then runs from the clock's
// current time.
func (ts *testServer) waitGone(name string) {
	ts.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.srv.mu.Lock()
		_, connected := ts.srv.sessions[name]
		ts.srv.mu.Unlock()
		if !connected {
			return
		}
		if time.Now().After(deadline) {
			ts.t.Fatalf("the session of %s did not end within 5s", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sampleAt moves the server's fake clock by d (at least SampleInterval)
// and waits until the sample loop has stored a sample at the new time:
// the group sweep of that tick, which runs before the sample, is then
// committed too (the committer keeps their order).
func (ts *testServer) sampleAt(d time.Duration) {
	ts.t.Helper()
	fc := ts.fake()
	fc.Advance(d)
	at := fc.Now()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := ts.srv.GetHistory(context.Background(), &kilnv1.GetHistoryRequest{Since: timestamppb.New(at)})
		if err != nil {
			ts.t.Fatal(err)
		}
		if n := len(resp.GetSamples()); n > 0 && resp.GetSamples()[n-1].GetAt().AsTime().Equal(at) {
			return
		}
		if time.Now().After(deadline) {
			ts.t.Fatalf("no sample stored at %s within 10s", at)
		}
		time.Sleep(2 * time.Millisecond) // the committer commits it
	}
}

func TestWithTimeout_OnAFakeClock_EndsAtTheTimeoutAndErrNeverBlocks(t *testing.T) {
	fc := clockwork.NewFakeClock()
	ctx, cancel := withTimeout(context.Background(), fc, time.Second)
	defer cancel()
	fc.Advance(time.Second - time.Nanosecond)
	if err := ctx.Err(); err != nil { // clockwork.WithTimeout's Err would block here
		t.Fatalf("a nanosecond before the timeout: %v, want nil", err)
	}
	fc.Advance(time.Nanosecond)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not done at the timeout")
	}
	if cause := context.Cause(ctx); !errors.Is(cause, context.DeadlineExceeded) {
		t.Fatalf("cause %v, want context.DeadlineExceeded", cause)
	}
	real, cancelReal := withTimeout(context.Background(), clockwork.NewRealClock(), time.Hour)
	defer cancelReal()
	if _, ok := real.Deadline(); !ok {
		t.Fatal("on the real clock the context has no deadline: want context.WithTimeout's")
	}
}

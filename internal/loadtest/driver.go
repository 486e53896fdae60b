package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// completionTimeout bounds one build's wait for completion in the closed
// loop; a longer wait is an error, not a slow figure.
const completionTimeout = 60 * time.Second

// driveResult is what a closed-loop run measured.
type driveResult struct {
	// Completed counts builds submitted and completed within the run.
	Completed int64
	Elapsed   time.Duration
	// Submit is the Submit RPC latency; Cycle submit → completed.
	Submit, Cycle durations
}

// rate is completed builds per second.
func (r *driveResult) rate() float64 { return float64(r.Completed) / r.Elapsed.Seconds() }

// waitFunc waits until a submitted build completes.
type waitFunc func(ctx context.Context, b *kilnv1.Build) error

// drive runs concurrency submitters in a closed loop: each submits a new
// distinct build and waits for it to complete, again and again, until
// duration has passed or total builds were submitted (0: no limit). Each
// submitter uses one of clients round-robin.
func drive(ctx context.Context, clients []kilnv1.CompileServiceClient, reqs *requests, concurrency int,
	duration time.Duration, total int64, wait waitFunc) (*driveResult, error) {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := &driveResult{}
	var completed, submitted atomic.Int64
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	start := time.Now()
	deadline := start.Add(duration)
	var wg sync.WaitGroup
	for i := range concurrency {
		c := clients[i%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if total > 0 && submitted.Add(1) > total {
					return
				}
				t0 := time.Now()
				resp, err := c.Submit(ctx, reqs.next())
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("submit: %w", err))
					}
					return
				}
				t1 := time.Now()
				if resp.GetCached() || resp.GetJoined() {
					fail(fmt.Errorf("build %d: expected a new build, got cached=%v joined=%v", resp.GetBuild().GetId(), resp.GetCached(), resp.GetJoined()))
					return
				}
				wctx, wcancel := context.WithTimeout(ctx, completionTimeout)
				err = wait(wctx, resp.GetBuild())
				wcancel()
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("build %d: %w", resp.GetBuild().GetId(), err))
					}
					return
				}
				res.Submit.add(t1.Sub(t0))
				res.Cycle.add(time.Since(t0))
				completed.Add(1)
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Completed = completed.Load()
	if err := parent.Err(); err != nil {
		// Interrupted or out of time: a partial window is no figure.
		return res, fmt.Errorf("stopped after %d builds: %w", res.Completed, err)
	}
	if firstErr != nil {
		return res, firstErr
	}
	return res, nil
}

// trackerWait waits for a build completed by a simulated build server.
func trackerWait(tr *tracker) waitFunc {
	return func(ctx context.Context, b *kilnv1.Build) error {
		ch := tr.wait(b.GetId())
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			tr.forget(b.GetId())
			return fmt.Errorf("not completed: %w", ctx.Err())
		}
	}
}

// compileClients opens n connections to the metaserver's CompileService, so
// that many submitters do not share one HTTP/2 connection.
func compileClients(m *meta, n int) ([]kilnv1.CompileServiceClient, func(), error) {
	var cs []kilnv1.CompileServiceClient
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for range n {
		conn, err := dialLoopback(m.Addr)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, func() { conn.Close() })
		cs = append(cs, kilnv1.NewCompileServiceClient(conn))
	}
	return cs, closeAll, nil
}

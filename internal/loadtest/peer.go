package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// peerSettle is how long both farms rest after their no-op builds before
// their memory is read (at least --settle).
const peerSettle = 10 * time.Second

// runPeer runs the same no-op build and the same sustained load through
// Kiln and through Buildbot (Debian's packages, installed here when
// missing), one after the other on this machine in one run, and reports
// Kiln's figures beside Buildbot's as ratios (issue 20: Kiln at least 20×
// faster on no-op latency and throughput, at lower memory).
//
//  1. no-op latency: one build server (one worker), --n sequential builds;
//     then both rest peerSettle and their RSS is read (server + workers).
//  2. throughput: --buildservers build servers (workers) of --jobs builds
//     each, 4 × that many closed-loop submitters (or --submitters), for
//     --duration; CPU per build is the server's, the workers' and their
//     children's, from /proc, over the window.
func runPeer(ctx context.Context, e *env) error {
	if err := ensureBuildbot(ctx, e); err != nil {
		return err
	}
	n := max(e.cfg.N, 20)

	e.rep.logf("Kiln: %d sequential no-op builds on one build server", n)
	kLat, kRSS, err := kilnNoopAtRest(ctx, sub(e, "kiln-noop"), n)
	if err != nil {
		return fmt.Errorf("kiln no-op: %w", err)
	}
	e.rep.logf("Buildbot: %d sequential no-op builds on one worker", n)
	bLat, bRSS, err := buildbotNoopAtRest(ctx, sub(e, "buildbot-noop"), n)
	if err != nil {
		return fmt.Errorf("buildbot no-op: %w", err)
	}

	e.rep.logf("Kiln: sustained load")
	kT, err := kilnThroughput(ctx, sub(e, "kiln-load"), e.cfg.Buildservers, e.cfg.Jobs, false)
	if err != nil {
		return fmt.Errorf("kiln throughput: %w", err)
	}
	e.rep.logf("Buildbot: sustained load")
	bT, err := buildbotThroughput(ctx, sub(e, "buildbot-load"), e.cfg.Buildservers, e.cfg.Jobs)
	if err != nil {
		return fmt.Errorf("buildbot throughput: %w", err)
	}

	latNote := fmt.Sprintf("Kiln (submit → completed, Submit + WatchBuild): %s\nBuildbot (POST → buildset complete): %s", kLat.describe(), bLat.describe())
	e.rep.add(figure{Scenario: "peer", Name: "no-op p50, Buildbot ÷ Kiln", Value: float64(bLat.pct(50)) / float64(kLat.pct(50)), Unit: "×", Target: 20,
		Note: fmt.Sprintf("Kiln p50 %.2f ms, Buildbot p50 %.2f ms\n%s", ms(kLat.pct(50)), ms(bLat.pct(50)), latNote)})
	e.rep.add(figure{Scenario: "peer", Name: "no-op p99, Buildbot ÷ Kiln", Value: float64(bLat.pct(99)) / float64(kLat.pct(99)), Unit: "×", Target: 20,
		Note: fmt.Sprintf("Kiln p99 %.2f ms, Buildbot p99 %.2f ms", ms(kLat.pct(99)), ms(bLat.pct(99)))})
	tNote := func(name string, t *throughputRun) string {
		return fmt.Sprintf("%s: %.1f builds/s (%d in %.1f s), cycle %s; CPU per build: server %.2f ms, workers %.2f ms, their children %.2f ms, harness %.2f ms; machine busy %.0f%%",
			name, t.res.rate(), t.res.Completed, t.res.Elapsed.Seconds(), t.res.Cycle.describe(),
			t.perBuild(t.server), t.perBuild(t.workers), t.perBuild(t.children), t.perBuild(t.harness), 100*t.busy)
	}
	e.rep.add(figure{Scenario: "peer", Name: "builds/s, Kiln ÷ Buildbot", Value: kT.res.rate() / bT.res.rate(), Unit: "×", Target: 20,
		Note: tNote("Kiln", kT) + "\n" + tNote("Buildbot", bT)})
	e.rep.add(figure{Scenario: "peer", Name: "CPU per build, Buildbot ÷ Kiln", Value: bT.systemPerBuild() / kT.systemPerBuild(), Unit: "×", NoTarget: true,
		Note: fmt.Sprintf("server + workers + their children: Kiln %.2f ms, Buildbot %.2f ms", kT.systemPerBuild(), bT.systemPerBuild())})
	e.rep.add(figure{Scenario: "peer", Name: "RSS at rest, Kiln ÷ Buildbot", Value: float64(kRSS) / float64(bRSS), Unit: "×", Target: 1, AtMost: true,
		Note: fmt.Sprintf("after the no-op builds and %s at rest, server + one worker: Kiln %.1f MiB, Buildbot %.1f MiB", max(peerSettle, e.cfg.Settle), mib(kRSS), mib(bRSS))})
	return nil
}

// sub is e with a directory of its own under e's, named name (each farm
// keeps its data apart).
func sub(e *env, name string) *env {
	s := *e
	s.dir = filepath.Join(e.dir, name)
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		e.rep.logf("creating %s: %v", s.dir, err) // the farm's start reports it again
	}
	return &s
}

// kilnNoopAtRest measures n sequential no-op builds on one real build
// server, lets the farm rest and returns the latencies and the RSS of the
// metaserver and the build server.
func kilnNoopAtRest(ctx context.Context, e *env, n int) (*durations, int64, error) {
	m, reqs, bss, err := realFarm(ctx, e, 1, 1, false)
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return nil, 0, err
	}
	for range max(1, e.cfg.Warmup) {
		if _, err := oneBuild(ctx, m.Compile, reqs.next()); err != nil {
			return nil, 0, fmt.Errorf("warm-up: %w", err)
		}
	}
	var lat durations
	for range n {
		tb, err := oneBuild(ctx, m.Compile, reqs.next())
		if err != nil {
			return nil, 0, err
		}
		lat.add(tb.final.Sub(tb.submit))
	}
	rss, err := restingRSS(ctx, e, m.Proc.pid(), bss[0].Proc.pid())
	return &lat, rss, err
}

// buildbotNoopAtRest is kilnNoopAtRest for Buildbot: one worker of one build.
func buildbotNoopAtRest(ctx context.Context, e *env, n int) (*durations, int64, error) {
	src, _, err := makeProject(ctx, e.dir)
	if err != nil {
		return nil, 0, err
	}
	f, err := startBuildbot(ctx, e, e.dir, src, 1, 1)
	if err != nil {
		return nil, 0, err
	}
	defer f.close()
	var lat durations
	for range n {
		d, err := f.build(ctx)
		if err != nil {
			return nil, 0, err
		}
		lat.add(d)
	}
	rss, err := restingRSS(ctx, e, f.pids()...)
	return &lat, rss, err
}

// restingRSS waits until the processes have rested and returns the sum of
// their RSS.
func restingRSS(ctx context.Context, e *env, pids ...int) (int64, error) {
	if err := sleepCtx(ctx, max(peerSettle, e.cfg.Settle)); err != nil {
		return 0, err
	}
	var sum int64
	for _, pid := range pids {
		m, err := readMem(pid)
		if err != nil {
			return 0, err
		}
		sum += m.RSS
	}
	return sum, nil
}

// buildbotThroughput is kilnThroughput for Buildbot: n workers of jobs
// builds each, the same number of closed-loop submitters, the same window.
func buildbotThroughput(ctx context.Context, e *env, n, jobs int) (*throughputRun, error) {
	dir := e.dir
	src, _, err := makeProject(ctx, dir)
	if err != nil {
		return nil, err
	}
	f, err := startBuildbot(ctx, e, dir, src, n, jobs)
	if err != nil {
		return nil, err
	}
	defer f.close()
	submitters := e.cfg.Submitters
	if submitters <= 0 {
		submitters = 4 * n * jobs
	}
	cpu0, kids0 := cpuOf(f.pids())
	self0, _ := readCPU(os.Getpid())
	mach0, _ := readMachineCPU()
	e.rep.logf("measuring for %s: %d workers × %d builds, %d submitters", e.cfg.Duration, n, jobs, submitters)
	res := &driveResult{}
	var completed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(e.cfg.Duration)
	var wg sync.WaitGroup
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				d, err := f.build(ctx)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				res.Cycle.add(d)
				completed.Add(1)
			}
		}()
	}
	wg.Wait()
	res.Elapsed, res.Completed = time.Since(start), completed.Load()
	cpu1, kids1 := cpuOf(f.pids())
	self1, _ := readCPU(os.Getpid())
	mach1, _ := readMachineCPU()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, err
	}
	if res.Completed == 0 {
		return nil, fmt.Errorf("no build completed in %s", e.cfg.Duration)
	}
	t := &throughputRun{res: res, server: cpu1[0] - cpu0[0], harness: self1 - self0, busy: utilization(mach0, mach1)}
	for i := 1; i < len(cpu1); i++ {
		t.workers += cpu1[i] - cpu0[i]
	}
	for i := range kids1 {
		t.children += kids1[i] - kids0[i]
	}
	return t, nil
}

// cpuOf reads each pid's own CPU time and its waited-for children's.
func cpuOf(pids []int) (own, children []time.Duration) {
	for _, pid := range pids {
		o, c, _ := readCPUs(pid)
		own, children = append(own, o), append(children, c)
	}
	return own, children
}

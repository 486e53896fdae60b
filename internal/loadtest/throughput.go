package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// runThroughput measures sustained no-op builds per second with several real
// build servers and many concurrent submitters (closed loop).
func runThroughput(ctx context.Context, e *env) error {
	t, err := kilnThroughput(ctx, e, e.cfg.Buildservers, e.cfg.Jobs, true)
	if err != nil {
		return err
	}
	note := fmt.Sprintf("%d builds in %.1f s; cycle %s\nCPU per build: metaserver %.2f ms, build servers' own processes %.2f ms, their children (bwrap, step, git, ...) %.2f ms, harness %.2f ms; machine CPU busy %.0f%% of %d cores",
		t.res.Completed, t.res.Elapsed.Seconds(), t.res.Cycle.describe(), t.perBuild(t.server), t.perBuild(t.workers), t.perBuild(t.children), t.perBuild(t.harness),
		100*t.busy, runtime.NumCPU())
	e.rep.add(figure{Scenario: "throughput", Name: fmt.Sprintf("builds/s (%d real buildservers)", e.cfg.Buildservers), Value: t.res.rate(), Unit: "/s", Target: 150, Note: note})
	return nil
}

// throughputRun is what a closed-loop window measured, with the CPU time
// each side used during it.
type throughputRun struct {
	res                                *driveResult
	server, workers, children, harness time.Duration
	busy                               float64 // the machine's CPU use, 0..1
}

// perBuild is d per completed build, in milliseconds.
func (t *throughputRun) perBuild(d time.Duration) float64 { return ms(d) / float64(t.res.Completed) }

// systemPerBuild is the CPU the system under test (server, workers and
// their children) used per completed build, in milliseconds.
func (t *throughputRun) systemPerBuild() float64 {
	return t.perBuild(t.server + t.workers + t.children)
}

// kilnThroughput runs a farm of n real build servers with jobs slots each
// and measures a closed loop of 4*n*jobs submitters (or --submitters) for
// --duration; withProfiles takes CPU profiles when --pprof is set.
func kilnThroughput(ctx context.Context, e *env, n, jobs int, withProfiles bool) (*throughputRun, error) {
	m, reqs, bss, err := realFarm(ctx, e, n, jobs, false)
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return nil, err
	}
	submitters := e.cfg.Submitters
	if submitters <= 0 {
		submitters = 4 * n * jobs
	}
	clients, closeClients, err := compileClients(m, 4)
	if err != nil {
		return nil, err
	}
	defer closeClients()
	wait := func(ctx context.Context, b *kilnv1.Build) error {
		_, _, err := watchUntilFinal(ctx, clients[b.GetId()%uint64(len(clients))], b.GetId())
		return err
	}

	// Warm up until every build server has built once (mirrored the source).
	e.rep.logf("warm-up: until each of %d build servers has built once", n)
	err = pollUntil(ctx, 2*time.Minute, func() error {
		if _, err := drive(ctx, clients, reqs, n*jobs*2, time.Minute, int64(n*jobs*2), wait); err != nil {
			return err
		}
		l, err := m.Status.ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
		if err != nil {
			return err
		}
		for _, s := range l.GetBuildServers() {
			if s.GetBuildsSucceeded() == 0 {
				return fmt.Errorf("%s has not built yet", s.GetName())
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}

	prof := profiler{e: e}
	if withProfiles {
		prof.cpu(ctx, "metaserver", m.PprofAddr, e.bins.Metaserver, e.cfg.Duration)
		prof.cpu(ctx, "buildserver-0", bss[0].PprofAddr, e.bins.Buildserver, e.cfg.Duration)
	}
	cpu0, err := readCPU(m.Proc.pid())
	if err != nil {
		return nil, err
	}
	bcpu0 := make([]time.Duration, len(bss))
	kids0 := make([]time.Duration, len(bss))
	for i, bs := range bss {
		bcpu0[i], kids0[i], _ = readCPUs(bs.Proc.pid())
	}
	self0, _ := readCPU(os.Getpid())
	mach0, _ := readMachineCPU()
	e.rep.logf("measuring for %s: %d build servers × %d jobs, %d submitters", e.cfg.Duration, n, jobs, submitters)
	res, err := drive(ctx, clients, reqs, submitters, e.cfg.Duration, 0, wait)
	if err != nil {
		return nil, err
	}
	cpu1, _ := readCPU(m.Proc.pid())
	self1, _ := readCPU(os.Getpid())
	mach1, _ := readMachineCPU()
	t := &throughputRun{res: res, server: cpu1 - cpu0, harness: self1 - self0, busy: utilization(mach0, mach1)}
	for i, bs := range bss {
		c, k, _ := readCPUs(bs.Proc.pid())
		t.workers += c - bcpu0[i]
		t.children += k - kids0[i]
	}
	prof.wait()
	return t, nil
}

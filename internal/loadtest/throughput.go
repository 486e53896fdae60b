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
	n, jobs := e.cfg.Buildservers, e.cfg.Jobs
	m, reqs, bss, err := realFarm(ctx, e, n, jobs, false)
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return err
	}
	submitters := e.cfg.Submitters
	if submitters <= 0 {
		submitters = 4 * n * jobs
	}
	clients, closeClients, err := compileClients(m, 4)
	if err != nil {
		return err
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
		return fmt.Errorf("warm-up: %w", err)
	}

	prof := profiler{e: e}
	prof.cpu(ctx, "metaserver", m.PprofAddr, e.bins.Metaserver, e.cfg.Duration)
	prof.cpu(ctx, "buildserver-0", bss[0].PprofAddr, e.bins.Buildserver, e.cfg.Duration)
	cpu0, err := readCPU(m.Proc.pid())
	if err != nil {
		return err
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
		return err
	}
	cpu1, _ := readCPU(m.Proc.pid())
	self1, _ := readCPU(os.Getpid())
	mach1, _ := readMachineCPU()
	var bcpu, kids time.Duration
	for i, bs := range bss {
		c, k, _ := readCPUs(bs.Proc.pid())
		bcpu += c - bcpu0[i]
		kids += k - kids0[i]
	}
	prof.wait()
	perBuild := func(d time.Duration) float64 { return ms(d) / float64(res.Completed) }
	note := fmt.Sprintf("%d builds in %.1f s; cycle %s\nCPU per build: metaserver %.2f ms, build servers' own processes %.2f ms, their children (bwrap, step, git, ...) %.2f ms, harness %.2f ms; machine CPU busy %.0f%% of %d cores",
		res.Completed, res.Elapsed.Seconds(), res.Cycle.describe(), perBuild(cpu1-cpu0), perBuild(bcpu), perBuild(kids), perBuild(self1-self0),
		100*utilization(mach0, mach1), runtime.NumCPU())
	e.rep.add(figure{Scenario: "throughput", Name: fmt.Sprintf("builds/s (%d real buildservers)", n), Value: res.rate(), Unit: "/s", Target: 150, Note: note})
	return nil
}

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// simSetup starts a metaserver with the load project and n simulated build
// servers connected, each with its own credential and connection.
func simSetup(ctx context.Context, e *env, n int, slots uint32) (*meta, *requests, *simFarm, error) {
	src, commit, err := makeProject(ctx, e.dir)
	if err != nil {
		return nil, nil, nil, err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := startMetaserver(ctx, e.bins, e.dir, "--metrics-listen", metricsAddr)
	if err != nil {
		return nil, nil, nil, err
	}
	m.MetricsAddr = metricsAddr
	if err := m.addProject(ctx, projectName, src); err != nil {
		return m, nil, nil, err
	}
	t0 := time.Now()
	tokens, err := addCredentials(ctx, m, "sim", n)
	if err != nil {
		return m, nil, nil, err
	}
	e.rep.logf("%d credentials created over the admin socket in %s", n, time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	farm, err := connectSims(ctx, m, "sim", tokens, slots, newTracker(), 64)
	if err != nil {
		return m, nil, nil, err
	}
	if err := m.waitConnected(ctx, n, time.Minute); err != nil {
		farm.close()
		return m, nil, nil, err
	}
	e.rep.logf("%d simulated build servers connected in %s", n, time.Since(t0).Round(time.Millisecond))
	reqs, err := newRequests(ctx, commit)
	if err != nil {
		farm.close()
		return m, nil, nil, err
	}
	return m, reqs, farm, nil
}

// runSim measures dispatch + result cycles per second through the real
// protocol with many simulated build servers, and the metaserver's CPU per
// build.
func runSim(ctx context.Context, e *env) error {
	m, reqs, farm, err := simSetup(ctx, e, e.cfg.Sims, uint32(e.cfg.Slots))
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return err
	}
	defer farm.close()
	submitters := e.cfg.Submitters
	if submitters <= 0 {
		submitters = 128
	}
	clients, closeClients, err := compileClients(m, 8)
	if err != nil {
		return err
	}
	defer closeClients()
	wait := trackerWait(farm.tracker)

	e.rep.logf("warm-up: 2 s")
	if _, err := drive(ctx, clients, reqs, submitters, 2*time.Second, 0, wait); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	prof := profiler{e: e}
	prof.cpu(ctx, "metaserver", m.PprofAddr, e.bins.Metaserver, e.cfg.Duration)
	cpu0, err := readCPU(m.Proc.pid())
	if err != nil {
		return err
	}
	self0, _ := readCPU(os.Getpid())
	mach0, _ := readMachineCPU()
	met0, _ := scrape(ctx, m.MetricsAddr)
	e.rep.logf("measuring for %s: %d simulated build servers × %d slots, %d submitters", e.cfg.Duration, e.cfg.Sims, e.cfg.Slots, submitters)
	res, err := drive(ctx, clients, reqs, submitters, e.cfg.Duration, 0, wait)
	if err != nil {
		return err
	}
	cpu1, _ := readCPU(m.Proc.pid())
	self1, _ := readCPU(os.Getpid())
	mach1, _ := readMachineCPU()
	met1, _ := scrape(ctx, m.MetricsAddr)
	prof.wait()
	if err := farm.err(); err != nil {
		return err
	}
	perBuild := ms(cpu1-cpu0) / float64(res.Completed)
	note := fmt.Sprintf("%d cycles in %.1f s (Submit → Assignment → AttemptResult carrying its 50-byte artifact → ResultAck)\nSubmit RPC %s\ncycle %s\nmachine CPU busy %.0f%% of 2 cores; the harness itself (submitters + %d simulated servers) used %.2f ms CPU per build",
		res.Completed, res.Elapsed.Seconds(), res.Submit.describe(), res.Cycle.describe(), 100*utilization(mach0, mach1), e.cfg.Sims, ms(self1-self0)/float64(res.Completed))
	if qw, ok := histogramMean(met0, met1, "kiln_queue_wait_seconds"); ok {
		dl, _ := histogramMean(met0, met1, "kiln_dispatch_latency_seconds")
		note += fmt.Sprintf("\nmetaserver metrics over the window (means): queue wait (created → dispatch decision) %.2f ms; dispatch decision → assignment sent (includes its commit) %.2f ms", qw, dl)
	}
	e.rep.add(figure{Scenario: "sim", Name: fmt.Sprintf("cycles/s (%d simulated servers)", e.cfg.Sims), Value: res.rate(), Unit: "/s", Target: 5000, Note: note})
	e.rep.add(figure{Scenario: "sim", Name: "metaserver CPU per build", Value: perBuild, Unit: "ms", Target: 0.4, AtMost: true})
	return runQueuedCycles(ctx, e, m, farm, clients, reqs, submitters)
}

// queuedPerSecond sizes the queue of runQueuedCycles: the target rate over
// the measuring window.
const queuedPerSecond = 5000

// runQueuedCycles measures dispatch + result cycles alone, the figure as
// the issue words it: the simulated servers drain (Heartbeat.draining, as a
// real build server does), builds are submitted until the queue holds a
// window's worth at the target rate, then the servers take work again and
// the window lasts until every queued build's result is acknowledged.
func runQueuedCycles(ctx context.Context, e *env, m *meta, farm *simFarm, clients []kilnv1.CompileServiceClient, reqs *requests, submitters int) error {
	n := int64(queuedPerSecond * e.cfg.Duration.Seconds())
	if err := farm.setDraining(true); err != nil {
		return err
	}
	if err := waitMetric(ctx, m.MetricsAddr, "kiln_running_builds", 0, time.Minute); err != nil {
		return fmt.Errorf("waiting for running builds to finish: %w", err)
	}
	t0 := time.Now()
	noWait := func(context.Context, *kilnv1.Build) error { return nil }
	if _, err := drive(ctx, clients, reqs, submitters, 10*time.Minute, n, noWait); err != nil {
		return fmt.Errorf("queueing %d builds: %w", n, err)
	}
	// A server whose draining heartbeat was still on its way may have
	// taken a few; once they are done the queue holds the rest.
	if err := waitMetric(ctx, m.MetricsAddr, "kiln_running_builds", 0, time.Minute); err != nil {
		return err
	}
	met, err := scrape(ctx, m.MetricsAddr)
	if err != nil {
		return err
	}
	if q := int64(met["kiln_queue_depth"]); q < n*99/100 {
		return fmt.Errorf("only %d of %d submitted builds are queued", q, n)
	} else {
		n = q
	}
	e.rep.logf("%d builds queued in %s with every simulated server draining; now the servers take work", n, time.Since(t0).Round(time.Millisecond))

	done0 := farm.tracker.count.Load()
	cpu0, err := readCPU(m.Proc.pid())
	if err != nil {
		return err
	}
	self0, _ := readCPU(os.Getpid())
	mach0, _ := readMachineCPU()
	start := time.Now()
	// The profile covers the window's first seconds (its length is not
	// known in advance): the steady dispatch + result cycle.
	prof := profiler{e: e}
	prof.cpu(ctx, "metaserver-queued", m.PprofAddr, e.bins.Metaserver, min(e.cfg.Duration, 20*time.Second))
	defer prof.wait()
	if err := farm.setDraining(false); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for farm.tracker.count.Load()-done0 < n {
		if err := farm.err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d queued builds completed in 5 minutes", farm.tracker.count.Load()-done0, n)
		}
		if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
			return err
		}
	}
	elapsed := time.Since(start)
	cpu1, _ := readCPU(m.Proc.pid())
	self1, _ := readCPU(os.Getpid())
	mach1, _ := readMachineCPU()
	rate := float64(n) / elapsed.Seconds()
	note := fmt.Sprintf("%d builds queued beforehand, all dispatched and their results acknowledged in %.2f s (Assignment → AttemptResult carrying its artifact → ResultAck, %d simulated servers × %d slots); machine CPU busy %.0f%% of 2 cores; the simulated servers used %.2f ms CPU per build",
		n, elapsed.Seconds(), e.cfg.Sims, e.cfg.Slots, 100*utilization(mach0, mach1), ms(self1-self0)/float64(n))
	e.rep.add(figure{Scenario: "sim", Name: "dispatch + result cycles/s (builds queued)", Value: rate, Unit: "/s", Target: 5000, Note: note})
	e.rep.add(figure{Scenario: "sim", Name: "metaserver CPU per dispatch + result", Value: ms(cpu1-cpu0) / float64(n), Unit: "ms", Target: 0.4, AtMost: true})
	return nil
}

// waitMetric polls the metaserver's metrics until name equals want.
func waitMetric(ctx context.Context, addr, name string, want float64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var got float64
	for {
		met, err := scrape(ctx, addr)
		if err == nil {
			if got = met[name]; got == want {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is %v after %s; want %v", name, got, limit, want)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

package main

import (
	"context"
	"fmt"
	"os"
	"time"
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
	return nil
}

package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
)

// raiseFileLimit sets this process's soft RLIMIT_NOFILE to its hard limit
// and returns it. Explicitly set, the limit is inherited by the programs the
// harness starts (Go restores the original soft limit for children only when
// the program never set it itself).
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Max, nil
}

// runIdle measures the metaserver's memory per idle connected build server:
// many simulated build servers, each with its own credential, connection and
// session, heartbeating at the metaserver's interval and doing nothing else.
//
// The baseline is a metaserver restarted after the credentials were created
// (so it holds them in its store, like an operator's, but not the garbage of
// creating them, which a GC headroom floor may leave uncollected), read
// after the same settling as the figure; the note also gives the Go heap's
// share from the metaserver's own metrics. The figure is read idleWindow
// after the last session connected (the note also gives it after --settle):
// idle means settled, not the garbage of 10,000 handshakes a moment ago.
func runIdle(ctx context.Context, e *env) error {
	n := e.cfg.Idle
	limit, err := raiseFileLimit()
	if err != nil {
		return err
	}
	if uint64(n)+256 > limit {
		return fmt.Errorf("%d connections need more than the open-file limit of %d", n, limit)
	}
	src, _, err := makeProject(ctx, e.dir)
	if err != nil {
		return err
	}
	m, err := startMetaserver(ctx, e.bins, e.dir)
	if err != nil {
		return err
	}
	if err := m.addProject(ctx, projectName, src); err != nil {
		m.close()
		return err
	}
	t0 := time.Now()
	tokens, err := addCredentials(ctx, m, "idle", n)
	if err != nil {
		m.close()
		return err
	}
	e.rep.logf("%d credentials created over the admin socket in %s; restarting the metaserver", n, time.Since(t0).Round(time.Millisecond))
	m.close()
	m.Proc.stop()
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	m, err = startMetaserver(ctx, e.bins, e.dir, "--metrics-listen", metricsAddr)
	if err != nil {
		return err
	}
	defer m.close()
	m.MetricsAddr = metricsAddr
	if err := sleepCtx(ctx, e.cfg.Settle); err != nil {
		return err
	}
	before, err := readMem(m.Proc.pid())
	if err != nil {
		return err
	}
	met0, err := scrape(ctx, m.MetricsAddr)
	if err != nil {
		return err
	}
	self0, _ := readMem(os.Getpid())
	t0 = time.Now()
	farm, err := connectSims(ctx, m, "idle", tokens, 1, nil, 64)
	if err != nil {
		return err
	}
	defer farm.close()
	if err := m.waitConnected(ctx, n, 2*time.Minute); err != nil {
		return err
	}
	settled := max(e.cfg.Settle, idleWindow)
	e.rep.logf("%d idle build servers connected in %s; reading memory after %s and %s", n, time.Since(t0).Round(time.Millisecond), e.cfg.Settle, settled)
	connected := time.Now()
	if err := sleepCtx(ctx, e.cfg.Settle); err != nil {
		return err
	}
	early, err := readMem(m.Proc.pid())
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, time.Until(connected.Add(settled))); err != nil {
		return err
	}
	after, err := readMem(m.Proc.pid())
	if err != nil {
		return err
	}
	met1, err := scrape(ctx, m.MetricsAddr)
	if err != nil {
		return err
	}
	if err := m.waitConnected(ctx, n, time.Second); err != nil {
		return fmt.Errorf("after settling: %w", err)
	}
	if err := farm.err(); err != nil {
		return err
	}
	self1, _ := readMem(os.Getpid())
	perKiB := func(a, b float64) float64 { return (b - a) / float64(n) / 1024 }
	prof := profiler{e: e}
	prof.snapshot(ctx, "metaserver", m.PprofAddr, e.bins.Metaserver)
	per := perKiB(float64(before.RSS), float64(after.RSS))
	inUse := func(met map[string]float64) float64 {
		return met["go_memstats_heap_inuse_bytes"] + met["go_memstats_stack_inuse_bytes"]
	}
	note := fmt.Sprintf("metaserver RSS %.1f MiB before (restarted with the %d credentials stored, %s settled) → %.1f MiB with %d sessions, %s after the last connected (%.1f MiB, %.1f KiB per session, %s after); anon %.1f → %.1f MiB, file %.1f → %.1f MiB\n"+
		"per session: anon only %.1f KiB; Go heap in use + stacks %.1f KiB (%.1f → %.1f MiB); heap goal %.1f → %.1f MiB at GOGC %.0f → %.0f\n"+
		"open-file limit %d (raised with setrlimit); harness RSS grew %.0f MiB",
		mib(before.RSS), n, e.cfg.Settle, mib(after.RSS), n, settled, mib(early.RSS), perKiB(float64(before.RSS), float64(early.RSS)), e.cfg.Settle, mib(before.Anon), mib(after.Anon), mib(before.File), mib(after.File),
		perKiB(float64(before.Anon), float64(after.Anon)), perKiB(inUse(met0), inUse(met1)), inUse(met0)/(1<<20), inUse(met1)/(1<<20),
		met0["go_memstats_next_gc_bytes"]/(1<<20), met1["go_memstats_next_gc_bytes"]/(1<<20), met0["go_gc_gogc_percent"], met1["go_gc_gogc_percent"],
		limit, mib(self1.RSS-self0.RSS))
	e.rep.add(figure{Scenario: "idle", Name: fmt.Sprintf("metaserver KiB per idle server (%d)", n), Value: per, Unit: "KiB", Target: 40, AtMost: true, Note: note})
	return nil
}

// idleWindow is how long after the last connection the idle scenario reads
// its figure (--settle, when longer, wins).
const idleWindow = 30 * time.Second

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

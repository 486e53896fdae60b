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
	defer m.close()
	if err := m.addProject(ctx, projectName, src); err != nil {
		return err
	}
	t0 := time.Now()
	tokens, err := addCredentials(ctx, m, "idle", n)
	if err != nil {
		return err
	}
	e.rep.logf("%d credentials created over the admin socket in %s", n, time.Since(t0).Round(time.Millisecond))
	if err := sleepCtx(ctx, e.cfg.Settle); err != nil {
		return err
	}
	before, err := readMem(m.Proc.pid())
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
	e.rep.logf("%d idle build servers connected in %s; settling %s", n, time.Since(t0).Round(time.Millisecond), e.cfg.Settle)
	if err := sleepCtx(ctx, e.cfg.Settle); err != nil {
		return err
	}
	after, err := readMem(m.Proc.pid())
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
	prof := profiler{e: e}
	prof.snapshot(ctx, "metaserver", m.PprofAddr, e.bins.Metaserver)
	per := float64(after.RSS-before.RSS) / float64(n) / 1024
	note := fmt.Sprintf("metaserver RSS %.1f MiB before → %.1f MiB with %d sessions (anon %.1f → %.1f MiB, file %.1f → %.1f MiB)\nanon only: %.1f KiB per session; open-file limit %d (raised with setrlimit); harness RSS grew %.0f MiB",
		mib(before.RSS), mib(after.RSS), n, mib(before.Anon), mib(after.Anon), mib(before.File), mib(after.File),
		float64(after.Anon-before.Anon)/float64(n)/1024, limit, mib(self1.RSS-self0.RSS))
	e.rep.add(figure{Scenario: "idle", Name: fmt.Sprintf("metaserver KiB per idle server (%d)", n), Value: per, Unit: "KiB", Target: 40, AtMost: true, Note: note})
	return nil
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

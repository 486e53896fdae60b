package main

import (
	"context"
	"fmt"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// realFarm starts a metaserver with the load project registered and n real
// build servers with jobs slots each, all connected. Credentials and the
// project are added with the metaserver's own CLI (over its admin socket).
func realFarm(ctx context.Context, e *env, n, jobs int) (*meta, *requests, []*buildserver, error) {
	src, commit, err := makeProject(ctx, e.dir)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := startMetaserver(ctx, e.bins, e.dir)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := m.addProject(ctx, projectName, src); err != nil {
		return m, nil, nil, err
	}
	var bss []*buildserver
	for i := range n {
		name := fmt.Sprintf("volunteer-%d", i)
		tok, err := m.addBuildServer(ctx, name)
		if err != nil {
			return m, nil, nil, err
		}
		bs, err := startBuildserver(e.bins, e.dir, m, name, tok, jobs, e.cfg.Sandbox)
		if err != nil {
			return m, nil, nil, err
		}
		bss = append(bss, bs)
	}
	if err := m.waitConnected(ctx, n, readyTimeout); err != nil {
		return m, nil, nil, err
	}
	reqs, err := newRequests(ctx, commit)
	return m, reqs, bss, err
}

// timedBuild is one build's timeline: harness clock for submit and the
// final answer, the metaserver's for the rest (same machine, same clock).
type timedBuild struct {
	submit, replied, final time.Time
	build                  *kilnv1.Build
}

// oneBuild submits req, follows the build to its final state and returns its timeline.
func oneBuild(ctx context.Context, c kilnv1.CompileServiceClient, req *kilnv1.SubmitRequest) (timedBuild, error) {
	var tb timedBuild
	tb.submit = time.Now()
	resp, err := c.Submit(ctx, req)
	if err != nil {
		return tb, fmt.Errorf("submit: %w", err)
	}
	tb.replied = time.Now()
	if resp.GetCached() || resp.GetJoined() {
		return tb, fmt.Errorf("build %d: expected a new build, got cached=%v joined=%v", resp.GetBuild().GetId(), resp.GetCached(), resp.GetJoined())
	}
	wctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	tb.build, tb.final, err = watchUntilFinal(wctx, c, resp.GetBuild().GetId())
	return tb, err
}

// runNoop measures submit → completed of a no-op build on one idle real
// build server, sequentially.
func runNoop(ctx context.Context, e *env) error {
	m, reqs, bss, err := realFarm(ctx, e, 1, 1)
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return err
	}
	e.rep.logf("warm-up: %d builds (the first mirrors the source on the build server)", e.cfg.Warmup)
	for range max(1, e.cfg.Warmup) {
		if _, err := oneBuild(ctx, m.Compile, reqs.next()); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	var total, submitRPC, queued, onServer, notify durations
	prof := profiler{e: e}
	est := time.Duration(e.cfg.N) * 15 * time.Millisecond
	prof.cpu(ctx, "metaserver", m.PprofAddr, e.bins.Metaserver, est)
	prof.cpu(ctx, "buildserver", bss[0].PprofAddr, e.bins.Buildserver, est)
	e.rep.logf("measuring %d sequential no-op builds", e.cfg.N)
	for range e.cfg.N {
		tb, err := oneBuild(ctx, m.Compile, reqs.next())
		if err != nil {
			return err
		}
		b := tb.build
		total.add(tb.final.Sub(tb.submit))
		submitRPC.add(tb.replied.Sub(tb.submit))
		queued.add(b.GetStartedAt().AsTime().Sub(b.GetCreatedAt().AsTime()))
		onServer.add(b.GetFinishedAt().AsTime().Sub(b.GetStartedAt().AsTime()))
		notify.add(tb.final.Sub(b.GetFinishedAt().AsTime()))
	}
	prof.wait()
	note := fmt.Sprintf("phases (p50): Submit RPC %.2f ms; created→dispatched %.2f ms; dispatched→finished %.2f ms (assignment, fetch, bwrap step, pack, upload, result); finished→client saw it %.2f ms\nall: %s",
		ms(submitRPC.pct(50)), ms(queued.pct(50)), ms(onServer.pct(50)), ms(notify.pct(50)), total.describe())
	e.rep.add(figure{Scenario: "noop", Name: "submit→completed p50", Value: ms(total.pct(50)), Unit: "ms", Target: 10, AtMost: true, Note: note})
	e.rep.add(figure{Scenario: "noop", Name: "submit→completed p90", Value: ms(total.pct(90)), Unit: "ms", NoTarget: true})
	e.rep.add(figure{Scenario: "noop", Name: "submit→completed p99", Value: ms(total.pct(99)), Unit: "ms", Target: 30, AtMost: true})
	e.rep.add(figure{Scenario: "noop", Name: "submit→completed max", Value: ms(total.pct(100)), Unit: "ms", NoTarget: true})
	return nil
}

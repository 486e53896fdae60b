package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// realFarm starts a metaserver with the load project registered and n real
// build servers with jobs slots each, all connected. Credentials and the
// project are added with the metaserver's own CLI (over its admin socket).
func realFarm(ctx context.Context, e *env, n, jobs int, debugLog bool) (*meta, *requests, []*buildserver, error) {
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
	var bss []*buildserver
	for i := range n {
		name := fmt.Sprintf("volunteer-%d", i)
		tok, err := m.addBuildServer(ctx, name)
		if err != nil {
			return m, nil, nil, err
		}
		bs, err := startBuildserver(e.bins, e.dir, m, name, tok, jobs, e.cfg.Sandbox, debugLog)
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
	// phases holds when the harness first saw each phase of the attempt.
	phases map[kilnv1.Phase]time.Time
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
	tb.phases = map[kilnv1.Phase]time.Time{}
	tb.build, tb.final, err = watchWith(wctx, c, resp.GetBuild().GetId(), func(b *kilnv1.Build, at time.Time) {
		if atts := b.GetAttempts(); len(atts) > 0 {
			p := atts[len(atts)-1].GetPhase()
			if _, ok := tb.phases[p]; !ok {
				tb.phases[p] = at
			}
		}
	})
	return tb, err
}

// runNoop measures submit → completed of a no-op build on one idle real
// build server, sequentially.
func runNoop(ctx context.Context, e *env) error {
	m, reqs, bss, err := realFarm(ctx, e, 1, 1, true)
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
	e.rep.logf("machine bounds: bubblewrap start, one small fdatasync")
	bw, err := bwrapBound(ctx, e.dir, 30)
	if err != nil {
		return err
	}
	fs, err := fsyncBound(m.DataDir, 50)
	if err != nil {
		return err
	}
	var total, submitRPC, queued, onServer, notify durations
	var toFetch, fetch, steps, pack, upload, overhead durations
	prof := profiler{e: e}
	est := time.Duration(e.cfg.N) * 30 * time.Millisecond
	prof.cpu(ctx, "metaserver", m.PprofAddr, e.bins.Metaserver, est)
	prof.cpu(ctx, "buildserver", bss[0].PprofAddr, e.bins.Buildserver, est)
	firstMeasured := uint64(0)
	e.rep.logf("measuring %d sequential no-op builds", e.cfg.N)
	met0, _ := scrape(ctx, m.MetricsAddr)
	for range e.cfg.N {
		tb, err := oneBuild(ctx, m.Compile, reqs.next())
		if err != nil {
			return err
		}
		b := tb.build
		if firstMeasured == 0 {
			firstMeasured = b.GetAttempts()[0].GetId()
		}
		total.add(tb.final.Sub(tb.submit))
		submitRPC.add(tb.replied.Sub(tb.submit))
		queued.add(b.GetStartedAt().AsTime().Sub(b.GetCreatedAt().AsTime()))
		onServer.add(b.GetFinishedAt().AsTime().Sub(b.GetStartedAt().AsTime()))
		notify.add(tb.final.Sub(b.GetFinishedAt().AsTime()))
		seen := func(from, to kilnv1.Phase, into *durations) {
			a, ok1 := tb.phases[from]
			z, ok2 := tb.phases[to]
			if ok1 && ok2 {
				into.add(z.Sub(a))
			}
		}
		if t, ok := tb.phases[kilnv1.Phase_PHASE_FETCHING]; ok {
			toFetch.add(t.Sub(tb.submit))
		}
		seen(kilnv1.Phase_PHASE_FETCHING, kilnv1.Phase_PHASE_BUILDING, &fetch)
		seen(kilnv1.Phase_PHASE_BUILDING, kilnv1.Phase_PHASE_PACKING, &steps)
		if a, ok := tb.phases[kilnv1.Phase_PHASE_BUILDING]; ok {
			if z, ok := tb.phases[kilnv1.Phase_PHASE_PACKING]; ok {
				overhead.add(tb.final.Sub(tb.submit) - z.Sub(a))
			}
		}
		seen(kilnv1.Phase_PHASE_PACKING, kilnv1.Phase_PHASE_UPLOADING, &pack)
		if t, ok := tb.phases[kilnv1.Phase_PHASE_UPLOADING]; ok {
			upload.add(tb.final.Sub(t))
		}
	}
	met1, _ := scrape(ctx, m.MetricsAddr)
	prof.wait()
	timings, stepsP50 := workerTimings(bss[0].LogPath, firstMeasured)
	if mean, ok := histogramMean(met0, met1, "kiln_store_commit_seconds"); ok {
		n := met1["kiln_store_commit_seconds_count"] - met0["kiln_store_commit_seconds_count"]
		timings += fmt.Sprintf("metaserver store: %.1f transactions per build (%.1f changes), %.2f ms each (mean)\n",
			n/float64(e.cfg.N), (met1["kiln_store_changes_total"]-met0["kiln_store_changes_total"])/float64(e.cfg.N), mean)
	}
	note := fmt.Sprintf("metaserver timestamps (p50): Submit RPC %.2f ms; created→dispatched %.2f ms; dispatched→finished %.2f ms; finished→client saw it %.2f ms\n"+
		"phases as the client saw them through WatchBuild (p50; a fast build's phases can be coalesced): submit→FETCHING %.2f ms, FETCHING→BUILDING %.2f ms, BUILDING→PACKING %.2f ms, PACKING→UPLOADING %.2f ms, UPLOADING→final %.2f ms\n"+
		"%sall: %s",
		ms(submitRPC.pct(50)), ms(queued.pct(50)), ms(onServer.pct(50)), ms(notify.pct(50)),
		ms(toFetch.pct(50)), ms(fetch.pct(50)), ms(steps.pct(50)), ms(pack.pct(50)), ms(upload.pct(50)),
		timings, total.describe())
	note += fmt.Sprintf("\nmachine bounds in this run: bwrap --unshare-all ... true %s; 4 KiB write + fdatasync %s", bw.describe(), fs.describe())
	e.rep.add(figure{Scenario: "noop", Name: "submit→completed p50", Value: ms(total.pct(50)), Unit: "ms", Target: 10, AtMost: true,
		Bound: ms(bw.pct(50)), BoundName: "bwrap true alone, p50", Note: note})
	if overhead.len() > e.cfg.N/2 {
		e.rep.add(figure{Scenario: "noop", Name: "p50 minus the sandboxed step", Value: ms(overhead.pct(50)), Unit: "ms", NoTarget: true,
			Note: fmt.Sprintf("Kiln's own share: submit→completed minus BUILDING→PACKING (the bwrap step) per build; %s", overhead.describe())})
	} else if stepsP50 > 0 {
		e.rep.add(figure{Scenario: "noop", Name: "p50 minus the sandboxed step", Value: ms(total.pct(50) - stepsP50), Unit: "ms", NoTarget: true,
			Note: fmt.Sprintf("Kiln's own share: submit→completed p50 minus the build server's own steps (bwrap) p50 %.2f ms (WatchBuild showed both phases for only %d builds)", ms(stepsP50), overhead.len())})
	}
	e.rep.add(figure{Scenario: "noop", Name: "submit→completed p90", Value: ms(total.pct(90)), Unit: "ms", NoTarget: true})
	e.rep.add(figure{Scenario: "noop", Name: "submit→completed p99", Value: ms(total.pct(99)), Unit: "ms", Target: 30, AtMost: true})
	e.rep.add(figure{Scenario: "noop", Name: "submit→completed max", Value: ms(total.pct(100)), Unit: "ms", NoTarget: true})
	return measureCLIWait(ctx, e, m, reqs)
}

// workerTimings summarizes the build server's own "attempt timings" debug
// lines (fetch, steps, pack, and upload or inline: the artifact sent with
// the result) of attempts from firstAttempt on.
func workerTimings(logPath string, firstAttempt uint64) (string, time.Duration) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return "", 0
	}
	keys := []string{"fetch", "steps", "pack", "upload", "inline"}
	got := map[string]*durations{}
	for _, k := range keys {
		got[k] = &durations{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, `msg="attempt timings"`) {
			continue
		}
		fields := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = v
			}
		}
		if id, err := strconv.ParseUint(fields["attempt_id"], 10, 64); err != nil || id < firstAttempt {
			continue
		}
		for _, k := range keys {
			if d, err := time.ParseDuration(fields[k]); err == nil {
				got[k].add(d)
			}
		}
	}
	if got["fetch"].len() == 0 {
		return "", 0
	}
	send := "upload"
	if got["inline"].len() > got["upload"].len() {
		send = "inline"
	}
	return fmt.Sprintf("build server's own attempt timings (p50): fetch %.2f ms, steps (bwrap) %.2f ms, pack %.2f ms, %s %.2f ms\n",
		ms(got["fetch"].pct(50)), ms(got["steps"].pct(50)), ms(got["pack"].pct(50)), send, ms(got[send].pct(50))), got["steps"].pct(50)
}

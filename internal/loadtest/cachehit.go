package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"time"
)

// cacheSims and cacheSlots shape the simulated farm that fills the store.
const (
	cacheSims  = 64
	cacheSlots = 4
)

// runCacheHit stores many builds through the real protocol (simulated build
// servers, as in the sim scenario), then measures how fast an identical
// request is answered from the cache: the Submit RPC alone, and the whole
// startcompile process.
func runCacheHit(ctx context.Context, e *env) error {
	m, reqs, farm, err := simSetup(ctx, e, cacheSims, cacheSlots)
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

	e.rep.logf("storing %d builds through %d simulated build servers", e.cfg.Builds, cacheSims)
	long := time.Hour // bounded by ctx (the scenario timeout) and the build count
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				e.rep.logf("stored %d of %d builds", farm.tracker.count.Load(), e.cfg.Builds)
			}
		}
	}()
	res, err := drive(ctx, clients, reqs, submitters, long, int64(e.cfg.Builds), trackerWait(farm.tracker))
	close(stopProgress)
	if err != nil {
		return fmt.Errorf("storing builds: %w", err)
	}
	if res.Completed != int64(e.cfg.Builds) {
		return fmt.Errorf("stored %d builds, wanted %d", res.Completed, e.cfg.Builds)
	}
	e.rep.logf("stored %d builds in %.1f s (%.0f/s)", res.Completed, res.Elapsed.Seconds(), res.rate())
	stored := int64(e.cfg.Builds)
	rng := rand.New(rand.NewPCG(1, 2))
	who := int64(1 << 40) // requester numbers never used while storing

	// Cache-hit RPCs, sequential: the request names the commit (revision = full id).
	var rpc, rpcBranch durations
	for i := range e.cfg.RPCs {
		req := reqs.with(1+rng.Int64N(stored), who+int64(i))
		if i%2 == 1 {
			req.Revision = "" // the default branch's head, as startcompile sends by default
		}
		t0 := time.Now()
		resp, err := m.Compile.Submit(ctx, req)
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("cache-hit submit: %w", err)
		}
		if !resp.GetCached() {
			return fmt.Errorf("build for n=%s was not answered from the cache", req.Options["n"])
		}
		if req.Revision == "" {
			rpcBranch.add(d)
		} else {
			rpc.add(d)
		}
	}
	who += int64(e.cfg.RPCs)

	// The whole startcompile process, as a user runs it.
	var proc durations
	for i := range e.cfg.Runs {
		n := 1 + rng.Int64N(stored)
		args := []string{"--metaserver", m.Addr, "--project", projectName, "-o", "n=" + strconv.FormatInt(n, 10),
			"--json", fmt.Sprintf("load-%d@example.com", who+int64(i))}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		cmd := exec.CommandContext(cctx, e.bins.Startcompile, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		t0 := time.Now()
		err := cmd.Run()
		d := time.Since(t0)
		cancel()
		if err != nil {
			return fmt.Errorf("startcompile %v: %w: %s", args, err, stderr.String())
		}
		var out struct {
			Cached bool   `json:"cached"`
			State  string `json:"state"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			return fmt.Errorf("startcompile --json output %q: %w", stdout.String(), err)
		}
		if !out.Cached {
			return fmt.Errorf("startcompile for n=%d: not answered from the cache: %s", n, stdout.String())
		}
		proc.add(d)
	}
	cmdline := fmt.Sprintf("startcompile --metaserver ADDR --project %s -o n=K --json EMAIL", projectName)
	e.rep.add(figure{Scenario: "cachehit", Name: fmt.Sprintf("Submit RPC p50 (%d builds stored)", stored), Value: ms(rpc.pct(50)), Unit: "ms", Target: 1, AtMost: true,
		Note: fmt.Sprintf("revision = full commit id: %s\nrevision = \"\" (default branch head, startcompile's default): %s", rpc.describe(), rpcBranch.describe())})
	e.rep.add(figure{Scenario: "cachehit", Name: "Submit RPC p50, revision \"\"", Value: ms(rpcBranch.pct(50)), Unit: "ms", NoTarget: true})
	e.rep.add(figure{Scenario: "cachehit", Name: "startcompile process p50", Value: ms(proc.pct(50)), Unit: "ms", Target: 25, AtMost: true,
		Note: fmt.Sprintf("each run: %s\n%s", cmdline, proc.describe())})
	return nil
}

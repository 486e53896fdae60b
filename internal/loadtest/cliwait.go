package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"time"
)

// cliRuns is how many whole-process `startcompile --wait` builds the noop
// scenario runs, each beside a harness build and a start-up of the CLI.
const cliRuns = 50

// measureCLIWait runs, in turns, a harness build (Submit + WatchBuild on
// the harness's warm connection), a whole `startcompile --wait` process
// asking for a new no-op build as a user types it (no --revision: the
// default branch), and `startcompile help` (the process's own start-up:
// exec, Go runtime and package initialization, flag sets, exit). Issue
// 20 wants the second within the first plus the third, so all three are
// taken in the same turns on one machine.
func measureCLIWait(ctx context.Context, e *env, m *meta, reqs *requests) error {
	var harness, cli, startup durations
	e.rep.logf("measuring %d turns of: harness build, startcompile --wait build, startcompile help", cliRuns)
	for i := range cliRuns {
		tb, err := oneBuild(ctx, m.Compile, reqs.next())
		if err != nil {
			return err
		}
		harness.add(tb.final.Sub(tb.submit))

		n := reqs.seq.Add(1)
		args := []string{"--metaserver", m.Addr, "--project", projectName, "-o", "n=" + strconv.FormatInt(n, 10),
			"--wait", "--json", fmt.Sprintf("cli-%d@example.com", i)}
		d, out, err := runCLI(ctx, e.bins.Startcompile, args...)
		if err != nil {
			return err
		}
		var res struct {
			Cached bool   `json:"cached"`
			State  string `json:"state"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			return fmt.Errorf("startcompile --json output %q: %w", out, err)
		}
		if res.Cached || res.State != "succeeded" {
			return fmt.Errorf("startcompile --wait for n=%d: cached=%v state %q; want a new build that succeeded", n, res.Cached, res.State)
		}
		cli.add(d)

		d, _, err = runCLI(ctx, e.bins.Startcompile, "help")
		if err != nil {
			return err
		}
		startup.add(d)
	}
	bound := harness.pct(50) + startup.pct(50)
	e.rep.add(figure{Scenario: "noop", Name: "startcompile --wait process p50", Value: ms(cli.pct(50)), Unit: "ms",
		Target: ms(bound), AtMost: true, Bound: ms(bound), BoundName: "harness submit→completed p50 + startcompile start-up p50, same turns",
		Note: fmt.Sprintf("startcompile --metaserver ADDR --project %s -o n=K --wait --json EMAIL (default branch): %s\n"+
			"harness build in the same turns: %s\nstartcompile help (start-up): %s",
			projectName, cli.describe(), harness.describe(), startup.describe())})
	return nil
}

// runCLI runs bin with args and returns how long the process took and its
// stdout; a failure carries its stderr.
func runCLI(ctx context.Context, bin string, args ...string) (time.Duration, []byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, nil, fmt.Errorf("startcompile %v: %w: %s", args, err, stderr.String())
	}
	return d, stdout.Bytes(), nil
}

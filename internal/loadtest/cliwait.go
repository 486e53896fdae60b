package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kilnbuild/kiln/internal/compilecli"
	"github.com/kilnbuild/kiln/internal/sysinfo"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// measureCLIWait runs, in turns, a harness build (Submit + WatchBuild on
// the harness's warm connection), a whole `startcompile --wait` process
// asking for a new no-op build at the harness's commit (cliArgs says why
// not a branch), `startcompile --help` (the process's own start-up, as
// issue 20 names it: exec, Go runtime and package initialization, the
// submit command's flag set, its usage printed, exit), and the
// same command as the process through compilecli.Run inside the harness
// (a new connection, the log, the JSON result: all
// the CLI's protocol and code, none of a new process's costs). Issue 20
// wants the process within the harness build plus the start-up, so all
// are taken in the same turns on one machine. A second figure reads the
// start-up up to the CLI's first request, its connection included: a
// whole `startcompile status` process (connect, one GetBuild, exit) less
// the same GetBuild on the harness's warm connection. A third reads the
// floor under both: grpcfloor, a process that connects and asks for the
// harness's own build and nothing else, less its own start-up; a fourth
// the best case of a local agent: the same process asking the harness's
// own process, its connection open, over a unix socket (relay.go).
//
// Besides the p50s, each turn's own gap (process − harness − start-up)
// is kept: on a shared machine a turn's three runs see the same load, so
// the median of the turns' gaps is steadier than the difference of
// three p50s. The in-process run splits what is left between the
// protocol and code (in-process − harness) and the process itself
// (process − in-process − start-up).
func measureCLIWait(ctx context.Context, e *env, m *meta, reqs *requests) error {
	var harness, cli, startup, inproc, gaps, cliCPU, startupCPU durations
	var status, getBuild, connected, connectedGaps durations
	var floor, floorStartup, floorGaps, beyondFloor, floorCPU, floorStartupCPU durations
	var viaRelay, relayGaps durations
	floorBin, err := buildFloor(ctx, e.dir)
	if err != nil {
		return err
	}
	sock := filepath.Join(e.dir, "relay.sock")
	rl, err := startRelay(sock, m.Compile)
	if err != nil {
		return err
	}
	defer rl.close()
	// The status process reads a build that is already final, the same
	// one every turn (what it costs does not depend on which).
	ref, err := oneBuild(ctx, m.Compile, reqs.next())
	if err != nil {
		return err
	}
	refID := ref.build.GetId()
	e.rep.logf("measuring %d turns of: harness build, startcompile --wait build, startcompile --help, startcompile status, the gRPC floor and its start-up, the floor through a relay, the same command in-process", e.cfg.CLITurns)
	for i := range e.cfg.CLITurns {
		var h, d, s, sc, g, f, fs, r, ip, cpu, scpu, fcpu, fscpu time.Duration
		nCLI, nIn := reqs.seq.Add(1), reqs.seq.Add(1)
		harnessReq := reqs.next()
		floorReq, err := reqs.next().MarshalVT()
		if err != nil {
			return err
		}
		relayReq, err := reqs.next().MarshalVT()
		if err != nil {
			return err
		}
		steps := []func() error{
			func() error { // the harness's build on its warm connection
				tb, err := oneBuild(ctx, m.Compile, harnessReq)
				h = tb.final.Sub(tb.submit)
				return err
			},
			func() error { // a whole startcompile --wait process
				var out []byte
				var err error
				if d, cpu, out, err = runCLI(ctx, e.bins.Startcompile, cliArgs(m.Addr, reqs.commit, nCLI, fmt.Sprintf("cli-%d@example.com", i))...); err != nil {
					return err
				}
				return checkNewBuild(out, nCLI)
			},
			func() error { // its start-up
				var err error
				s, scpu, _, err = runCLI(ctx, e.bins.Startcompile, "--help")
				return err
			},
			func() error { // its start-up up to the first request, the connection included
				var err error
				sc, _, _, err = runCLI(ctx, e.bins.Startcompile, "status", "--metaserver", m.Addr, strconv.FormatUint(refID, 10))
				return err
			},
			func() error { // the same GetBuild on the harness's connection
				t0 := time.Now()
				if _, err := m.Compile.GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: refID}); err != nil {
					return fmt.Errorf("GetBuild %d: %w", refID, err)
				}
				g = time.Since(t0)
				return nil
			},
			func() error { // the floor: connect, the harness's own Submit, watch
				var err error
				f, fcpu, _, err = runCLI(ctx, floorBin, m.Addr, base64.StdEncoding.EncodeToString(floorReq))
				return err
			},
			func() error { // the floor's start-up
				var err error
				fs, fscpu, _, err = runCLI(ctx, floorBin, "-startup")
				return err
			},
			func() error { // a local agent's best case: the same binary through the relay
				var err error
				r, _, _, err = runCLI(ctx, floorBin, "-relay", sock, base64.StdEncoding.EncodeToString(relayReq))
				return err
			},
			func() error { // the startcompile command in this process
				var out []byte
				var err error
				if ip, out, err = runInProcess(ctx, cliArgs(m.Addr, reqs.commit, nIn, fmt.Sprintf("inproc-%d@example.com", i))...); err != nil {
					return err
				}
				return checkNewBuild(out, nIn)
			},
		}
		// In this order, each run right after the last. (Tried: a 50 ms
		// pause before each run, and every other turn in reverse. A build
		// started 50 ms after one of this process's own builds took
		// 12-18 ms longer than one started after a process without a
		// build, which swamped every figure here; see BENCHMARKS.md,
		// session 9.)
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		harness.add(h)
		cli.add(d)
		cliCPU.add(cpu)
		startup.add(s)
		startupCPU.add(scpu)
		gaps.add(d - h - s)
		status.add(sc)
		getBuild.add(g)
		connected.add(sc - g)
		connectedGaps.add(d - h - (sc - g))
		floor.add(f)
		floorStartup.add(fs)
		floorCPU.add(fcpu)
		floorStartupCPU.add(fscpu)
		floorGaps.add(f - fs - h)
		beyondFloor.add((d - s) - (f - fs))
		viaRelay.add(r)
		relayGaps.add(r - fs - h)
		inproc.add(ip)
	}
	bound := harness.pct(50) + startup.pct(50)
	e.rep.add(figure{Scenario: "noop", Name: "startcompile --wait process p50", Value: ms(cli.pct(50)), Unit: "ms",
		Target: ms(bound), AtMost: true, Bound: ms(bound), BoundName: "harness submit→completed p50 + startcompile start-up p50, same turns",
		Note: fmt.Sprintf("startcompile --metaserver ADDR --project %s --revision COMMIT -o n=K --wait --json EMAIL: %s\n"+
			"harness build in the same turns: %s\nstartcompile --help (start-up): %s\n"+
			"the same command through compilecli.Run in the harness's process: %s",
			projectName, cli.describe(), harness.describe(), startup.describe(), inproc.describe())})
	e.rep.add(figure{Scenario: "noop", Name: "startcompile --wait: median of the turns' gaps", Value: ms(gaps.pct(50)), Unit: "ms",
		Target: 0, AtMost: true,
		Note: fmt.Sprintf("per turn: process − harness build − start-up (≤ 0: within the bound); %s\n"+
			"split of the p50s: protocol and code (in-process − harness) %+.1f ms; the process beyond its start-up (process − in-process − start-up) %+.1f ms\n"+
			"minima (the least disturbed run of each): process %.1f ms, harness %.1f + start-up %.1f = %.1f ms, in-process %.1f ms\n"+
			"CPU of each process (user + system, p50): startcompile --wait %.1f ms, startcompile --help %.1f ms",
			gaps.describe(), ms(inproc.pct(50)-harness.pct(50)), ms(cli.pct(50)-inproc.pct(50)-startup.pct(50)),
			ms(cli.pct(0)), ms(harness.pct(0)), ms(startup.pct(0)), ms(harness.pct(0)+startup.pct(0)), ms(inproc.pct(0)),
			ms(cliCPU.pct(50)), ms(startupCPU.pct(50)))})
	e.rep.add(figure{Scenario: "noop", Name: "startcompile --wait beyond a connected start-up: median of the turns' gaps", Value: ms(connectedGaps.pct(50)), Unit: "ms",
		Target: 0, AtMost: true,
		Note: fmt.Sprintf("the same bound with the CLI's start-up counted up to its first request, the connection included (the harness opened its own before its clock started); "+
			"the figure above counts --help only\n"+
			"per turn: process − harness build − (startcompile status process − the same GetBuild on the harness's connection); %s\n"+
			"startcompile --metaserver ADDR status ID (a final build, the same every turn): %s\nGetBuild on the harness's connection: %s\nconnected start-up: %s",
			connectedGaps.describe(), status.describe(), getBuild.describe(), connected.describe())})
	e.rep.add(figure{Scenario: "noop", Name: "the gRPC floor beyond its start-up: median of the turns' gaps", Value: ms(floorGaps.pct(50)), Unit: "ms",
		NoTarget: true,
		Note: fmt.Sprintf("internal/loadtest/grpcfloor: a process that connects as startcompile does, sends the harness's own Submit, follows it with WatchBuild (no log), closes and exits: no flags, measurement, log or output; "+
			"what any one-shot client process on grpc-go pays beyond the harness's build (> 0: no such process meets the bound above)\n"+
			"per turn: floor process − floor start-up − harness build; %s\nfloor process: %s\nfloor start-up (grpcfloor -startup): %s\n"+
			"startcompile --wait beyond the floor, per turn ((process − --help) − (floor − floor start-up)): %s\n"+
			"CPU of each process (user + system, p50): floor %.1f ms, floor start-up %.1f ms",
			floorGaps.describe(), floor.describe(), floorStartup.describe(), beyondFloor.describe(), ms(floorCPU.pct(50)), ms(floorStartupCPU.pct(50)))})
	if err := rl.close(); err != nil {
		return err
	}
	e.rep.add(figure{Scenario: "noop", Name: "a local agent's best case beyond the start-up: median of the turns' gaps", Value: ms(relayGaps.pct(50)), Unit: "ms",
		NoTarget: true,
		Note: fmt.Sprintf("grpcfloor -relay: the floor's process asking the harness's own process, connection already open, over a unix socket (one request in, the states out, no gRPC in the client): "+
			"the least a process pays when a running agent holds the connection (> 0: not even that meets the bound)\n"+
			"per turn: relayed process − floor start-up − harness build; %s\nrelayed process: %s",
			relayGaps.describe(), viaRelay.describe())})
	return nil
}

// buildFloor builds internal/loadtest/grpcfloor into dir, static as
// startcompile is released, and returns its path.
func buildFloor(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return "", fmt.Errorf("building the gRPC floor: %w", err)
	}
	bin := filepath.Join(dir, "grpcfloor")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./internal/loadtest/grpcfloor")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./internal/loadtest/grpcfloor: %w\n%s", err, out)
	}
	return bin, nil
}

// cliArgs is the startcompile command line of a new no-op build n at
// commit, named by its full id as the harness names it. A branch would
// add a git fetch to whichever request comes more than the mirror's
// freshness window (1 s) after the last one, so the CLI's figure would
// depend on how its runs fall against the other requests' instead of on
// the CLI.
func cliArgs(addr, commit string, n int64, email string) []string {
	return []string{"--metaserver", addr, "--project", projectName, "--revision", commit, "-o", "n=" + strconv.FormatInt(n, 10), "--wait", "--json", email}
}

// checkNewBuild checks startcompile's --json output: a new build that
// succeeded.
func checkNewBuild(out []byte, n int64) error {
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
	return nil
}

// runCLI runs bin with args and returns how long the process took, the CPU
// it used (user + system) and its stdout; a failure carries its stderr.
func runCLI(ctx context.Context, bin string, args ...string) (time.Duration, time.Duration, []byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return d, 0, nil, fmt.Errorf("startcompile %v: %w: %s", args, err, stderr.String())
	}
	return d, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), stdout.Bytes(), nil
}

// runInProcess runs the startcompile command line args through
// compilecli.Run in this process, as startcompile's main does (the
// same measurement of this machine), and returns its time and stdout.
func runInProcess(ctx context.Context, args ...string) (time.Duration, []byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	t0 := time.Now()
	code := compilecli.Run(cctx, compilecli.Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" },
		Measure: sysinfo.LocalPinned, Terminal: func(io.Writer) bool { return false }}, args)
	d := time.Since(t0)
	if code != compilecli.ExitOK {
		return d, nil, fmt.Errorf("compilecli.Run %v: exit %d: %s", args, code, stderr.String())
	}
	return d, stdout.Bytes(), nil
}

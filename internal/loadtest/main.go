package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config holds every flag; each scenario reads the ones it needs.
type config struct {
	Bin     string
	Pprof   bool
	Keep    bool
	Timeout time.Duration

	N            int           // noop: sequential builds measured
	Warmup       int           // noop: builds before measuring
	CLITurns     int           // noop: turns of the startcompile --wait measurement
	Sandbox      string        // real build servers' --sandbox
	Duration     time.Duration // throughput, sim: measuring window
	Buildservers int           // throughput: real build servers
	Jobs         int           // throughput: --jobs of each
	Submitters   int           // throughput, sim, cachehit populate: concurrent submitters
	Sims         int           // sim: simulated build servers
	Slots        int           // sim: slots of each simulated server
	Builds       int           // cachehit: stored builds
	RPCs         int           // cachehit: cache-hit Submits measured
	Runs         int           // cachehit: startcompile runs measured
	Idle         int           // idle: idle sessions
	Settle       time.Duration // rest, idle: wait before reading RSS
	SizeMiB      int           // upload/download: artifact size
	Kills        int           // redispatch: build servers killed mid-build
	Store        string        // every metaserver's --store (a fresh schema each)
	Blobs        string        // every metaserver's --blobs
	Package      string        // real: Debian source package
	Reps         int           // real: by-hand/Kiln pairs per platform and phase
	// HandNormalPriority runs the real scenario's by-hand steps at the
	// harness's own priority instead of the build server's steps' (nice
	// 19, idle I/O class).
	HandNormalPriority bool
}

func (c *config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Bin, "bin", "", "directory with prebuilt metaserver, buildserver, startcompile (default: go build them into the run directory)")
	fs.BoolVar(&c.Pprof, "pprof", false, "build metaserver and buildserver with a net/http/pprof overlay and save CPU profiles of the measuring windows")
	fs.BoolVar(&c.Keep, "keep", false, "keep the run directory (data dirs, logs, profiles)")
	fs.DurationVar(&c.Timeout, "timeout", 0, "upper bound of each scenario (0: the scenario's default, 3-15 minutes)")
	fs.IntVar(&c.N, "n", 200, "noop: sequential builds measured")
	fs.IntVar(&c.Warmup, "warmup", 5, "noop: builds run before measuring (the first mirrors the source)")
	fs.IntVar(&c.CLITurns, "cli-turns", 50, "noop: turns of harness build, startcompile --wait, --help and in-process run (a turn's gap varies by a few ms: 50 turns resolve about 1 ms, 300 about 0.4)")
	fs.StringVar(&c.Sandbox, "sandbox", "bwrap", "real build servers' --sandbox (bwrap or none)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "throughput, sim: length of the measuring window")
	fs.IntVar(&c.Buildservers, "buildservers", 4, "throughput: real build servers")
	fs.IntVar(&c.Jobs, "jobs", 2, "throughput: --jobs of each real build server")
	fs.IntVar(&c.Submitters, "submitters", 0, "concurrent submitters (0: a default per scenario)")
	fs.IntVar(&c.Sims, "sims", 1000, "sim: simulated build servers")
	fs.IntVar(&c.Slots, "slots", 1, "sim: slots of each simulated build server")
	fs.IntVar(&c.Builds, "builds", 100000, "cachehit: builds stored before measuring")
	fs.IntVar(&c.RPCs, "rpcs", 1000, "cachehit: cache-hit Submit calls measured")
	fs.IntVar(&c.Runs, "runs", 50, "cachehit: startcompile runs measured")
	fs.IntVar(&c.Idle, "idle", 10000, "idle: idle connected simulated build servers")
	fs.DurationVar(&c.Settle, "settle", 3*time.Second, "rest, idle: wait before reading memory")
	fs.IntVar(&c.SizeMiB, "size-mib", 1024, "upload, download: artifact size in MiB")
	fs.StringVar(&c.Store, "store", "", "postgres:// URL: every metaserver keeps its store there, each in a fresh schema (default: bbolt in its data dir)")
	fs.StringVar(&c.Blobs, "blobs", "", "s3:// URL: every metaserver keeps its artifacts there, credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (default: the blob directory)")
	fs.IntVar(&c.Kills, "kills", 10, "redispatch: build servers SIGKILLed mid-build, one per build")
	fs.StringVar(&c.Package, "package", "zlib", "real: Debian 12 source package to build (apt-get source; deb-src enabled)")
	fs.BoolVar(&c.HandNormalPriority, "hand-normal-priority", false, "real: run the by-hand steps at the harness's priority, not at the build server's steps' (nice 19, idle I/O class)")
	fs.IntVar(&c.Reps, "reps", 4, "real: by-hand / Kiln pairs per platform (alternating), before and after the compiler cache")
}

// env is what a scenario runs with.
type env struct {
	cfg  config
	bins bins
	// dir is the scenario's own directory under the run directory.
	dir string
	rep *reporter
}

type scenario struct {
	name string
	run  func(ctx context.Context, e *env) error
	// timeout is the scenario's default bound (--timeout overrides it).
	timeout time.Duration
	help    string
}

var scenarios = []scenario{
	{"noop", runNoop, 3 * time.Minute, "no-op build submit → completed, 1 real buildserver (bwrap): p50/p90/p99/max"},
	{"throughput", runThroughput, 3 * time.Minute, "sustained no-op builds/s with real buildservers"},
	{"sim", runSim, 5 * time.Minute, "dispatch+result cycles/s with simulated build servers; metaserver CPU per build"},
	{"cachehit", runCacheHit, 15 * time.Minute, "cache-hit answer latency (RPC and startcompile) over many stored builds"},
	{"idle", runIdle, 10 * time.Minute, "metaserver memory per idle connected build server"},
	{"rest", runRest, 2 * time.Minute, "RSS of an idle metaserver and an idle buildserver"},
	{"upload", runUpload, 5 * time.Minute, "large artifact upload vs the disk's fsync'd write throughput; RSS growth"},
	{"download", runDownload, 5 * time.Minute, "large artifact download vs raw loopback gRPC bulk throughput"},
	{"redispatch", runRedispatch, 5 * time.Minute, "build server SIGKILLed mid-build → its build started on another, vs the lease"},
	{"real", runReal, 60 * time.Minute, "a real project (Debian's --package) by hand and through Kiln, native and s390x under qemu, without, cold and warm compiler cache (not in all)"},
	{"peer", runPeer, 20 * time.Minute, "Kiln beside Buildbot (Debian's buildbot, buildbot-worker; installed when missing), same machine, same run: no-op latency, builds/s, CPU per build, RSS at rest (not in all)"},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: go run ./internal/loadtest SCENARIO [flags]\n\nscenarios:\n")
	for _, s := range scenarios {
		fmt.Fprintf(os.Stderr, "  %-11s %s\n", s.name, s.help)
	}
	fmt.Fprintf(os.Stderr, "  %-11s every scenario above in turn but real and peer\n\nflags:\n", "all")
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	var c config
	c.flags(fs)
	fs.SetOutput(os.Stderr)
	fs.PrintDefaults()
}

func main() {
	os.Exit(run())
}

func run() int {
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		usage()
		return 2
	}
	name := os.Args[1]
	if name == bulkServeCommand {
		return bulkServe(os.Args[2:])
	}
	var todo []scenario
	for _, s := range scenarios {
		if (name == "all" && s.name != "peer" && s.name != "real") || s.name == name {
			todo = append(todo, s)
		}
	}
	if len(todo) == 0 {
		fmt.Fprintf(os.Stderr, "loadtest: unknown scenario %q\n", name)
		usage()
		return 2
	}
	var cfg config
	fs := flag.NewFlagSet("loadtest "+name, flag.ContinueOnError)
	cfg.flags(fs)
	if err := fs.Parse(os.Args[2:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "loadtest: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if cfg.CLITurns < 1 {
		fmt.Fprintf(os.Stderr, "loadtest: -cli-turns must be at least 1, got %d\n", cfg.CLITurns)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Every process the harness started is stopped by its PID on the way out,
	// whatever the way out is (children also die with us: Pdeathsig).
	defer procs.stopAll()

	runDir, err := os.MkdirTemp("", "kiln-loadtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		return 1
	}
	// Build servers running as root build as their own build users, which
	// must reach the data directories below this one (MkdirTemp's 0700).
	if err := os.Chmod(runDir, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		return 1
	}
	rep := newReporter("")
	failed := 0
	defer func() {
		procs.stopAll()
		if cfg.Keep || failed > 0 {
			fmt.Fprintf(os.Stderr, "loadtest: run directory kept: %s\n", runDir)
			return
		}
		os.RemoveAll(runDir)
	}()

	b, err := prepareBins(ctx, cfg, runDir, rep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		failed++
		return 1
	}
	b.Store, b.Blobs = cfg.Store, cfg.Blobs
	flags := strings.Join(os.Args[2:], " ")
	for _, s := range todo {
		rep.command = strings.TrimSpace("go run ./internal/loadtest " + s.name + " " + flags)
		dir := filepath.Join(runDir, s.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
			return 1
		}
		timeout := s.timeout
		if cfg.Timeout > 0 {
			timeout = cfg.Timeout
		}
		sctx, cancel := context.WithTimeout(ctx, timeout)
		load, _ := os.ReadFile("/proc/loadavg")
		rep.logf("scenario %s (timeout %s, dir %s; load average before: %s)", s.name, timeout, dir, strings.TrimSpace(string(load)))
		err := s.run(sctx, &env{cfg: cfg, bins: b, dir: dir, rep: rep})
		cancel()
		procs.stopAll()
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "loadtest: scenario %s failed: %v\n", s.name, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	missed := rep.summary()
	if missed > 0 {
		fmt.Printf("%d target(s) missed\n", missed)
	}
	if failed > 0 || ctx.Err() != nil {
		return 1
	}
	return 0
}

// prepareBins builds the programs or checks the ones --bin names.
func prepareBins(ctx context.Context, cfg config, runDir string, rep *reporter) (bins, error) {
	if cfg.Bin != "" {
		if cfg.Pprof {
			return bins{}, errors.New("--pprof needs the harness to build the programs: drop --bin")
		}
		return binsIn(cfg.Bin, false)
	}
	dir := filepath.Join(runDir, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return bins{}, err
	}
	rep.logf("building metaserver, buildserver, startcompile into %s", dir)
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return buildBinaries(bctx, dir, cfg.Pprof)
}

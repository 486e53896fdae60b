package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// readyTimeout bounds waiting for a started program to serve.
const readyTimeout = 30 * time.Second

// bins are the real programs the harness runs.
type bins struct {
	Metaserver, Buildserver, Startcompile string
	// Pprof is true when the programs were built with the harness's pprof
	// overlay: KILN_PPROF_ADDR in their environment serves net/http/pprof.
	Pprof bool
	// Store and Blobs, when set, are given to every metaserver (--store in
	// a fresh schema per start, --blobs as is).
	Store, Blobs string
}

// storeStarts numbers the metaservers started on --store, for their schemas.
var storeStarts int

// storeArgs are the --store and --blobs flags of one metaserver start.
func (b bins) storeArgs() []string {
	var args []string
	if b.Store != "" {
		storeStarts++
		sep := "?"
		if strings.Contains(b.Store, "?") {
			sep = "&"
		}
		args = append(args, "--store", fmt.Sprintf("%s%ssearch_path=loadtest_%d_%d", b.Store, sep, os.Getpid(), storeStarts))
	}
	if b.Blobs != "" {
		args = append(args, "--blobs", b.Blobs)
	}
	return args
}

// pprofOverlay is compiled into metaserver and buildserver with
// `go build -overlay` when --pprof is given, so the real programs can be
// profiled without any change to their sources.
const pprofOverlay = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("KILN_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
`

// moduleRoot returns the directory of the kiln module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the kiln module: run from the repository or pass --bin DIR")
	}
	return filepath.Dir(mod), nil
}

// buildBinaries go-builds the programs into dir; withPprof adds the pprof
// overlay to metaserver and buildserver.
func buildBinaries(ctx context.Context, dir string, withPprof bool) (bins, error) {
	root, err := moduleRoot(ctx)
	if err != nil {
		return bins{}, err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if withPprof {
		src := filepath.Join(dir, "zz_loadtest_pprof.go")
		if err := os.WriteFile(src, []byte(pprofOverlay), 0o644); err != nil {
			return bins{}, err
		}
		overlay := fmt.Sprintf(`{"Replace":{%q:%q,%q:%q}}`,
			filepath.Join(root, "metaserver", "zz_loadtest_pprof.go"), src,
			filepath.Join(root, "buildserver", "zz_loadtest_pprof.go"), src)
		op := filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(op, []byte(overlay), 0o644); err != nil {
			return bins{}, err
		}
		args = append(args, "-overlay", op)
	}
	args = append(args, "./metaserver", "./buildserver", "./startcompile")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as released (scripts/release.sh)
	if out, err := cmd.CombinedOutput(); err != nil {
		return bins{}, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return binsIn(dir, withPprof)
}

// binsIn returns the programs found in dir.
func binsIn(dir string, withPprof bool) (bins, error) {
	b := bins{
		Metaserver:   filepath.Join(dir, "metaserver"),
		Buildserver:  filepath.Join(dir, "buildserver"),
		Startcompile: filepath.Join(dir, "startcompile"),
		Pprof:        withPprof,
	}
	for _, p := range []string{b.Metaserver, b.Buildserver, b.Startcompile} {
		if _, err := os.Stat(p); err != nil {
			return bins{}, fmt.Errorf("program: %w", err)
		}
	}
	return b, nil
}

// meta is a running metaserver with client connections.
type meta struct {
	Addr, DataDir string
	// PprofAddr is set when the metaserver serves net/http/pprof.
	PprofAddr string
	// MetricsAddr is set when it was started with --metrics-listen.
	MetricsAddr string
	Proc        *proc
	// storeArgs are its --store and --blobs flags (storeArgs of bins).
	storeArgs []string
	conn      *grpc.ClientConn
	Compile   kilnv1.CompileServiceClient
	Status    kilnv1.StatusServiceClient
	bins      bins
}

// startMetaserver starts `metaserver serve` in dir/meta with extra flags and
// waits until its health service answers SERVING.
func startMetaserver(ctx context.Context, b bins, dir string, extra ...string) (*meta, error) {
	return startMetaserverOn(ctx, b, dir, b.storeArgs(), extra...)
}

// restartMetaserver starts a metaserver on the store and blobs of old
// (stopped): on --store, the same schema, where startMetaserver would make
// a fresh one.
func restartMetaserver(ctx context.Context, old *meta, dir string, extra ...string) (*meta, error) {
	return startMetaserverOn(ctx, old.bins, dir, old.storeArgs, extra...)
}

// startMetaserverOn is startMetaserver with the given --store and --blobs
// flags.
func startMetaserverOn(ctx context.Context, b bins, dir string, storeArgs []string, extra ...string) (*meta, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	m := &meta{Addr: addr, DataDir: filepath.Join(dir, "meta"), bins: b, storeArgs: storeArgs}
	if err := os.MkdirAll(m.DataDir, 0o700); err != nil {
		return nil, err
	}
	var env []string
	if b.Pprof {
		if m.PprofAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		env = append(env, "KILN_PPROF_ADDR="+m.PprofAddr)
	}
	// A load test stands for many requesters behind one loopback address:
	// the per-address request limit would throttle it (each request already
	// names its own email, under the per-email limit). Its fake volunteers
	// are trusted alone (--quorum 1), as before verification existed.
	args := append([]string{"serve", "--data-dir", m.DataDir, "--listen", addr, "--log-level", "warn",
		"--requests-per-minute-per-address", "0", "--quorum", "1"}, append(slices.Clone(storeArgs), extra...)...)
	if m.Proc, err = procs.start(dir, "metaserver", b.Metaserver, env, args...); err != nil {
		return nil, err
	}
	m.conn, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	m.Compile = kilnv1.NewCompileServiceClient(m.conn)
	m.Status = kilnv1.NewStatusServiceClient(m.conn)
	hc := healthpb.NewHealthClient(m.conn)
	err = pollUntil(ctx, readyTimeout, func() error {
		if !m.Proc.running() {
			return m.Proc.exitError()
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		r, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %s", r.GetStatus())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("metaserver not serving: %w", err)
	}
	return m, nil
}

// close drops the harness's connection (the process is stopped by the registry).
func (m *meta) close() {
	if m.conn != nil {
		m.conn.Close()
	}
}

// command runs `metaserver ARGS...` and returns its stdout.
func (m *meta) command(ctx context.Context, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, m.bins.Metaserver, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("metaserver %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// addProject registers a project with `metaserver project add`.
func (m *meta) addProject(ctx context.Context, name, url string) error {
	_, err := m.command(ctx, "project", "add", "--data-dir", m.DataDir, name, url)
	return err
}

// addBuildServer creates a credential with `metaserver buildserver add`.
func (m *meta) addBuildServer(ctx context.Context, name string) (string, error) {
	out, err := m.command(ctx, "buildserver", "add", "--data-dir", m.DataDir, name)
	if err != nil {
		return "", err
	}
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "kiln_") {
			return f, nil
		}
	}
	return "", fmt.Errorf("metaserver buildserver add printed no token: %q", out)
}

// admin dials the AdminService on the running metaserver's unix socket
// (the same path `metaserver buildserver add` takes while serve runs).
func (m *meta) admin() (kilnv1.AdminServiceClient, func(), error) {
	path := filepath.Join(m.DataDir, "admin.sock")
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return kilnv1.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}

// waitConnected waits until at least n build servers hold a session.
func (m *meta) waitConnected(ctx context.Context, n int, timeout time.Duration) error {
	return pollUntil(ctx, timeout, func() error {
		if !m.Proc.running() {
			return m.Proc.exitError()
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		o, err := m.Status.GetOverview(cctx, &kilnv1.GetOverviewRequest{})
		if err != nil {
			return err
		}
		if got := int(o.GetConnectedBuildServers()); got < n {
			return fmt.Errorf("%d of %d build servers connected", got, n)
		}
		return nil
	})
}

// buildserver is a running real build server.
type buildserver struct {
	Name string
	// LogPath is its log file.
	LogPath string
	Proc    *proc
	// PprofAddr is set when it serves net/http/pprof.
	PprofAddr string
}

// startBuildserver starts a real buildserver under dir/NAME with jobs slots
// and the given sandbox, passing the token through the environment.
// Its log level is warn, or debug with debugLog (the worker then logs each
// attempt's timings).
func startBuildserver(b bins, dir string, m *meta, name, token string, jobs int, sandbox string, debugLog bool, extra ...string) (*buildserver, error) {
	data := filepath.Join(dir, name)
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	bs := &buildserver{Name: name}
	level := "warn"
	if debugLog {
		level = "debug"
	}
	env := []string{"KILN_TOKEN=" + token}
	if b.Pprof {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		bs.PprofAddr = a
		env = append(env, "KILN_PPROF_ADDR="+a)
	}
	args := []string{"--metaserver", m.Addr, "--data-dir", data, "--jobs", fmt.Sprint(jobs), "--sandbox", sandbox, "--log-level", level}
	if os.Geteuid() == 0 {
		// As root each build server builds as uids of its own.
		args = append(args, "--build-uid", fmt.Sprint(nextBuildUID(jobs)))
	}
	args = append(args, extra...)
	p, err := procs.start(dir, name, b.Buildserver, env, args...)
	if err != nil {
		return nil, err
	}
	bs.Proc, bs.LogPath = p, p.logPath
	return bs, nil
}

// buildUIDs counts the uids handed to build servers started as root.
var buildUIDs atomic.Uint32

// nextBuildUID returns the first of jobs fresh build uids, from a range
// chosen by this process's pid so that harnesses running at once differ.
func nextBuildUID(jobs int) uint32 {
	return 1_702_000_000 + uint32(os.Getpid()%4096)*65536 + buildUIDs.Add(uint32(jobs)) - uint32(jobs)
}

// pollUntil calls f until it returns nil, ctx ends or timeout passes; the
// last error explains a timeout.
func pollUntil(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// dialLoopback returns a plain gRPC client connection to addr.
func dialLoopback(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, err
	}
	opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	return grpc.NewClient("passthrough:///"+addr, opts...)
}

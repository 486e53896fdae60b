package farmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Deadlines of the farm's waits. They are generous: a loaded CI machine
// compiles and starts slowly, and a deadline only matters when things hang.
const (
	// ReadyTimeout bounds waiting for a started program to serve.
	ReadyTimeout = 30 * time.Second
	// CommandTimeout bounds one CLI run (metaserver admin commands,
	// Startcompile).
	CommandTimeout = 2 * time.Minute
	// WaitTimeout bounds WaitBuildServers.
	WaitTimeout = 30 * time.Second
)

// Farm is a set of real Kiln programs for one test, all on 127.0.0.1 with
// their data under the test's temporary directory. Create it with New; its
// methods fail the test on error and must be called from the test's
// goroutine unless documented otherwise.
type Farm struct {
	t *testing.T
	// Dir is the farm's temporary directory; each program's data dir is
	// below it.
	Dir string
	// ClientCreds, when set before StartMetaserver, are the transport
	// credentials the harness itself uses to reach the metaserver (TLS tests).
	ClientCreds credentials.TransportCredentials
	// RelativeDirs, when set before StartMetaserver, runs the programs and
	// admin commands in Dir and gives them their data directories as paths
	// relative to it (issue 13: a relative --data-dir broke the
	// buildserver's probe and `metaserver pin`).
	RelativeDirs bool
	// Hostname, when set before StartBuildserver, runs each build server
	// in a UTS namespace of its own with this host name (`unshare --uts`;
	// root only), as two volunteers' machines differ.
	Hostname string
	// StoreURL and BlobsURL, when set before StartMetaserver, give the
	// metaserver a PostgreSQL store (--store) and an S3 blob store
	// (--blobs); the admin helpers then use --store in place of
	// --data-dir. MetaEnv is added to the environment of the metaserver
	// and of admin commands (the S3 credentials).
	StoreURL, BlobsURL string
	MetaEnv            []string
	// ClientMetaservers, when set, is the --metaserver value startcompile
	// gets (through KILN_METASERVER) in place of the metaserver's address:
	// several addresses, separated by commas, for failover tests.
	ClientMetaservers string

	metaDataDir string
	meta        *Metaserver

	mu       sync.Mutex
	conn     *grpc.ClientConn
	nbuilder int
	nstandby int
}

// Metaserver is a running metaserver.
type Metaserver struct {
	// Addr is the gRPC address (host:port).
	Addr string
	// DataDir holds its bbolt file, blobs, mirrors and admin.sock.
	DataDir string
	// MetricsAddr is the Prometheus listener's address ("" when the extra
	// arguments chose their own --metrics-listen).
	MetricsAddr string
	// Process is the running program.
	Process *Process

	t     testing.TB
	creds credentials.TransportCredentials
}

// Webstatus is a running webstatus.
type Webstatus struct {
	// URL is the base URL, "http://127.0.0.1:PORT".
	URL string
	// Process is the running program.
	Process *Process
}

// Result is the outcome of one startcompile run.
type Result struct {
	Stdout, Stderr string
	// Exit is the exit status; -1 when the process was killed (deadline).
	Exit int
}

// New returns a farm with its temporary directories; nothing runs yet.
func New(t *testing.T) *Farm {
	t.Helper()
	dir := t.TempDir()
	f := &Farm{t: t, Dir: dir, metaDataDir: filepath.Join(dir, "metaserver")}
	if err := os.MkdirAll(f.metaDataDir, 0o700); err != nil {
		t.Fatalf("farmtest: %v", err)
	}
	if os.Geteuid() == 0 {
		// A root build server's builds run as build users, which must be
		// able to search the directories above its data directory.
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatalf("farmtest: %v", err)
			}
		}
	}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.conn != nil {
			f.conn.Close()
		}
	})
	return f
}

// ConfigDir is the XDG_CONFIG_HOME of the farm's startcompile runs, where
// it keeps the transparency log's checkpoints it saw (kiln/logs/).
func (f *Farm) ConfigDir() string { return filepath.Join(f.Dir, "config") }

// MetaDataDir is the metaserver's data directory, usable before
// StartMetaserver (admin commands work on the store directly then).
func (f *Farm) MetaDataDir() string { return f.metaDataDir }

// Meta returns the metaserver StartMetaserver started, nil before.
func (f *Farm) Meta() *Metaserver { return f.meta }

// StartMetaserver starts `metaserver serve` on a free port with a metrics
// listener on another, plus extraArgs, and waits until its gRPC health
// service answers SERVING. A farm has one metaserver; restart it with
// Metaserver.Restart.
func (f *Farm) StartMetaserver(extraArgs ...string) *Metaserver {
	f.t.Helper()
	if f.meta != nil {
		f.t.Fatalf("farmtest: the farm's metaserver is already started")
	}
	m := &Metaserver{Addr: FreeAddr(f.t), DataDir: f.metaDataDir, t: f.t, creds: f.ClientCreds}
	m.Process = f.startEnv("metaserver", Binary(f.t, "metaserver"), f.MetaEnv, f.serveArgs(m, extraArgs)...)
	f.meta = m
	m.WaitReady()
	return m
}

// StartStandby starts one more metaserver on the farm's PostgreSQL store
// and blob store (StoreURL, BlobsURL, MetaEnv: set them first) with
// --standby, its own data directory and a free address, plus extraArgs,
// and waits until it answers SERVING: forwarded to the writer while it
// waits for the store's writer lock, its own once it holds it. Meta stays
// the first metaserver; Restart restarts a standby as a standby.
func (f *Farm) StartStandby(extraArgs ...string) *Metaserver {
	f.t.Helper()
	if f.StoreURL == "" {
		f.t.Fatalf("farmtest: a standby needs the farm's StoreURL (PostgreSQL)")
	}
	f.mu.Lock()
	f.nstandby++
	name := fmt.Sprintf("standby-%d", f.nstandby)
	f.mu.Unlock()
	m := &Metaserver{Addr: FreeAddr(f.t), DataDir: filepath.Join(f.Dir, name), t: f.t, creds: f.ClientCreds}
	if err := os.MkdirAll(m.DataDir, 0o700); err != nil {
		f.t.Fatalf("farmtest: %v", err)
	}
	m.Process = f.startEnv(name, Binary(f.t, "metaserver"), f.MetaEnv, f.serveArgs(m, append([]string{"--standby"}, extraArgs...))...)
	m.WaitReady()
	return m
}

// serveArgs is the command line of `metaserver serve` for m: its data
// directory and address, the farm's store and blobs, a metrics listener
// and --quorum 1 unless extraArgs choose their own, then extraArgs.
func (f *Farm) serveArgs(m *Metaserver, extraArgs []string) []string {
	args := []string{"serve", "--data-dir", f.dirArg(m.DataDir), "--listen", m.Addr}
	if f.StoreURL != "" {
		args = append(args, "--store", f.StoreURL)
	}
	if f.BlobsURL != "" {
		args = append(args, "--blobs", f.BlobsURL)
	}
	if !hasFlag(extraArgs, "metrics-listen") {
		m.MetricsAddr = FreeAddr(f.t)
		args = append(args, "--metrics-listen", m.MetricsAddr)
	}
	if !hasFlag(extraArgs, "quorum") {
		// Most farms have one build server: one result is trusted, as
		// before verification existed, unless the test asks otherwise.
		args = append(args, "--quorum", "1")
	}
	return append(args, extraArgs...)
}

// dirArg is how the farm names dir on a command line: as is, or relative
// to f.Dir with RelativeDirs.
func (f *Farm) dirArg(dir string) string {
	if !f.RelativeDirs {
		return dir
	}
	rel, err := filepath.Rel(f.Dir, dir)
	if err != nil {
		f.t.Fatalf("farmtest: %v", err)
	}
	return rel
}

// startEnv starts a program with env added to its environment, in f.Dir
// with RelativeDirs.
func (f *Farm) startEnv(name, path string, env []string, args ...string) *Process {
	f.t.Helper()
	p := NewProcess(f.t, name, path, args...)
	if len(env) > 0 {
		p.Env = append(os.Environ(), env...)
	}
	if f.RelativeDirs {
		p.Dir = f.Dir
	}
	if err := p.Start(); err != nil {
		f.t.Fatalf("farmtest: %v", err)
	}
	return p
}

// hasFlag reports whether args set --name or -name.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// WaitReady polls the metaserver's grpc.health.v1 service until it answers
// SERVING, failing the test after ReadyTimeout or at once when the process
// exits.
func (m *Metaserver) WaitReady() {
	m.t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+m.Addr, grpc.WithTransportCredentials(orInsecure(m.creds)))
	if err != nil {
		m.t.Fatalf("farmtest: %v", err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	err = Poll(ReadyTimeout, func() error {
		if !m.Process.Running() {
			return fmt.Errorf("metaserver exited: %v", m.Process.Wait())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %s", r.GetStatus())
		}
		return nil
	})
	if err != nil {
		m.t.Fatalf("farmtest: metaserver at %s not serving: %v", m.Addr, err)
	}
}

// Restart stops the metaserver gracefully, starts it again with the same
// arguments (same address and data) and waits until it serves.
func (m *Metaserver) Restart() {
	m.t.Helper()
	if err := m.Process.Restart(); err != nil {
		m.t.Fatalf("farmtest: %v", err)
	}
	m.WaitReady()
}

// metaCommand runs `metaserver ARGS...` and returns its stdout, failing the
// test with the output on a non-zero exit.
func (f *Farm) metaCommand(args ...string) string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(f.t, "metaserver"), args...)
	if len(f.MetaEnv) > 0 {
		cmd.Env = append(os.Environ(), f.MetaEnv...)
	}
	if f.RelativeDirs {
		cmd.Dir = f.Dir
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		f.t.Fatalf("farmtest: metaserver %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// adminArgs name the store for an admin command: --store with a
// PostgreSQL store (the command finds the running writer through the
// database), else --data-dir.
func (f *Farm) adminArgs() []string {
	if f.StoreURL != "" {
		return []string{"--store", f.StoreURL}
	}
	return []string{"--data-dir", f.dirArg(f.metaDataDir)}
}

// MetaCommand runs `metaserver ARGS...` (in the farm's environment) and
// returns its stdout, failing the test on a non-zero exit.
func (f *Farm) MetaCommand(args ...string) string {
	f.t.Helper()
	return f.metaCommand(args...)
}

// AddProject registers a project with `metaserver project add`.
func (f *Farm) AddProject(name, url string) {
	f.t.Helper()
	f.metaCommand(append(append([]string{"project", "add"}, f.adminArgs()...), name, url)...)
}

// AddBuildServer creates a build server credential with `metaserver
// buildserver add` and returns its token.
func (f *Farm) AddBuildServer(name string) string {
	f.t.Helper()
	out := strings.TrimSpace(f.metaCommand(append(append([]string{"buildserver", "add"}, f.adminArgs()...), name)...))
	if out == "" || strings.ContainsAny(out, "\n \t") {
		f.t.Fatalf("farmtest: metaserver buildserver add %s printed %q, want one token", name, out)
	}
	return out
}

// AddOperator registers an operator with `metaserver operator add`.
func (f *Farm) AddOperator(name string) {
	f.t.Helper()
	f.metaCommand("operator", "add", "--data-dir", f.dirArg(f.metaDataDir), name)
}

// AddBuildServerOf creates a build server credential of operator with
// `metaserver buildserver add --operator` and returns its token.
func (f *Farm) AddBuildServerOf(operator, name string) string {
	f.t.Helper()
	out := strings.TrimSpace(f.metaCommand("buildserver", "add", "--data-dir", f.dirArg(f.metaDataDir), "--operator", operator, name))
	if out == "" || strings.ContainsAny(out, "\n \t") {
		f.t.Fatalf("farmtest: metaserver buildserver add --operator %s %s printed %q, want one token", operator, name, out)
	}
	return out
}

// Pin names a succeeded build's artifact with `metaserver pin`.
func (f *Farm) Pin(name string, buildID uint64) {
	f.t.Helper()
	f.metaCommand(append(append([]string{"pin"}, f.adminArgs()...), name, strconv.FormatUint(buildID, 10))...)
}

// StartBuildserver starts a buildserver with its own data directory,
// connected to the farm's metaserver with token, plus extraArgs (--jobs,
// --target, --sandbox, ...). It does not wait for the connection; see
// WaitBuildServers.
func (f *Farm) StartBuildserver(token string, extraArgs ...string) *Process {
	f.t.Helper()
	return f.StartBuildserverBinary(Binary(f.t, "buildserver"), token, extraArgs...)
}

// StartBuildserverBinary is StartBuildserver with the buildserver program
// at bin (a test-only variant, see BinaryTags).
func (f *Farm) StartBuildserverBinary(bin, token string, extraArgs ...string) *Process {
	f.t.Helper()
	return f.startBuildserver(bin, nil, token, extraArgs...)
}

// StartBuildserverEnv is StartBuildserver with env added to the build
// server's environment (e.g. a PATH that puts a failing tool first).
func (f *Farm) StartBuildserverEnv(env []string, token string, extraArgs ...string) *Process {
	f.t.Helper()
	return f.startBuildserver(Binary(f.t, "buildserver"), env, token, extraArgs...)
}

func (f *Farm) startBuildserver(bin string, env []string, token string, extraArgs ...string) *Process {
	f.t.Helper()
	m := f.requireMeta()
	f.mu.Lock()
	f.nbuilder++
	n := f.nbuilder
	f.mu.Unlock()
	name := fmt.Sprintf("buildserver-%d", n)
	dir := f.BuildserverDir(n)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.t.Fatalf("farmtest: %v", err)
	}
	args := append([]string{"--metaserver", m.Addr, "--token", token, "--data-dir", f.dirArg(dir)}, extraArgs...)
	if os.Geteuid() == 0 && !slices.ContainsFunc(extraArgs, func(a string) bool { return strings.HasPrefix(a, "--build-uid") }) {
		// Build servers started at once (in this test or another) must not
		// share build uids; the build server refuses a range in use.
		args = append(args, "--build-uid", strconv.FormatUint(uint64(NextBuildUID()), 10))
	}
	if f.Hostname != "" {
		// unshare execs the shell, which execs the build server: one pid
		// throughout, so Stop and Kill reach it.
		args = append([]string{"--uts", "sh", "-c", `hostname "$0" && exec "$@"`, f.Hostname, bin}, args...)
		bin = "unshare"
	}
	return f.startEnv(name, bin, env, args...)
}

// BuildserverDir is the data directory StartBuildserver gave its nth
// build server (1 for the first).
func (f *Farm) BuildserverDir(n int) string {
	return filepath.Join(f.Dir, fmt.Sprintf("buildserver-%d", n))
}

func (f *Farm) requireMeta() *Metaserver {
	f.t.Helper()
	if f.meta == nil {
		f.t.Fatalf("farmtest: start the metaserver first")
	}
	return f.meta
}

// Conn returns a gRPC client connection to the metaserver for direct API
// checks, shared by the farm's calls and closed when the test ends. It stays
// valid across metaserver restarts (same address). Safe for concurrent use.
func (f *Farm) Conn() *grpc.ClientConn {
	f.t.Helper()
	m := f.requireMeta()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn == nil {
		c, err := grpc.NewClient("passthrough:///"+m.Addr, grpc.WithTransportCredentials(orInsecure(f.ClientCreds)))
		if err != nil {
			f.t.Fatalf("farmtest: %v", err)
		}
		f.conn = c
	}
	return f.conn
}

// GetBuild reads build id through CompileService.GetBuild and fails t
// when that fails (within 10 seconds).
func (f *Farm) GetBuild(t testing.TB, id uint64) *kilnv1.Build {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kilnv1.NewCompileServiceClient(f.Conn()).GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: id})
	if err != nil {
		t.Fatalf("GetBuild %d: %v", id, err)
	}
	return resp.GetBuild()
}

// ConnectedBuildServers returns the names of build servers the metaserver
// reports connected.
func (f *Farm) ConnectedBuildServers(ctx context.Context) ([]string, error) {
	resp, err := kilnv1.NewStatusServiceClient(f.Conn()).ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetBuildServers() {
		if s.GetConnected() {
			names = append(names, s.GetName())
		}
	}
	return names, nil
}

// WaitBuildServers polls StatusService.ListBuildServers until exactly n
// build servers are connected (so it also waits for disconnections), failing
// the test after WaitTimeout.
func (f *Farm) WaitBuildServers(n int) {
	f.t.Helper()
	Eventually(f.t, WaitTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		names, err := f.ConnectedBuildServers(ctx)
		if err != nil {
			return err
		}
		if len(names) != n {
			return fmt.Errorf("%d build servers connected %v, want %d", len(names), names, n)
		}
		return nil
	})
}

// StartWebstatus starts webstatus on a free port against the farm's
// metaserver and waits until GET / answers 200.
func (f *Farm) StartWebstatus() *Webstatus {
	f.t.Helper()
	return f.StartWebstatusAt(FreeAddr(f.t))
}

// StartWebstatusAt is StartWebstatus listening on addr, for a test that
// must know webstatus's URL before it starts (the metaserver's
// --public-url, which mail links use).
func (f *Farm) StartWebstatusAt(addr string) *Webstatus {
	f.t.Helper()
	m := f.requireMeta()
	w := &Webstatus{URL: "http://" + addr}
	w.Process = StartProcess(f.t, "webstatus", Binary(f.t, "webstatus"), "--metaserver", m.Addr, "--listen", addr)
	client := &http.Client{Timeout: 2 * time.Second}
	err := Poll(ReadyTimeout, func() error {
		if !w.Process.Running() {
			return fmt.Errorf("webstatus exited: %v", w.Process.Wait())
		}
		resp, err := client.Get(w.URL + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET / answered %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		f.t.Fatalf("farmtest: webstatus at %s not ready: %v", w.URL, err)
	}
	return w
}

// Startcompile runs startcompile with args against the farm's metaserver
// (through KILN_METASERVER, so subcommands work unchanged), bounded by
// CommandTimeout.
func (f *Farm) Startcompile(args ...string) Result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	return f.StartcompileContext(ctx, args...)
}

// StartcompileContext runs startcompile until it exits or ctx ends; then it
// is killed by PID and Exit is -1. Safe to call from several goroutines.
func (f *Farm) StartcompileContext(ctx context.Context, args ...string) Result {
	m := f.meta
	if m == nil {
		f.t.Errorf("farmtest: Startcompile before StartMetaserver")
		return Result{Exit: -1}
	}
	bin, err := build("startcompile")
	if err != nil {
		f.t.Errorf("farmtest: %v", err)
		return Result{Exit: -1, Stderr: err.Error()}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	addrs := m.Addr
	if f.ClientMetaservers != "" {
		addrs = f.ClientMetaservers
	}
	cmd.Env = append(os.Environ(), "KILN_METASERVER="+addrs, "XDG_CONFIG_HOME="+f.ConfigDir())
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
	default:
		r.Exit = -1
		r.Stderr += fmt.Sprintf("\nfarmtest: startcompile: %v", err)
	}
	if ctx.Err() != nil {
		r.Exit = -1
		r.Stderr += fmt.Sprintf("\nfarmtest: startcompile stopped: %v", ctx.Err())
	}
	return r
}

// orInsecure returns c, or plaintext credentials when c is nil.
func orInsecure(c credentials.TransportCredentials) credentials.TransportCredentials {
	if c == nil {
		return insecure.NewCredentials()
	}
	return c
}

// buildUIDs numbers the build uid ranges handed to this process's build
// servers: each gets 64 uids (so up to --jobs 64), the process's range
// chosen by its pid so that test binaries running at once differ.
var buildUIDs atomic.Uint32

// NextBuildUID returns the first uid of a fresh range of 64, for a build
// server the test starts as root (--build-uid).
func NextBuildUID() uint32 {
	return 1_701_000_000 + uint32(os.Getpid()%4096)*65536 + buildUIDs.Add(1)*64
}

package sandbox

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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testGrace keeps SIGTERM-to-SIGKILL waits short in tests.
const testGrace = 300 * time.Millisecond

// runners returns the runners a core test runs against; bwrap is skipped
// where it cannot work.
func runners(t *testing.T) []struct {
	name string
	r    Runner
} {
	t.Helper()
	rs := []struct {
		name string
		r    Runner
	}{{"unsandboxed", Unsandboxed{Grace: testGrace}}}
	if err := (Bwrap{}).Available(); err != nil {
		t.Logf("bubblewrap unavailable, sandboxed runs skipped: %v", err)
	} else {
		rs = append(rs, struct {
			name string
			r    Runner
		}{"bwrap", asUser{Bwrap{Grace: testGrace}}})
	}
	return rs
}

func needBwrap(t *testing.T) asUser {
	t.Helper()
	b := Bwrap{Grace: testGrace}
	if err := b.Available(); err != nil {
		t.Skipf("bubblewrap unavailable: %v", err)
	}
	return asUser{b}
}

// syncBuffer is a goroutine-safe output sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// run runs command in a fresh build directory with a bounded context and
// returns its output, error and the build directory.
func run(t *testing.T, r Runner, s Step) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if s.Dir == "" {
		s.Dir = t.TempDir()
	}
	if s.Name == "" {
		s.Name = "test"
	}
	if s.Env == nil {
		s.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	}
	var out syncBuffer
	s.Output = &out
	err := r.Run(ctx, s)
	return out.String(), err
}

func TestStepRunsInBuildDirAndCanWriteThere(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			dir := t.TempDir()
			out, err := run(t, rc.r, Step{Dir: dir, Command: "pwd; echo built > artifact.txt; echo to-stderr >&2"})
			if err != nil {
				t.Fatalf("Run: %v (output %q)", err, out)
			}
			if !strings.Contains(out, dir) || !strings.Contains(out, "to-stderr") {
				t.Errorf("output %q lacks the working directory %s or stderr", out, dir)
			}
			got, err := os.ReadFile(filepath.Join(dir, "artifact.txt"))
			if err != nil || string(got) != "built\n" {
				t.Errorf("artifact on the host = %q, %v; want \"built\\n\"", got, err)
			}
		})
	}
}

func TestExitStatusIsMappedToExitError(t *testing.T) {
	tests := []struct {
		name     string
		command  string
		wantCode int // 0 = success
	}{
		{"a command exiting 0 succeeds", "true", 0},
		{"a command exiting 3 is an ExitError with code 3", "exit 3", 3},
		{"a missing program is status 127", "no-such-program-kiln", 127},
		{"death by SIGKILL is status 137", "kill -KILL $$", 137},
	}
	for _, rc := range runners(t) {
		for _, tt := range tests {
			t.Run(rc.name+"/"+tt.name, func(t *testing.T) {
				out, err := run(t, rc.r, Step{Name: "build", Command: tt.command})
				if tt.wantCode == 0 {
					if err != nil {
						t.Fatalf("Run: %v (output %q)", err, out)
					}
					return
				}
				var ee *ExitError
				if !errors.As(err, &ee) {
					t.Fatalf("Run error = %v (%T), want *ExitError", err, err)
				}
				if ee.Code != tt.wantCode || ee.Step != "build" {
					t.Errorf("ExitError = %+v, want step build, code %d", ee, tt.wantCode)
				}
			})
		}
	}
}

func TestEnvironmentIsExactlyEnv(t *testing.T) {
	t.Setenv("KILN_SANDBOX_LEAK", "must-not-appear")
	env := []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "WITH_SPACES=a b  c", "EMPTY="}
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			dir := t.TempDir()
			// The shell's initial environment, before it adds PWD.
			out, err := run(t, rc.r, Step{Dir: dir, Env: env, Command: `tr '\0' '\n' < /proc/$$/environ`})
			if err != nil {
				t.Fatalf("Run: %v (output %q)", err, out)
			}
			got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			slices.Sort(got)
			want := slices.Clone(env)
			if _, ok := rc.r.(asUser); ok {
				want = append(want, "PWD="+dir) // documented bwrap addition
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("environment = %q, want %q", got, want)
			}
		})
	}
}

func TestTimeoutTerminatesTheStep(t *testing.T) {
	tests := []struct {
		name    string
		command string
	}{
		{"a sleeping command ends at SIGTERM", "sleep 1000"},
		{"a command ignoring SIGTERM is killed after the grace period", `trap "" TERM; sleep 1000`},
	}
	for _, rc := range runners(t) {
		for _, tt := range tests {
			t.Run(rc.name+"/"+tt.name, func(t *testing.T) {
				const timeout = 200 * time.Millisecond
				start := time.Now()
				out, err := run(t, rc.r, Step{Command: tt.command, Timeout: timeout})
				elapsed := time.Since(start)
				if !errors.Is(err, ErrTimeout) {
					t.Fatalf("Run error = %v, want ErrTimeout (output %q)", err, out)
				}
				if limit := timeout + testGrace + 2*time.Second; elapsed > limit {
					t.Errorf("Run took %s, want under %s", elapsed, limit)
				}
			})
		}
	}
}

func TestCancelledContextStopsTheStep(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			start := time.Now()
			err := rc.r.Run(ctx, Step{Name: "test", Dir: t.TempDir(), Command: "sleep 1000"})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Run error = %v, want context.Canceled", err)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("Run took %s after cancel", elapsed)
			}
			if err := rc.r.Run(ctx, Step{Name: "test", Dir: t.TempDir(), Command: "true"}); !errors.Is(err, context.Canceled) {
				t.Errorf("Run with a done context = %v, want context.Canceled", err)
			}
		})
	}
}

// liveProcessesWith returns the PIDs of running (not zombie) processes whose
// command line contains marker.
func liveProcessesWith(marker string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(marker)) {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBackgroundProcessesDoNotOutliveTheStep(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			// A unique sleep argument marks the background process.
			marker := fmt.Sprintf("1000.%d%d", os.Getpid(), time.Now().UnixNano()%1000000)
			start := time.Now()
			out, err := run(t, rc.r, Step{Command: "sleep " + marker + " & sleep " + marker + " & echo started"})
			elapsed := time.Since(start)
			var le *LeftoverError
			if !errors.As(err, &le) || le.Count != 2 || le.Code != 0 || out != "started\n" {
				t.Fatalf("Run: %v (output %q); want a LeftoverError counting 2 processes", err, out)
			}
			if want := `step "test" left 2 background processes running (sleep, sleep); they were killed`; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			// The background sleeps hold the output pipe: returning before the
			// drain timeout shows they were killed, not waited for.
			if elapsed >= pipeDrainTimeout {
				t.Errorf("Run took %s: it waited for the background process", elapsed)
			}
			if !waitUntil(time.Second, func() bool { return len(liveProcessesWith(marker)) == 0 }) {
				pids := liveProcessesWith(marker)
				for _, p := range pids {
					_ = (&os.Process{Pid: p}).Kill()
				}
				t.Errorf("background processes %v survived the step", pids)
			}
		})
	}
}

func TestLimitsAreAppliedToTheCommand(t *testing.T) {
	lim := Limits{CPUSeconds: 77, Processes: 500, OpenFiles: 99, FileSizeBytes: 512 * 1000}
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			// dash: -t seconds, -p processes, -n files, -f 512-byte blocks.
			out, err := run(t, rc.r, Step{Limits: lim, Command: "ulimit -t; ulimit -p; ulimit -n; ulimit -f"})
			if err != nil {
				t.Fatalf("Run: %v (output %q)", err, out)
			}
			if want := "77\n500\n99\n1000\n"; out != want {
				t.Errorf("limits seen by the command = %q, want %q", out, want)
			}
		})
	}
}

func TestStepRunsAtLowestPriority(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			out, err := run(t, rc.r, Step{Command: "nice; ionice"})
			if err != nil {
				t.Fatalf("Run: %v (output %q)", err, out)
			}
			if want := "19\nidle\n"; out != want {
				t.Errorf("nice and ionice = %q, want %q", out, want)
			}
		})
	}
	// The runner's own priority is unchanged.
	if out, err := exec.Command("nice").Output(); err != nil || string(out) != "0\n" {
		t.Errorf("the test process's nice value = %q, %v; want 0", out, err)
	}
}

func TestFileSizeLimitStopsAHugeWrite(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			dir := t.TempDir()
			const limit = 1 << 20
			out, err := run(t, rc.r, Step{Dir: dir, Limits: Limits{FileSizeBytes: limit},
				Command: "head -c 100000000 /dev/zero > big"})
			var ee *ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("Run error = %v, want *ExitError (output %q)", err, out)
			}
			fi, err := os.Stat(filepath.Join(dir, "big"))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() > limit {
				t.Errorf("file grew to %d bytes, limit %d", fi.Size(), limit)
			}
		})
	}
}

func TestProcessLimitStopsAForkBomb(t *testing.T) {
	if os.Geteuid() == 0 {
		if parent, _ := cgroupParent(); parent == "" {
			t.Skip("root without a pids cgroup: RLIMIT_NPROC is not enforced for root")
		}
	}
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			const limit = 64
			lim := Limits{Processes: limit}
			// Bounded first: 200 sleepers must not all start.
			out, err := run(t, rc.r, Step{Limits: lim, Timeout: 20 * time.Second,
				Command: `n=0; while [ $n -lt 200 ]; do sleep 30 & n=$((n+1)); done; echo all-started`})
			if strings.Contains(out, "all-started") {
				t.Fatalf("200 processes started under a limit of %d", limit)
			}
			var ee *ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("Run error = %v, want *ExitError (output %q)", err, out)
			}
			// Now a real fork bomb whose members never exit: it must stay
			// contained until the timeout ends it.
			start := time.Now()
			out, err = run(t, rc.r, Step{Limits: lim, Timeout: 2 * time.Second,
				Command: `b() { b & b & sleep 1000; }; b`})
			// It fails either when its first shell cannot fork any more or
			// at the timeout.
			if !errors.Is(err, ErrTimeout) && !errors.As(err, &ee) {
				t.Fatalf("fork bomb: Run error = %v, want ErrTimeout or *ExitError (output %.200q)", err, out)
			}
			if elapsed := time.Since(start); elapsed > 2*time.Second+testGrace+5*time.Second {
				t.Errorf("fork bomb step took %s", elapsed)
			}
			// The machine can still fork.
			if err := exec.Command("true").Run(); err != nil {
				t.Errorf("fork after the bomb: %v", err)
			}
		})
	}
}

func TestSandboxedStepCannotWriteTheSystem(t *testing.T) {
	b := needBwrap(t)
	name := fmt.Sprintf("kiln-sandbox-test-%d", os.Getpid())
	for _, dir := range []string{"/", "/usr", "/etc"} {
		target := filepath.Join(dir, name)
		t.Cleanup(func() { os.Remove(target) })
		out, err := run(t, b, Step{Command: "echo x > " + target})
		var ee *ExitError
		if !errors.As(err, &ee) {
			t.Errorf("writing %s: Run error = %v, want *ExitError (output %q)", target, err, out)
		}
		if _, err := os.Stat(target); err == nil {
			t.Errorf("%s was created on the host", target)
		}
	}
}

func TestAPathGivenTwiceIsMountedOnce(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	// As the build server does: Dir again among the Writable directories.
	args, err := bwrapArgs(Step{Name: "x", Dir: dir, Writable: []string{dir, other, other + "/"},
		Hide: []string{other, other}})
	if err != nil {
		t.Fatal(err)
	}
	count := func(opt, path string) int {
		n := 0
		for i := 0; i+1 < len(args); i++ {
			if args[i] == opt && args[i+1] == path {
				n++
			}
		}
		return n
	}
	for _, c := range []struct{ opt, path string }{{"--bind", dir}, {"--bind", other}, {"--tmpfs", other}} {
		if n := count(c.opt, c.path); n != 1 {
			t.Errorf("%s %s appears %d times in %q, want once", c.opt, c.path, n, args)
		}
	}
	// The hide still comes before the bind that exposes the path again.
	if i, j := lastIndex(args, "--tmpfs"), slices.Index(args, "--bind"); i < 0 || j < 0 || i > j {
		t.Errorf("args %q: want the hide's --tmpfs before the --bind", args)
	}
}

func TestSandboxedStepCannotSeeHiddenPaths(t *testing.T) {
	b := needBwrap(t)
	// Outside /tmp, which every sandbox replaces anyway.
	data, err := os.MkdirTemp("/var/tmp", "kiln-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	for _, d := range []string{"creds", "builds/1", "dest"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(data, "creds", "token")
	lone := filepath.Join(data, "lone-secret")
	for _, f := range []string{secret, lone} {
		// Readable by all: only hiding keeps them from the step (a step of
		// a root build server runs as another user).
		if err := os.WriteFile(f, []byte("s3cr3t"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build, dest := filepath.Join(data, "builds/1"), filepath.Join(data, "dest")
	// The data directory holds the build directory: hiding it must not hide
	// the build directory or a writable directory.
	out, err := run(t, b, Step{
		Dir: build, Writable: []string{dest}, Hide: []string{data, lone, "/nonexistent-kiln"},
		Command: fmt.Sprintf("cat %s %s; echo listing; ls %s; echo ok > out; echo ok > %s/out", secret, lone, data, dest),
	})
	if err != nil {
		t.Fatalf("Run: %v (output %q)", err, out)
	}
	_, listing, _ := strings.Cut(out, "listing\n")
	if strings.Contains(out, "s3cr3t") || strings.Contains(listing, "creds") {
		t.Errorf("hidden content visible: %q", out)
	}
	for _, f := range []string{filepath.Join(build, "out"), filepath.Join(dest, "out")} {
		if got, err := os.ReadFile(f); err != nil || string(got) != "ok\n" {
			t.Errorf("%s = %q, %v; want written by the step", f, got, err)
		}
	}
	// A hidden file alone cannot be read; the host copy is readable.
	out, err = run(t, b, Step{Hide: []string{lone}, Command: "cat " + lone})
	var ee *ExitError
	if !errors.As(err, &ee) || strings.Contains(out, "s3cr3t") {
		t.Errorf("hidden file: output %q, error %v; want a failed read", out, err)
	}
	if out, err := run(t, b, Step{Command: "cat " + lone}); err != nil || out != "s3cr3t" {
		t.Errorf("file not hidden: output %q, error %v; want its content", out, err)
	}
}

func TestSandboxedStepHasNoNetwork(t *testing.T) {
	b := needBwrap(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 needed to connect")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	connect := fmt.Sprintf(`python3 -c 'import socket; socket.create_connection(("127.0.0.1", %d), 3); print("connected")'`, port)

	// The same command reaches the listener without a sandbox, so the
	// sandboxed failure below is the sandbox's doing.
	if out, err := run(t, Unsandboxed{}, Step{Command: connect}); err != nil || !strings.Contains(out, "connected") {
		t.Fatalf("unsandboxed connect: %v (output %q)", err, out)
	}
	out, err := run(t, b, Step{Command: connect})
	if err == nil || strings.Contains(out, "connected") {
		t.Errorf("sandboxed step reached the host's loopback listener (output %q)", out)
	}
	out, err = run(t, b, Step{Command: "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"})
	if err != nil || out != "lo\n" {
		t.Errorf("interfaces = %q, %v; want only lo", out, err)
	}
}

func TestSandboxSetupFailuresAreSetupErrors(t *testing.T) {
	b := needBwrap(t)
	real, err := exec.LookPath("bwrap")
	if err != nil {
		t.Fatal(err)
	}
	// A bwrap that fails after starting: one more bind of a missing source.
	wrapper := filepath.Join(t.TempDir(), "broken-bwrap")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --bind /nonexistent-kiln-source /mnt \"$@\"\n", real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		r    Runner
		step Step
		want string // in the error message
	}{
		{"a missing bwrap binary", Bwrap{Path: "/nonexistent/bwrap"}, Step{Command: "true"}, "bubblewrap"},
		{"bwrap failing to build the sandbox", asUser{Bwrap{Path: wrapper}}, Step{Command: "true"}, "nonexistent-kiln-source"},
		{"a missing writable directory", b, Step{Command: "true", Writable: []string{"/nonexistent-kiln-dest"}}, "nonexistent-kiln-dest"},
		{"a relative build directory", b, Step{Command: "true", Dir: "relative"}, "not absolute"},
		{"a malformed environment entry", b, Step{Command: "true", Env: []string{"NOEQUALS"}}, "NOEQUALS"},
		{"a missing build directory without sandbox", Unsandboxed{}, Step{Command: "true", Dir: "/nonexistent-kiln-dir"}, "nonexistent-kiln-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := run(t, tt.r, tt.step)
			var se *SetupError
			if !errors.As(err, &se) {
				t.Fatalf("Run error = %v (%T), want *SetupError", err, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	if err := (Bwrap{Path: "/nonexistent/bwrap"}).Available(); err == nil {
		t.Error("Available with a missing bwrap = nil")
	}
}

func TestHugeOutputIsStreamedWithoutBlocking(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			var n countingWriter
			err := rc.r.Run(context.Background(), Step{Name: "test", Dir: t.TempDir(), Timeout: 30 * time.Second,
				Output: &n, Command: "head -c 200000000 /dev/zero"})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if n.n != 200000000 {
				t.Errorf("output bytes = %d, want 200000000", n.n)
			}
		})
	}
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func TestFailingOutputWriterDoesNotStallTheStep(t *testing.T) {
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			err := rc.r.Run(context.Background(), Step{Name: "test", Dir: t.TempDir(), Timeout: 30 * time.Second,
				Output: failingWriter{}, Command: "head -c 10000000 /dev/zero; exit 4"})
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != 4 {
				t.Fatalf("Run error = %v, want exit status 4", err)
			}
		})
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("log cap reached") }

func benchmarkTrue(b *testing.B, r Runner, lim Limits) {
	dir := b.TempDir()
	ctx := context.Background()
	s := Step{Name: "bench", Dir: dir, Command: "true", Env: []string{"PATH=/usr/bin:/bin"}, Limits: lim}
	b.ResetTimer()
	for b.Loop() {
		if err := r.Run(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBwrapTrue(b *testing.B) {
	if err := (Bwrap{}).Available(); err != nil {
		b.Skip(err)
	}
	benchmarkTrue(b, asUser{}, Limits{})
}

func BenchmarkBwrapTrueWithLimits(b *testing.B) {
	if err := (Bwrap{}).Available(); err != nil {
		b.Skip(err)
	}
	benchmarkTrue(b, asUser{}, Limits{CPUSeconds: 3600, Processes: 1000, OpenFiles: 1024, FileSizeBytes: 1 << 30})
}

func BenchmarkUnsandboxedTrue(b *testing.B) {
	benchmarkTrue(b, Unsandboxed{}, Limits{})
}

func BenchmarkUnsandboxedTrueWithLimits(b *testing.B) {
	benchmarkTrue(b, Unsandboxed{}, Limits{CPUSeconds: 3600, Processes: 1000, OpenFiles: 1024, FileSizeBytes: 1 << 30})
}

// BenchmarkBwrapBuildServerStep runs `true` as the build server runs a
// step: its data directory and $HOME hidden, the build's source, install
// and home directories writable, its default limits set.
func BenchmarkBwrapBuildServerStep(b *testing.B) {
	if err := (Bwrap{}).Available(); err != nil {
		b.Skip(err)
	}
	data := b.TempDir()
	build := filepath.Join(data, "builds", "1")
	src, dest, home := filepath.Join(build, "src"), filepath.Join(build, "dest"), filepath.Join(build, "home")
	for _, d := range []string{src, dest, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	hide := []string{data}
	if h, err := os.UserHomeDir(); err == nil && h != "/" && h != "" {
		hide = append(hide, h)
	}
	s := Step{
		Name: "bench", Dir: src, Writable: []string{src, dest, home}, Hide: hide,
		Command: "true", Env: []string{"PATH=/usr/bin:/bin", "HOME=" + home},
		Limits: Limits{CPUSeconds: 3600, Processes: 512, OpenFiles: 1024, FileSizeBytes: 1 << 30},
	}
	ctx := context.Background()
	for b.Loop() {
		if err := (asUser{}).Run(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
}

// lastIndex returns the index of the last s in list, -1 if none.
func lastIndex(list []string, s string) int {
	for i := len(list) - 1; i >= 0; i-- {
		if list[i] == s {
			return i
		}
	}
	return -1
}

func TestReadOnlyDirectoryIsVisibleInsideAHiddenOneButNotWritable(t *testing.T) {
	b := needBwrap(t)
	data, err := os.MkdirTemp("/var/tmp", "kiln-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	build, sysroot := filepath.Join(data, "builds/1/src"), filepath.Join(data, "builds/1/sysroot")
	for _, d := range []string{build, sysroot + "/include"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(sysroot+"/include/x.h", []byte("#define X 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, b, Step{
		Dir: build, ReadOnly: []string{sysroot}, Hide: []string{data},
		Command: fmt.Sprintf("cat %s/include/x.h; if echo y > %s/include/x.h || echo y > %s/new; then echo WROTE; fi", sysroot, sysroot, sysroot),
	})
	if err != nil {
		t.Fatalf("Run: %v (output %q)", err, out)
	}
	if !strings.Contains(out, "#define X 1") {
		t.Errorf("read-only directory not visible: %q", out)
	}
	if strings.Contains(out, "WROTE") {
		t.Errorf("step wrote into the read-only directory: %q", out)
	}
	if got, _ := os.ReadFile(sysroot + "/include/x.h"); string(got) != "#define X 1\n" {
		t.Errorf("host file changed to %q", got)
	}
	if _, err := bwrapArgs(Step{Name: "x", Dir: build, ReadOnly: []string{"relative"}}); err == nil {
		t.Error("a relative read-only path was accepted")
	}
}

package e2e

// The hostile-build suite of issue 8: builds that attack the volunteer's
// machine through one real buildserver under bubblewrap, each followed by an
// ordinary build on the same buildserver process.
//
// The buildserver has no flags for its log cap, file-size or process limits
// yet, so the builds here meet worker.DefaultMaxLogBytes,
// worker.DefaultFileSizeBytes and worker.DefaultProcesses; the assertions use
// those constants.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/worker"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// hostileNormalManifest is the manifest of the project's first commit: an
// ordinary C build with an int option `round`, so that each normal build
// after a hostile one is a new build, not a cache hit.
const hostileNormalManifest = `requires: [make]
options:
  round: {type: int, default: 0}
build:
  - echo "normal round $KILN_OPT_ROUND"
  - make
check:
  - make check
artifacts:
  - hello
timeout: 60s
`

// hostileWait bounds one startcompile --wait: a build misclassified as an
// infrastructure failure would otherwise wait for another build server
// forever.
const hostileWait = "90s"

// hostileOutcome is the part of startcompile --json the suite reads.
type hostileOutcome struct {
	BuildID     uint64 `json:"build_id"`
	State       string `json:"state"`
	Cached      bool   `json:"cached"`
	Failure     string `json:"failure"`
	FailingStep string `json:"failing_step"`
	LogSize     uint64 `json:"log_size"`
}

// hostileFarm is a metaserver and one buildserver whose data directory and
// $HOME are outside /tmp (the sandbox covers /tmp with a tmpfs anyway, which
// would hide them whether or not the buildserver hides them itself).
type hostileFarm struct {
	f       *farmtest.Farm
	bs      *farmtest.Process
	pid     int
	repo    string
	normal  string // commit of hostileNormalManifest
	dataDir string // the buildserver's --data-dir, holding its token file
	home    string // the buildserver's $HOME
	token   string
	secret  string // content of home/.kiln-secret
	nonce   string
	rounds  int
	uidArgs []string // --build-uid of a root build server
}

func newHostileFarm(t *testing.T) *hostileFarm {
	t.Helper()
	return newHostileFarmAs(t, nil)
}

// newHostileFarmAs is newHostileFarm with the build server run as cred's
// user (nil: the test's), owning its data directory and home.
func newHostileFarmAs(t *testing.T, cred *syscall.Credential) *hostileFarm {
	t.Helper()
	h := &hostileFarm{nonce: hostileNonce(t)}
	// Created before the buildserver so that their removal runs after it stops.
	h.dataDir = hostileVarTmpDir(t, "kiln-e2e-data-")
	h.home = hostileVarTmpDir(t, "kiln-e2e-home-")
	h.secret = "kiln-home-secret-" + h.nonce
	if err := os.WriteFile(filepath.Join(h.home, ".kiln-secret"), []byte(h.secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	h.f = farmtest.New(t)
	h.f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	h.repo, h.normal = farmtest.CProject(t, farmtest.CProjectOptions{Name: "hostile", ManifestText: hostileNormalManifest})
	url := h.repo
	if cred != nil {
		// Another user's git would not read the test's repository.
		url = farmtest.GitDaemon(t, filepath.Dir(h.repo)) + filepath.Base(h.repo)
	}
	h.f.AddProject("hostile", url)
	h.token = h.f.AddBuildServer("hostile-builder")
	// The credential lives where a volunteer keeps it: DATA_DIR/token, read at
	// start because no --token is given (so it is not in the process list).
	if err := os.WriteFile(filepath.Join(h.dataDir, "token"), []byte(h.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 && cred == nil {
		h.uidArgs = []string{"--build-uid", strconv.FormatUint(uint64(farmtest.NextBuildUID()), 10)}
	}
	args := append([]string{"--metaserver", h.f.Meta().Addr, "--data-dir", h.dataDir}, h.uidArgs...)
	h.bs = farmtest.NewProcess(t, "hostile-buildserver", farmtest.Binary(t, "buildserver"), args...)
	h.bs.StopTimeout = 5 * time.Second
	h.bs.Env = hostileEnv(h.home)
	if cred != nil {
		for _, d := range []string{h.dataDir, h.home} {
			filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
				if err == nil {
					err = os.Lchown(p, int(cred.Uid), int(cred.Gid))
				}
				return err
			})
		}
		h.bs.Credential = cred
	}
	if err := h.bs.Start(); err != nil {
		t.Fatal(err)
	}
	h.f.WaitBuildServers(1)
	h.pid = h.bs.PID()
	return h
}

// hostileEnv is this process's environment without KILN_* variables and
// with HOME set to home.
func hostileEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KILN_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

// hostileVarTmpDir returns a fresh directory under /var/tmp, removed when the
// test ends, or under the test's temp dir when /var/tmp is not usable.
func hostileVarTmpDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", prefix)
	if err != nil {
		t.Logf("no /var/tmp (%v): using the test's temp dir, which the sandbox hides anyway", err)
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func hostileNonce(t *testing.T) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// commit commits a kiln.yaml made of steps (each a shell script) and returns
// the commit.
func (h *hostileFarm) commit(t *testing.T, name, timeout string, artifact string, steps ...string) string {
	t.Helper()
	return farmtest.Commit(t, h.repo, map[string]string{"kiln.yaml": hostileManifest(timeout, artifact, steps...)}, "hostile: "+name)
}

// hostileManifest renders a manifest whose build steps are steps, each as a
// YAML literal block.
func hostileManifest(timeout, artifact string, steps ...string) string {
	var b strings.Builder
	b.WriteString("build:\n")
	for _, s := range steps {
		b.WriteString("  - |\n")
		for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
			b.WriteString("    " + line + "\n")
		}
	}
	fmt.Fprintf(&b, "artifacts:\n  - %s\ntimeout: %s\n", artifact, timeout)
	return b.String()
}

// build asks for rev with startcompile --wait and returns the outcome and
// the build's log.
func (h *hostileFarm) build(t *testing.T, rev string, opts ...string) (hostileOutcome, string) {
	t.Helper()
	return h.finish(t, h.f.Startcompile(h.buildArgs(rev, opts...)...))
}

func (h *hostileFarm) buildArgs(rev string, opts ...string) []string {
	args := []string{"--project", "hostile", "--revision", rev, "--wait", "--timeout", hostileWait, "--json"}
	args = append(args, opts...)
	return append(args, "hostile@example.com")
}

// finish parses a startcompile --wait --json run and fetches the build's log.
func (h *hostileFarm) finish(t *testing.T, r farmtest.Result) (hostileOutcome, string) {
	t.Helper()
	var out hostileOutcome
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &out); err != nil || out.BuildID == 0 {
		t.Fatalf("startcompile exit %d printed %q (stderr %q): %v", r.Exit, r.Stdout, r.Stderr, err)
	}
	want := map[string]int{"succeeded": 0, "failed": 1}[out.State]
	if _, final := map[string]bool{"succeeded": true, "failed": true}[out.State]; !final || r.Exit != want {
		t.Fatalf("build %d ended %q with startcompile exit %d; want succeeded (0) or failed (1)\nstdout: %s\nstderr: %s",
			out.BuildID, out.State, r.Exit, r.Stdout, r.Stderr)
	}
	lr := h.f.Startcompile("log", strconv.FormatUint(out.BuildID, 10))
	expectExit(t, lr, 0)
	return out, lr.Stdout
}

// expectFailure checks that a hostile build ended as a failure of the build
// itself, with a reason.
func hostileExpectFailure(t *testing.T, out hostileOutcome, log string) {
	t.Helper()
	t.Logf("build %d ended %s: %s\nlog tail:\n%s", out.BuildID, out.State, out.Failure, hostileTail(log))
	if out.State != "failed" || out.Failure == "" {
		t.Fatalf("hostile build %d: state %q failure %q; want failed with a reason\nlog tail:\n%s",
			out.BuildID, out.State, out.Failure, hostileTail(log))
	}
}

// expectBuildserverGoesOn checks that the same buildserver process still
// runs and builds an ordinary request successfully.
func (h *hostileFarm) expectBuildserverGoesOn(t *testing.T) {
	t.Helper()
	if !h.bs.Running() || h.bs.PID() != h.pid {
		t.Fatalf("buildserver pid %d running=%v; want the original pid %d still running", h.bs.PID(), h.bs.Running(), h.pid)
	}
	h.rounds++
	out, log := h.build(t, h.normal, "-o", "round="+strconv.Itoa(h.rounds))
	if out.State != "succeeded" || out.Cached {
		t.Fatalf("normal build after a hostile one: %+v\nlog:\n%s", out, hostileTail(log))
	}
	if want := fmt.Sprintf("normal round %d", h.rounds); !strings.Contains(log, want) {
		t.Fatalf("normal build log lacks %q:\n%s", want, hostileTail(log))
	}
	if h.bs.PID() != h.pid || !h.bs.Running() {
		t.Fatalf("buildserver restarted or exited during the normal build (pid %d, was %d)", h.bs.PID(), h.pid)
	}
}

// hostileTail is the end of a build log, for failure messages.
func hostileTail(log string) string {
	const n = 4000
	if len(log) > n {
		return "…" + log[len(log)-n:]
	}
	return log
}

// hostileProcesses returns the host processes whose command line contains
// marker, with their command lines.
func hostileProcesses(marker string) map[int]string {
	found := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if cmd := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmd, marker) {
			found[pid] = cmd
		}
	}
	return found
}

// hostileRunningCopies returns the processes whose argv[0] is the copy of
// sleep named marker (not the shells whose script mentions it).
func hostileRunningCopies(marker string) []int {
	var pids []int
	for pid, cmd := range hostileProcesses(marker) {
		if argv0, _, _ := strings.Cut(cmd, " "); filepath.Base(argv0) == marker {
			pids = append(pids, pid)
		}
	}
	return pids
}

// expectNoneLeft fails if any host process still mentions marker.
func hostileExpectNoneLeft(t *testing.T, marker string) {
	t.Helper()
	if left := hostileProcesses(marker); len(left) > 0 {
		t.Fatalf("processes of the build outlived it: %v", left)
	}
}

func TestHostileBuildsAreContainedAndTheBuildserverGoesOn(t *testing.T) {
	h := newHostileFarm(t)
	// The farm works before any attack.
	h.expectBuildserverGoesOn(t)

	t.Run("a build reaching for the network cannot connect", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var accepted atomic.Int32
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				c.Close()
			}
		}()
		listener := strings.Replace(ln.Addr().String(), ":", "/", 1)
		meta := strings.Replace(h.f.Meta().Addr, ":", "/", 1)
		rev := h.commit(t, "network", "30s", "never-made", strings.NewReplacer("LISTENER", listener, "META", meta).Replace(`
for addr in LISTENER META; do
  if timeout 5 bash -c "exec 3<>/dev/tcp/$addr" 2>/dev/null; then
    echo "net: CONNECTED to $addr"; reached=1
  else
    echo "net: no connection to $addr"
  fi
done
if [ -n "$reached" ]; then exit 3; fi
timeout 5 bash -c "exec 3<>/dev/tcp/LISTENER"
`))
		out, log := h.build(t, rev)
		hostileExpectFailure(t, out, log)
		for _, addr := range []string{listener, meta} {
			if !strings.Contains(log, "net: no connection to "+addr) || strings.Contains(log, "net: CONNECTED to "+addr) {
				t.Errorf("the step's view of %s is not a refused connection:\n%s", addr, hostileTail(log))
			}
		}
		if n := accepted.Load(); n != 0 {
			t.Fatalf("the test's listener accepted %d connections from the build", n)
		}
		h.expectBuildserverGoesOn(t)
	})

	t.Run("a build writing outside its directory changes nothing on the host", func(t *testing.T) {
		name := "kiln-hostile-" + h.nonce
		targets := []string{
			filepath.Join("/usr", name),
			filepath.Join("/etc", name),
			filepath.Join("/var/tmp", name),
			filepath.Join(h.dataDir, name),
			filepath.Join(h.dataDir, "builds", name),
			filepath.Join(h.home, name),
			filepath.Join(h.f.MetaDataDir(), name),
		}
		for _, p := range targets {
			t.Cleanup(func() { os.Remove(p) })
		}
		rev := h.commit(t, "write", "30s", "never-made", strings.NewReplacer(
			"TARGETS", strings.Join(targets, " "), "DATA", h.dataDir, "USRFILE", targets[0]).Replace(`
for p in TARGETS; do
  if (echo pwned > "$p") 2>/dev/null; then echo "write: $p accepted inside"; else echo "write: $p refused"; fi
done
echo pwned > DATA/token && echo "write: token replaced inside"
echo pwned > USRFILE
`))
		out, log := h.build(t, rev)
		hostileExpectFailure(t, out, log)
		for _, p := range targets[:3] { // read-only system: refused inside
			if !strings.Contains(log, "write: "+p+" refused") {
				t.Errorf("writing %s was not refused inside the sandbox:\n%s", p, hostileTail(log))
			}
		}
		if !strings.Contains(log, "Read-only file system") {
			t.Errorf("the failing write does not say why:\n%s", hostileTail(log))
		}
		for _, p := range targets { // nothing reached the host
			if _, err := os.Stat(p); err == nil {
				t.Errorf("the build created %s on the host", p)
			}
		}
		if b, err := os.ReadFile(filepath.Join(h.dataDir, "token")); err != nil || strings.TrimSpace(string(b)) != h.token {
			t.Errorf("the token file changed: %q, %v", b, err)
		}
		h.expectBuildserverGoesOn(t)
	})

	t.Run("a build cannot read the buildserver's credentials", func(t *testing.T) {
		files := []string{
			filepath.Join(h.dataDir, "token"),
			filepath.Join(h.home, ".kiln-secret"),
			filepath.Join(h.f.MetaDataDir(), "kiln.db"),
		}
		rev := h.commit(t, "credentials", "30s", "never-made", strings.NewReplacer(
			"FILES", strings.Join(files, " "), "DATA", h.dataDir, "HOMEDIR", h.home).Replace(`
env
for f in FILES; do
  if cat "$f" 2>/dev/null; then echo; echo "read: $f was readable"; else echo "read: $f unreadable"; fi
done
ls -la DATA HOMEDIR
grep -rl kiln_ DATA HOMEDIR 2>/dev/null
cat DATA/token
`))
		out, log := h.build(t, rev)
		hostileExpectFailure(t, out, log)
		for _, f := range files {
			if !strings.Contains(log, "read: "+f+" unreadable") {
				t.Errorf("%s was readable inside the sandbox:\n%s", f, hostileTail(log))
			}
		}
		for what, secret := range map[string]string{"the build server's token": h.token, "the secret in $HOME": h.secret} {
			if strings.Contains(log, secret) {
				t.Errorf("%s leaked into the public build log:\n%s", what, hostileTail(log))
			}
		}
		if !strings.Contains(log, "KILN_BUILD_ID=") {
			t.Errorf("the step's environment was not printed; the check above proves nothing:\n%s", hostileTail(log))
		}
		h.expectBuildserverGoesOn(t)
	})

	t.Run("background processes left running fail the build and do not outlive it", func(t *testing.T) {
		marker := "kiln-bg-" + h.nonce
		rev := h.commit(t, "background", "60s", "out.txt", strings.ReplaceAll(`
cp /bin/sleep ./MARKER
./MARKER 1000 & p1=$!
setsid ./MARKER 1001 > /dev/null 2>&1 < /dev/null & p2=$!
./MARKER 1002 &
kill -0 $p1 && kill -0 $p2 && echo "daemons: running"
i=0
while [ ! -e go-on ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo built > out.txt
`, "MARKER", marker))
		done := make(chan farmtest.Result, 1)
		go func() { done <- h.f.StartcompileContext(context.Background(), h.buildArgs(rev)...) }()
		// Positive control: the daemons are seen from the host while the step runs.
		farmtest.Eventually(t, 60*time.Second, func() error {
			if n := len(hostileRunningCopies(marker)); n < 3 {
				return fmt.Errorf("%d of the step's 3 daemons visible on the host", n)
			}
			return nil
		})
		srcs, _ := filepath.Glob(filepath.Join(h.dataDir, "builds", "*", "src"))
		for _, src := range srcs {
			os.WriteFile(filepath.Join(src, "go-on"), nil, 0o644)
		}
		out, log := h.finish(t, <-done)
		hostileExpectFailure(t, out, log)
		// The step itself succeeded: what fails it is what it left behind,
		// named by their command (15 bytes of it, as the kernel keeps it).
		comm := marker[:15]
		want := fmt.Sprintf("left 3 background processes running (%s, %s, %s); they were killed", comm, comm, comm)
		if !strings.Contains(out.Failure, want) || !strings.Contains(log, want) {
			t.Errorf("failure %q; want it and the log to say %q\nlog tail:\n%s", out.Failure, want, hostileTail(log))
		}
		if !strings.Contains(log, "daemons: running") || !strings.Contains(out.FailingStep, "setsid ./"+marker) {
			t.Errorf("failing step %q; want the step that started the daemons\n%s", out.FailingStep, hostileTail(log))
		}
		hostileExpectNoneLeft(t, marker)
		h.expectBuildserverGoesOn(t)
	})

	t.Run("filling the disk with files under the size limit is stopped by the disk cap", func(sub *testing.T) {
		// The buildserver restarted below must outlive this subtest.
		parent, t := t, sub
		// First the single huge file: RLIMIT_FSIZE stops it.
		limit := int64(worker.DefaultFileSizeBytes)
		rev := h.commit(t, "disk", "60s", "never-made", fmt.Sprintf(`
head -c %d /dev/zero > big; rc=$?
echo "fill: head exited $rc, big has $(stat -c %%s big) bytes"
rm -f big
exit $rc
`, 4*limit))
		out, log := h.build(t, rev)
		hostileExpectFailure(t, out, log)
		m := regexp.MustCompile(`fill: head exited (\d+), big has (\d+) bytes`).FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("the step did not report its write:\n%s", hostileTail(log))
		}
		size, _ := strconv.ParseInt(m[2], 10, 64)
		if m[1] != "153" || size > limit { // 153 = 128 + SIGXFSZ
			t.Fatalf("head exited %s with %d bytes written; want 153 (SIGXFSZ) at no more than %d bytes", m[1], size, limit)
		}
		h.expectBuildserverGoesOn(t)

		// Then many files, each far below the file size limit, on a
		// buildserver with a small disk cap: the same data directory and
		// token, restarted with --max-disk-bytes 64 MiB for this build and
		// back to the defaults afterwards.
		const diskCap = 64 << 20
		restart := func(extra ...string) {
			t.Helper()
			if err := h.bs.Stop(); err != nil {
				t.Logf("stopping the buildserver: %v", err)
			}
			args := append(append([]string{"--metaserver", h.f.Meta().Addr, "--data-dir", h.dataDir}, h.uidArgs...), extra...)
			h.bs = farmtest.NewProcess(parent, "hostile-buildserver", farmtest.Binary(t, "buildserver"), args...)
			h.bs.StopTimeout = 5 * time.Second
			h.bs.Env = hostileEnv(h.home)
			if err := h.bs.Start(); err != nil {
				t.Fatal(err)
			}
			h.f.WaitBuildServers(1)
			h.pid = h.bs.PID()
		}
		restart("--max-disk-bytes", strconv.Itoa(diskCap))
		defer restart()
		rev = h.commit(t, "disk files", "60s", "never-made", `
i=0
while [ $i -lt 1000 ]; do head -c 4194304 /dev/zero > fill$i || exit 9; i=$((i+1)); done
echo "fill: all $i files written"
`)
		start := time.Now()
		out, log = h.build(t, rev)
		hostileExpectFailure(t, out, log)
		want := "build used more than 64 MiB of disk (--max-disk-bytes); stopped"
		if !strings.Contains(out.Failure, want) || !strings.Contains(log, want) {
			t.Errorf("failure %q; want it and the log to say %q\nlog tail:\n%s", out.Failure, want, hostileTail(log))
		}
		if strings.Contains(log, "fill: all 1000 files written") {
			t.Errorf("the step wrote 4 GB of files before it was stopped:\n%s", hostileTail(log))
		}
		if took := time.Since(start); took > 45*time.Second {
			t.Errorf("the build took %s to be stopped", took)
		}
		h.expectBuildserverGoesOn(t)
	})

	t.Run("an endless log is cut at the cap and the build ends", func(t *testing.T) {
		rev := h.commit(t, "endless log", "4s", "never-made", `yes "endless log line"`)
		start := time.Now()
		out, log := h.build(t, rev)
		hostileExpectFailure(t, out, log)
		if !strings.HasPrefix(out.Failure, "timed out") {
			t.Errorf("failure %q; want the time limit", out.Failure)
		}
		const notice = 200 // room for the truncation notices
		if int64(len(log)) > worker.DefaultMaxLogBytes+notice || len(log) < worker.DefaultMaxLogBytes/2 {
			t.Errorf("stored log has %d bytes; cap %d", len(log), worker.DefaultMaxLogBytes)
		}
		if !strings.Contains(log[max(0, len(log)-notice):], "log truncated") {
			t.Errorf("the log does not end with a truncation notice: …%q", log[max(0, len(log)-notice):])
		}
		if took := time.Since(start); took > 45*time.Second {
			t.Errorf("a 4s build took %s to end", took)
		}
		h.expectBuildserverGoesOn(t)
	})

	t.Run("a fork bomb is contained by the process limit", func(t *testing.T) {
		marker := "kiln-bomb-" + h.nonce
		// First a bounded probe: 2000 sleepers must not all start. Only if the
		// limit held does the real, unbounded bomb run.
		probe := strings.ReplaceAll(`
cp /bin/sleep ./MARKER
( n=0; while [ $n -lt 2000 ]; do ./MARKER 1000 & echo $! >> pids; n=$((n+1)); done; echo "bomb: all $n sleepers started"; exit 0 )
rc=$?
# The sleepers must not outlive the probe, which would fail it (builtins only: no fork is left).
while read -r p; do kill -9 $p; done < pids
if [ $rc -eq 0 ]; then exit 1; fi
echo "bomb: probe stopped by the process limit (status $rc)"
`, "MARKER", marker)
		bomb := strings.ReplaceAll(`b() { b & b & ./MARKER 1000; }; b`, "MARKER", marker)
		rev := h.commit(t, "fork bomb", "8s", "never-made", probe, bomb)
		out, log := h.build(t, rev)
		hostileExpectFailure(t, out, log)
		if !strings.Contains(log, "bomb: probe stopped by the process limit") {
			t.Fatalf("the process limit did not stop 2000 forks (limit %d):\n%s", worker.DefaultProcesses, hostileTail(log))
		}
		if !strings.Contains(out.FailingStep, "b() {") {
			t.Errorf("failing step %q; want the bomb", out.FailingStep)
		}
		// The machine stays usable: it forks, and nothing of the bomb is left.
		if err := exec.Command("true").Run(); err != nil {
			t.Fatalf("the host cannot fork after the bomb: %v", err)
		}
		hostileExpectNoneLeft(t, marker)
		h.expectBuildserverGoesOn(t)
	})
}

// The authentication suite of issue 8: WorkerService calls made directly
// with and without credentials, and a minimal simulated build server that
// holds an attempt so that another one can try to speak for it.

// authManifest is a recipe the simulated build servers never run.
const authManifest = `build:
  - "true"
artifacts:
  - x
timeout: 60s
`

// authFree frees every constraint startcompile pins by default, so that a
// simulated build server's target matches.
var authFree = []string{"--os", "any", "--arch", "any", "--endian", "any", "--data-model", "any", "--libc", "any"}

// authFarm starts a metaserver with a long lease (the simulated build
// servers send no heartbeats) and registers the project "auth".
func authFarm(t *testing.T) *farmtest.Farm {
	t.Helper()
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "60s", "--inline-artifact-bytes", "0")
	repo, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "auth", ManifestText: authManifest})
	f.AddProject("auth", repo)
	return f
}

// authContext returns a context bounded by timeout carrying authorization,
// "" for none.
func authContext(t *testing.T, authorization string, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	if authorization != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
	}
	return ctx
}

// authHello is a simulated build server's Hello: one native-looking target.
func authHello() *kilnv1.Hello {
	return &kilnv1.Hello{Version: "e2e-simulated", Slots: 1, PublicKey: simulatedPub(), Targets: []*kilnv1.Target{{
		Id: "simulated",
		System: &kilnv1.SystemInfo{
			Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", CharBit: 8,
			SizeofShort: 2, SizeofInt: 4, SizeofLong: 8, SizeofLongLong: 8, SizeofPointer: 8,
			Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0",
			Cpus: 1, MemoryBytes: 1 << 30,
		},
	}}}
}

// authSessionErr opens a Session with authorization ("" for none), sends
// Hello and returns the error the stream ends with, nil if a Welcome came
// back.
func authSessionErr(t *testing.T, f *farmtest.Farm, authorization string) error {
	t.Helper()
	ctx := authContext(t, authorization, 10*time.Second)
	st, err := kilnv1.NewWorkerServiceClient(f.Conn()).Session(ctx)
	if err != nil {
		return err
	}
	_ = st.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Hello{Hello: authHello()}}) // the error shows on Recv
	msg, err := st.Recv()
	if err == nil && msg.GetWelcome() == nil {
		t.Fatalf("first session message is %v, want a Welcome or an error", msg)
	}
	return err
}

// authUpload uploads data under header with authorization and returns the
// call's error.
func authUpload(t *testing.T, f *farmtest.Farm, authorization string, header *kilnv1.UploadHeader, data []byte) error {
	t.Helper()
	ctx := authContext(t, authorization, 10*time.Second)
	st, err := kilnv1.NewWorkerServiceClient(f.Conn()).UploadArtifact(ctx)
	if err != nil {
		return err
	}
	// A refused upload ends the stream early: Send then fails with io.EOF and
	// CloseAndRecv returns the status.
	if err := st.Send(&kilnv1.UploadArtifactRequest{Msg: &kilnv1.UploadArtifactRequest_Header{Header: header}}); err == nil {
		_ = st.Send(&kilnv1.UploadArtifactRequest{Msg: &kilnv1.UploadArtifactRequest_Data{Data: data}})
	}
	_, err = st.CloseAndRecv()
	return err
}

// authHeader declares data, for attempt.
func authHeader(attempt uint64, data []byte) *kilnv1.UploadHeader {
	sum := sha256.Sum256(data)
	return &kilnv1.UploadHeader{AttemptId: attempt, Sha256: hex.EncodeToString(sum[:]), Size: uint64(len(data))}
}

// authExpectCode fails unless err carries code.
func authExpectCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: %v (code %s), want %s", what, err, got, want)
	}
}

// authStoredBlobs lists the files of the metaserver's blob store, temporary
// ones included.
func authStoredBlobs(t *testing.T, f *farmtest.Farm) []string {
	t.Helper()
	var files []string
	root := filepath.Join(f.MetaDataDir(), "blobs")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, root+"/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func authExpectNothingStored(t *testing.T, f *farmtest.Farm) {
	t.Helper()
	if files := authStoredBlobs(t, f); len(files) != 0 {
		t.Fatalf("the blob store holds %v; want nothing", files)
	}
}

// authSession is a simulated build server's open Session.
type authSession struct {
	stream kilnv1.WorkerService_SessionClient
	msgs   chan *kilnv1.SessionResponse
	ended  chan error
	auth   string
	// name is the build server's name from its Welcome; asgs are the
	// assignments received, so that result can sign a success's statement.
	name string
	asgs map[uint64]*kilnv1.Assignment
}

// authOpen opens a Session with token, sends authHello and waits for the
// Welcome. Later messages are read into s.msgs; the session closes when the
// test ends.
func authOpen(t *testing.T, f *farmtest.Farm, token string) *authSession {
	t.Helper()
	s := &authSession{msgs: make(chan *kilnv1.SessionResponse, 64), ended: make(chan error, 1), auth: "Bearer " + token}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", s.auth))
	t.Cleanup(cancel)
	st, err := kilnv1.NewWorkerServiceClient(f.Conn()).Session(ctx)
	if err != nil {
		t.Fatalf("opening a session: %v", err)
	}
	if err := st.Send(&kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Hello{Hello: authHello()}}); err != nil {
		t.Fatalf("sending Hello: %v", err)
	}
	first, err := st.Recv()
	if err != nil || first.GetWelcome() == nil {
		t.Fatalf("answer to Hello: %v, %v; want a Welcome", first, err)
	}
	s.stream, s.name = st, first.GetWelcome().GetBuildServer()
	go func() {
		for {
			msg, err := st.Recv()
			if err != nil {
				s.ended <- err
				return
			}
			s.msgs <- msg
		}
	}()
	return s
}

func (s *authSession) send(t *testing.T, msg *kilnv1.SessionRequest) {
	t.Helper()
	if err := s.stream.Send(msg); err != nil {
		t.Fatalf("session send: %v", err)
	}
}

// next returns the next message for which pick returns true, skipping others.
func (s *authSession) next(t *testing.T, what string, pick func(*kilnv1.SessionResponse) bool) *kilnv1.SessionResponse {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case msg := <-s.msgs:
			if pick(msg) {
				return msg
			}
		case err := <-s.ended:
			t.Fatalf("session ended waiting for %s: %v", what, err)
		case <-deadline:
			t.Fatalf("no %s within 20s", what)
		}
	}
}

func (s *authSession) assignment(t *testing.T) *kilnv1.Assignment {
	t.Helper()
	asg := s.next(t, "Assignment", func(m *kilnv1.SessionResponse) bool { return m.GetAssignment() != nil }).GetAssignment()
	if s.asgs == nil {
		s.asgs = map[uint64]*kilnv1.Assignment{}
	}
	s.asgs[asg.GetAttemptId()] = asg
	return asg
}

// simulatedPub is the public key every simulated build server presents.
func simulatedPub() []byte {
	return farmtest.SimulatedKey("e2e").Public().(ed25519.PublicKey)
}

// result sends r and returns the ResultAck for its attempt.
func (s *authSession) result(t *testing.T, r *kilnv1.AttemptResult) *kilnv1.ResultAck {
	t.Helper()
	if asg := s.asgs[r.GetAttemptId()]; asg != nil && r.GetStatement() == nil &&
		r.GetOutcome() == kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		r = proto.Clone(r).(*kilnv1.AttemptResult)
		r.Statement = farmtest.SignStatement(farmtest.SimulatedKey("e2e"), s.name, asg, r.GetArtifact().GetSha256())
	}
	s.send(t, &kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Result{Result: r}})
	return s.next(t, "ResultAck", func(m *kilnv1.SessionResponse) bool {
		return m.GetResultAck() != nil && m.GetResultAck().GetAttemptId() == r.GetAttemptId()
	}).GetResultAck()
}

// authSubmit asks for a build of project auth that any target matches and
// returns its id.
func authSubmit(t *testing.T, f *farmtest.Farm) uint64 {
	t.Helper()
	r := f.Startcompile(append(append([]string{"--project", "auth", "--json"}, authFree...), "auth@example.com")...)
	expectExit(t, r, 0)
	res := parseResult(t, r)
	if res.BuildID == 0 {
		t.Fatalf("no build id: %+v", res)
	}
	return res.BuildID
}

func TestAuthCallsWithoutAValidCredentialAreUnauthenticated(t *testing.T) {
	f := authFarm(t)
	data := []byte("an artifact nobody may store")
	cases := []struct {
		name          string
		authorization string
	}{
		{"no credential at all", ""},
		{"a token no build server has", "Bearer kiln_" + strings.Repeat("A", 43)},
		{"an empty bearer token", "Bearer "},
		{"another authorization scheme", "Basic a2lsbjpraWxu"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			authExpectCode(t, "Session", authSessionErr(t, f, c.authorization), codes.Unauthenticated)
			authExpectCode(t, "UploadArtifact", authUpload(t, f, c.authorization, authHeader(1, data), data), codes.Unauthenticated)
		})
	}
	authExpectNothingStored(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if names, err := f.ConnectedBuildServers(ctx); err != nil || len(names) != 0 {
		t.Fatalf("connected build servers %v (%v); want none", names, err)
	}
}

func TestAuthARevokedCredentialIsRefusedAndItsBuildserverStops(t *testing.T) {
	f := authFarm(t)
	token := f.AddBuildServer("victim")
	bs := f.StartBuildserver(token)
	f.WaitBuildServers(1)
	// Control: the credential passes authentication before the revocation
	// (the upload is then refused for its unknown attempt, not for the token).
	data := []byte("revocation control")
	authExpectCode(t, "upload with a valid token", authUpload(t, f, "Bearer "+token, authHeader(999999, data), data), codes.FailedPrecondition)

	out, err := exec.Command(farmtest.Binary(t, "metaserver"), "buildserver", "revoke", "--data-dir", f.MetaDataDir(), "victim").CombinedOutput()
	if err != nil {
		t.Fatalf("metaserver buildserver revoke: %v\n%s", err, out)
	}
	select {
	case <-bs.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("the buildserver of a revoked credential kept running")
	}
	var ee *exec.ExitError
	if err := bs.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("buildserver exit %v; want status 2 (credential refused: bad input)", err)
	}
	f.WaitBuildServers(0)

	authExpectCode(t, "Session with a revoked token", authSessionErr(t, f, "Bearer "+token), codes.Unauthenticated)
	authExpectCode(t, "UploadArtifact with a revoked token", authUpload(t, f, "Bearer "+token, authHeader(1, data), data), codes.Unauthenticated)
	authExpectNothingStored(t, f)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := kilnv1.NewStatusServiceClient(f.Conn()).ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range resp.GetBuildServers() {
		if s.GetName() == "victim" && (!s.GetRevoked() || s.GetConnected()) {
			t.Fatalf("victim listed as revoked=%v connected=%v", s.GetRevoked(), s.GetConnected())
		}
	}
}

func TestAuthABuildServerCannotSpeakForAnotherOnesAttemptNorUploadTamperedData(t *testing.T) {
	f := authFarm(t)
	holder := authOpen(t, f, f.AddBuildServer("holder"))
	buildID := authSubmit(t, f)
	asg := holder.assignment(t)
	if asg.GetBuildId() != buildID {
		t.Fatalf("assignment for build %d, want %d", asg.GetBuildId(), buildID)
	}
	// The intruder connects after the assignment, so it has none of its own.
	intruder := authOpen(t, f, f.AddBuildServer("intruder"))

	nonce := hostileNonce(t)
	real := []byte("the holder's artifact " + nonce)
	forged := []byte("the intruder's artifact " + nonce)

	// Uploads naming an attempt that is not the intruder's.
	for _, c := range []struct {
		name    string
		attempt uint64
		want    codes.Code
	}{
		{"another server's current attempt", asg.GetAttemptId(), codes.PermissionDenied},
		{"an attempt that does not exist", asg.GetAttemptId() + 1000, codes.FailedPrecondition},
	} {
		err := authUpload(t, f, intruder.auth, authHeader(c.attempt, forged), forged)
		authExpectCode(t, "intruder upload for "+c.name, err, c.want)
	}
	authExpectNothingStored(t, f)

	// A log chunk and a result for the holder's attempt: dropped and refused.
	forgedSum := authHeader(asg.GetAttemptId(), forged)
	intruder.send(t, &kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Log{Log: &kilnv1.LogChunk{
		AttemptId: asg.GetAttemptId(), Offset: 0, Data: []byte("FORGED LOG " + nonce + "\n")}}})
	ack := intruder.result(t, &kilnv1.AttemptResult{AttemptId: asg.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED,
		Artifact: &kilnv1.Artifact{Sha256: forgedSum.GetSha256(), Size: forgedSum.GetSize(), Files: []string{"x"}}})
	if ack.GetAccepted() {
		t.Fatalf("the metaserver accepted the intruder's result for the holder's attempt: %v", ack)
	}
	if b := f.GetBuild(t, buildID); b.GetState() != kilnv1.BuildState_BUILD_STATE_RUNNING || b.GetArtifact() != nil {
		t.Fatalf("after the intruder's result the build is %s with artifact %v; want still running, none", b.GetState(), b.GetArtifact())
	}

	// The holder uploads data that does not match its declared sha256.
	tampered := append([]byte(nil), real...)
	tampered[len(tampered)-1] ^= 1
	err := authUpload(t, f, holder.auth, authHeader(asg.GetAttemptId(), real), tampered)
	authExpectCode(t, "tampered upload", err, codes.DataLoss)
	authExpectNothingStored(t, f)

	// Control: the holder's honest upload and result are accepted, so the
	// refusals above were about the caller and the data, not the setup.
	header := authHeader(asg.GetAttemptId(), real)
	if err := authUpload(t, f, holder.auth, header, real); err != nil {
		t.Fatalf("the holder's own upload: %v", err)
	}
	if _, err := os.Stat(blobPath(f.MetaDataDir(), header.GetSha256())); err != nil {
		t.Fatalf("the holder's upload is not stored: %v", err)
	}
	holder.send(t, &kilnv1.SessionRequest{Msg: &kilnv1.SessionRequest_Log{Log: &kilnv1.LogChunk{
		AttemptId: asg.GetAttemptId(), Offset: 0, Data: []byte("holder log " + nonce + "\n")}}})
	ack = holder.result(t, &kilnv1.AttemptResult{AttemptId: asg.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED,
		Artifact: &kilnv1.Artifact{Sha256: header.GetSha256(), Size: header.GetSize(), Files: []string{"x"}}})
	if !ack.GetAccepted() {
		t.Fatalf("the holder's own result was refused: %v", ack)
	}
	b := f.GetBuild(t, buildID)
	if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED || b.GetArtifact().GetSha256() != header.GetSha256() {
		t.Fatalf("build %s with artifact %v; want succeeded with the holder's %s", b.GetState(), b.GetArtifact(), header.GetSha256())
	}
	if files := authStoredBlobs(t, f); len(files) != 1 {
		t.Fatalf("blob store holds %v; want only the holder's artifact", files)
	}
	lr := f.Startcompile("log", strconv.FormatUint(buildID, 10))
	expectExit(t, lr, 0)
	if strings.Contains(lr.Stdout, "FORGED") || !strings.Contains(lr.Stdout, "holder log "+nonce) {
		t.Fatalf("build log %q; want the holder's line and nothing of the intruder's", lr.Stdout)
	}
}

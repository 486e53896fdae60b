package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// notReproducible runs build 1 on three operators that each produce other
// bytes in share/stamp (and files named like diffoscope's options) until
// it ends NOT_REPRODUCIBLE, and returns it.
func notReproducible(t *testing.T, cfg Config) (*testServer, *kilnv1.Build) {
	cfg.Quorum = 2
	ts := startTestServer(t, cfg, queuedBuild(1, "clock", 60))
	for i, name := range []string{"a1", "b1", "c1"} {
		ss := ts.connectOf("op-"+name, name)
		runOn(ss, tarGz(t, file{"bin/tool", []byte("same")}, file{"share/stamp", []byte(strings.Repeat("t", i+1))},
			file{"--html=/tmp/pwned", []byte(name)}, file{"-o", []byte(name)}))
		ss.stream.CloseSend()
	}
	b := ts.waitBuild(1, "final", func(b *kilnv1.Build) bool { return b.GetState().Final() })
	if b.GetVerification() != kilnv1.Verification_VERIFICATION_NOT_REPRODUCIBLE {
		t.Fatalf("build: %s %s, want not_reproducible", b.GetState().Word(), b.GetVerification().Word())
	}
	return ts, b
}

// diffoscopeReport reads build id's diffoscope report through GetLog.
func (ts *testServer) diffoscopeReport(id uint64) string {
	ts.t.Helper()
	stream, err := kilnv1.NewCompileServiceClient(ts.conn).GetLog(context.Background(),
		&kilnv1.GetLogRequest{BuildId: id, Diffoscope: true})
	if err != nil {
		ts.t.Fatal(err)
	}
	var out []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return string(out)
		}
		if err != nil {
			ts.t.Fatalf("reading the diffoscope report: %v", err)
		}
		out = append(out, m.GetData()...)
	}
}

// waitDiffoscope waits (at most 90 s: diffoscope runs for at most 60 s by
// default) for build id's diffoscope report.
func (ts *testServer) waitDiffoscope(id uint64) string {
	ts.t.Helper()
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if r := ts.diffoscopeReport(id); r != "" {
			return r
		}
	}
	ts.t.Fatalf("no diffoscope report for build %d", id)
	return ""
}

func TestDiffoscope_ANotReproducibleBuildGetsItsReport(t *testing.T) {
	if _, err := exec.LookPath("diffoscope"); err != nil {
		t.Skip("diffoscope is not installed (scripts/setup.sh installs diffoscope-minimal): " + err.Error())
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ts, b := notReproducible(t, Config{})
	report := ts.waitDiffoscope(1)
	shaA, shaB := firstDiffering(b)
	head := fmt.Sprintf("diffoscope of a.tar.gz (%s) and b.tar.gz (%s): differences found (exit status 1)\n", shaA, shaB)
	if !strings.HasPrefix(report, head) || !strings.Contains(report, "share/stamp") || !strings.Contains(report, "--- a.tar.gz") {
		t.Fatalf("diffoscope report:\n%s\nwant it to start %q and name share/stamp", report, head)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	t.Logf("report of %d bytes:\n%s", len(report), report)
}

// fakeDiffoscope is a real program named diffoscope, first on PATH, that
// prints what it was given and how it runs, floods its output, leaves a
// child behind it that sleeps, and marks its directory "flooded" once its
// output was taken.
const fakeDiffoscope = `#!/bin/sh
echo "pid $$"
echo "nice $(cut -d' ' -f19 /proc/$$/stat)"
echo "cwd $(pwd)"
for a in "$@"; do printf 'arg %s\n' "$a"; done
sha256sum a.tar.gz b.tar.gz
sleep 600 &
echo "child $!"
head -c 400000 /dev/zero | tr '\0' x
: > flooded
wait
`

// diffoscope is run with fixed arguments (the artifacts' names are not
// theirs), at nice 19, in a private directory removed afterwards, its
// output cut at 256 KiB and its whole process group killed at the timeout.
func TestDiffoscope_RunsBoundedWithFixedArgumentsAndCleansUp(t *testing.T) {
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "diffoscope"), []byte(fakeDiffoscope), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	ts, b := notReproducible(t, withFakeClock(Config{DiffoscopeTimeout: 2 * time.Second}))
	// Its timeout runs on the server's clock: moved past it once the
	// program has flooded its output, it is killed then and there.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if m, _ := filepath.Glob(filepath.Join(tmp, "kiln-diffoscope-*", "flooded")); len(m) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fake diffoscope did not run within 30s")
		}
	}
	ts.fake().Advance(2 * time.Second)
	report := ts.waitDiffoscope(1)
	shaA, shaB := firstDiffering(b)
	head := fmt.Sprintf("diffoscope of a.tar.gz (%s) and b.tar.gz (%s): stopped after 2s; output cut at %d bytes\n", shaA, shaB, maxDiffoscopeReport)
	if !strings.HasPrefix(report, head) || len(report) != len(head)+1+maxDiffoscopeReport {
		t.Fatalf("report of %d bytes starts %.300q; want %q and %d bytes of output", len(report), report, head, maxDiffoscopeReport)
	}
	var args []string
	for _, m := range regexp.MustCompile(`(?m)^arg (.*)$`).FindAllStringSubmatch(report, -1) {
		args = append(args, m[1])
	}
	if !slices.Equal(args, diffoscopeArgs) {
		t.Fatalf("diffoscope ran with %q, want %q", args, diffoscopeArgs)
	}
	for _, want := range []string{"nice 19\n", shaA + "  a.tar.gz\n", shaB + "  b.tar.gz\n", "cwd " + tmp + "/kiln-diffoscope-"} {
		if !strings.Contains(report, want) {
			t.Fatalf("report lacks %q:\n%.600s", want, report)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	for _, name := range []string{"pid", "child"} {
		m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindStringSubmatch(report)
		if m == nil {
			t.Fatalf("report names no %s", name)
		}
		if pid, _ := strconv.Atoi(m[1]); alive(pid) {
			t.Fatalf("the %s process %d outlived the timeout", name, pid)
		}
	}
}

// alive reports whether process pid runs (a zombie does not).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

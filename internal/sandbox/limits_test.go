package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseLimitsReadsSoftAndHardValues(t *testing.T) {
	text := `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              3607                 3607                 seconds
Max file size             527872               527872               bytes
Max data size             unlimited            unlimited            bytes
Max processes             4099                 4100                 processes
Max open files            97                   97                   files
`
	got := parseLimits(text)
	for _, tc := range []struct {
		name string
		want [2]uint64
	}{
		{"Max cpu time", [2]uint64{3607, 3607}},
		{"Max file size", [2]uint64{527872, 527872}},
		{"Max processes", [2]uint64{4099, 4100}},
		{"Max open files", [2]uint64{97, 97}},
	} {
		if got[tc.name] != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got[tc.name], tc.want)
		}
	}
	if _, ok := got["Max data size"]; ok {
		t.Errorf("unlimited value parsed: %v", got["Max data size"])
	}
}

func TestPreludeNeedsWholeFileSizeBlocks(t *testing.T) {
	u := ulimitSyntax{ok: true, nprocFlag: "-p", fsizeUnit: 512}
	for _, tc := range []struct {
		name   string
		limits Limits
		want   string
		ok     bool
	}{
		{"every limit is set in order", Limits{CPUSeconds: 5, Processes: 6, OpenFiles: 7, FileSizeBytes: 1024},
			"ulimit -t 5 && ulimit -p 6 && ulimit -n 7 && ulimit -f 2 || exit 126; ", true},
		{"unset limits are left out", Limits{OpenFiles: 7}, "ulimit -n 7 || exit 126; ", true},
		{"a file size that is not whole blocks is refused", Limits{FileSizeBytes: 1000}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := u.prelude(tc.limits)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Errorf("prelude = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestShellUlimitIsUsedWhenTheShellSupportsIt(t *testing.T) {
	u := shellUlimit()
	if !u.ok {
		t.Skipf("%s's ulimit cannot set the limits exactly; prlimit is used", shellPath)
	}
	argv, err := commandArgv(Limits{OpenFiles: 64}, "true")
	if err != nil {
		t.Fatal(err)
	}
	if argv[0] != shellPath || len(argv) != 3 {
		t.Errorf("argv = %q, want the shell with a prelude, no prlimit", argv)
	}
}

func TestLimitedStepSeesTheSameShellAsAnUnlimitedOne(t *testing.T) {
	// $0, the positional parameters and line numbers must not show the
	// prelude, and a syntax error must still be the command's (status 2).
	const cmd = `echo "$0|$#|$LINENO|$*"; f() { echo "in f $LINENO"; }
f`
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			plain, err := run(t, rc.r, Step{Command: cmd})
			if err != nil {
				t.Fatalf("Run without limits: %v (%q)", err, plain)
			}
			limited, err := run(t, rc.r, Step{Command: cmd, Limits: Limits{CPUSeconds: 60, OpenFiles: 256}})
			if err != nil {
				t.Fatalf("Run with limits: %v (%q)", err, limited)
			}
			if plain != limited {
				t.Errorf("output with limits %q, without %q", limited, plain)
			}
			_, err = run(t, rc.r, Step{Command: "if then fi", Limits: Limits{OpenFiles: 256}})
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != 2 {
				t.Errorf("syntax error under limits: %v, want exit status 2", err)
			}
		})
	}
}

func TestFileSizeLimitOfPartialBlocksIsExact(t *testing.T) {
	// 1000 bytes is not a whole number of ulimit blocks: prlimit sets it.
	for _, rc := range runners(t) {
		t.Run(rc.name, func(t *testing.T) {
			out, err := run(t, rc.r, Step{Limits: Limits{FileSizeBytes: 1000},
				Command: "while IFS= read -r l; do case $l in 'Max file size'*) echo \"$l\";; esac; done < /proc/$$/limits"})
			if err != nil {
				t.Fatalf("Run: %v (%q)", err, out)
			}
			if f := strings.Fields(out); len(f) < 5 || f[3] != "1000" || f[4] != "1000" {
				t.Errorf("file size limit line = %q, want soft and hard 1000", out)
			}
		})
	}
}

// ownCgroups lists the step cgroups this process has on disk.
func ownCgroups(t *testing.T) []string {
	t.Helper()
	parent, _ := cgroupParent()
	dirs, err := filepath.Glob(filepath.Join(parent, fmt.Sprintf("kiln-sandbox-%d-*", os.Getpid())))
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

func needCgroup(t *testing.T) {
	t.Helper()
	if parent, _ := cgroupParent(); parent == "" {
		t.Skip("no pids cgroup (not root, or no usable hierarchy)")
	}
}

func TestBwrapStepWithoutProcessLimitNeedsNoCgroup(t *testing.T) {
	needCgroup(t)
	b := needBwrap(t)
	before := ownCgroups(t)
	created := cgroupSeq.Load()
	// A background process is still killed: by the PID namespace.
	marker := fmt.Sprintf("1000.%d%d", os.Getpid(), time.Now().UnixNano()%1000000)
	out, err := run(t, b, Step{Command: "setsid sleep " + marker + " & echo started", Limits: Limits{OpenFiles: 256}})
	if le := (*LeftoverError)(nil); !errors.As(err, &le) || le.Count != 1 {
		t.Fatalf("Run: %v (%q); want a LeftoverError counting the setsid process", err, out)
	}
	if after := ownCgroups(t); !slices.Equal(after, before) || cgroupSeq.Load() != created {
		t.Errorf("step cgroups %v after the step, %v before; %d created", after, before, cgroupSeq.Load()-created)
	}
	if !waitUntil(time.Second, func() bool { return len(liveProcessesWith(marker)) == 0 }) {
		t.Errorf("setsid process %v survived the step", liveProcessesWith(marker))
	}
}

func TestUnsandboxedEscapeeIsKilledThroughTheCgroup(t *testing.T) {
	needCgroup(t)
	marker := fmt.Sprintf("1000.%d%d", os.Getpid(), time.Now().UnixNano()%1000000)
	start := time.Now()
	out, err := run(t, Unsandboxed{Grace: testGrace}, Step{Command: "setsid sleep " + marker + " > /dev/null 2>&1 & echo started"})
	if le := (*LeftoverError)(nil); !errors.As(err, &le) || le.Count != 1 || le.Names[0] != "sleep" {
		t.Fatalf("Run: %v (%q); want a LeftoverError naming the setsid sleep", err, out)
	}
	if elapsed := time.Since(start); elapsed >= pipeDrainTimeout {
		t.Errorf("Run took %s", elapsed)
	}
	if !waitUntil(time.Second, func() bool { return len(liveProcessesWith(marker)) == 0 }) {
		pids := liveProcessesWith(marker)
		for _, p := range pids {
			_ = (&os.Process{Pid: p}).Kill()
		}
		t.Errorf("process %v that left the process group survived the step", pids)
	}
}

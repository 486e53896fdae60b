package sandbox

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestStaleCgroupCleanupSparesLiveCreators(t *testing.T) {
	parent := t.TempDir() // plain directories stand in for cgroups: rmdir semantics are the same when empty
	live := filepath.Join(parent, "kiln-sandbox-"+strconv.Itoa(os.Getppid())+"-1")
	dead := filepath.Join(parent, "kiln-sandbox-999999999-1")
	odd := filepath.Join(parent, "kiln-sandbox-test-x")
	// Left by an earlier process that had this process's pid (CI caught a
	// build server whose first step failed on it: mkdir: file exists).
	reused := filepath.Join(parent, "kiln-sandbox-"+strconv.Itoa(os.Getpid())+"-1")
	for _, d := range []string{live, dead, odd, reused} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleCgroups(parent)
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("a live process's cgroup was removed: %v", err)
	}
	for _, d := range []string{dead, odd, reused} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("stale %s kept: %v", filepath.Base(d), err)
		}
	}
}

func TestStepsOnCgroupV1ReuseACellAndKeepTheirProcessLimit(t *testing.T) {
	parent, v2 := cgroupParent()
	if parent == "" || v2 {
		t.Skip("needs root and a cgroup v1 pids hierarchy")
	}
	pidsCgroup := `sed -n 's/^[0-9]*:pids:\(.*\)$/\1/p' /proc/self/cgroup`
	first, err := run(t, Unsandboxed{Grace: testGrace}, Step{Limits: Limits{Processes: 40}, Command: pidsCgroup})
	if err != nil {
		t.Fatal(err)
	}
	second, err := run(t, Unsandboxed{Grace: testGrace}, Step{Limits: Limits{Processes: 30},
		Command: pidsCgroup + `; cat /sys/fs/cgroup/pids$(` + pidsCgroup + `)/pids.max`})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(second)
	if len(lines) != 2 || !strings.Contains(first, "kiln-sandbox-") || strings.TrimSpace(first) != lines[0] {
		t.Fatalf("steps ran in cgroups %q and %q, want one reused kiln-sandbox cell", first, second)
	}
	// The limit of the second step, with the helpers and at most
	// maxLeftover processes of the first not yet reaped.
	max, err := strconv.Atoi(lines[1])
	if err != nil || max < 30+cgroupHelperAllowance || max > 30+cgroupHelperAllowance+maxLeftover {
		t.Errorf("pids.max = %q, want 30 + %d + at most %d", lines[1], cgroupHelperAllowance, maxLeftover)
	}
}

func TestReleaseIdleRemovesTheCellsKeptForReuse(t *testing.T) {
	parent, v2 := cgroupParent()
	if parent == "" || v2 {
		t.Skip("needs root and a cgroup v1 pids hierarchy")
	}
	if _, err := run(t, Unsandboxed{Grace: testGrace}, Step{Limits: Limits{Processes: 10}, Command: "true"}); err != nil {
		t.Fatal(err)
	}
	idleCells.Lock()
	var dirs []string
	for _, c := range idleCells.list {
		dirs = append(dirs, c.dir)
	}
	idleCells.Unlock()
	if len(dirs) == 0 {
		t.Fatal("no cell kept after a step")
	}
	ReleaseIdle()
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("cell cgroup %s still there: %v", d, err)
		}
	}
}

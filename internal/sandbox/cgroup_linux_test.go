package sandbox

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestStaleCgroupCleanupSparesLiveCreators(t *testing.T) {
	parent := t.TempDir() // plain directories stand in for cgroups: rmdir semantics are the same when empty
	live := filepath.Join(parent, "kiln-sandbox-"+strconv.Itoa(os.Getpid())+"-1")
	dead := filepath.Join(parent, "kiln-sandbox-999999999-1")
	odd := filepath.Join(parent, "kiln-sandbox-test-x")
	for _, d := range []string{live, dead, odd} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleCgroups(parent)
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("a live process's cgroup was removed: %v", err)
	}
	for _, d := range []string{dead, odd} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("stale %s kept: %v", filepath.Base(d), err)
		}
	}
}

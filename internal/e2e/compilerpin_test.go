package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// cpinWaiting is what startcompile --json says of a request left waiting.
type cpinWaiting struct {
	BuildID        uint64   `json:"build_id"`
	State          string   `json:"state"`
	Cached         bool     `json:"cached"`
	WaitingReasons []string `json:"waiting_reasons"`
}

// The compiler and its version are part of the cache key: a request pinned
// to the compiler version that built an artifact is answered from the
// cache, and the same request pinned to another version is not — it waits
// for a target with that compiler and says so.
func TestCpinAnotherCompilerVersionMissesTheCache(t *testing.T) {
	f, _, _ := farmWithProject(t, farmtest.CProjectOptions{Manifest: true}, 1)
	built := parseResult(t, f.Startcompile("--project", "hello", "--wait", "--json", "a@example.com"))
	compiler, _ := built.Platform["compiler"].(string)
	version, _ := built.Platform["compiler_version"].(string)
	if built.State != "succeeded" || compiler == "" || version == "" {
		t.Fatalf("build %+v: want succeeded on a platform naming its compiler and version", built)
	}

	same := parseResult(t, f.Startcompile("--project", "hello", "--compiler", compiler, "--compiler-version", version, "--json", "a@example.com"))
	if !same.Cached || same.BuildID != built.BuildID {
		t.Fatalf("pinned to the compiler that built it (%s %s): %+v, want the cached build %d", compiler, version, same, built.BuildID)
	}

	other := version + ".99"
	r := f.Startcompile("--project", "hello", "--compiler-version", other, "--json", "a@example.com")
	var w cpinWaiting
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &w); err != nil {
		t.Fatalf("startcompile --json printed %q (stderr %q): %v", r.Stdout, r.Stderr, err)
	}
	if w.Cached || w.BuildID == built.BuildID || w.State != "queued" {
		t.Fatalf("pinned to compiler version %s: %+v, want a new queued build", other, w)
	}
	if !strings.Contains(strings.Join(w.WaitingReasons, "\n"), "compiler_version") {
		t.Errorf("waiting reasons %q do not name compiler_version", w.WaitingReasons)
	}
}

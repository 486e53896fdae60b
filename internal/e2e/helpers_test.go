package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// result is the subset of startcompile --json the tests read.
type result struct {
	BuildID        uint64            `json:"build_id"`
	State          string            `json:"state"`
	Cached         bool              `json:"cached"`
	Joined         bool              `json:"joined"`
	ArtifactSHA256 string            `json:"artifact_sha256"`
	ArtifactSize   uint64            `json:"artifact_size"`
	Files          []string          `json:"files"`
	Commit         string            `json:"commit"`
	Failure        string            `json:"failure"`
	Platform       map[string]any    `json:"platform"`
	Options        map[string]string `json:"options"`
}

func parseResult(t *testing.T, r farmtest.Result) result {
	t.Helper()
	var out result
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &out); err != nil {
		t.Fatalf("startcompile --json printed %q (stderr %q): %v", r.Stdout, r.Stderr, err)
	}
	return out
}

// farmWithProject starts a metaserver, registers a C project and starts
// `builders` buildservers with extra args.
// It returns the farm, the repository's directory and its head commit.
func farmWithProject(t *testing.T, opts farmtest.CProjectOptions, builders int, builderArgs ...string) (*farmtest.Farm, string, string) {
	t.Helper()
	f := farmtest.New(t)
	f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s", "--inline-artifact-bytes", "0")
	repo, head := farmtest.CProject(t, opts)
	f.AddProject("hello", repo)
	for i := 0; i < builders; i++ {
		tok := f.AddBuildServer("builder-" + strconv.Itoa(i+1))
		f.StartBuildserver(tok, builderArgs...)
	}
	if builders > 0 {
		f.WaitBuildServers(builders)
	}
	return f, repo, head
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// blobPath is where the metaserver's content-addressed store keeps sha.
func blobPath(dataDir, sha string) string {
	return filepath.Join(dataDir, "blobs", sha[:2], sha)
}

func listBuilds(t *testing.T, f *farmtest.Farm) []*kilnv1.Build {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kilnv1.NewStatusServiceClient(f.Conn()).ListBuilds(ctx, &kilnv1.ListBuildsRequest{PageSize: 500})
	if err != nil {
		t.Fatalf("ListBuilds: %v", err)
	}
	return resp.GetBuilds()
}

func expectExit(t *testing.T, r farmtest.Result, want int) {
	t.Helper()
	if r.Exit != want {
		t.Fatalf("startcompile exit %d, want %d\nstdout: %s\nstderr: %s", r.Exit, want, r.Stdout, r.Stderr)
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// runCmd runs a program to completion (bounded) and returns its combined output.
func runCmd(path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), farmtest.CommandTimeout)
	defer cancel()
	out, err := osexec.CommandContext(ctx, path, args...).CombinedOutput()
	return string(out), err
}

package worker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/sandbox"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// makeRepo commits files into a fresh git repository and returns its
// file:// URL and the commit id.
func makeRepo(t testing.TB, files map[string]string) (url, commit string) {
	t.Helper()
	dir := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("add", "-A")
	git("commit", "-q", "-m", "test")
	return "file://" + dir, git("rev-parse", "HEAD")
}

// testTarget is a native target as a probe would report it.
func testTarget() Target {
	return Target{Info: &kilnv1.Target{Id: "native", System: &kilnv1.SystemInfo{
		Os: "linux", Arch: "x86_64", Endian: "little", Tools: map[string]string{"make": "4.3", "cc": "12.2.0"},
	}}}
}

// testConfig is a Config for f with a fresh data directory.
func testConfig(t testing.TB, f *fakeMeta) Config {
	return Config{
		Metaserver: f.addr,
		Token:      testToken,
		DataDir:    t.TempDir(),
		Targets:    []Target{testTarget()},
		Slots:      2,
		Sandbox:    sandbox.Unsandboxed{Grace: 200 * time.Millisecond},
		Grace:      5 * time.Second,
		Version:    "test",
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// testWriter sends the build server's own log to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// running is a Client being run by a test.
type running struct {
	c    *Client
	stop context.CancelFunc
	done chan error
}

// startClient runs a Client for cfg until the test ends (or wait is called).
func startClient(t testing.TB, cfg Config) *running {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("client did not stop")
		}
	})
	return r
}

// wait stops the client (gracefully) and returns Run's error.
func (r *running) wait(t testing.TB) error {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err // for Cleanup
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("client did not stop")
		return nil
	}
}

// untar reads a tar.gz into name -> content ("-> target" for symlinks).
func untar(t testing.TB, data []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeSymlink:
			out[h.Name] = "-> " + h.Linkname
		case tar.TypeDir:
			out[h.Name] = "<dir>"
		default:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[h.Name] = string(b)
		}
	}
}

// randomBytes returns n bytes that gzip cannot shrink.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// writeFile writes content to path or fails the test.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// testBuildUIDs numbers the build uid ranges of this test process.
var testBuildUIDs atomic.Uint32

// withBuildUsers sets cfg up as the build server does as root: steps run as
// build users, which must be able to search the data directory's parents
// (t.TempDir's are 0700). Not root: nothing changes.
func withBuildUsers(t *testing.T, cfg *Config) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	cfg.BuildUID = 1700000200 + testBuildUIDs.Add(1)*64
	for p := filepath.Dir(cfg.DataDir); p != "/"; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, fi.Mode().Perm()|0o011); err != nil {
			t.Fatal(err)
		}
	}
}

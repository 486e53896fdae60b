package gitmirror

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// upstream is a real non-bare git repository playing the remote in tests.
type upstream struct {
	tb   testing.TB
	dir  string
	tick int // commit clock, so commit ids differ and times are known
}

// commitEpoch is the author and committer time of the first test commit;
// each further commit is one minute later.
var commitEpoch = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func newUpstream(tb testing.TB) *upstream {
	tb.Helper()
	u := &upstream{tb: tb, dir: filepath.Join(tb.TempDir(), "upstream")}
	if err := os.Mkdir(u.dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	u.git("init", "--quiet", "--initial-branch=main")
	return u
}

// url is the file:// URL of the repository.
func (u *upstream) url() string { return "file://" + u.dir }

func (u *upstream) git(args ...string) string {
	u.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = u.dir
	when := commitEpoch.Add(time.Duration(u.tick) * time.Minute).Format(time.RFC3339)
	cmd.Env = append(gitEnv(),
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.invalid",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.invalid",
		"GIT_AUTHOR_DATE="+when, "GIT_COMMITTER_DATE="+when)
	out, err := cmd.CombinedOutput()
	if err != nil {
		u.tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// write creates or replaces files; a value starting with "->" makes a
// symbolic link, a name ending in "*" an executable file (without the "*").
func (u *upstream) write(files map[string]string) {
	u.tb.Helper()
	for name, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, "*") {
			name, mode = strings.TrimSuffix(name, "*"), 0o755
		}
		p := filepath.Join(u.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			u.tb.Fatal(err)
		}
		_ = os.Remove(p)
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), mode)
		}
		if err != nil {
			u.tb.Fatal(err)
		}
	}
}

// commit writes files, commits everything and returns the commit id.
func (u *upstream) commit(msg string, files map[string]string) string {
	u.tb.Helper()
	u.write(files)
	u.git("add", "--all")
	u.git("commit", "--quiet", "--allow-empty", "-m", msg)
	u.tick++
	return u.git("rev-parse", "HEAD")
}

// newMirror returns a mirror of u in a fresh directory, already cloned.
func newMirror(tb testing.TB, u *upstream, o Options) *Mirror {
	tb.Helper()
	m := NewWithOptions(filepath.Join(tb.TempDir(), "mirrors", "p.git"), u.url(), o)
	if err := m.Ensure(testCtx(tb)); err != nil {
		tb.Fatal(err)
	}
	return m
}

// testCtx bounds every test's git work.
func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

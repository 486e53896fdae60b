package gitmirror

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestResolveNamesEveryKindOfRevision(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", map[string]string{"a": "1"})
	u.git("tag", "-a", "-m", "release", "v1", c1)
	u.git("tag", "light", c1)
	c2 := u.commit("two", map[string]string{"a": "2"})
	u.git("checkout", "--quiet", "-b", "feature")
	c3 := u.commit("three", map[string]string{"b": "3"})
	u.git("checkout", "--quiet", "main")
	m := newMirror(t, u, Options{})

	tests := []struct {
		name, rev, want string
	}{
		{"the empty revision is the default branch's head", "", c2},
		{"HEAD is the default branch's head", "HEAD", c2},
		{"a branch resolves to its head", "feature", c3},
		{"a full ref name resolves too", "refs/heads/feature", c3},
		{"an annotated tag is peeled to its commit", "v1", c1},
		{"a lightweight tag resolves to its commit", "light", c1},
		{"an abbreviated commit id resolves", c3[:8], c3},
		{"a full commit id resolves to itself", c1, c1},
		{"an upper-case full commit id resolves to lower case", strings.ToUpper(c1), c1},
		{"parent syntax is a single revision", "main~1", c1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.Resolve(testCtx(t), tt.rev)
			if err != nil || got != tt.want {
				t.Errorf("Resolve(%q) = %q, %v; want %q", tt.rev, got, err, tt.want)
			}
		})
	}
}

func TestResolveRejectsBadAndUnknownRevisions(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", map[string]string{"a": "1"})
	m := newMirror(t, u, Options{})
	tree := u.git("rev-parse", "HEAD^{tree}")

	tests := []struct {
		name, rev string
		want      error
	}{
		{"an option-like revision is bad", "--output=/tmp/x", ErrBadRevision},
		{"a revision with a space is bad", "main branch", ErrBadRevision},
		{"a revision with a newline is bad", "main\n", ErrBadRevision},
		{"a revision with a control character is bad", "ma\x01in", ErrBadRevision},
		{"a range is not a single revision", c1 + "..main", ErrBadRevision},
		{"an absurdly long revision is bad", strings.Repeat("a", 300), ErrBadRevision},
		{"an unknown branch is unknown", "no-such-branch", ErrUnknownRevision},
		{"an absent full commit id is unknown", strings.Repeat("0", 40), ErrUnknownRevision},
		{"a tree is not a commit", tree, ErrUnknownRevision},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.Resolve(testCtx(t), tt.rev)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Resolve(%q) = %q, %v; want %v", tt.rev, got, err, tt.want)
			}
			if errors.Is(err, ErrUnknownRevision) && !strings.Contains(err.Error(), tt.rev) {
				t.Errorf("error %q does not name the revision %q", err, tt.rev)
			}
		})
	}
}

func TestResolveOfAPresentFullCommitNeedsNoRemote(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", nil)
	m := newMirror(t, u, Options{FetchFreshness: -1}) // branches always fetch
	if err := os.RemoveAll(u.dir); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if got, err := m.Resolve(ctx, c1); err != nil || got != c1 {
		t.Fatalf("Resolve(full id) with the remote gone = %q, %v; want %s", got, err, c1)
	}
	if m.FetchCount() != 1 {
		t.Errorf("FetchCount = %d, want 1 (the clone only)", m.FetchCount())
	}
	if !m.isKnown(c1) {
		t.Error("a resolved commit is not remembered as present")
	}
	if _, err := m.Resolve(ctx, "main"); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Resolve(main) with the remote gone = %v, want ErrUnreachable", err)
	}
}

func TestResolveTrustsARecentFetch(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", nil)
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)
	c2 := u.commit("two", nil)
	if got, _ := m.Resolve(ctx, "main"); got != c1 {
		t.Errorf("Resolve(main) within freshness = %s, want the fetched head %s", got, c1)
	}
	if m.FetchCount() != 1 {
		t.Errorf("FetchCount = %d, want 1: a fresh fetch must be trusted", m.FetchCount())
	}
	// A full commit id not yet present fetches regardless.
	if got, err := m.Resolve(ctx, c2); err != nil || got != c2 {
		t.Errorf("Resolve(new full id) = %s, %v; want %s", got, err, c2)
	}
	if m.FetchCount() != 2 {
		t.Errorf("FetchCount = %d, want 2: an absent full id must fetch", m.FetchCount())
	}

	fresh := newMirror(t, u, Options{FetchFreshness: -1})
	c3 := u.commit("three", nil)
	if got, err := fresh.Resolve(ctx, "main"); err != nil || got != c3 {
		t.Errorf("Resolve(main) with freshness off = %s, %v; want %s", got, err, c3)
	}
}

func TestEnsureCommitFetchesAMissingCommit(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", nil)
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	c2 := u.commit("two", nil)
	ctx := testCtx(t)
	if err := m.EnsureCommit(ctx, c2); err != nil {
		t.Fatalf("EnsureCommit(new commit) = %v", err)
	}
	if !m.HasCommit(ctx, c2) {
		t.Error("commit missing after EnsureCommit")
	}
	if err := m.EnsureCommit(ctx, strings.Repeat("1", 40)); !errors.Is(err, ErrUnknownRevision) {
		t.Errorf("EnsureCommit(absent) = %v, want ErrUnknownRevision", err)
	}
	if err := m.EnsureCommit(ctx, "main"); !errors.Is(err, ErrBadRevision) {
		t.Errorf("EnsureCommit(branch name) = %v, want ErrBadRevision", err)
	}
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		name, rev, from, to string
		ok, bad             bool
	}{
		{name: "a plain revision is no range", rev: "main", to: "main"},
		{name: "the empty revision is no range", rev: ""},
		{name: "A..B splits into both ends", rev: "v1..main", from: "v1", to: "main", ok: true},
		{name: "a range of commit ids splits", rev: "abc123..def456", from: "abc123", to: "def456", ok: true},
		{name: "a range without start is bad", rev: "..main", bad: true},
		{name: "a range without end is bad", rev: "v1..", bad: true},
		{name: "a symmetric range is bad", rev: "v1...main", bad: true},
		{name: "a double range is bad", rev: "a..b..c", bad: true},
		{name: "a range with an option-like end is bad", rev: "v1..-x", bad: true},
		{name: "a bare .. is bad", rev: "..", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from, to, ok, err := ParseRange(tt.rev)
			if tt.bad {
				if !errors.Is(err, ErrBadRevision) {
					t.Errorf("ParseRange(%q) error = %v, want ErrBadRevision", tt.rev, err)
				}
				return
			}
			if err != nil || from != tt.from || to != tt.to || ok != tt.ok {
				t.Errorf("ParseRange(%q) = %q, %q, %v, %v; want %q, %q, %v, nil", tt.rev, from, to, ok, err, tt.from, tt.to, tt.ok)
			}
		})
	}
}

func TestFirstParentRangeFollowsTheMainLine(t *testing.T) {
	// c1 - c2 - c3 ---- M - c4     (main)
	//        \        /
	//         f1 - f2              (feature)
	u := newUpstream(t)
	c1 := u.commit("c1", map[string]string{"a": "1"})
	c2 := u.commit("c2", map[string]string{"a": "2"})
	u.git("checkout", "--quiet", "-b", "feature")
	f1 := u.commit("f1", map[string]string{"f": "1"})
	f2 := u.commit("f2", map[string]string{"f": "2"})
	u.git("checkout", "--quiet", "main")
	c3 := u.commit("c3", map[string]string{"a": "3"})
	u.git("merge", "--quiet", "--no-ff", "-m", "merge", "feature")
	mg := u.git("rev-parse", "HEAD")
	c4 := u.commit("c4", map[string]string{"a": "4"})
	m := newMirror(t, u, Options{})

	good := []struct {
		name, from, to string
		want           []string
	}{
		{"a range over a merge lists the main line only", c1, c4, []string{c4, mg, c3, c2, c1}},
		{"a range of one commit is that commit", c3, c3, []string{c3}},
		{"a range ending at the merge includes it", c2, mg, []string{mg, c3, c2}},
		{"a range on the branch follows the branch", f1, f2, []string{f2, f1}},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.FirstParentRange(testCtx(t), tt.from, tt.to)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("FirstParentRange = %v, %v; want %v", got, err, tt.want)
			}
		})
	}

	bad := []struct {
		name, from, to string
		want           error
	}{
		{"a start on the merged branch is no first-parent ancestor", f1, c4, ErrBadRevision},
		{"a reversed range is refused", c4, c1, ErrBadRevision},
		{"a branch name instead of a commit id is refused", "main", c4, ErrBadRevision},
		{"an end that is not in the mirror is unknown", c1, strings.Repeat("2", 40), ErrUnknownRevision},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.FirstParentRange(testCtx(t), tt.from, tt.to)
			if !errors.Is(err, tt.want) {
				t.Errorf("FirstParentRange = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestReadFile(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", map[string]string{
		"kiln.yaml":       "build: [make]\n",
		"sub/dir/f.txt":   "nested",
		"link":            "->kiln.yaml",
		"big":             strings.Repeat("x", MaxFileSize+1),
		"exactly-the-cap": strings.Repeat("y", MaxFileSize),
	})
	m := newMirror(t, u, Options{})

	tests := []struct {
		name, commit, path, want string
		err                      error
	}{
		{name: "a file at the root is read", commit: c1, path: "kiln.yaml", want: "build: [make]\n"},
		{name: "a nested file is read", commit: c1, path: "sub/dir/f.txt", want: "nested"},
		{name: "a symbolic link yields its target", commit: c1, path: "link", want: "kiln.yaml"},
		{name: "a file of exactly the cap is read", commit: c1, path: "exactly-the-cap", want: strings.Repeat("y", MaxFileSize)},
		{name: "a missing file does not exist", commit: c1, path: "nope.yaml", err: os.ErrNotExist},
		{name: "a directory is not a file", commit: c1, path: "sub", err: os.ErrNotExist},
		{name: "a file over the cap is too large", commit: c1, path: "big", err: ErrFileTooLarge},
		{name: "an absent commit is unknown", commit: strings.Repeat("3", 40), path: "kiln.yaml", err: ErrUnknownRevision},
		{name: "a branch name is not a commit id", commit: "main", path: "kiln.yaml", err: ErrBadRevision},
		{name: "a path climbing out is invalid", commit: c1, path: "../etc/passwd", err: os.ErrInvalid},
		{name: "an absolute path is invalid", commit: c1, path: "/kiln.yaml", err: os.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.ReadFile(testCtx(t), tt.commit, tt.path)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Errorf("ReadFile(%s) = %d bytes, %v; want error %v", tt.path, len(got), err, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Errorf("ReadFile(%s) = %.40q, %v; want %.40q", tt.path, got, err, tt.want)
			}
		})
	}
}

func TestMirror_RootNames(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", map[string]string{
		"CMakeLists.txt": "project(x C)\n",
		"src/main.c":     "int main(void){return 0;}\n",
		"with space":     "x",
	})
	m := newMirror(t, u, Options{})
	got, err := m.RootNames(testCtx(t), c1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "CMakeLists.txt,src,with space" {
		t.Errorf("RootNames = %q, want CMakeLists.txt, src, with space", got)
	}
	if _, err := m.RootNames(testCtx(t), strings.Repeat("3", 40)); !errors.Is(err, ErrUnknownRevision) {
		t.Errorf("RootNames(absent commit) error = %v, want ErrUnknownRevision", err)
	}
	if _, err := m.RootNames(testCtx(t), "main"); !errors.Is(err, ErrBadRevision) {
		t.Errorf("RootNames(main) error = %v, want ErrBadRevision", err)
	}
}

package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// gitRevParse asks git itself what rev names in the mirror, as Resolve did
// before ref tables: ok is false when git finds no commit. "" means HEAD,
// as for Resolve.
func gitRevParse(t *testing.T, m *Mirror, rev string) (string, bool) {
	t.Helper()
	if rev == "" {
		rev = "HEAD"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "--git-dir="+m.Dir(), "rev-parse", "--verify", "--quiet", "--end-of-options", rev+"^{commit}")
	cmd.Env = gitEnv()
	out, err := cmd.Output()
	if err != nil {
		if exitCode(err) == 1 {
			return "", false
		}
		t.Fatalf("git rev-parse %s: %v", rev, err)
	}
	return strings.TrimSpace(string(out)), true
}

// expireFetch makes the mirror's last fetch older than its freshness window,
// as if that much time had passed.
func expireFetch(m *Mirror) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastOK = m.lastOK.Add(-2 * m.freshness)
}

func TestResolveAnswersRefNamesAsGitDoesWithoutAProcess(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", map[string]string{"a": "1"})
	c2 := u.commit("two", map[string]string{"a": "2"})
	u.git("tag", "-a", "-m", "release", "v1", c1)
	u.git("tag", "light", c1)
	u.git("tag", "-a", "-m", "nested", "nested", "v1")
	u.git("tag", "treetag", c2+"^{tree}")
	u.git("branch", "dup", c1)
	u.git("tag", "-a", "-m", "same name as a branch", "dup", c2)
	u.git("update-ref", "refs/dup2", c1)
	u.git("branch", "dup2", c2)
	u.git("branch", "config", c1)
	u.git("branch", c1[:7], c2) // a branch named like another commit's short id
	u.git("update-ref", "refs/remotes/origin/main", c1)
	u.git("symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
	u.git("checkout", "--quiet", "-b", "feature")
	c3 := u.commit("three", map[string]string{"b": "3"})
	u.git("checkout", "--quiet", "main")
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)
	if _, err := m.Resolve(ctx, "main"); err != nil { // lists the refs
		t.Fatal(err)
	}

	tests := []struct {
		name, rev string
		want      string // "" when git finds no commit
		noProcess bool   // answered from the ref table
	}{
		{"the empty revision is HEAD's branch", "", c2, true},
		{"HEAD is its branch's head", "HEAD", c2, true},
		{"a branch is its head", "feature", c3, true},
		{"a full branch ref is its head", "refs/heads/feature", c3, true},
		{"heads/NAME is a branch", "heads/feature", c3, true},
		{"an annotated tag is peeled", "v1", c1, true},
		{"tags/NAME is a tag", "tags/v1", c1, true},
		{"a full tag ref is peeled", "refs/tags/v1", c1, true},
		{"a lightweight tag is its commit", "light", c1, true},
		{"a tag wins over a branch of the same name", "dup", c2, true},
		{"the branch hidden by a tag is reached by heads/", "heads/dup", c1, true},
		{"refs/NAME wins over a branch of the same name", "dup2", c1, true},
		{"a ref wins over a commit id prefix", c1[:7], c2, true},
		{"a remote-tracking name resolves", "origin/main", c1, true},
		{"a remote name is its HEAD", "origin", c1, true},
		{"a tag of a tag is left to git", "nested", c1, false},
		{"a tag of a tree names no commit", "treetag", "", false},
		{"a branch named like a git directory file is left to git", "config", c1, false},
		{"an abbreviated id is left to git", c3[:10], c3, false},
		{"parent syntax is left to git", "main~1", c1, false},
		{"peel syntax is left to git", "v1^{}", c1, false},
		{"@ is left to git", "@", c2, false},
		{"a pseudo-ref is left to git", "FETCH_HEAD", "", false},
		{"an unknown name is left to git", "no-such-branch", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gitID, gitOK := gitRevParse(t, m, tt.rev)
			if gitID != tt.want || gitOK != (tt.want != "") {
				t.Fatalf("git rev-parse %q = %q, %v; the test expects %q", tt.rev, gitID, gitOK, tt.want)
			}
			before := m.localProcs.Load()
			got, err := m.Resolve(ctx, tt.rev)
			switch {
			case tt.want == "" && !errors.Is(err, ErrUnknownRevision):
				t.Errorf("Resolve(%q) = %q, %v; want ErrUnknownRevision as git finds nothing", tt.rev, got, err)
			case tt.want != "" && (err != nil || got != tt.want):
				t.Errorf("Resolve(%q) = %q, %v; want %s as git rev-parse", tt.rev, got, err, tt.want)
			}
			procs := m.localProcs.Load() - before
			if tt.noProcess && procs != 0 {
				t.Errorf("Resolve(%q) started %d git processes, want none", tt.rev, procs)
			}
			if !tt.noProcess && procs != 1 {
				t.Errorf("Resolve(%q) started %d git processes, want 1 (rev-parse)", tt.rev, procs)
			}
		})
	}
	if got := m.FetchCount(); got != 1 {
		t.Errorf("FetchCount = %d, want 1 (the clone): every call was within the freshness window", got)
	}
}

func TestResolveSeesNewRefsAfterAFetchAndNotBefore(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", nil)
	u.git("branch", "doomed")
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)
	resolve := func(rev string) string {
		t.Helper()
		got, err := m.Resolve(ctx, rev)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", rev, err)
		}
		return got
	}
	if got := resolve("main"); got != c1 {
		t.Fatalf("Resolve(main) = %s, want %s", got, c1)
	}

	c2 := u.commit("two", nil)
	u.git("tag", "-a", "-m", "new", "v2")
	u.git("branch", "-D", "doomed")
	procs := m.localProcs.Load()
	if got := resolve("main"); got != c1 {
		t.Errorf("Resolve(main) within freshness = %s, want the fetched head %s", got, c1)
	}
	if got := resolve("doomed"); got != c1 {
		t.Errorf("Resolve(doomed) within freshness = %s, want %s: the branch is gone upstream only", got, c1)
	}
	if d := m.localProcs.Load() - procs; d != 0 || m.FetchCount() != 1 {
		t.Errorf("within freshness: %d git processes, FetchCount %d; want 0 and 1", d, m.FetchCount())
	}

	expireFetch(m)
	if got := resolve("main"); got != c2 {
		t.Errorf("Resolve(main) after freshness expired = %s, want the new head %s", got, c2)
	}
	if got := resolve("v2"); got != c2 {
		t.Errorf("Resolve(v2) after the fetch = %s, want %s", got, c2)
	}
	if _, err := m.Resolve(ctx, "doomed"); !errors.Is(err, ErrUnknownRevision) {
		t.Errorf("Resolve(doomed) after the fetch pruned it = %v, want ErrUnknownRevision", err)
	}
	if m.FetchCount() != 2 {
		t.Errorf("FetchCount = %d, want 2", m.FetchCount())
	}

	// A fetch through any other method refreshes the table too.
	c3 := u.commit("three", nil)
	if err := m.EnsureCommit(ctx, c3); err != nil {
		t.Fatal(err)
	}
	if got := resolve("main"); got != c3 {
		t.Errorf("Resolve(main) after EnsureCommit fetched = %s, want %s", got, c3)
	}
	c4 := u.commit("four", nil)
	if err := m.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if got := resolve(""); got != c4 {
		t.Errorf("Resolve(\"\") after Fetch = %s, want %s", got, c4)
	}
}

func TestResolveReadsADetachedHeadWithGit(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", nil)
	u.commit("two", nil)
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)
	cmd := exec.CommandContext(ctx, "git", "--git-dir="+m.Dir(), "update-ref", "--no-deref", "HEAD", c1)
	cmd.Env = gitEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("detaching HEAD: %v: %s", err, out)
	}
	if err := m.Fetch(ctx); err != nil { // the table is listed again
		t.Fatal(err)
	}
	before := m.localProcs.Load()
	if got, err := m.Resolve(ctx, "HEAD"); err != nil || got != c1 {
		t.Errorf("Resolve(HEAD) detached at %s = %s, %v", c1, got, err)
	}
	// Listing (2 processes: the table is new since the fetch) plus rev-parse.
	if d := m.localProcs.Load() - before; d != 3 {
		t.Errorf("Resolve(HEAD) detached started %d git processes, want 3 (listing, then rev-parse)", d)
	}
}

func TestResolveListsRefsOncePerFetchForConcurrentCallers(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", nil)
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)
	c2 := u.commit("two", nil)
	if err := m.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	before := m.localProcs.Load()
	const callers = 32
	start := make(chan struct{})
	results := make(chan error, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			<-start
			got, err := m.Resolve(ctx, "main")
			if err == nil && got != c2 {
				err = fmt.Errorf("Resolve(main) = %s, want %s", got, c2)
			}
			results <- err
		})
	}
	close(start)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Error(err)
		}
	}
	if d := m.localProcs.Load() - before; d != 2 {
		t.Errorf("%d concurrent Resolve calls started %d git processes, want 2 (one listing: for-each-ref and symbolic-ref)", callers, d)
	}
}

func TestResolveIsConsistentWhileFetchesReplaceTheTable(t *testing.T) {
	u := newUpstream(t)
	var heads []string
	for i := range 6 {
		heads = append(heads, u.commit(fmt.Sprint("c", i), nil))
	}
	u.git("tag", "-a", "-m", "first", "v1", heads[0])
	u.git("reset", "--quiet", "--hard", heads[0])
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)

	stop := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				rev := []string{"", "main", "heads/main", "v1"}[(g+i)%4]
				got, err := m.Resolve(ctx, rev)
				if err == nil && rev == "v1" && got != heads[0] {
					err = fmt.Errorf("Resolve(v1) = %s, want %s", got, heads[0])
				}
				if err == nil && !slices.Contains(heads, got) {
					err = fmt.Errorf("Resolve(%q) = %s, not a head main ever had", rev, got)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for _, h := range heads[1:] {
		u.git("update-ref", "refs/heads/main", h)
		if err := m.Fetch(ctx); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got, err := m.Resolve(ctx, "main"); err != nil || got != heads[len(heads)-1] {
		t.Errorf("Resolve(main) after the last fetch = %s, %v; want %s", got, err, heads[len(heads)-1])
	}
}

func TestResolveWithTooManyRefsUsesRevParse(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", nil)
	// Write the refs as git packs them: one line each, much faster than
	// creating them one by one.
	var b strings.Builder
	b.WriteString("# pack-refs with: peeled fully-peeled sorted \n")
	for i := range maxTableRefs + 1 {
		fmt.Fprintf(&b, "%s refs/heads/b%06d\n", c1, i)
	}
	if err := os.WriteFile(filepath.Join(u.dir, ".git", "packed-refs"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)
	if got, err := m.Resolve(ctx, "b000007"); err != nil || got != c1 {
		t.Fatalf("Resolve(b000007) = %s, %v; want %s", got, err, c1)
	}
	if tbl := m.refs.Load(); tbl == nil || !tbl.disabled || len(tbl.refs) != 0 {
		t.Fatalf("ref table of %d refs is not disabled (or keeps refs)", maxTableRefs+1)
	}
	before := m.localProcs.Load()
	if got, err := m.Resolve(ctx, "main"); err != nil || got != c1 {
		t.Errorf("Resolve(main) = %s, %v; want %s", got, err, c1)
	}
	if d := m.localProcs.Load() - before; d != 1 {
		t.Errorf("Resolve(main) without a table started %d git processes, want 1 (rev-parse)", d)
	}
}

func TestIsPlainRefName(t *testing.T) {
	tests := []struct {
		name string
		ref  string
		want bool
	}{
		{"a one-level name is plain", "main", true},
		{"a nested name is plain", "release/1.x", true},
		{"a full ref name is plain", "refs/tags/v1.0", true},
		{"an @ inside a name is plain", "me@work", true},
		{"the empty name is not", "", false},
		{"@ alone means HEAD", "@", false},
		{"a reflog selector is not", "main@{1}", false},
		{"a parent selector is not", "main~1", false},
		{"a peel is not", "v1^{}", false},
		{"a path selector is not", "main:kiln.yaml", false},
		{"a glob character is not", "ma*n", false},
		{"a component starting with a dot is not", "a/.b", false},
		{"a lock file name is not", "main.lock", false},
		{"a trailing slash is not", "main/", false},
		{"a double slash is not", "a//b", false},
		{"a trailing dot is not", "main.", false},
		{"a backslash is not", `a\b`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isPlainRefName(tt.ref); got != tt.want {
				t.Errorf("isPlainRefName(%q) = %v, want %v", tt.ref, got, tt.want)
			}
		})
	}
}

func TestResolveListsRefsAgainOnlyAfterTheNextFetchWhenListingFails(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", nil)
	u.git("tag", "v1")
	u.git("pack-refs", "--all")
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)
	packed := filepath.Join(m.Dir(), "packed-refs")
	good, err := os.ReadFile(packed)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(packed, append(slices.Clip(good), "not a ref line\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	before := m.localProcs.Load()
	_, err1 := m.Resolve(ctx, "main")
	first := m.localProcs.Load() - before
	_, err2 := m.Resolve(ctx, "main")
	second := m.localProcs.Load() - before - first
	if err1 == nil || err2 == nil {
		t.Errorf("Resolve(main) with a corrupt packed-refs = %v, %v; want git's errors", err1, err2)
	}
	if tbl := m.refs.Load(); tbl == nil || !tbl.disabled {
		t.Fatal("a failed listing left no disabled table")
	}
	// The listing stops at its first failing process (symbolic-ref: git
	// reads packed-refs to check HEAD's target).
	if first != 2 || second != 1 {
		t.Errorf("git processes: %d then %d; want 2 (failed listing, rev-parse) then 1 (rev-parse only)", first, second)
	}

	// Repaired and fetched again, the mirror gets a table again.
	if err := os.WriteFile(packed, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Resolve(ctx, "v1"); err != nil || got != c1 {
		t.Errorf("Resolve(v1) after repair and fetch = %s, %v; want %s", got, err, c1)
	}
	if tbl := m.refs.Load(); tbl == nil || tbl.disabled {
		t.Error("no usable table after the next fetch")
	}
}

// TestResolveAfterFreshnessSkipsTheFetchWhenTheRemoteIsUnchanged: past
// the freshness window, a remote whose refs are those listed after the
// last fetch costs one ls-remote: no fetch, no listing; any change to the
// refs (a branch moved, one deleted and another added, a tag moved to
// another commit) still fetches, and Resolve sees it.
func TestResolveAfterFreshnessSkipsTheFetchWhenTheRemoteIsUnchanged(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", nil)
	u.git("tag", "-a", "-m", "first", "v1")
	u.git("branch", "old")
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)
	resolve := func(rev, want string) {
		t.Helper()
		// As if the freshness window had passed since the last fetch,
		// whose listed refs stay the table of the mirror.
		expireFetch(m)
		if tab := m.refs.Load(); tab != nil {
			m.refs.Store(&refTable{asOf: m.lastFetch(), refs: tab.refs, head: tab.head, root: tab.root, disabled: tab.disabled})
		}
		got, err := m.Resolve(ctx, rev)
		if err != nil || got != want {
			t.Fatalf("Resolve(%q) = %s, %v; want %s", rev, got, err, want)
		}
	}
	resolve("main", c1)
	fetches, procs := m.FetchCount(), m.localProcs.Load()
	for range 3 {
		resolve("main", c1)
		resolve("v1", c1)
	}
	if m.FetchCount() != fetches || m.localProcs.Load() != procs || m.RemoteChecks() != 6 {
		t.Fatalf("unchanged remote: %d fetches, %d local git processes, %d remote checks; want 0, 0, 6",
			m.FetchCount()-fetches, m.localProcs.Load()-procs, m.RemoteChecks())
	}

	c2 := u.commit("two", nil)
	resolve("main", c2)
	u.git("branch", "-D", "old")
	u.git("branch", "new")
	resolve("new", c2)
	u.git("tag", "-f", "-a", "-m", "moved", "v1", c2)
	resolve("v1", c2)
	if got := m.FetchCount() - fetches; got != 3 {
		t.Errorf("three changes fetched %d times; want 3", got)
	}
	if _, err := m.Resolve(ctx, "old"); !errors.Is(err, ErrUnknownRevision) {
		t.Errorf("Resolve(old) after it was deleted upstream: %v; want ErrUnknownRevision", err)
	}
}

package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestEnsureClonesOnceAndLeavesNoTemporaryDirectory(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", map[string]string{"a": "1"})
	m := newMirror(t, u, Options{})
	if !m.HasCommit(testCtx(t), c1) {
		t.Fatalf("commit %s missing after Ensure", c1)
	}
	if err := m.Ensure(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := m.FetchCount(); got != 1 {
		t.Errorf("FetchCount after two Ensure = %d, want 1 (the clone)", got)
	}
	// A new Mirror on the existing directory does not clone again.
	m2 := New(m.Dir(), u.url())
	if err := m2.Ensure(testCtx(t)); err != nil || m2.FetchCount() != 0 {
		t.Errorf("Ensure on existing mirror: err=%v fetches=%d, want nil and 0", err, m2.FetchCount())
	}
	entries, err := os.ReadDir(filepath.Dir(m.Dir()))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "p.git" {
		t.Errorf("parent holds %v, want only p.git", entries)
	}
}

func TestEnsureRemovesClonesACrashLeftBehind(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", nil)
	parent := t.TempDir()
	stale := filepath.Join(parent, ".p.git.clone-123")
	young := filepath.Join(parent, ".p.git.clone-456")
	for _, d := range []string{stale, young} {
		if err := os.MkdirAll(filepath.Join(d, "objects"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	m := NewWithOptions(filepath.Join(parent, "p.git"), u.url(), Options{FetchTimeout: time.Hour})
	if err := m.Ensure(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale clone still there: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("a young clone (maybe still running elsewhere) was removed: %v", err)
	}
}

func TestEnsureOfAMissingRepositoryIsUnreachable(t *testing.T) {
	parent := t.TempDir()
	m := New(filepath.Join(parent, "p.git"), "file://"+filepath.Join(parent, "nothing-here"))
	err := m.Ensure(testCtx(t))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Ensure = %v, want ErrUnreachable", err)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("failed clone left %v behind", entries)
	}
}

func TestEnsureRefusesANonEmptyDirectoryThatIsNoRepository(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", nil)
	dir := filepath.Join(t.TempDir(), "p.git")
	if err := os.MkdirAll(filepath.Join(dir, "junk"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := New(dir, u.url()).Ensure(testCtx(t))
	if err == nil {
		t.Fatal("Ensure into a non-empty non-repository succeeded")
	}
	if _, serr := os.Stat(filepath.Join(dir, "junk")); serr != nil {
		t.Errorf("Ensure touched the existing directory: %v", serr)
	}
}

func TestFetchBringsNewCommitsAndPrunesDeletedBranches(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", map[string]string{"a": "1"})
	u.git("branch", "doomed")
	m := newMirror(t, u, Options{FetchFreshness: time.Hour})
	ctx := testCtx(t)
	if _, err := m.Resolve(ctx, "doomed"); err != nil {
		t.Fatalf("Resolve(doomed) before deletion: %v", err)
	}

	c2 := u.commit("two", map[string]string{"a": "2"})
	u.git("branch", "-D", "doomed")
	if m.HasCommit(ctx, c2) {
		t.Fatal("new commit present before Fetch")
	}
	if err := m.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if !m.HasCommit(ctx, c2) {
		t.Fatalf("commit %s missing after Fetch", c2)
	}
	if got, err := m.Resolve(ctx, "main"); err != nil || got != c2 {
		t.Errorf("Resolve(main) = %s, %v; want %s", got, err, c2)
	}
	if _, err := m.Resolve(ctx, "doomed"); !errors.Is(err, ErrUnknownRevision) {
		t.Errorf("Resolve(doomed) after deletion = %v, want ErrUnknownRevision", err)
	}
}

func TestFetchClonesAMirrorThatDoesNotExistYet(t *testing.T) {
	u := newUpstream(t)
	c1 := u.commit("one", nil)
	m := New(filepath.Join(t.TempDir(), "p.git"), u.url())
	if err := m.EnsureCommit(testCtx(t), c1); err != nil {
		t.Fatalf("EnsureCommit on an absent mirror: %v", err)
	}
	if m.FetchCount() != 1 {
		t.Errorf("FetchCount = %d, want 1", m.FetchCount())
	}
}

func TestFetchOfAVanishedRemoteIsUnreachable(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", nil)
	m := newMirror(t, u, Options{})
	if err := os.RemoveAll(u.dir); err != nil {
		t.Fatal(err)
	}
	if err := m.Fetch(testCtx(t)); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Fetch = %v, want ErrUnreachable", err)
	}
}

func TestConcurrentFetchesCoalesceIntoOne(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", nil)
	m := newMirror(t, u, Options{})
	release := make(chan struct{})
	m.testHook = func() { <-release }
	before := m.FetchCount()

	const callers = 8
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() { errs <- m.Fetch(testCtx(t)) })
	}
	// Wait until every caller waits on the one running fetch.
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		n := 0
		if m.inflight != nil {
			n = m.inflight.waiters
		}
		m.mu.Unlock()
		if n == callers {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("only %d of %d callers joined the fetch", n, callers)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Fetch: %v", err)
		}
	}
	if got := m.FetchCount() - before; got != 1 {
		t.Errorf("%d concurrent Fetch calls ran %d fetches, want 1", callers, got)
	}
}

func TestAFetchCallerThatGivesUpReturnsAtOnce(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", nil)
	m := newMirror(t, u, Options{})
	release := make(chan struct{})
	m.testHook = func() { <-release }
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Fetch(ctx) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Fetch = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Fetch did not return after its context was cancelled")
	}
}

// TestFetchRunsNoHookPlantedInTheMirror: hooks (and a file-system
// monitor) written into a mirror, as a build that could write there
// would, never run when the mirror is fetched or read.
func TestFetchRunsNoHookPlantedInTheMirror(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", map[string]string{"a": "1"})
	dir := filepath.Join(t.TempDir(), "mirrors", "p.git")
	m := NewWithOptions(dir, u.url(), Options{})
	ctx := testCtx(t)
	if err := m.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "hook-ran")
	hook := "#!/bin/sh\necho \"$0\" >> " + marker + "\n"
	if err := os.MkdirAll(filepath.Join(dir, "hooks"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"reference-transaction", "post-checkout", "pre-auto-gc", "post-merge", "fsmonitor-watchman"} {
		if err := os.WriteFile(filepath.Join(dir, "hooks", h), []byte(hook), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := os.OpenFile(filepath.Join(dir, "config"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(cfg, "[core]\n\tfsmonitor = %s\n", filepath.Join(dir, "hooks", "fsmonitor-watchman"))
	cfg.Close()
	c2 := u.commit("two", map[string]string{"a": "2"})
	if err := m.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if !m.HasCommit(ctx, c2) {
		t.Fatalf("commit %s missing after Fetch", c2)
	}
	if _, err := m.Resolve(ctx, "main"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(marker); err == nil {
		t.Fatalf("a hook planted in the mirror ran: %s", b)
	}
}

// TestRemoteReachableAsksTheRemoteNotTheMirror: true for a remote that
// lists its refs, even before the mirror exists; false for one that is
// not there, and for a URL that git would take for an option.
func TestRemoteReachableAsksTheRemoteNotTheMirror(t *testing.T) {
	u := newUpstream(t)
	u.commit("one", map[string]string{"a": "1"})
	parent := t.TempDir()
	if m := New(filepath.Join(parent, "p.git"), u.url()); !m.RemoteReachable(testCtx(t)) {
		t.Error("an upstream that exists is not reachable")
	}
	if m := New(filepath.Join(parent, "q.git"), "file://"+filepath.Join(parent, "nothing-here")); m.RemoteReachable(testCtx(t)) {
		t.Error("a missing upstream is reachable")
	}
	if m := New(filepath.Join(parent, "r.git"), "--upload-pack=touch /tmp/x"); m.RemoteReachable(testCtx(t)) {
		t.Error("an option as URL is reachable")
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 0 {
		t.Errorf("RemoteReachable wrote %v", entries)
	}
}

package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/kilnbuild/kiln/internal/gitmirror"
)

// sourceMirror is the part of *gitmirror.Mirror the runner uses.
type sourceMirror interface {
	Ensure(ctx context.Context) error
	EnsureCommit(ctx context.Context, commit string) error
	ExportTree(ctx context.Context, commit, dst string, keep int) (*gitmirror.Tree, error)
	RemoteReachable(ctx context.Context) bool
}

// mirrors keeps one persistent bare mirror per git URL under dir, so a second
// build of a project fetches only new objects, and remembers which commits
// each mirror is known to hold, so a build of a known commit runs no git
// process before the export. Small trees of recent commits are also kept in
// memory (trees), so another build of the same commit runs no git at all.
//
// A mirror git cannot use (a corrupted object or pack, a broken ref, a
// directory that is no repository) is wiped and cloned again, once per
// export (see export). The mirrors and their projects' compiler caches
// together stay under maxBytes: the least recently built projects are
// wiped first (see bound).
type mirrors struct {
	dir   string
	open  func(dir, url string) sourceMirror
	trees *treeCache
	// caches holds the projects' compiler caches, wiped with their
	// mirror; nil: builds use none.
	caches *compilerCaches
	// maxBytes bounds the disk the mirrors and the compiler caches take
	// together; ≤ 0: no bound.
	maxBytes int64
	log      *slog.Logger

	mu    sync.Mutex
	byURL map[string]*mirrorEntry
	// exporting counts the exports under way per project key; bound
	// never chooses those projects.
	exporting map[string]int
}

// maxKnownCommits bounds the commits remembered per mirror.
const maxKnownCommits = 1 << 12

// mirrorEntry is one mirror; mu serializes clone and fetch of the mirror.
type mirrorEntry struct {
	// use is held shared by each export from the mirror and exclusively
	// by a wipe, which so waits for the exports under way and is never
	// seen half done by one. wiped, set under use, sends a later export
	// to the entry that replaced this one.
	use   sync.RWMutex
	wiped bool

	mu      sync.Mutex
	m       sourceMirror
	ensured bool
	commits map[string]bool
}

func newMirrors(dir string) *mirrors {
	return &mirrors{
		dir:       dir,
		open:      func(dir, url string) sourceMirror { return gitmirror.New(dir, url) },
		trees:     newTreeCache(maxCachedTree, treeCacheBytes),
		log:       slog.Default(),
		byURL:     map[string]*mirrorEntry{},
		exporting: map[string]int{},
	}
}

// mirrorDir names the mirror of url: the first 16 hex digits of its sha256.
func mirrorDir(root, url string) string {
	sum := sha256.Sum256([]byte(url))
	return filepath.Join(root, hex.EncodeToString(sum[:])[:16])
}

// export writes the tree of commit from url into the empty directory dst,
// cloning or fetching the mirror first when needed, or from memory when the
// tree is kept there.
//
// When git fails on the mirror itself, the mirror is wiped (with its
// project's compiler caches, see wipe), dst emptied and the export tried
// once more from a new clone: what a volunteer would do by hand, so that
// one damaged file on its disk does not fail every later build of the
// project. Not for failures another clone would not cure (see unusable):
// the network or the remote, a commit the remote does not have, a tree
// unsafe to check out, a full disk.
func (ms *mirrors) export(ctx context.Context, url, commit, dst string) error {
	key := projectKey(url)
	ms.markUsed(key)
	if t := ms.trees.get(url, commit); t != nil {
		return t.Extract(ctx, dst)
	}
	ms.mu.Lock()
	ms.exporting[key]++
	ms.mu.Unlock()
	defer func() {
		ms.mu.Lock()
		if ms.exporting[key]--; ms.exporting[key] <= 0 {
			delete(ms.exporting, key)
		}
		ms.mu.Unlock()
	}()

	e, err := ms.exportOnce(ctx, url, commit, dst)
	if err == nil || !ms.unusable(ctx, e, err) {
		return err
	}
	ms.log.Warn("source mirror unusable: wiping it and cloning again", "url", url, "commit", commit, "error", err)
	if werr := ms.wipeEntry(url, e); werr != nil {
		return fmt.Errorf("%w; wiping the unusable mirror: %w", err, werr)
	}
	if eerr := clearDir(dst); eerr != nil {
		return fmt.Errorf("%w; emptying %s for another export: %w", err, dst, eerr)
	}
	if _, err2 := ms.exportOnce(ctx, url, commit, dst); err2 != nil {
		return fmt.Errorf("%w (from a new clone, after wiping the mirror, which had failed with: %v)", err2, err)
	}
	ms.log.Info("source mirror cloned again after a wipe", "url", url, "commit", commit)
	return nil
}

// exportOnce is export from the mirror as it is; it returns the entry
// it used.
func (ms *mirrors) exportOnce(ctx context.Context, url, commit, dst string) (*mirrorEntry, error) {
	e := ms.entry(url)
	defer e.use.RUnlock()
	e.mu.Lock()
	if !e.commits[commit] {
		if !e.ensured {
			if err := e.m.Ensure(ctx); err != nil {
				e.mu.Unlock()
				return e, err
			}
			e.ensured = true
		}
		if err := e.m.EnsureCommit(ctx, commit); err != nil {
			e.mu.Unlock()
			return e, err
		}
		if len(e.commits) >= maxKnownCommits {
			clear(e.commits) // the next build of each re-checks with one git process
		}
		e.commits[commit] = true
	}
	e.mu.Unlock()
	// Exports only read the mirror; git allows that alongside a fetch.
	t, err := e.m.ExportTree(ctx, commit, dst, ms.trees.maxTree)
	if err != nil {
		// A commit whose export failed is checked again next time.
		e.mu.Lock()
		delete(e.commits, commit)
		e.mu.Unlock()
	}
	if t != nil {
		ms.trees.put(url, t)
	}
	return e, err
}

// entry returns url's current mirror entry, held shared (e.use).
func (ms *mirrors) entry(url string) *mirrorEntry {
	for {
		ms.mu.Lock()
		e := ms.byURL[url]
		if e == nil {
			e = &mirrorEntry{m: ms.open(mirrorDir(ms.dir, url), url), commits: map[string]bool{}}
			ms.byURL[url] = e
		}
		ms.mu.Unlock()
		e.use.RLock()
		if !e.wiped {
			return e
		}
		e.use.RUnlock() // wiped meanwhile: its successor, then
	}
}

// unusable reports whether err, from an export of e's mirror, shows the
// mirror itself at fault: not ctx's end nor a git process's timeout (a
// slow network or remote), not a tree unsafe to check out or a commit
// the remote lacks (the project's doing: another clone would fail
// alike), not a full disk (wiping is bound's business). A clone or fetch
// that failed (ErrUnreachable) is the mirror's fault only when the
// remote answers now (one ls-remote): a network down must not cost every
// mirror.
func (ms *mirrors) unusable(ctx context.Context, e *mirrorEntry, err error) bool {
	switch {
	case ctx.Err() != nil,
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled),
		errors.Is(err, gitmirror.ErrUnsafePath),
		errors.Is(err, gitmirror.ErrUnknownRevision),
		errors.Is(err, gitmirror.ErrBadRevision),
		errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EDQUOT):
		return false
	case errors.Is(err, gitmirror.ErrUnreachable):
		return e.m.RemoteReachable(ctx)
	}
	return true
}

// clearDir removes everything in dir, keeping dir.
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}

// markUsed records that a build of the project key starts now, for
// bound's order: the mirror directory's modification time.
func (ms *mirrors) markUsed(key string) {
	now := time.Now()
	_ = os.Chtimes(filepath.Join(ms.dir, key), now, now) // absent before the first clone
}

// wipe removes url's mirror and everything kept for its project with it:
// its compiler caches (a cache a running build holds goes when the build
// is over: the build goes on with its files). It waits for exports from
// the mirror under way; the next build of the project clones it again and
// compiles everything. (Source trees kept in memory stay: a commit's tree
// never changes.)
func (ms *mirrors) wipe(url string) error {
	return ms.wipeKey(projectKey(url))
}

// wipeEntry wipes url's mirror if e is still its entry: of several
// exports that found the same mirror unusable, one wipes it and the
// others use the new clone.
func (ms *mirrors) wipeEntry(url string, e *mirrorEntry) error {
	ms.mu.Lock()
	current := ms.byURL[url] == e
	ms.mu.Unlock()
	if !current {
		return nil
	}
	return ms.wipeKey(projectKey(url))
}

// wipeKey is wipe for the project whose mirror is named key (projectKey):
// nothing outside DATA_DIR/mirrors/KEY and DATA_DIR/ccache/KEY is
// touched, and links in them are removed, not followed.
func (ms *mirrors) wipeKey(key string) error {
	if !isProjectKey(key) {
		return fmt.Errorf("wipe: %q names no project", key)
	}
	ms.mu.Lock()
	var held []*mirrorEntry
	for url, e := range ms.byURL {
		if projectKey(url) == key {
			held = append(held, e)
			delete(ms.byURL, url)
		}
	}
	ms.mu.Unlock()
	for _, e := range held {
		e.use.Lock() // no export of it runs
		e.wiped = true
	}
	defer func() {
		for _, e := range held {
			e.use.Unlock()
		}
	}()
	err := os.RemoveAll(filepath.Join(ms.dir, key))
	if ms.caches != nil {
		err = errors.Join(err, ms.caches.wipeKey(key))
	}
	return err
}

// isProjectKey reports whether name is a project key: 16 lowercase hex
// digits (mirrorDir).
func isProjectKey(name string) bool {
	if len(name) != 16 {
		return false
	}
	for _, r := range name {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

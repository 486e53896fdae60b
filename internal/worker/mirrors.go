package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"

	"github.com/kilnbuild/kiln/internal/gitmirror"
)

// sourceMirror is the part of *gitmirror.Mirror the runner uses.
type sourceMirror interface {
	Ensure(ctx context.Context) error
	EnsureCommit(ctx context.Context, commit string) error
	ExportTree(ctx context.Context, commit, dst string, keep int) (*gitmirror.Tree, error)
}

// mirrors keeps one persistent bare mirror per git URL under dir, so a second
// build of a project fetches only new objects, and remembers which commits
// each mirror is known to hold, so a build of a known commit runs no git
// process before the export. Small trees of recent commits are also kept in
// memory (trees), so another build of the same commit runs no git at all.
type mirrors struct {
	dir   string
	open  func(dir, url string) sourceMirror
	trees *treeCache
	// caches holds the projects' compiler caches, wiped with their
	// mirror; nil: builds use none.
	caches *compilerCaches

	mu    sync.Mutex
	byURL map[string]*mirrorEntry
}

// maxKnownCommits bounds the commits remembered per mirror.
const maxKnownCommits = 1 << 12

// mirrorEntry is one mirror; mu serializes clone and fetch of the mirror.
type mirrorEntry struct {
	mu      sync.Mutex
	m       sourceMirror
	ensured bool
	commits map[string]bool
}

func newMirrors(dir string) *mirrors {
	return &mirrors{
		dir:   dir,
		open:  func(dir, url string) sourceMirror { return gitmirror.New(dir, url) },
		trees: newTreeCache(maxCachedTree, treeCacheBytes),
		byURL: map[string]*mirrorEntry{},
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
func (ms *mirrors) export(ctx context.Context, url, commit, dst string) error {
	if t := ms.trees.get(url, commit); t != nil {
		return t.Extract(ctx, dst)
	}
	ms.mu.Lock()
	e := ms.byURL[url]
	if e == nil {
		e = &mirrorEntry{m: ms.open(mirrorDir(ms.dir, url), url), commits: map[string]bool{}}
		ms.byURL[url] = e
	}
	ms.mu.Unlock()

	e.mu.Lock()
	if !e.commits[commit] {
		if !e.ensured {
			if err := e.m.Ensure(ctx); err != nil {
				e.mu.Unlock()
				return err
			}
			e.ensured = true
		}
		if err := e.m.EnsureCommit(ctx, commit); err != nil {
			e.mu.Unlock()
			return err
		}
		if len(e.commits) >= maxKnownCommits {
			clear(e.commits) // the next build of each re-checks with one git process
		}
		e.commits[commit] = true
	}
	e.mu.Unlock()
	// Exports only read the mirror; git allows that alongside a fetch.
	t, err := e.m.ExportTree(ctx, commit, dst, ms.trees.maxTree)
	if t != nil {
		ms.trees.put(url, t)
	}
	return err
}

// wipe removes url's mirror and everything kept for its project with it:
// its compiler caches. The next build of the project clones it again and
// compiles everything. (Source trees kept in memory stay: a commit's tree
// never changes.)
func (ms *mirrors) wipe(url string) error {
	ms.mu.Lock()
	e := ms.byURL[url]
	delete(ms.byURL, url)
	ms.mu.Unlock()
	if e != nil {
		e.mu.Lock() // no clone or fetch of it runs
		defer e.mu.Unlock()
	}
	err := os.RemoveAll(mirrorDir(ms.dir, url))
	if ms.caches != nil {
		err = errors.Join(err, ms.caches.wipe(url))
	}
	return err
}

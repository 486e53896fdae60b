package worker

import (
	"container/list"
	"sync"

	"github.com/kilnbuild/kiln/internal/gitmirror"
)

// Bounds of the source trees kept in memory (see treeCache).
const (
	// maxCachedTree is the largest tree kept, as git archive's tar stream.
	maxCachedTree = 1 << 20
	// treeCacheBytes bounds all kept trees together.
	treeCacheBytes = 4 << 20
)

// treeCache keeps the source trees of recently built commits in memory,
// least recently used first out, so that another build of the same commit
// (the same source with other options: Kiln's usual case) writes its source
// directory with no git process.
//
// Why: exporting starts git archive, about 1 ms of CPU per build between the
// build server and git on the project's machine, most of a no-op build's
// fetch. Only small trees are kept: for a large one, the build's own work
// dwarfs git's start, and memory at rest matters more. A commit's tree
// never changes, so a kept tree is never stale; writing it applies the same
// safety checks as an export (gitmirror.Tree.Extract).
type treeCache struct {
	maxTree, maxBytes int

	mu    sync.Mutex
	bytes int
	order *list.List // of *cachedTree, most recently used at the front
	byKey map[treeKey]*list.Element
}

// treeKey names a tree: the commit within the repository of the URL.
type treeKey struct{ url, commit string }

type cachedTree struct {
	key  treeKey
	tree *gitmirror.Tree
}

func newTreeCache(maxTree, maxBytes int) *treeCache {
	return &treeCache{maxTree: maxTree, maxBytes: maxBytes, order: list.New(), byKey: map[treeKey]*list.Element{}}
}

// get returns the kept tree of commit in url's repository, or nil.
func (c *treeCache) get(url, commit string) *gitmirror.Tree {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byKey[treeKey{url, commit}]
	if e == nil {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*cachedTree).tree
}

// put keeps t, the tree of t.Commit() in url's repository, dropping the
// least recently used trees beyond the bounds. Trees over maxTree are not
// kept.
func (c *treeCache) put(url string, t *gitmirror.Tree) {
	if t.Size() > c.maxTree || t.Size() > c.maxBytes {
		return
	}
	k := treeKey{url, t.Commit()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byKey[k]; e != nil {
		c.order.MoveToFront(e)
		return
	}
	c.byKey[k] = c.order.PushFront(&cachedTree{key: k, tree: t})
	c.bytes += t.Size()
	for c.bytes > c.maxBytes {
		last := c.order.Back()
		ct := last.Value.(*cachedTree)
		c.order.Remove(last)
		delete(c.byKey, ct.key)
		c.bytes -= ct.tree.Size()
	}
}

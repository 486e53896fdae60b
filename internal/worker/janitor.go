package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// janitor does the build server's file-system housekeeping in the
// background, off the builds' critical path: it prepares spare build
// directories (see buildDirs), preferably by recycling finished ones (see
// buildDirs.recycle), and deletes the other finished ones. Deleting a large
// tree right before the next checkout makes that checkout slow on this kind
// of file system (ENVIRONMENT.md), so discard only renames the directory into
// the trash, which is emptied here.
type janitor struct {
	trash  string
	spares *buildDirs
	log    *slog.Logger
	// mirrors, when set, are kept under their disk bound after a pass
	// (mirrors.bound), at most once per boundEvery (each check walks
	// every mirror and compiler cache); a pass that comes sooner leaves
	// the check to a later poke, timed for when it is due.
	mirrors    *mirrors
	boundEvery time.Duration
	lastBound  time.Time
	boundDue   *time.Timer
	wake       chan struct{}
	seq        atomic.Uint64

	mu sync.Mutex
	// held records, for build directories in the trash whose src holds a
	// source tree, which one (see buildDirs.recycle).
	held map[string]treeKey
}

func newJanitor(trash string, spares *buildDirs, log *slog.Logger) *janitor {
	return &janitor{trash: trash, spares: spares, log: log, wake: make(chan struct{}, 1), held: map[string]treeKey{}}
}

// discard moves dir into the trash and wakes the janitor. A missing dir is
// fine. held is the source tree dir's src holds, if any: as exported, not
// necessarily as the build left it.
func (j *janitor) discard(dir string, held treeKey) {
	dst := filepath.Join(j.trash, fmt.Sprintf("%s-%d-%d", filepath.Base(dir), time.Now().UnixNano(), j.seq.Add(1)))
	// Recorded before the rename: a janitor pass listing the trash right
	// after it must find the tree (and take the entry, never leaving it).
	if held != (treeKey{}) {
		j.mu.Lock()
		j.held[dst] = held
		j.mu.Unlock()
	}
	if err := os.Rename(dir, dst); err != nil {
		j.takeHeld(dst)
		if !os.IsNotExist(err) {
			j.log.Warn("cannot move build directory to trash; deleting in place", "dir", dir, "error", err)
			go os.RemoveAll(dir)
		}
		return
	}
	j.poke()
}

// takeHeld returns and forgets the source tree recorded for p.
func (j *janitor) takeHeld(p string) treeKey {
	j.mu.Lock()
	defer j.mu.Unlock()
	k := j.held[p]
	delete(j.held, p)
	return k
}

// poke asks the janitor to empty the trash.
func (j *janitor) poke() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// run, whenever poked and until ctx ends, recycles finished build
// directories into the missing spares, makes the spares still missing and
// empties the trash.
func (j *janitor) run(ctx context.Context) {
	defer func() {
		if j.boundDue != nil {
			j.boundDue.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-j.wake:
		}
		// Finished build directories become spares first (cheaper than
		// making new ones, see recycle), then the missing spares are made
		// (the next build may need one soon), then the rest is deleted.
		entries, err := os.ReadDir(j.trash)
		if err != nil {
			j.log.Warn("cannot read trash directory", "dir", j.trash, "error", err)
		}
		var rest []string
		for _, e := range entries {
			p := filepath.Join(j.trash, e.Name())
			held := j.takeHeld(p)
			if j.spares != nil && j.spares.recycle(p, held) {
				continue
			}
			rest = append(rest, p)
		}
		if j.spares != nil {
			if err := j.spares.fill(func() bool { return ctx.Err() != nil }); err != nil {
				j.log.Warn("cannot prepare a spare build directory; builds make theirs when they start", "error", err)
			}
		}
		for _, p := range rest {
			if ctx.Err() != nil {
				return
			}
			if err := os.RemoveAll(p); err != nil {
				j.log.Warn("cannot delete old build directory", "dir", filepath.Base(p), "error", err)
			}
		}
		if j.mirrors != nil && ctx.Err() == nil {
			j.boundMirrors()
		}
	}
}

// defaultBoundEvery spaces the janitor's checks of the mirrors' bound.
const defaultBoundEvery = 30 * time.Second

// boundMirrors checks the mirrors' disk bound now if the last check is
// boundEvery old, else makes sure a poke comes when it is.
func (j *janitor) boundMirrors() {
	if wait := j.boundEvery - time.Since(j.lastBound); wait > 0 {
		if j.boundDue == nil {
			j.boundDue = time.AfterFunc(wait, j.poke)
		}
		return
	}
	if j.boundDue != nil {
		j.boundDue.Stop()
		j.boundDue = nil
	}
	j.lastBound = time.Now()
	if _, err := j.mirrors.bound(); err != nil {
		j.log.Warn("keeping the source mirrors and compiler caches under their bound", "error", err)
	}
}

package worker

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/kilnbuild/kiln/internal/sandbox"
)

// projectDisk is what one project keeps on a build server between
// builds: its mirror and its compiler caches.
type projectDisk struct {
	key   string
	bytes int64
	// used is when a build of it last started (its mirror's modification
	// time, see markUsed), or its caches' when it has no mirror.
	used time.Time
}

// bound wipes the least recently built projects (mirror and compiler
// caches, see wipeKey) until the mirrors and the compiler caches take at
// most maxBytes together, and returns the keys it wiped. A project with
// an export under way or a compiler cache in use is never chosen, so a
// running build is never the one that pays; when those alone are over the
// bound, it stays over until they end. The janitor calls it after each of
// its passes (around every build), off the builds' path: it walks the
// mirrors and caches to size them.
func (ms *mirrors) bound() ([]string, error) {
	if ms.maxBytes <= 0 {
		return nil, nil
	}
	byKey := map[string]*projectDisk{}
	var errs []error
	scan := func(root string) {
		entries, err := os.ReadDir(root)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			return
		}
		for _, e := range entries {
			if !e.IsDir() || !isProjectKey(e.Name()) {
				continue // a clone under way (.KEY.clone-*), a cache being removed
			}
			fi, err := e.Info()
			if err != nil {
				continue
			}
			p := byKey[e.Name()]
			if p == nil {
				p = &projectDisk{key: e.Name()}
				byKey[e.Name()] = p
			}
			n, err := sandbox.DiskUsage(filepath.Join(root, e.Name()))
			if err != nil {
				errs = append(errs, err)
			}
			p.bytes += n
			if fi.ModTime().After(p.used) {
				p.used = fi.ModTime()
			}
		}
	}
	scan(ms.dir)
	if ms.caches != nil {
		scan(ms.caches.root)
	}
	var total int64
	projects := make([]*projectDisk, 0, len(byKey))
	for _, p := range byKey {
		total += p.bytes
		projects = append(projects, p)
	}
	if total <= ms.maxBytes {
		return nil, errors.Join(errs...)
	}
	sort.Slice(projects, func(i, j int) bool { return projects[i].used.Before(projects[j].used) })
	var wiped []string
	for _, p := range projects {
		if total <= ms.maxBytes {
			break
		}
		if ms.busy(p.key) {
			continue
		}
		if err := ms.wipeKey(p.key); err != nil {
			errs = append(errs, err)
			continue
		}
		total -= p.bytes
		wiped = append(wiped, p.key)
		ms.log.Info("source mirror and compiler caches wiped: over the disk bound, least recently built",
			"project_key", p.key, "bytes", p.bytes, "last_build", p.used.UTC().Format(time.RFC3339), "bound_bytes", ms.maxBytes)
	}
	if total > ms.maxBytes {
		ms.log.Warn("mirrors and compiler caches stay over their bound: the rest is in use", "bytes", total, "bound_bytes", ms.maxBytes)
	}
	return wiped, errors.Join(errs...)
}

// busy reports whether the project key has an export under way or a
// compiler cache in use.
func (ms *mirrors) busy(key string) bool {
	ms.mu.Lock()
	n := ms.exporting[key]
	ms.mu.Unlock()
	return n > 0 || (ms.caches != nil && ms.caches.busy(key))
}

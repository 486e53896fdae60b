package server

import (
	"context"
	"errors"
	"sort"

	"github.com/kilnbuild/kiln/internal/store"
)

// measureCache sums the distinct blobs the cache references, at start.
func (s *Server) measureCache() error {
	var total, entries int64
	seen := map[string]bool{}
	err := s.st.View(func(tx store.Tx) error {
		return tx.Artifacts(func(a *store.Artifact) error {
			entries++
			if sha := a.GetArtifact().GetSha256(); !seen[sha] {
				seen[sha] = true
				total += int64(a.GetArtifact().GetSize())
			}
			return nil
		})
	})
	s.cacheBytes.Store(total)
	s.cacheEntries.Store(entries)
	return err
}

// cacheAdded accounts for a new artifact and evicts when over the limit.
func (s *Server) cacheAdded(size int64) {
	s.cacheEntries.Add(1)
	if s.cacheBytes.Add(size) > s.cfg.CacheMaxBytes && s.cfg.CacheMaxBytes > 0 {
		if s.evicting.CompareAndSwap(false, true) {
			go func() {
				defer s.evicting.Store(false)
				if err := s.evict(); err != nil {
					s.log.Error("cache eviction failed", "err", err)
				}
			}()
		}
	}
}

// evict removes least recently used unpinned artifacts until the cache fits
// CacheMaxBytes. A blob shared by several entries, or by a pinned one, is
// deleted only with its last reference; pinned entries are never evicted.
func (s *Server) evict() error {
	var all []*store.Artifact
	refs := map[string]int{}
	sizes := map[string]int64{}
	pinned := map[string]bool{}
	err := s.st.View(func(tx store.Tx) error {
		return tx.Artifacts(func(a *store.Artifact) error {
			sha := a.GetArtifact().GetSha256()
			all = append(all, a)
			refs[sha]++
			sizes[sha] = int64(a.GetArtifact().GetSize())
			if len(a.GetPins()) > 0 {
				pinned[sha] = true
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	var total int64
	for _, n := range sizes {
		total += n
	}
	sort.Slice(all, func(i, j int) bool { return all[i].GetLastUsed().AsTime().Before(all[j].GetLastUsed().AsTime()) })
	var victims []*store.Artifact
	for _, a := range all {
		if total <= s.cfg.CacheMaxBytes {
			break
		}
		sha := a.GetArtifact().GetSha256()
		if len(a.GetPins()) > 0 || pinned[sha] {
			continue
		}
		victims = append(victims, a)
		refs[sha]--
		if refs[sha] == 0 {
			total -= sizes[sha]
		}
	}
	if len(victims) == 0 {
		s.cacheBytes.Store(total)
		return nil
	}
	// The snapshot may be stale by now: inside the commit, spare a victim
	// that was pinned or used since, and keep its blob.
	spared := map[string]bool{}
	err = s.commits.wait(func(tx store.Tx) error {
		// A change may run again after a full disk: undo what a previous
		// run counted.
		for _, v := range victims {
			if spared[v.GetCacheKey()] {
				refs[v.GetArtifact().GetSha256()]--
			}
		}
		clear(spared)
		for _, v := range victims {
			cur, err := tx.Artifact(v.GetCacheKey())
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if len(cur.GetPins()) > 0 || !cur.GetLastUsed().AsTime().Equal(v.GetLastUsed().AsTime()) {
				spared[v.GetCacheKey()] = true
				refs[v.GetArtifact().GetSha256()]++
				continue
			}
			if err := tx.DeleteArtifact(v.GetCacheKey()); err != nil {
				return err
			}
		}
		for _, v := range victims {
			if sha := v.GetArtifact().GetSha256(); refs[sha] == 0 && !spared[v.GetCacheKey()] {
				if err := s.blobs.delete(tx, sha); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	evicted := 0
	unreferenced := map[string]bool{}
	for _, v := range victims {
		if spared[v.GetCacheKey()] {
			continue
		}
		evicted++
		sha := v.GetArtifact().GetSha256()
		if refs[sha] == 0 {
			unreferenced[sha] = true
		}
		s.log.Info("artifact evicted", "build_id", v.GetBuildId(), "sha256", sha, "size", v.GetArtifact().GetSize(),
			"last_used", v.GetLastUsed().AsTime())
	}
	// The files go through the collector, which checks again that nothing
	// names them, not even an upload of the same content just now.
	if _, err := s.collect(context.Background(), unreferenced); err != nil {
		s.log.Warn("deleting evicted artifact files", "err", err)
	}
	s.cacheBytes.Store(total)
	s.cacheEntries.Add(-int64(evicted))
	s.metrics.evicted.Add(float64(evicted))
	return nil
}

package server

import (
	"context"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/kilnbuild/kiln/internal/store"
)

// Large artifacts are files, placed when their upload completes and before
// the result that names them commits. A file nothing names any more is
// garbage: an upload whose result never came (the attempt was lost or
// failed), or the blob of an evicted cache entry. The collector deletes such
// files; it never deletes one that
//   - a cache entry names (pinned ones included: a pin names its entry),
//   - was uploaded within pendingTTL (its result may still come; after a
//     restart, a file modified within pendingTTL stands for that), or
//   - is being uploaded again right now: commitFile holds gcMu shared from
//     placing a file until it is marked recent, and a deletion holds gcMu
//     exclusively from its checks until the file is gone, so a blob an
//     upload just reused is never deleted under it.

// collectEvery is how often the collector looks for unreferenced files.
const collectEvery = pendingTTL

// collect deletes the file artifacts among candidates (all files when nil)
// that nothing names, and returns how many it deleted. Files modified within
// pendingTTL are kept as well when considering all files.
func (s *Server) collect(ctx context.Context, candidates map[string]bool) (int, error) {
	a := s.blobs
	if candidates == nil {
		var err error
		candidates, err = a.oldFiles(ctx, s.now().Add(-pendingTTL))
		if err != nil {
			return 0, err
		}
	}
	if len(candidates) == 0 {
		return 0, nil
	}
	a.gcMu.Lock()
	defer a.gcMu.Unlock()
	// The uploads pending as of now: one whose result commits after the
	// snapshot below leaves recent (committed) while its cache entry is not
	// in the snapshot, so it must be spared by this copy.
	a.mu.Lock()
	pending := make(map[string]bool, len(a.recent))
	for sha := range a.recent {
		pending[sha] = true
	}
	a.mu.Unlock()
	err := s.st.View(func(tx store.Tx) error {
		return tx.Artifacts(func(e *store.Artifact) error {
			delete(candidates, e.GetArtifact().GetSha256())
			for _, sha := range e.GetKeptSha256() {
				delete(candidates, sha) // a dispute's other results (verify.go)
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	deleted := 0
	for sha := range candidates {
		if pending[sha] || a.uploadedRecently(sha) {
			continue
		}
		if err := a.deleteFile(ctx, sha); err != nil {
			s.log.Warn("deleting an unreferenced artifact file", "sha256", sha, "err", err)
			continue
		}
		deleted++
	}
	return deleted, nil
}

// collectFirst is when the collector first runs after start: soon, but
// not in the way of the restore and of the build servers reconnecting.
const collectFirst = time.Minute

// collectLoop runs the collector when first fires (collectFirst after
// start), then every collectEvery.
func (s *Server) collectLoop(ctx context.Context, first clockwork.Timer) {
	select {
	case <-ctx.Done():
		first.Stop()
		return
	case <-first.Chan():
	}
	tick := s.clock.NewTicker(collectEvery)
	defer tick.Stop()
	for {
		n, err := s.collect(ctx, nil)
		if err != nil {
			s.log.Error("collecting unreferenced artifact files", "err", err)
		} else if n > 0 {
			s.log.Info("unreferenced artifact files deleted", "files", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.Chan():
		}
	}
}

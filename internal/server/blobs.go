package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/store"
)

// artifactStore keeps artifacts by sha256: large ones as files in the
// blob store (Config.OpenBlobs; streamed, durable on upload), small ones
// inline in the store, written in the same transaction that records the
// successful result that names them.
//
// Why inline: a no-op or typical small build would otherwise pay for a temp
// file, a rename into a shared directory and two fsyncs per artifact, which
// bounded the metaserver at about a thousand builds a second (BENCHMARKS.md).
// A small upload is verified and held in memory until its result commits;
// if the metaserver dies in between, nothing was acknowledged (the result
// was not), and the resent result finds no artifact and the build runs again.
//
// It is the only user of the blob store in package server: sessions,
// downloads and the collector go through its methods.
type artifactStore struct {
	files     cas.BlobStore
	st        store.Store
	inlineMax int64
	// clock times pending and recent uploads (the server's clock).
	clock clockwork.Clock

	mu           sync.Mutex
	pending      map[string]pendingBlob
	pendingBytes int64
	// recent holds the file artifacts uploaded within pendingTTL whose
	// results have not committed (they may still come): the collector never
	// deletes them.
	recent map[string]time.Time

	// gcMu orders deleting a file against uploading the same content:
	// commitFile holds it shared from placing the file until it is marked
	// recent, a deletion holds it exclusively from its checks until the
	// file is gone (see blobgc.go).
	gcMu sync.RWMutex
}

// pendingBlob is a verified small upload waiting for its result's commit.
type pendingBlob struct {
	data []byte
	at   time.Time
}

// pendingTTL bounds how long an upload whose result never came is kept.
const pendingTTL = 10 * time.Minute

// maxPendingBytes bounds the memory held by small uploads awaiting their
// result; beyond it uploads are refused (ResourceExhausted) until results
// commit or uploads expire.
const maxPendingBytes = 256 << 20

// errPendingFull is returned by receive when maxPendingBytes would be exceeded.
var errPendingFull = errors.New("too many uploads are waiting for their results")

func newArtifactStore(files cas.BlobStore, st store.Store, inlineMax int64, clock clockwork.Clock) *artifactStore {
	return &artifactStore{files: files, st: st, inlineMax: inlineMax, clock: clockOrReal(clock),
		pending: map[string]pendingBlob{}, recent: map[string]time.Time{}}
}

// maxInlineResult is the largest artifact a build server may send inside its
// AttemptResult (Welcome.max_inline_artifact_bytes): what the store keeps
// inline, within a quarter of the largest message; 0 when the store keeps
// every artifact as a file.
func (s *Server) maxInlineResult() int64 {
	return max(0, min(s.cfg.InlineArtifactBytes, MaxMessageBytes/4))
}

// inline reports whether an artifact of size bytes is kept in the store.
func (a *artifactStore) inline(size uint64) bool { return int64(size) <= a.inlineMax }

// receive stores an upload of a small artifact: data must hash to sha and
// have exactly size bytes (cas.ErrMismatch otherwise).
func (a *artifactStore) receive(sha string, size uint64, data []byte) error {
	if err := checkData(sha, size, data); err != nil {
		return err
	}
	return a.keep(sha, data, false)
}

// checkData verifies that data hashes to sha and has exactly size bytes
// (cas.ErrMismatch otherwise).
func checkData(sha string, size uint64, data []byte) error {
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != sha || uint64(len(data)) != size {
		return fmt.Errorf("%w: got sha256 %s and %d bytes, declared %s and %d", cas.ErrMismatch, got, len(data), sha, size)
	}
	return nil
}

// keep holds verified data until its result commits. Beyond
// maxPendingBytes it fails with errPendingFull, unless force: data that came
// with its result is committed right away, so it does not wait for a result
// that may never come.
func (a *artifactStore) keep(sha string, data []byte, force bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.pending[sha]; !ok && !force && a.pendingBytes+int64(len(data)) > maxPendingBytes {
		return errPendingFull
	}
	if old, ok := a.pending[sha]; ok {
		a.pendingBytes -= int64(len(old.data))
	}
	a.pending[sha] = pendingBlob{data: data, at: a.clock.Now()}
	a.pendingBytes += int64(len(data))
	return nil
}

// pendingData returns a verified upload not yet committed, or nil.
func (a *artifactStore) pendingData(sha string) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pending[sha].data
}

// committed forgets a pending upload once its result's transaction holds
// it: a small one's bytes, a large one's mark as recently uploaded (the cache
// entry protects its file from now on).
func (a *artifactStore) committed(sha string) {
	a.mu.Lock()
	if p, ok := a.pending[sha]; ok {
		a.pendingBytes -= int64(len(p.data))
		delete(a.pending, sha)
	}
	delete(a.recent, sha)
	a.mu.Unlock()
}

// expire drops pending uploads whose result never came, and forgets file
// uploads as recent after the same time.
func (a *artifactStore) expire(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for sha, p := range a.pending {
		if now.Sub(p.at) > pendingTTL {
			a.pendingBytes -= int64(len(p.data))
			delete(a.pending, sha)
		}
	}
	for sha, at := range a.recent {
		if now.Sub(at) > pendingTTL {
			delete(a.recent, sha)
		}
	}
}

// createFile starts a large upload, to be finished by commitFile or
// aborted.
func (a *artifactStore) createFile(ctx context.Context) (cas.BlobWriter, error) {
	return a.files.Create(ctx)
}

// commitFile finishes a large upload: the blob is verified and made
// durable (see cas.BlobWriter.Commit), then marked recently uploaded, with
// no deletion of the same content in between.
func (a *artifactStore) commitFile(ctx context.Context, w cas.BlobWriter, wantSHA256 string, wantSize int64) (string, int64, error) {
	a.gcMu.RLock()
	defer a.gcMu.RUnlock()
	sha, size, err := w.Commit(ctx, wantSHA256, wantSize)
	if err != nil {
		return sha, size, err
	}
	a.mu.Lock()
	a.recent[sha] = a.clock.Now()
	a.mu.Unlock()
	return sha, size, nil
}

// uploadedRecently reports whether sha was uploaded as a file within
// pendingTTL.
func (a *artifactStore) uploadedRecently(sha string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.recent[sha]
	return ok
}

// statTx is stat inside an open transaction (never open a second one from
// within a read: a remap by a concurrent commit would wait for the first
// while the second waits for the remap).
func (a *artifactStore) statTx(ctx context.Context, tx store.Tx, sha string) (int64, error) {
	if data := a.pendingData(sha); data != nil {
		return int64(len(data)), nil
	}
	data, err := tx.Blob(sha)
	if err == nil {
		return int64(len(data)), nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return 0, err
	}
	return a.files.Stat(ctx, sha)
}

// stat returns the size of a stored (or pending) artifact, cas.ErrNotFound
// when there is none.
func (a *artifactStore) stat(ctx context.Context, sha string) (int64, error) {
	if data := a.pendingData(sha); data != nil {
		return int64(len(data)), nil
	}
	size := int64(-1)
	err := a.st.View(func(tx store.Tx) error {
		data, err := tx.Blob(sha)
		if err == nil {
			size = int64(len(data))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if size >= 0 {
		return size, nil
	}
	return a.files.Stat(ctx, sha)
}

// open returns a reader of a committed artifact. Its content is verified:
// a corrupt inline artifact fails at open, a corrupt file at EOF, both with
// an error wrapping cas.ErrCorrupt.
func (a *artifactStore) open(ctx context.Context, sha string) (io.ReadCloser, int64, error) {
	var data []byte
	err := a.st.View(func(tx store.Tx) error {
		var err error
		data, err = tx.Blob(sha)
		if errors.Is(err, store.ErrNotFound) {
			data = nil
			return nil
		}
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if data == nil {
		return a.files.Open(ctx, sha)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != sha {
		return nil, 0, fmt.Errorf("%w: inline artifact %s", cas.ErrCorrupt, sha)
	}
	return io.NopCloser(bytes.NewReader(data)), int64(len(data)), nil
}

// delete removes an artifact wherever it is kept.
func (a *artifactStore) delete(tx store.Tx, sha string) error {
	if err := tx.DeleteBlob(sha); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// deleteFile removes a file artifact unconditionally (a corrupt one); an
// artifact that merely lost its references goes through collect.
func (a *artifactStore) deleteFile(ctx context.Context, sha string) error {
	if err := a.files.Delete(ctx, sha); err != nil && !errors.Is(err, cas.ErrNotFound) {
		return err
	}
	return nil
}

// oldFiles returns the file artifacts last written before cutoff.
func (a *artifactStore) oldFiles(ctx context.Context, cutoff time.Time) (map[string]bool, error) {
	old := map[string]bool{}
	err := a.files.Walk(ctx, func(sha string, mod time.Time) error {
		if mod.Before(cutoff) {
			old[sha] = true
		}
		return nil
	})
	return old, err
}

// close closes the blob store.
func (a *artifactStore) close() error { return a.files.Close() }

package server

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/store/bolt"
)

// recordingBlobs is a cas.BlobStore decorator that counts walks and closes.
type recordingBlobs struct {
	cas.BlobStore
	walks, closes atomic.Int32
}

func (r *recordingBlobs) Walk(ctx context.Context, fn func(string, time.Time) error) error {
	r.walks.Add(1)
	return r.BlobStore.Walk(ctx, fn)
}

func (r *recordingBlobs) Close() error {
	r.closes.Add(1)
	return r.BlobStore.Close()
}

func TestConfig_OpenBlobs_IsTheServersBlobStoreAndStopClosesIt(t *testing.T) {
	dir := t.TempDir()
	if err := DataDirReady(dir); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(dir, "kiln.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := &recordingBlobs{}
	opened := 0
	srv, err := Open(Config{DataDir: dir, OpenBlobs: func() (cas.BlobStore, error) {
		opened++
		files, err := cas.Open(t.TempDir()) // not DataDir/blobs
		rec.BlobStore = files
		return rec, err
	}}, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.collect(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if opened != 1 || rec.walks.Load() != 1 || rec.closes.Load() != 1 {
		t.Errorf("opened %d times, walked %d, closed %d; want 1 each", opened, rec.walks.Load(), rec.closes.Load())
	}
}

func TestOpen_BlobStoreFails_OpenFailsWithItsError(t *testing.T) {
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "kiln.db"), bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	boom := errors.New("bucket unreachable")
	_, err = Open(Config{DataDir: dir, OpenBlobs: func() (cas.BlobStore, error) { return nil, boom }}, st)
	if !errors.Is(err, boom) {
		t.Fatalf("Open = %v, want it to wrap %v", err, boom)
	}
}

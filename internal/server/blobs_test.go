package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
)

func newTestArtifacts(t *testing.T) (*artifactStore, store.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "kiln.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	files, err := cas.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return newArtifactStore(files, st, 1024, nil), st
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestASmallUploadIsHeldUntilCommittedThenServedFromTheStore(t *testing.T) {
	a, st := newTestArtifacts(t)
	data := []byte("a small artifact")
	sha := digest(data)
	if !a.inline(uint64(len(data))) || a.inline(2048) {
		t.Fatal("inline threshold not applied")
	}
	if err := a.receive(sha, uint64(len(data)), data); err != nil {
		t.Fatal(err)
	}
	if n, err := a.stat(t.Context(), sha); err != nil || n != int64(len(data)) {
		t.Fatalf("pending stat = %d, %v", n, err)
	}
	if _, _, err := a.open(t.Context(), sha); !errors.Is(err, cas.ErrNotFound) {
		t.Fatalf("an uncommitted upload was served: %v", err)
	}
	if err := st.Update(func(tx store.Tx) error { return tx.PutBlob(sha, a.pendingData(sha)) }); err != nil {
		t.Fatal(err)
	}
	a.committed(sha)
	if a.pendingData(sha) != nil {
		t.Fatal("committed upload still pending")
	}
	r, n, err := a.open(t.Context(), sha)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("open = %d, %v", n, err)
	}
	got, _ := io.ReadAll(r)
	if string(got) != string(data) {
		t.Fatalf("read %q", got)
	}
}

func TestAMismatchedSmallUploadIsRefused(t *testing.T) {
	a, _ := newTestArtifacts(t)
	data := []byte("payload")
	if err := a.receive(digest([]byte("other")), uint64(len(data)), data); !errors.Is(err, cas.ErrMismatch) {
		t.Fatalf("wrong digest: %v", err)
	}
	if err := a.receive(digest(data), uint64(len(data))+1, data); !errors.Is(err, cas.ErrMismatch) {
		t.Fatalf("wrong size: %v", err)
	}
	if _, err := a.stat(t.Context(), digest(data)); err == nil {
		t.Fatal("a refused upload is visible")
	}
}

func TestACorruptInlineArtifactIsDetectedAtOpen(t *testing.T) {
	a, st := newTestArtifacts(t)
	data := []byte("bytes that will rot")
	sha := digest(data)
	if err := st.Update(func(tx store.Tx) error { return tx.PutBlob(sha, []byte("bytes that did rot!")) }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.open(t.Context(), sha); !errors.Is(err, cas.ErrCorrupt) {
		t.Fatalf("corrupt inline artifact: %v", err)
	}
	if err := st.Update(func(tx store.Tx) error { return a.delete(tx, sha) }); err != nil {
		t.Fatal(err)
	}
	if _, err := a.stat(t.Context(), sha); !errors.Is(err, cas.ErrNotFound) {
		t.Fatalf("deleted artifact: %v", err)
	}
}

func TestPendingUploadsWithoutAResultExpire(t *testing.T) {
	a, _ := newTestArtifacts(t)
	data := []byte("orphan")
	if err := a.receive(digest(data), uint64(len(data)), data); err != nil {
		t.Fatal(err)
	}
	a.expire(time.Now().Add(pendingTTL / 2))
	if a.pendingData(digest(data)) == nil {
		t.Fatal("expired too early")
	}
	a.expire(time.Now().Add(pendingTTL + time.Minute))
	if a.pendingData(digest(data)) != nil {
		t.Fatal("orphaned upload kept forever")
	}
}

package server

import (
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/cas/s3blob"
	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// The collector on an S3 blob store (a real versitygw): it spares what a
// cache entry names and what was uploaded recently by the store's clock,
// and deletes only an old orphan.
func TestTheCollectorOnS3DeletesOnlyWhatNothingNames(t *testing.T) {
	srv := farmtest.StartS3(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	spool := t.TempDir()
	ts := startTestServer(t, Config{OpenBlobs: func() (cas.BlobStore, error) {
		s, err := s3blob.Open(t.Context(), srv.URL("kiln-gc"), s3blob.Options{SpoolDir: spool})
		if err != nil {
			return nil, err
		}
		return s, nil
	}})
	put := func(content string) string {
		t.Helper()
		w, err := ts.srv.blobs.files.Create(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
		sha, _, err := w.Commit(t.Context(), "", -1)
		if err != nil {
			t.Fatal(err)
		}
		return sha
	}
	named, orphan := put("named by a cache entry"), put("an upload whose result never came")
	if err := ts.st.Update(func(tx store.Tx) error {
		return tx.PutArtifact(&store.Artifact{CacheKey: "k1", SourceKey: "s1", BuildId: 1,
			Artifact: &kilnv1.Artifact{Sha256: named, Size: uint64(len("named by a cache entry"))}})
	}); err != nil {
		t.Fatal(err)
	}
	// A walk of the whole bucket spares both: just uploaded, by the
	// store's LastModified.
	if n, err := ts.srv.collect(t.Context(), nil); err != nil || n != 0 {
		t.Fatalf("collect of fresh objects = %d, %v; want none deleted", n, err)
	}
	// Handed both as old (what eviction and the age filter do), it
	// deletes only the orphan.
	if n, err := ts.srv.collect(t.Context(), map[string]bool{named: true, orphan: true}); err != nil || n != 1 {
		t.Fatalf("collect = %d, %v; want exactly the orphan deleted", n, err)
	}
	if !gcStored(ts, named) || gcStored(ts, orphan) {
		t.Fatalf("named stored %v (want true), orphan stored %v (want false)", gcStored(ts, named), gcStored(ts, orphan))
	}
}

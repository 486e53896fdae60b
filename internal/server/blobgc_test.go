package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// blobDir is the test server's blob store, the default directory.
func blobDir(ts *testServer) *cas.Store { return ts.srv.blobs.files.(*cas.Store) }

// gcPut stores content as a file artifact, last modified age ago.
func gcPut(t *testing.T, ts *testServer, content string, age time.Duration) string {
	t.Helper()
	sha, _, err := blobDir(ts).Put(t.Context(), bytes.NewReader([]byte(content)), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Now().Add(-age)
	if err := os.Chtimes(filepath.Join(blobDir(ts).Dir(), sha[:2], sha), when, when); err != nil {
		t.Fatal(err)
	}
	return sha
}

func gcStored(ts *testServer, sha string) bool {
	_, err := ts.srv.blobs.files.Stat(context.Background(), sha)
	return err == nil
}

func TestTheCollectorDeletesOnlyFilesNothingNames(t *testing.T) {
	ts := startTestServer(t, Config{})
	old := 2 * pendingTTL
	named := gcPut(t, ts, "named by a cache entry", old)
	orphan := gcPut(t, ts, "an upload whose result never came", old)
	fresh := gcPut(t, ts, "uploaded a minute ago, result may still come", time.Minute)
	reused := gcPut(t, ts, "old, but uploaded again just now", old)

	err := ts.st.Update(func(tx store.Tx) error {
		return tx.PutArtifact(&store.Artifact{CacheKey: "k1", SourceKey: "s1", BuildId: 1,
			Artifact: &kilnv1.Artifact{Sha256: named, Size: uint64(len("named by a cache entry"))}})
	})
	if err != nil {
		t.Fatal(err)
	}
	// The same content uploaded again goes through commitFile.
	w, err := ts.srv.blobs.createFile(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "old, but uploaded again just now")
	if _, _, err := ts.srv.blobs.commitFile(t.Context(), w, reused, -1); err != nil {
		t.Fatal(err)
	}

	n, err := ts.srv.collect(t.Context(), nil)
	if err != nil || n != 1 {
		t.Fatalf("collect = %d, %v; want exactly the orphan deleted", n, err)
	}
	for sha, want := range map[string]bool{named: true, orphan: false, fresh: true, reused: true} {
		if gcStored(ts, sha) != want {
			t.Errorf("%s stored = %v, want %v", sha[:12], !want, want)
		}
	}

	// Uploading it again marked the file written now (cas), which also
	// spares it across a restart.
	fi, err := os.Stat(filepath.Join(blobDir(ts).Dir(), reused[:2], reused))
	if err != nil || time.Since(fi.ModTime()) > time.Minute {
		t.Fatalf("the re-uploaded file: %v, modified %v; want modified now", err, fi.ModTime())
	}
	// Once the upload is neither recent nor new, and still unnamed, it goes.
	when := time.Now().Add(-2 * pendingTTL)
	if err := os.Chtimes(filepath.Join(blobDir(ts).Dir(), reused[:2], reused), when, when); err != nil {
		t.Fatal(err)
	}
	ts.srv.blobs.expire(time.Now().Add(pendingTTL + time.Minute))
	if n, err := ts.srv.collect(t.Context(), nil); err != nil || n != 1 || gcStored(ts, reused) {
		t.Fatalf("second collect = %d, %v; the expired upload stored: %v", n, err, gcStored(ts, reused))
	}
}

// Eviction hands its files to the collector, which keeps one whose content
// was uploaded again meanwhile (a new build with the same bytes).
func TestAnEvictedFileUploadedAgainMeanwhileIsKept(t *testing.T) {
	ts := startTestServer(t, Config{})
	sha := gcPut(t, ts, "evicted, but rebuilt with the same bytes", 2*pendingTTL)
	w, err := ts.srv.blobs.createFile(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "evicted, but rebuilt with the same bytes")
	if _, _, err := ts.srv.blobs.commitFile(t.Context(), w, sha, -1); err != nil {
		t.Fatal(err)
	}
	if n, err := ts.srv.collect(t.Context(), map[string]bool{sha: true}); err != nil || n != 0 || !gcStored(ts, sha) {
		t.Fatalf("collect of a just re-uploaded blob = %d, %v; stored %v", n, err, gcStored(ts, sha))
	}
}

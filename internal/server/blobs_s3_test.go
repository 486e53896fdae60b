package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/cas/s3blob"
	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// An artifact in an S3 bucket (a real versitygw), uploaded through the
// server's blob store and so remembered as verified, is served; once its
// bytes rot under the store (metadata and mtime kept, so the identity still
// matches), the download that checks the remembered CRC-32C ends in
// DataLoss, never in a clean end of stream, and the artifact is discarded.
func TestDownloadArtifact_OnS3_RotUnderARememberedVerificationIsDataLoss(t *testing.T) {
	srv := farmtest.StartS3(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	data := make([]byte, 3<<20) // above the inline threshold: in the bucket
	rand.Read(data)
	rec := succeededBuild(1, "good", data)
	bb := rec.GetBuild()
	seed := func(tx store.Tx) error {
		if err := tx.CreateBuildServer(&store.BuildServer{Name: "good", TokenHash: "hash-good"}); err != nil {
			return err
		}
		if err := tx.PutBuild(rec); err != nil {
			return err
		}
		return tx.PutArtifact(&store.Artifact{CacheKey: bb.GetCacheKey(), SourceKey: rec.GetSourceKey(), BuildId: bb.GetId(),
			Artifact: bb.GetArtifact(), Platform: bb.GetPlatform(), CreatedAt: bb.GetFinishedAt(), LastUsed: bb.GetFinishedAt()})
	}
	spool := t.TempDir()
	ts := startSeededServer(t, Config{OpenBlobs: func() (cas.BlobStore, error) {
		s, err := s3blob.Open(t.Context(), srv.URL("kiln-dl"), s3blob.Options{SpoolDir: spool})
		if err != nil {
			return nil, err
		}
		return s, nil
	}}, seed)
	w, err := ts.srv.blobs.files.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.Commit(t.Context(), digest(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}

	download := func() ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := kilnv1.NewCompileServiceClient(ts.conn).DownloadArtifact(ctx, &kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: 1}})
		if err != nil {
			return nil, err
		}
		var got []byte
		for range 10000 {
			msg, err := st.Recv()
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			if err != nil {
				return got, err
			}
			got = append(got, msg.GetData()...)
		}
		return got, errors.New("stream never ended")
	}
	if got, err := download(); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download of the intact artifact: %d bytes, %v; want all %d", len(got), err, len(data))
	}

	path := filepath.Join(srv.Dir, "kiln-dl", "blobs", digest(data))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("versitygw's file of the artifact: %v", err)
	}
	rot := bytes.Clone(data)
	rot[len(rot)-10] ^= 0x01
	if err := os.WriteFile(path, rot, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if _, err := download(); status.Code(err) != codes.DataLoss {
		t.Fatalf("download of the rotten artifact ended with %v, want DataLoss", err)
	}
	// Discarded: the cache entry and the object are gone.
	if _, err := ts.srv.blobs.files.Stat(t.Context(), digest(data)); !errors.Is(err, cas.ErrNotFound) {
		t.Fatalf("the rotten object after the download: %v, want ErrNotFound", err)
	}
	if _, err := download(); status.Code(err) == codes.OK {
		t.Fatal("the discarded artifact was served again")
	}
}

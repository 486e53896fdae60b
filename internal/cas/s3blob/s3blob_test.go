package s3blob_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/cas/castest"
	"github.com/kilnbuild/kiln/internal/cas/s3blob"
	"github.com/kilnbuild/kiln/internal/farmtest"
)

// rawClient talks to srv directly, behind the store's back.
func rawClient(t *testing.T, srv *farmtest.S3Server) *minio.Client {
	t.Helper()
	c, err := minio.New(strings.TrimPrefix(srv.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBlobStoreSuite(t *testing.T) {
	srv := farmtest.StartS3(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	raw := rawClient(t, srv)
	n := 0
	castest.Run(t, func(t *testing.T) castest.Harness {
		n++
		bucket := fmt.Sprintf("suite-%d", n)
		spool := t.TempDir()
		s, err := s3blob.Open(t.Context(), srv.URL(bucket)+"&region=us-east-1", s3blob.Options{SpoolDir: spool})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			s.Close()
			// Every Commit and Abort removed its spool file.
			if left, _ := os.ReadDir(spool); len(left) != 0 {
				t.Errorf("spool files left: %d", len(left))
			}
		})
		return castest.Harness{Store: s, ModTimeGrain: 1e9, Overwrite: func(t *testing.T, sha string, data []byte) {
			if _, err := raw.PutObject(context.Background(), bucket, "blobs/"+sha, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
				t.Fatal(err)
			}
		}}
	})
}

func TestOpen_WrongCredentialsAreRefused(t *testing.T) {
	srv := farmtest.StartS3(t)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
	if _, err := s3blob.Open(t.Context(), srv.URL("kiln"), s3blob.Options{}); err == nil {
		t.Fatal("Open with a wrong secret succeeded")
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want s3blob.Location
		bad  bool
	}{
		{url: "s3://b?endpoint=http://127.0.0.1:9000", want: s3blob.Location{Bucket: "b", Endpoint: "http://127.0.0.1:9000", PathStyle: true}},
		{url: "s3://b/some/prefix/?endpoint=https://s3.example&region=eu&path-style=false", want: s3blob.Location{Bucket: "b", Prefix: "some/prefix", Endpoint: "https://s3.example", Region: "eu"}},
		{url: "s3://b", want: s3blob.Location{Bucket: "b"}},
		{url: "http://b", bad: true},
		{url: "s3:///x", bad: true},
		{url: "s3://b?endpoint=ftp://x", bad: true},
		{url: "s3://b?endpiont=http://x", bad: true},
	} {
		got, err := s3blob.ParseURL(tc.url)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseURL(%q) = %+v, want an error", tc.url, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.url, got, err, tc.want)
		}
	}
}

func TestStore_PrefixKeepsStoresApart(t *testing.T) {
	srv := farmtest.StartS3(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	u := srv.URL("shared")
	a, err := s3blob.Open(t.Context(), strings.Replace(u, "shared?", "shared/a?", 1), s3blob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s3blob.Open(t.Context(), strings.Replace(u, "shared?", "shared/b?", 1), s3blob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := a.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("in a")); err != nil {
		t.Fatal(err)
	}
	sha, _, err := w.Commit(t.Context(), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(t.Context(), sha); !errors.Is(err, cas.ErrNotFound) {
		t.Fatalf("Stat in the other prefix: %v, want ErrNotFound", err)
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kilnbuild/kiln/internal/cas/s3blob"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
)

// checkPostgres runs `metaserver check --store URL [--blobs s3://…]`:
// pgstore.Check in one read-only snapshot, beside a running metaserver or
// not. Exit 0: consistent; 2: not (or a schema this build cannot read);
// 1: the database or bucket cannot be read.
func checkPostgres(storeURL, blobsURL string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	var opts pgstore.CheckOptions
	if blobsURL != "" {
		blob, closeBlobs, err := s3Stat(ctx, blobsURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "metaserver check:", err)
			return 1
		}
		defer closeBlobs()
		opts.Blob = blob
	}
	rep, err := pgstore.Check(ctx, storeURL, opts)
	switch {
	case refused(err):
		fmt.Fprintf(os.Stderr, "metaserver check: %v\nNothing was changed. Restore the last backup (docs/deploy.md, \"Backups\") into an empty schema with `metaserver restore --store URL FILE`.\n", err)
		return 2
	case err != nil:
		fmt.Fprintf(os.Stderr, "metaserver check: %v\n", err)
		return 1
	}
	blobs := fmt.Sprintf("%d named blobs outside the store found in the bucket", rep.BlobsVerified)
	if rep.BlobsUnchecked {
		blobs = fmt.Sprintf("%d named blobs outside the store not looked for (give --blobs)", rep.BlobsOutside)
	}
	fmt.Printf("%s (schema %s, version %d): ok (%d builds, %d requests, %d artifacts, %d inline blobs, %d log entries, %d records; %s) in %s\n",
		redactURL(storeURL), rep.Schema, rep.Version, rep.Builds, rep.Requests, rep.Artifacts, rep.InlineBlobs, rep.TlogEntries, rep.Records,
		blobs, time.Since(start).Round(time.Millisecond))
	return 0
}

// s3Stat returns the Stat of the bucket blobsURL names, for a check: it
// first makes sure the bucket exists, since s3blob.Open would create a
// missing one and a check never writes.
func s3Stat(ctx context.Context, blobsURL string) (func(context.Context, string) error, func(), error) {
	loc, err := s3blob.ParseURL(blobsURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--blobs: %w", err)
	}
	host, secure := "s3.amazonaws.com", true
	if loc.Endpoint != "" {
		e, _ := url.Parse(loc.Endpoint)
		host, secure = e.Host, e.Scheme == "https"
	}
	lookup := minio.BucketLookupAuto
	if loc.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(host, &minio.Options{Creds: credentials.NewEnvAWS(), Secure: secure, Region: loc.Region, BucketLookup: lookup})
	if err != nil {
		return nil, nil, fmt.Errorf("--blobs: %w", err)
	}
	ok, err := c.BucketExists(ctx, loc.Bucket)
	if err != nil {
		return nil, nil, fmt.Errorf("bucket %s at %s: %w", loc.Bucket, host, err)
	}
	if !ok {
		return nil, nil, fmt.Errorf("bucket %s at %s does not exist", loc.Bucket, host)
	}
	spool, err := os.MkdirTemp("", "kiln-check-")
	if err != nil {
		return nil, nil, err
	}
	s, err := s3blob.Open(ctx, blobsURL, s3blob.Options{SpoolDir: spool})
	if err != nil {
		os.RemoveAll(spool)
		return nil, nil, err
	}
	stat := func(ctx context.Context, sha string) error { _, err := s.Stat(ctx, sha); return err }
	return stat, func() { s.Close(); os.RemoveAll(spool) }, nil
}

// backupPostgres runs `metaserver backup --store URL FILE`: a pg_dump
// archive of the store's schema (pgstore.Backup), consistent while
// metaservers write.
func backupPostgres(storeURL, dest string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Hour)
	defer cancel()
	start := time.Now()
	rep, err := pgstore.Backup(ctx, storeURL, dest)
	switch {
	case errors.Is(err, fs.ErrExist):
		fmt.Fprintf(os.Stderr, "metaserver backup: %s already exists; a backup never replaces a file\n", dest)
		return 2
	case refused(err) || errors.Is(err, pgstore.ErrNoStore):
		fmt.Fprintf(os.Stderr, "metaserver backup: refusing the store: %v\n", err)
		return 2
	case err != nil:
		fmt.Fprintln(os.Stderr, "metaserver backup:", err)
		return 1
	}
	fmt.Printf("%s: %d bytes, pg_dump archive of schema %s (%d tables), read back, in %s\n", dest, rep.Bytes, rep.Schema, rep.Tables, time.Since(start).Round(time.Millisecond))
	return 0
}

// restoreCommand runs `metaserver restore --store URL FILE`: FILE, a
// backup's pg_dump archive, into the empty schema URL names, in one
// transaction, then a check. A bbolt store is restored by copying its
// backup file (README, "Backup and restore").
func restoreCommand(args []string) int {
	fs := flag.NewFlagSet("metaserver restore", flag.ContinueOnError)
	storeURL := fs.String("store", "", "postgres:// URL of the store to create from FILE: an empty (or missing) schema, named as the backup's")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *storeURL == "" || fs.NArg() != 1 {
		fmt.Fprintf(os.Stderr, "metaserver restore: needs --store URL and FILE (a bbolt backup is restored by copying it to DIR/kiln.db)\n%s", usage)
		return 2
	}
	if err := checkStoreURL(*storeURL); err != nil {
		fmt.Fprintln(os.Stderr, "metaserver restore:", err)
		return 2
	}
	src, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "metaserver restore:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Hour)
	defer cancel()
	start := time.Now()
	rep, err := pgstore.Restore(ctx, *storeURL, src)
	if err != nil {
		fmt.Fprintln(os.Stderr, "metaserver restore:", err)
		if refused(err) || errors.Is(err, pgstore.ErrRestoreRefused) {
			return 2
		}
		return 1
	}
	fmt.Printf("%s restored into %s (schema %s) and checked: %d builds, %d requests, %d artifacts, %d log entries, in %s\n",
		src, redactURL(*storeURL), rep.Schema, rep.Builds, rep.Requests, rep.Artifacts, rep.TlogEntries, time.Since(start).Round(time.Millisecond))
	return 0
}

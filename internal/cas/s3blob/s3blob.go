// Package s3blob implements cas.BlobStore on an S3-compatible object store
// (AWS S3, versitygw, SeaweedFS, Garage, Ceph RGW, ...), through minio-go.
//
// # Layout
//
//	s3://BUCKET/PREFIX
//	  PREFIX/blobs/<sha256>   one object per blob, named by its lowercase
//	                          hex sha256
//
// # Guarantees (cas.BlobStore's, kept on a remote store)
//
//   - Verified reads. Open's reader ends with an error wrapping
//     cas.ErrCorrupt, instead of io.EOF, when the bytes differ in length
//     from the size Open returned or do not match what was verified: their
//     sha256 against the object's name, or, for an object whose verification
//     is remembered (below), their CRC-32C against the verified content's.
//   - Remembered verifications. As the directory store does (cas.Memo),
//     the store remembers a blob whose content it verified with sha256 (by
//     uploading it, or by a read that hashed it whole), together with the
//     object's identity: bucket, key, size, ETag, Last-Modified, version id
//     and the checksums the store keeps of it (versitygw and AWS S3 compute
//     a full-object CRC64NVME of every object). A later read whose HEAD
//     shows the same identity, within cas.DefaultReverifyAfter, checks the
//     CRC-32C of what it reads instead of sha256, and fetches the object
//     with If-Match on that ETag. Any PUT through the S3 API, by anyone,
//     gives the object a new Last-Modified (to the second) and an ETag
//     computed by the store from the new bytes (their MD5, or the MD5 of
//     their parts' MD5s), so a replacement is hashed with sha256 again and,
//     unless it is the very content, refused. A change below the API (bit
//     rot, a torn write, an edit of the store's own files) leaves the
//     identity and changes the bytes: the CRC-32C catches every accidental
//     one. What a remembered verification cannot catch is a change crafted
//     to keep ETag, checksums and CRC-32C alike, made in the same second as
//     the verified upload, or made below the API by someone with write
//     access to the store's disks: that needs an MD5 collision prepared with
//     whoever uploaded the original bytes, or the store's own disks: the
//     same attack that stays possible on the directory store by whoever may
//     write its files. A negative Options.ReverifyAfter hashes every read with
//     sha256. The memo is saved at Close to Options.MemoPath, a local file
//     (never the bucket, which whoever may change objects may change too).
//   - No partial objects. A BlobWriter writes to a temporary file in
//     Options.SpoolDir (hashing as it goes) and Commit uploads the whole
//     file with one PutObject (multipart for large ones) only after the
//     digest and size were checked: S3 makes an object visible only once
//     its upload completed, so Stat, Open and Walk never see a partial
//     blob, and a failed or refused Commit leaves nothing in the bucket.
//     The upload is signed with its payload's sha256 (minio-go over plain
//     HTTP) or sent over TLS, so the store refuses bytes damaged on the
//     way. Committing content already stored uploads it again: the same
//     bytes, and a fresh LastModified for the collector's grace period.
//   - Deletion only by Delete. Nothing here deletes on its own. Walk
//     reports each object's LastModified, stamped by the store's clock:
//     keep the store's and the metaserver's clocks in step (NTP), as the
//     collector spares blobs younger than its grace period by that time.
//
// Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
// AWS_SESSION_TOKEN), as every S3 client reads them.
package s3blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kilnbuild/kiln/internal/cas"
)

var _ cas.BlobStore = (*Store)(nil)

// Options tune Open.
type Options struct {
	// SpoolDir holds blobs being written before their upload; "" is the
	// system's temporary directory. It needs room for the largest
	// artifacts uploaded at once.
	SpoolDir string
	// Creds overrides the credentials read from the environment.
	Creds *credentials.Credentials
	// MemoPath is the local file keeping the remembered verifications
	// across a restart (loaded by Open, saved by Close, in cas.Memo's
	// format); "" remembers them in memory only.
	MemoPath string
	// ReverifyAfter is how long a remembered verification is trusted: 0 is
	// cas.DefaultReverifyAfter, a negative value remembers nothing (every
	// read is hashed with sha256).
	ReverifyAfter time.Duration
}

// Store is a cas.BlobStore in one bucket. Safe for concurrent use.
type Store struct {
	c      *minio.Client
	bucket string
	prefix string // "" or ending with "/"; objects are prefix+"blobs/"+sha
	spool  string
	memo   *cas.Memo
	// memoPath is Options.MemoPath.
	memoPath string
	// hashed counts the bytes hashed with sha256 on read, for tests.
	hashed atomic.Int64
}

// Location is what an s3:// URL names.
type Location struct {
	Bucket, Prefix string
	// Endpoint is the store's base URL (http or https); "" is AWS S3.
	Endpoint string
	// Region is the bucket's region ("" lets the client find it).
	Region string
	// PathStyle forces path-style requests (most self-hosted stores need
	// them; AWS uses virtual-hosted style).
	PathStyle bool
}

// ParseURL parses s3://BUCKET[/PREFIX][?endpoint=URL&region=R]. An
// endpoint given implies path-style requests unless path-style=false.
func ParseURL(raw string) (Location, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, fmt.Errorf("s3blob: %w", err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return Location{}, fmt.Errorf("s3blob: %q is not s3://BUCKET[/PREFIX]?endpoint=URL", raw)
	}
	q := u.Query()
	loc := Location{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Endpoint: q.Get("endpoint"), Region: q.Get("region")}
	for k := range q {
		switch k {
		case "endpoint", "region", "path-style":
		default:
			return Location{}, fmt.Errorf("s3blob: unknown parameter %q in %q (known: endpoint, region, path-style)", k, raw)
		}
	}
	if loc.Endpoint != "" {
		e, err := url.Parse(loc.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" {
			return Location{}, fmt.Errorf("s3blob: endpoint %q is not an http(s) URL", loc.Endpoint)
		}
		loc.PathStyle = q.Get("path-style") != "false"
	}
	return loc, nil
}

// Open connects to the bucket that rawURL (see ParseURL) names, creating it
// when it does not exist, and returns the store.
func Open(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	loc, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	host, secure := "s3.amazonaws.com", true
	if loc.Endpoint != "" {
		e, _ := url.Parse(loc.Endpoint)
		host, secure = e.Host, e.Scheme == "https"
	}
	creds := opts.Creds
	if creds == nil {
		creds = credentials.NewEnvAWS()
	}
	lookup := minio.BucketLookupAuto
	if loc.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: loc.Region, BucketLookup: lookup})
	if err != nil {
		return nil, fmt.Errorf("s3blob: %w", err)
	}
	ok, err := c.BucketExists(ctx, loc.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3blob: bucket %s at %s: %w", loc.Bucket, host, err)
	}
	if !ok {
		if err := c.MakeBucket(ctx, loc.Bucket, minio.MakeBucketOptions{Region: loc.Region}); err != nil {
			return nil, fmt.Errorf("s3blob: creating bucket %s at %s: %w", loc.Bucket, host, err)
		}
	}
	prefix := loc.Prefix
	if prefix != "" {
		prefix += "/"
	}
	s := &Store{c: c, bucket: loc.Bucket, prefix: prefix, spool: opts.SpoolDir, memo: cas.NewMemo(), memoPath: opts.MemoPath}
	switch {
	case opts.ReverifyAfter < 0:
		s.memo.SetReverifyAfter(0)
	case opts.ReverifyAfter > 0:
		s.memo.SetReverifyAfter(opts.ReverifyAfter)
	}
	if s.memoPath != "" {
		// A damaged or unreadable file only means hashing again.
		_ = s.memo.Load(s.memoPath)
	}
	return s, nil
}

// key is the object name of blob sha.
func (s *Store) key(sha string) string { return s.prefix + "blobs/" + sha }

// check fails a done ctx first, then an invalid digest.
func check(ctx context.Context, sha string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !cas.ValidDigest(sha) {
		if len(sha) > 80 {
			sha = sha[:80] + "…"
		}
		return fmt.Errorf("%w: %q", cas.ErrInvalidDigest, sha)
	}
	return nil
}

// missing reports whether err is the store saying the object is absent.
func missing(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusNotFound || r.Code == "NoSuchKey"
}

// Stat returns the size of blob sha, or an error wrapping cas.ErrNotFound.
// It does not verify the content.
func (s *Store) Stat(ctx context.Context, sha string) (int64, error) {
	if err := check(ctx, sha); err != nil {
		return 0, err
	}
	info, err := s.c.StatObject(ctx, s.bucket, s.key(sha), minio.StatObjectOptions{})
	if missing(err) {
		return 0, fmt.Errorf("%w: %s", cas.ErrNotFound, sha)
	}
	if err != nil {
		return 0, fmt.Errorf("s3blob: stat %s: %w", sha, err)
	}
	return info.Size, nil
}

// Delete removes blob sha, or returns an error wrapping cas.ErrNotFound.
func (s *Store) Delete(ctx context.Context, sha string) error {
	if _, err := s.Stat(ctx, sha); err != nil {
		return err
	}
	s.memo.Forget(sha)
	if err := s.c.RemoveObject(ctx, s.bucket, s.key(sha), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("s3blob: delete %s: %w", sha, err)
	}
	return nil
}

// Walk calls fn with the digest and LastModified of every blob under the
// store's prefix, until fn returns an error (which Walk returns). Objects
// whose names are not digests are skipped.
func (s *Store) Walk(ctx context.Context, fn func(sha string, modTime time.Time) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing when fn ends the walk early
	dir := s.prefix + "blobs/"
	for obj := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: dir, Recursive: true}) {
		if obj.Err != nil {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fmt.Errorf("s3blob: walk: %w", obj.Err)
		}
		sha := strings.TrimPrefix(obj.Key, dir)
		if !cas.ValidDigest(sha) {
			continue
		}
		if err := fn(sha, obj.LastModified); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Close saves the remembered verifications to Options.MemoPath, if set;
// the client holds only idle connections.
func (s *Store) Close() error {
	if s.memoPath == "" {
		return nil
	}
	return s.memo.Save(s.memoPath, "")
}

// Open returns a reader of blob sha that verifies it (see the package doc),
// with its size, or an error wrapping cas.ErrNotFound. ctx bounds opening
// only; Close ends the download.
func (s *Store) Open(ctx context.Context, sha string) (io.ReadCloser, int64, error) {
	if err := check(ctx, sha); err != nil {
		return nil, 0, err
	}
	began := s.memo.Now()
	info, err := s.c.StatObject(ctx, s.bucket, s.key(sha), minio.StatObjectOptions{Checksum: true})
	if missing(err) {
		return nil, 0, fmt.Errorf("%w: %s", cas.ErrNotFound, sha)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("s3blob: stat %s: %w", sha, err)
	}
	id := s.identity(info)
	var opts minio.GetObjectOptions
	if info.ETag != "" {
		// The bytes of the object the HEAD described, or a failed read.
		if err := opts.SetMatchETag(info.ETag); err != nil {
			return nil, 0, fmt.Errorf("s3blob: open %s: %w", sha, err)
		}
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	obj, err := s.c.GetObject(dctx, s.bucket, s.key(sha), opts)
	if err != nil {
		cancel()
		return nil, 0, fmt.Errorf("s3blob: open %s: %w", sha, err)
	}
	r := newVerifier(s, obj, cancel, sha, info.Size)
	r.id, r.began = id, began
	r.wantCRC, r.trusted = s.memo.Trusted(sha, id)
	if r.trusted {
		r.h = nil
	}
	return r, info.Size, nil
}

// identity names the state of the object info describes, for the memo:
// every PUT of the object changes it (see the package doc). The bucket and
// key are part of it, so a memo never vouches for another bucket's object.
func (s *Store) identity(info minio.ObjectInfo) string {
	return strings.Join([]string{"s3", s.bucket, info.Key, strconv.FormatInt(info.Size, 10), info.ETag,
		strconv.FormatInt(info.LastModified.UnixNano(), 10), info.VersionID,
		info.ChecksumCRC64NVME, info.ChecksumCRC32C, info.ChecksumCRC32, info.ChecksumSHA256, info.ChecksumSHA1}, "\x00")
}

// errClosed is returned by a reader used after Close.
var errClosed = errors.New("s3blob: reader closed")

package s3blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/farmtest"
)

// memoFarm is a versitygw, the bucket's name and a client behind the
// stores' back.
type memoFarm struct {
	srv    *farmtest.S3Server
	bucket string
	raw    *minio.Client
}

func startMemoFarm(t *testing.T) *memoFarm {
	t.Helper()
	srv := farmtest.StartS3(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	raw, err := minio.New(strings.TrimPrefix(srv.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return &memoFarm{srv: srv, bucket: "memo", raw: raw}
}

// open opens a store on the farm's bucket, as a metaserver does, with its
// memo in memoPath ("" for none).
func (f *memoFarm) open(t *testing.T, memoPath string) *Store {
	t.Helper()
	s, err := Open(t.Context(), f.srv.URL(f.bucket)+"&region=us-east-1", Options{SpoolDir: t.TempDir(), MemoPath: memoPath})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// put writes a random blob of n bytes through s.
func put(t *testing.T, s *Store, n int) (string, []byte) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	sha, _, err := w.Commit(t.Context(), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	return sha, data
}

// read reads blob sha whole through s and returns its bytes, the bytes
// hashed with sha256 meanwhile, and the reader's final error (nil for a
// verified read).
func read(t *testing.T, s *Store, sha string) ([]byte, int64, error) {
	t.Helper()
	before := s.hashed.Load()
	r, _, err := s.Open(t.Context(), sha)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	return got, s.hashed.Load() - before, err
}

// rawPut writes data as blob sha's object behind the store's back.
func (f *memoFarm) rawPut(t *testing.T, sha string, data []byte) {
	t.Helper()
	if _, err := f.raw.PutObject(context.Background(), f.bucket, "blobs/"+sha, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestStore_ReadAfterUploadChecksCRCInsteadOfSHA256(t *testing.T) {
	f := startMemoFarm(t)
	s := f.open(t, "")
	for _, n := range []int{1 << 20, 40 << 20} { // one PUT, and a multipart upload
		sha, data := put(t, s, n)
		for i := range 2 {
			got, hashed, err := read(t, s, sha)
			if err != nil || !bytes.Equal(got, data) || hashed != 0 {
				t.Fatalf("%d bytes, read %d after the upload: %d bytes back, %d hashed with sha256, %v; want the blob, none hashed", n, i, len(got), hashed, err)
			}
		}
	}
	// A store that did not upload it hashes its first read, then remembers.
	other := f.open(t, "")
	sha, data := put(t, s, 3<<20)
	for i, want := range []int64{int64(len(data)), 0} {
		if got, hashed, err := read(t, other, sha); err != nil || !bytes.Equal(got, data) || hashed != want {
			t.Fatalf("read %d by another store: %d bytes, hashed %d, %v; want the blob, hashed %d", i, len(got), hashed, err, want)
		}
	}
}

func TestStore_ObjectReplacedThroughTheAPIIsHashedAndRefused(t *testing.T) {
	f := startMemoFarm(t)
	s := f.open(t, "")
	sha, data := put(t, s, 2<<20)
	if _, hashed, err := read(t, s, sha); err != nil || hashed != 0 {
		t.Fatalf("read after upload: hashed %d, %v; want a trusted read", hashed, err)
	}
	// Another party with the bucket's credentials puts other bytes of the
	// same size under the same key.
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 1
	f.rawPut(t, sha, bad)
	got, hashed, err := read(t, s, sha)
	if !errors.Is(err, cas.ErrCorrupt) || hashed != int64(len(data)) {
		t.Fatalf("read of a replaced object: %v after hashing %d bytes; want ErrCorrupt from sha256 over all %d", err, hashed, len(data))
	}
	if bytes.Equal(got, data) {
		t.Fatal("the replaced object read back as the original")
	}
	// Put back with the right bytes (a new identity again), it is hashed
	// once, found intact, and trusted from then on.
	f.rawPut(t, sha, data)
	for i, want := range []int64{int64(len(data)), 0} {
		if _, hashed, err := read(t, s, sha); err != nil || hashed != want {
			t.Fatalf("read %d of the restored object: hashed %d, %v; want hashed %d", i, hashed, err, want)
		}
	}
}

// Bit rot under the store: the bytes in versitygw's directory change, its
// metadata (ETag, checksum, Last-Modified: the file's mtime, put back)
// does not, so the identity still matches what was verified. The CRC-32C
// check of the trusted read refuses it.
func TestStore_BitRotUnderATrustedObjectIsCorrupt(t *testing.T) {
	f := startMemoFarm(t)
	s := f.open(t, "")
	sha, data := put(t, s, 1<<20)
	path := filepath.Join(f.srv.Dir, f.bucket, "blobs", sha)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("versitygw's file of the object: %v", err)
	}
	rot := bytes.Clone(data)
	rot[12345] ^= 0x10
	if err := os.WriteFile(path, rot, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	_, hashed, err := read(t, s, sha)
	if !errors.Is(err, cas.ErrCorrupt) || hashed != 0 {
		t.Fatalf("trusted read of a rotten object: %v after hashing %d bytes; want ErrCorrupt from the CRC-32C, none hashed", err, hashed)
	}
	// Found corrupt, it is forgotten: the next read hashes, and refuses.
	if _, hashed, err := read(t, s, sha); !errors.Is(err, cas.ErrCorrupt) || hashed != int64(len(data)) {
		t.Fatalf("read after the mismatch: %v after hashing %d bytes; want ErrCorrupt from sha256", err, hashed)
	}
}

// The corruption is reported at the end of the stream, never as io.EOF,
// however the reader consumes it: a consumer that stops early has no
// verdict, one that reads on gets the error.
func TestStore_TrustedReadOfAShortenedObjectNeverEndsWithEOF(t *testing.T) {
	f := startMemoFarm(t)
	s := f.open(t, "")
	sha, data := put(t, s, 1<<20)
	path := filepath.Join(f.srv.Dir, f.bucket, "blobs", sha)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Truncated behind the store's back, its metadata left alone.
	if err := os.Truncate(path, int64(len(data)-100)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	r, _, err := s.Open(t.Context(), sha)
	if err != nil {
		return // refused at once: fine
	}
	defer r.Close()
	buf := make([]byte, 64<<10)
	for range 1000 {
		_, err = r.Read(buf)
		if err != nil {
			break
		}
	}
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read of a truncated trusted object ended with %v, want an error other than io.EOF", err)
	}
}

func TestStore_MemoSurvivesAGracefulRestart(t *testing.T) {
	f := startMemoFarm(t)
	memo := filepath.Join(t.TempDir(), "blobs-verified.memo")
	s := f.open(t, memo)
	sha, data := put(t, s, 2<<20)
	replaced, rdata := put(t, s, 1<<20)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Replaced while the metaserver was down.
	bad := bytes.Clone(rdata)
	bad[0] ^= 0xff
	f.rawPut(t, replaced, bad)

	restarted := f.open(t, memo)
	if got, hashed, err := read(t, restarted, sha); err != nil || hashed != 0 || !bytes.Equal(got, data) {
		t.Fatalf("first read after a restart: hashed %d, %v; want the blob with none hashed", hashed, err)
	}
	if _, hashed, err := read(t, restarted, replaced); !errors.Is(err, cas.ErrCorrupt) || hashed != int64(len(rdata)) {
		t.Fatalf("read of an object replaced while stopped: %v after hashing %d; want ErrCorrupt from sha256", err, hashed)
	}
	// A damaged memo file is ignored whole: every blob is hashed again.
	if err := os.WriteFile(memo, []byte("kiln-cas-memo 2\nnot really"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, hashed, err := read(t, f.open(t, memo), sha); err != nil || hashed != int64(len(data)) {
		t.Fatalf("read with a damaged memo: hashed %d, %v; want a clean sha256 read", hashed, err)
	}
}

func TestStore_ReverifyAfterNegativeHashesEveryRead(t *testing.T) {
	f := startMemoFarm(t)
	s, err := Open(t.Context(), f.srv.URL(f.bucket)+"&region=us-east-1", Options{SpoolDir: t.TempDir(), ReverifyAfter: -1})
	if err != nil {
		t.Fatal(err)
	}
	sha, data := put(t, s, 1<<20)
	for i := range 2 {
		if _, hashed, err := read(t, s, sha); err != nil || hashed != int64(len(data)) {
			t.Fatalf("read %d: hashed %d, %v; want every byte", i, hashed, err)
		}
	}
}

// The replacement an attacker would craft against a CRC: other bytes of the
// same size and the same CRC-32C, put through the API. What refuses it is
// the identity (a new ETag and Last-Modified): the read hashes with sha256.
func TestStore_ReplacementKeepingTheCRCIsHashedAndRefused(t *testing.T) {
	f := startMemoFarm(t)
	s := f.open(t, "")
	sha, data := put(t, s, 1<<20)
	bad := sameCRC(t, data)
	f.rawPut(t, sha, bad)
	got, hashed, err := read(t, s, sha)
	if !errors.Is(err, cas.ErrCorrupt) || hashed != int64(len(data)) {
		t.Fatalf("read of a CRC-preserving replacement: %v after hashing %d bytes; want ErrCorrupt from sha256 over all %d", err, hashed, len(data))
	}
	if !bytes.Equal(got, bad) {
		t.Fatal("the test did not read the replacement")
	}
}

// The HEAD that found the object trusted and the GET that reads its bytes
// are two requests: an object replaced between them, by other bytes of the
// same size and CRC-32C, must not be read as the verified blob: the GET
// is conditional on the HEAD's ETag (If-Match), and fails.
func TestStore_ReplacementBetweenHeadAndGetIsRefused(t *testing.T) {
	f := startMemoFarm(t)
	s := f.open(t, "")
	sha, data := put(t, s, 1<<20)
	r, _, err := s.Open(t.Context(), sha)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	bad := sameCRC(t, data)
	f.rawPut(t, sha, bad)
	got, err := io.ReadAll(r)
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read of an object replaced after its HEAD ended cleanly (%d bytes, same as replacement: %v)", len(got), bytes.Equal(got, bad))
	}
	t.Log(err)
}

// sameCRC returns data with one bit flipped in its middle and its last four
// bytes changed so that the CRC-32C is unchanged (CRC is linear: the 32
// bits of the tail can cancel any change).
func sameCRC(t *testing.T, data []byte) []byte {
	t.Helper()
	n := len(data)
	zero := make([]byte, n)
	base := crc32.Checksum(zero, castagnoli)
	delta := func(pos int, bit uint) uint32 { // the CRC change of flipping one bit
		zero[pos] ^= 1 << bit
		d := crc32.Checksum(zero, castagnoli) ^ base
		zero[pos] ^= 1 << bit
		return d
	}
	want := delta(n/2, 3)
	// Solve sum of x_j * col_j = want over GF(2), j the 32 bits of the tail.
	var cols [32]uint32
	for j := range cols {
		cols[j] = delta(n-4+j/8, uint(j%8))
	}
	var pick [32]uint32 // which tail bits make up each reduced column
	for j := range pick {
		pick[j] = 1 << j
	}
	row := 0
	for bit := 31; bit >= 0 && row < 32; bit-- {
		p := -1
		for j := row; j < 32; j++ {
			if cols[j]>>bit&1 == 1 {
				p = j
				break
			}
		}
		if p < 0 {
			continue
		}
		cols[row], cols[p] = cols[p], cols[row]
		pick[row], pick[p] = pick[p], pick[row]
		for j := range 32 {
			if j != row && cols[j]>>bit&1 == 1 {
				cols[j] ^= cols[row]
				pick[j] ^= pick[row]
			}
		}
		row++
	}
	var x uint32
	for j := range row { // cols[j] now has a single leading bit each
		for bit := 31; bit >= 0; bit-- {
			if cols[j]>>bit&1 == 1 {
				if want>>bit&1 == 1 {
					x ^= pick[j]
				}
				break
			}
		}
	}
	bad := bytes.Clone(data)
	bad[n/2] ^= 1 << 3
	for j := range 32 {
		if x>>j&1 == 1 {
			bad[n-4+j/8] ^= 1 << (j % 8)
		}
	}
	if crc32.Checksum(bad, castagnoli) != crc32.Checksum(data, castagnoli) || bytes.Equal(bad, data) {
		t.Fatal("sameCRC: could not forge the CRC-32C")
	}
	return bad
}

// Package cas stores blobs by their sha256 in a local directory, in the style
// of Buildbarn's bb-storage: content-addressed, verified while written and
// while read, streamed so memory does not grow with blob size.
//
// # Layout
//
//	dir/
//	  tmp/                blobs being written; emptied by Open
//	  ab/
//	    abcdef0123…       one file per blob, named by its lowercase hex sha256,
//	                      in a shard directory named by the first two digits
//
// # Writing
//
// [Store.Create] returns a [Writer] that hashes while it writes to a temporary
// file. [Writer.Commit] checks the expected digest and size, fsyncs the file,
// links it into place (never replacing an existing blob) and fsyncs the shard
// directory, so a blob whose Commit returned nil survives a crash. A blob is
// either absent or complete: readers never see a partial blob.
//
// # Reading
//
// The reader returned by [Store.Open] hashes what it reads, and at end of
// file returns an error wrapping [ErrCorrupt] instead of io.EOF when the file
// no longer matches its name (disk corruption, truncation, tampering).
// Consumers must therefore not trust or act on the bytes until Read has
// returned io.EOF: a streaming server should fail the stream (and a client
// discard what it got) on any other error. [Store.Verify] checks a blob
// without a consumer.
//
// Every read is verified, but a blob file found intact, by a read that
// hashed it completely or by the Writer that hashed and placed it, is
// remembered with its file identity (inode, size, modification and change
// times) and its CRC-32C; reads of the same unchanged file within
// [DefaultReverifyAfter] check that CRC-32C instead of sha256, which catches
// what a disk does to a file at a twentieth of the cost. So the first read
// after an upload already takes the cheap path. A file changed in any way,
// or changed by someone else too shortly before a read's verification to be
// told apart by the file system's clock, is hashed with sha256 again
// (memo.go explains the rules).
//
// # Other backends
//
// [BlobStore] is the interface the metaserver uses, with a context on every
// method; [Store] is its directory implementation, and package s3blob its
// S3 one, keeping the guarantees written there: verified reads, no partial
// blob, deletion only when asked (package castest checks both). The
// remembered verifications are a [Memo], which s3blob keeps too, with the
// object store's metadata (ETag, Last-Modified, checksums) as the identity,
// and saves in the same file format ([Memo.Save], [Memo.Load]).
//
// # Concurrency
//
// A Store is safe for concurrent use; concurrent writers of the same content
// all succeed and leave one file. One process at a time may use a directory:
// Open removes every temporary file, including another process's.
package cas

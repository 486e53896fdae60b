package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout this package reads and writes (see the bucket
// tree in db.go).
//
//   - 1: the first layout.
//   - 2: builds_active_by_source/ dropped. Nothing on a hot path read it (the
//     metaserver keeps its active builds in memory), yet it cost every build
//     two writes to a random leaf page (its key starts with a sha256), an
//     insert when queued and a delete when final.
//   - 3: logs/ added: small attempt logs, kept with the attempt's end
//     instead of one file each (the upgrade creates the bucket).
//   - 4: samples/ (the overview's charts: a bounded time series) and
//     request_groups/ (one summary mail per group of requests) added; the
//     upgrade creates both buckets, empty.
//   - 5: operators/ added: the people or organisations behind build-server
//     credentials (the upgrade creates the bucket). Build servers stored
//     before have no operator: each is its own implicit operator
//     (docs/trust.md), so nothing is rewritten.
//   - 6: tlog_entries/ and tlog_hashes/ added: the transparency log (the
//     upgrade creates the buckets; meta/"tlog_size" absent means 0).
const SchemaVersion = 6

// Bucket names. See the bucket tree in db.go.
var (
	bucketMeta                = []byte("meta")
	bucketSeq                 = []byte("seq")
	bucketProjects            = []byte("projects")
	bucketBuildServers        = []byte("build_servers")
	bucketBuildServersByToken = []byte("build_servers_by_token")
	bucketBuilds              = []byte("builds")
	bucketBuildsByState       = []byte("builds_by_state")
	bucketBuildsByProject     = []byte("builds_by_project")
	bucketBuildsByArch        = []byte("builds_by_arch")
	// bucketBuildsActiveBySource existed in version 1 only.
	bucketBuildsActiveBySource = []byte("builds_active_by_source")
	bucketBuildCounts          = []byte("build_counts")
	bucketRequests             = []byte("requests")
	bucketRequestsByBuild      = []byte("requests_by_build")
	bucketArtifacts            = []byte("artifacts")
	bucketArtifactsBySource    = []byte("artifacts_by_source")
	bucketPins                 = []byte("pins")
	bucketEnrollTokens         = []byte("enroll_tokens")
	bucketBlobs                = []byte("blobs")
	bucketLogs                 = []byte("logs")
	bucketOperators            = []byte("operators")
	bucketOutbox               = []byte("outbox")
	bucketOutboxDue            = []byte("outbox_due")
	bucketSamples              = []byte("samples")
	bucketRequestGroups        = []byte("request_groups")
	bucketTlogEntries          = []byte("tlog_entries")
	bucketTlogHashes           = []byte("tlog_hashes")

	keyVersion   = []byte("version")
	keyOutboxLen = []byte("outbox_len")
	keyTlogSize  = []byte("tlog_size")
)

// buckets are the top-level buckets of SchemaVersion.
var buckets = [][]byte{
	bucketMeta, bucketSeq, bucketProjects, bucketBuildServers,
	bucketBuildServersByToken, bucketBuilds, bucketBuildsByState,
	bucketBuildsByProject, bucketBuildsByArch,
	bucketBuildCounts, bucketRequests, bucketRequestsByBuild, bucketArtifacts,
	bucketArtifactsBySource, bucketPins, bucketOutbox, bucketOutboxDue,
	bucketEnrollTokens, bucketBlobs, bucketLogs, bucketSamples, bucketRequestGroups, bucketOperators,
	bucketTlogEntries, bucketTlogHashes,
}

// SchemaVersionError is returned by Open for a file whose schema version this
// package cannot read: written by a newer Kiln, or not a Kiln store. The file
// is left untouched.
type SchemaVersionError struct {
	Path string
	// Found is the version recorded in the file.
	Found uint64
	// Supported is SchemaVersion.
	Supported uint64
}

func (e *SchemaVersionError) Error() string {
	return fmt.Sprintf("bolt: %s has schema version %d, this build supports up to %d", e.Path, e.Found, e.Supported)
}

// upgrade brings the file to SchemaVersion: a fresh file gets every bucket
// and the version key; an older file is upgraded one version at a time (the
// steps below), all in this same transaction, so a crash leaves it at its
// old version; a file at the current version gets any missing bucket
// (harmless, keeps transactions free of nil checks).
func upgrade(btx *bbolt.Tx, path string) error {
	found, err := storedVersion(btx, path)
	if err != nil {
		return err
	}
	if found == 1 {
		// 1 → 2: the active-by-source index is no longer kept.
		if err := btx.DeleteBucket(bucketBuildsActiveBySource); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return fmt.Errorf("upgrade to schema 2: drop %s: %w", bucketBuildsActiveBySource, err)
		}
	}
	for _, name := range buckets {
		if _, err := btx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if found != SchemaVersion { // fresh (0) or upgraded above
		if err := btx.Bucket(bucketMeta).Put(keyVersion, u64(SchemaVersion)); err != nil {
			return fmt.Errorf("write schema version: %w", err)
		}
	}
	return nil
}

// storedVersion returns the schema version recorded in btx, 0 for a fresh
// file (no bucket at all), and *SchemaVersionError for a version this
// package cannot read or a bbolt file that holds buckets but no Kiln
// version (another program's file, or one whose meta bucket was lost:
// upgrading it as fresh would write Kiln's buckets into it).
func storedVersion(btx *bbolt.Tx, path string) (uint64, error) {
	meta := btx.Bucket(bucketMeta)
	if meta == nil {
		if k, _ := btx.Cursor().First(); k != nil {
			return 0, &SchemaVersionError{Path: path, Found: 0, Supported: SchemaVersion}
		}
		return 0, nil
	}
	v := meta.Get(keyVersion)
	if len(v) != 8 {
		return 0, &SchemaVersionError{Path: path, Found: 0, Supported: SchemaVersion}
	}
	found := binary.BigEndian.Uint64(v)
	if found == 0 || found > SchemaVersion {
		return 0, &SchemaVersionError{Path: path, Found: found, Supported: SchemaVersion}
	}
	return found, nil
}

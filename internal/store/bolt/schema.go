package bolt

import (
	"encoding/binary"
	"fmt"

	bbolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout this package reads and writes (see the bucket
// tree in db.go).
const SchemaVersion = 1

// Bucket names. See the bucket tree in db.go.
var (
	bucketMeta                 = []byte("meta")
	bucketSeq                  = []byte("seq")
	bucketProjects             = []byte("projects")
	bucketBuildServers         = []byte("build_servers")
	bucketBuildServersByToken  = []byte("build_servers_by_token")
	bucketBuilds               = []byte("builds")
	bucketBuildsByState        = []byte("builds_by_state")
	bucketBuildsByProject      = []byte("builds_by_project")
	bucketBuildsByArch         = []byte("builds_by_arch")
	bucketBuildsActiveBySource = []byte("builds_active_by_source")
	bucketBuildCounts          = []byte("build_counts")
	bucketRequests             = []byte("requests")
	bucketRequestsByBuild      = []byte("requests_by_build")
	bucketArtifacts            = []byte("artifacts")
	bucketArtifactsBySource    = []byte("artifacts_by_source")
	bucketPins                 = []byte("pins")
	bucketEnrollTokens         = []byte("enroll_tokens")
	bucketBlobs                = []byte("blobs")
	bucketOutbox               = []byte("outbox")
	bucketOutboxDue            = []byte("outbox_due")

	keyVersion   = []byte("version")
	keyOutboxLen = []byte("outbox_len")
)

// bucketsV1 are the top-level buckets of schema version 1.
var bucketsV1 = [][]byte{
	bucketMeta, bucketSeq, bucketProjects, bucketBuildServers,
	bucketBuildServersByToken, bucketBuilds, bucketBuildsByState,
	bucketBuildsByProject, bucketBuildsByArch, bucketBuildsActiveBySource,
	bucketBuildCounts, bucketRequests, bucketRequestsByBuild, bucketArtifacts,
	bucketArtifactsBySource, bucketPins, bucketOutbox, bucketOutboxDue,
	bucketEnrollTokens, bucketBlobs,
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
// and the version key; a file at the current version gets any missing bucket
// (harmless, keeps transactions free of nil checks). Future versions add one
// step per version here, each in this same transaction.
func upgrade(btx *bbolt.Tx, path string) error {
	var found uint64
	if meta := btx.Bucket(bucketMeta); meta != nil {
		v := meta.Get(keyVersion)
		if len(v) != 8 {
			return &SchemaVersionError{Path: path, Found: 0, Supported: SchemaVersion}
		}
		found = binary.BigEndian.Uint64(v)
		if found == 0 || found > SchemaVersion {
			return &SchemaVersionError{Path: path, Found: found, Supported: SchemaVersion}
		}
	}
	for _, name := range bucketsV1 {
		if _, err := btx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if found == 0 {
		if err := btx.Bucket(bucketMeta).Put(keyVersion, u64(SchemaVersion)); err != nil {
			return fmt.Errorf("write schema version: %w", err)
		}
	}
	return nil
}

// Package store defines the metaserver's durable state: projects, build
// servers, builds with their attempts, requests, cached artifacts, pins and the
// outbox, behind a transactional interface that an embedded key-value engine
// (package store/bolt) and a SQL engine can both serve.
//
// Every state change runs in one transaction; a caller acknowledges a client
// only after Update has returned nil, at which point the change is on disk. Records returned by a read are owned by the caller but must be
// treated as immutable snapshots: change a copy (proto.Clone) and Put it.
package store

import (
	"errors"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
	kilnstorev1 "github.com/kilnbuild/kiln/proto/kilnstore/v1"
)

// ErrNotFound is returned by single-record lookups when no record has the key.
var ErrNotFound = errors.New("store: not found")

// ErrExists is returned by Create* methods when the key is taken.
var ErrExists = errors.New("store: already exists")

// ErrDamaged is wrapped by every error that says the store's file (or
// database) is not a whole, consistent store: empty where records were
// expected, truncated, or with damaged pages. An engine returns it instead
// of starting empty or crashing, and writes nothing to what it refused;
// the remedy is a restore from a backup (see README, Backup and restore).
var ErrDamaged = errors.New("store: damaged")

// ErrNoSpace is wrapped by the error of an Update that could not
// commit because the disk (or the user's quota) is full. Nothing of the
// transaction was written and the store stays usable: reads go on, and the
// same change may be committed again once space returns.
var ErrNoSpace = errors.New("store: no space left on the disk")

// Record aliases, so callers need not import the generated package.
type (
	Project     = kilnstorev1.ProjectRecord
	BuildServer = kilnstorev1.BuildServerRecord
	Build       = kilnstorev1.BuildRecord
	Request     = kilnstorev1.RequestRecord
	Artifact    = kilnstorev1.ArtifactRecord
	Pin         = kilnstorev1.PinRecord
	Outbox      = kilnstorev1.OutboxRecord
	EnrollToken = kilnstorev1.EnrollTokenRecord
	Sample      = kilnstorev1.SampleRecord
	// RequestGroup is a set of requests submitted together, mailed once.
	RequestGroup = kilnstorev1.RequestGroupRecord
	Operator     = kilnstorev1.OperatorRecord
)

// Store is a transactional store.
//
// View runs fn in a read-only transaction with a consistent snapshot.
// Update runs fn in a read-write transaction and commits (fsync) before it
// returns; if fn returns an error nothing is written. The metaserver groups
// its changes into one Update itself (server's committer, which keeps
// their order), so there is no Batch.
//
// # One writer
//
// One process at a time opens a store to write it. The metaserver keeps
// what it derives from the store in memory and trusts it without reading
// again: the next build id (the newest build's plus one; builds take no
// NextID), the queued and running builds, the cache's size. A second
// writer would make those silently wrong, so an implementation must refuse
// a second Open while one is open anywhere, not only in this process
// (bolt: the file lock, Open failing after its Timeout; pgstore: a session
// advisory lock, every Update on that session, and a writer that loses the
// session never writes again). Tools go through the writer (admin socket,
// or the endpoint a pgstore writer records) or wait until it stops.
type Store interface {
	View(fn func(Tx) error) error
	Update(fn func(Tx) error) error
	Close() error
}

// Tx is one transaction. Methods of a read-only transaction that write
// return an error. A Tx must not be used after its closure returns.
type Tx interface {
	// NextID returns the next value (starting at 1) of the named sequence,
	// created on first use. The metaserver draws "request" ids and
	// mail.OutboxSequence ("outbox") ids; build ids come from the one
	// writer's memory and attempt ids from their build's (see Store).
	NextID(sequence string) (uint64, error)

	Project(name string) (*Project, error)
	// CreateProject fails with ErrExists when the name is taken.
	CreateProject(p *Project) error
	Projects() ([]*Project, error)

	// Operator returns the operator called name (ErrNotFound when none).
	Operator(name string) (*Operator, error)
	// CreateOperator fails with ErrExists when the name is taken.
	CreateOperator(o *Operator) error
	// Operators returns every operator, ordered by name.
	Operators() ([]*Operator, error)

	BuildServer(name string) (*BuildServer, error)
	// BuildServerByTokenHash finds the build server whose credential hashes to hash.
	BuildServerByTokenHash(hash string) (*BuildServer, error)
	// CreateBuildServer fails with ErrExists when the name is taken.
	CreateBuildServer(b *BuildServer) error
	// PutBuildServer replaces an existing build server record.
	PutBuildServer(b *BuildServer) error
	BuildServers() ([]*BuildServer, error)

	Build(id uint64) (*Build, error)
	// PutBuild creates or replaces a build and keeps its indexes (by state,
	// project, arch) and the counts by state in step with it.
	PutBuild(b *Build) error
	// BuildsByState calls fn for each build in state, in ascending id order,
	// until fn returns an error (returned as is) or ErrStop (returns nil).
	BuildsByState(state kilnv1.BuildState, fn func(*Build) error) error
	// ActiveBuildsBySource returns the QUEUED and RUNNING builds with
	// sourceKey. It may read every active build: it is for tools and
	// recovery, not a hot path (the metaserver keeps active builds in memory).
	ActiveBuildsBySource(sourceKey string) ([]*Build, error)
	// ListBuilds returns up to limit builds matching f, newest first, with ids
	// below beforeID (0: from the newest).
	ListBuilds(f BuildFilter, beforeID uint64, limit int) ([]*Build, error)
	// CountBuildsByState returns how many builds are in each state.
	CountBuildsByState() (map[kilnv1.BuildState]uint64, error)

	// PutRequest creates or replaces a request, indexed by build.
	PutRequest(r *Request) error
	Request(id uint64) (*Request, error)
	// RequestsForBuild returns the requests waiting on (or answered by) a build.
	RequestsForBuild(buildID uint64) ([]*Request, error)

	// PutArtifact creates or replaces a cache entry, indexed by source key.
	PutArtifact(a *Artifact) error
	Artifact(cacheKey string) (*Artifact, error)
	// ArtifactsBySource returns the cache entries for one (project, commit, options).
	ArtifactsBySource(sourceKey string) ([]*Artifact, error)
	DeleteArtifact(cacheKey string) error
	// Artifacts calls fn for every cache entry until fn returns an error or ErrStop.
	Artifacts(fn func(*Artifact) error) error

	Pin(name string) (*Pin, error)
	// CreatePin fails with ErrExists when the name is taken: a name always
	// resolves to the same bytes.
	CreatePin(p *Pin) error
	// Pins calls fn for every pin in name order until fn returns an error
	// (returned as is) or ErrStop (returns nil).
	Pins(fn func(*Pin) error) error

	// Blob returns a small artifact stored inline by its sha256.
	Blob(sha256 string) ([]byte, error)
	// PutBlob stores a small artifact inline (idempotent).
	PutBlob(sha256 string, data []byte) error
	// DeleteBlob removes an inline artifact; ErrNotFound when absent.
	DeleteBlob(sha256 string) error

	// Log returns an attempt's whole log when it is kept in the store (a
	// small log, written when its attempt ended); ErrNotFound when not.
	Log(buildID uint64, attempt int) ([]byte, error)
	// PutLog stores an attempt's whole log (replacing any).
	PutLog(buildID uint64, attempt int, data []byte) error

	// EnrollToken finds an enrollment token by the hash of its secret.
	EnrollToken(hash string) (*EnrollToken, error)
	// CreateEnrollToken fails with ErrExists when the hash is taken.
	CreateEnrollToken(e *EnrollToken) error
	// PutEnrollToken replaces an existing enrollment token (marks it used).
	PutEnrollToken(e *EnrollToken) error

	// TlogSize returns how many entries the transparency log holds.
	TlogSize() (int64, error)
	// TlogEntry returns entry n (0-based); ErrNotFound past the end.
	TlogEntry(n int64) ([]byte, error)
	// TlogHashes returns the stored hashes at the given indexes (see
	// tlog.StoredHashIndex); ErrNotFound when one is not stored.
	TlogHashes(indexes []int64) ([]tlog.Hash, error)
	// AppendTlog adds entry n with the hashes tlog.StoredHashes computed
	// for it (stored from index tlog.StoredHashCount(n) on). n must be
	// TlogSize(): anything else is refused with ErrTlogFork and nothing is
	// written, so two appends can never make two trees.
	AppendTlog(n int64, entry []byte, hashes []tlog.Hash) error

	PutOutbox(m *Outbox) error
	// DueOutbox returns up to limit messages whose next attempt is at or before now.
	DueOutbox(now time.Time, limit int) ([]*Outbox, error)
	DeleteOutbox(id uint64) error
	// OutboxLen counts the messages waiting.
	OutboxLen() (int, error)

	// PutSample stores a sample of the farm under its time (replacing one
	// taken at the same instant) and deletes the oldest samples beyond
	// keep (at least 1), so the series stays bounded whatever the rate.
	PutSample(s *Sample, keep int) error
	// Samples calls fn for each sample taken at or after since, oldest
	// first, until fn returns an error (returned as is) or ErrStop.
	Samples(since time.Time, fn func(*Sample) error) error

	// RequestGroup finds a request group by id; ErrNotFound when none.
	RequestGroup(id string) (*RequestGroup, error)
	// PutRequestGroup creates or replaces a request group.
	PutRequestGroup(g *RequestGroup) error
	// DeleteRequestGroup removes a request group; ErrNotFound when absent.
	DeleteRequestGroup(id string) error
	// RequestGroups calls fn for every request group in id order until fn
	// returns an error or ErrStop.
	RequestGroups(fn func(*RequestGroup) error) error
}

// ErrTlogFork is returned by AppendTlog for an entry that would not
// extend the log at its end.
var ErrTlogFork = errors.New("store: transparency log append not at its end")

// ErrStop ends an iteration early without an error.
var ErrStop = errors.New("store: stop iteration")

// BuildFilter selects builds; empty fields match all.
type BuildFilter struct {
	State   kilnv1.BuildState
	Project string
	// Platform's pinned fields (canonical, as platform.Set leaves them)
	// must each equal the build's BuildPlatformValue: the built platform's
	// value, or the pinned one of a build not yet dispatched. nil matches
	// all. Only arch is indexed (BuildArch); a list selected only by other
	// fields scans builds newest first until the page is full.
	Platform *kilnv1.PlatformConstraints
}

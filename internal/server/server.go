// Package server is the metaserver: it owns the store, the blob store, the
// project mirrors and the scheduler, and serves the WorkerService (build
// servers), CompileService (requesters), StatusService (webstatus) and
// AdminService (the operator, over a unix socket).
//
// # Concurrency
//
// One mutex (Server.mu) guards the in-memory state: active builds, the
// scheduler and the sessions. Every decision is made under it and enqueued to
// the committer in the same critical section; replies and messages to build
// servers go out only after the committer has put the decision on disk. Reads
// of finished builds go straight to the store.
//
// # Build lifecycle
//
//	Submit ──▶ QUEUED ──dispatch──▶ RUNNING ──result──▶ SUCCEEDED | FAILED
//	            ▲ │                  │
//	            └─┼── lost lease, ───┘──(attempt limit)──▶ ERROR
//	              │   setup failure,      cancel ────────▶ CANCELLED
//	              │   held past its time, refusal, returned
//	              └── nothing matched for ExpireUnmatchedAfter ──▶ EXPIRED
package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/kilnbuild/kiln/internal/translog"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/sched"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// MaxMessageBytes is the largest gRPC message the metaserver receives; its
// gRPC server must be given it as grpc.MaxRecvMsgSize (the rule:
// kilnv1.MaxMessageBytes).
const MaxMessageBytes = kilnv1.MaxMessageBytes

// Config is the metaserver's behaviour; the serve command fills it from flags.
type Config struct {
	// DataDir holds kiln.db, blobs/, mirrors/, logs/ and admin.sock.
	DataDir string
	// HeartbeatInterval is how often build servers heartbeat (default 5s).
	HeartbeatInterval time.Duration
	// Lease is how long an attempt survives without a heartbeat (default 30s).
	Lease time.Duration
	// ReconnectGrace is how long the attempts of a build server whose
	// session ended (its connection closed: a crash, a kill, a reboot)
	// wait for it to reconnect and report them before they are lost and
	// their builds queued for another target (default 3s, at most Lease).
	// A build server that reconnects within it keeps its attempts, as
	// after any reconnect. A silent partition, where the connection stays
	// open without heartbeats, is bounded by Lease.
	ReconnectGrace time.Duration
	// MaxInfraAttempts is how many attempts may end for infrastructure
	// reasons (setup failure, lost lease) before the build ends as ERROR
	// (default 5). Refusals by a volunteer's policy and builds handed back
	// on a graceful stop do not count: the build waits for someone else.
	MaxInfraAttempts int
	// LossesBeforeAside puts a build server aside (no new work) for
	// AsideFor after that many attempts lost in a row: setup failures,
	// lapsed leases, reconnects without the attempt, builds held past
	// their time (defaults 3 and 5m). Each further LossesBeforeAside
	// losses without a final result in between double the time, up to 16
	// times AsideFor: a volunteer that keeps taking and losing builds
	// spends ever less of its time holding them.
	LossesBeforeAside int
	AsideFor          time.Duration
	// TimeoutGrace is added to a build's time limit (the manifest's
	// timeout) to give how long one attempt may hold it: fetching the
	// source before the steps, packing and uploading after them. Past
	// that the metaserver takes the build back, whatever the heartbeats
	// (default 5m).
	TimeoutGrace time.Duration
	// ExcludeFor is how long a build server stays excluded from one build
	// after a setup failure or a refusal there, after holding it past its
	// time, or after losing it a second time (default 10m). Exclusions
	// expire so that a build is never stuck behind its only matching
	// volunteer.
	ExcludeFor time.Duration
	// ExpireUnmatchedAfter ends a queued build EXPIRED, and mails its
	// waiters, once no connected target could take it (platform, tools,
	// policy) for this long (default 24h; negative: never). The clock
	// restarts with the metaserver.
	ExpireUnmatchedAfter time.Duration
	// MaxLogBytes caps one attempt's stored log (default 16 MiB + 64 KiB: a
	// little above the build server's own 16 MiB cap, so its truncation
	// notice is kept and the metaserver's cap only stops a misbehaving server).
	MaxLogBytes int64
	// InlineArtifactBytes: artifacts up to this size are kept inside the
	// store, committed with their result, instead of as files (default
	// 256 KiB; negative: always files).
	InlineArtifactBytes int64
	// MaxArtifactBytes caps one upload (default 4 GiB).
	MaxArtifactBytes int64
	// CacheMaxBytes bounds the artifact cache; least recently used unpinned
	// artifacts are evicted past it (0: unbounded).
	CacheMaxBytes int64
	// RequestsPerMinute bounds the requests one email address may make per
	// minute (burst of the same size); 0 means the default 30, negative none.
	RequestsPerMinute int
	// RequestsPerMinutePerAddress bounds the requests one peer IP address
	// may make per minute, whatever the email addresses (burst of the same
	// size); 0 means the default 300, negative none. Loopback is a peer
	// like any other.
	RequestsPerMinutePerAddress int
	// OpenBlobs opens the blob store that keeps the artifacts too large to
	// keep inline. Open calls it once, and the server owns what it returns:
	// Stop closes it, and so does an Open that fails after it. nil: the
	// directory DataDir/blobs (cas.Open). Nothing else in the server
	// touches the blob store's files.
	OpenBlobs func() (cas.BlobStore, error)
	// Version is reported on the status page.
	Version string
	// SampleInterval is how often the server samples itself for the
	// overview's charts (queue, targets, cache hits); default one minute.
	// SampleKeep bounds the samples kept, oldest deleted first (default
	// 1,440: a day at one a minute).
	SampleInterval time.Duration
	SampleKeep     int
	// Quorum is how many build servers of different operators must
	// produce the same artifact sha256 on one platform identity before it
	// is verified and served to requests that do not accept unverified
	// results (verify.go, docs/trust.md). 0 means 1: one result is
	// trusted, as before verification existed; the metaserver's --quorum
	// defaults to 2.
	Quorum int
	// MaxResults bounds the operators asked for a result of one disputed
	// build; without a majority then it ends NOT_REPRODUCIBLE (0: Quorum+1).
	MaxResults int
	// TrustAfter is the agreeing results in a row, per platform identity,
	// after which a build server's agreement lowers a quorum above 2 by
	// one, never below 2 (0: never; verify.go reputationQuorum).
	TrustAfter int
	// OnSettled is called, under the server's lock and without blocking,
	// with a copy of each build whose verification ended (VERIFIED or
	// NOT_REPRODUCIBLE), after its final record is enqueued (nil: none).
	OnSettled func(b *kilnv1.Build)
	// DiffoscopeTimeout bounds a diffoscope run on a not-reproducible
	// build's artifacts (default 60s; diffoscope.go).
	DiffoscopeTimeout time.Duration
	// Notifier receives final builds inside their last transaction, to queue
	// mail and hooks (nil: none).
	Notifier FinalHook
	Logger   *slog.Logger
	// LogName names the transparency log: the signer name of its
	// checkpoints, which clients pin with its key (default "kiln-log";
	// no spaces or '+').
	LogName string
	// Clock is the metaserver's one source of time: every lease, grace,
	// time limit, exclusion, put-aside, retry delay, expiry, sweep and
	// timestamp it decides or records reads it, and every timer and
	// ticker runs on it (nil: the real clock). Tests give a
	// clockwork.FakeClock and advance it instead of sleeping.
	Clock clockwork.Clock
}

// setIf sets *field to def when unset.
func setIf[T any](field *T, unset bool, def T) {
	if unset {
		*field = def
	}
}

// GroupHook, when the Config.Notifier also implements it, is called inside
// the transaction that ends a request group's last build (or seals a group
// whose builds had all ended) with the group and its builds, once, for a
// group whose mail is SUMMARY.
type GroupHook interface {
	GroupFinished(tx store.Tx, g *store.RequestGroup, builds []*kilnv1.Build) error
}

// FinalHook is called inside the transaction that ends a build, with the
// final build and its requests not yet notified, so that notifications are
// queued atomically with the outcome.
type FinalHook interface {
	BuildFinished(tx store.Tx, b *kilnv1.Build, waiting []*store.Request, logTail string) error
}

// Defaults are the values setDefaults gives the fields of a Config left
// zero; the serve command's flags take their defaults from here too.
var Defaults = Config{
	HeartbeatInterval:           5 * time.Second,
	Lease:                       30 * time.Second,
	ReconnectGrace:              3 * time.Second,
	MaxInfraAttempts:            5,
	LossesBeforeAside:           3,
	TimeoutGrace:                5 * time.Minute,
	ExcludeFor:                  10 * time.Minute,
	ExpireUnmatchedAfter:        24 * time.Hour,
	AsideFor:                    5 * time.Minute,
	MaxLogBytes:                 16<<20 + 64<<10,
	InlineArtifactBytes:         256 << 10,
	MaxArtifactBytes:            4 << 30,
	RequestsPerMinute:           30,
	RequestsPerMinutePerAddress: 300,
	SampleInterval:              time.Minute,
	SampleKeep:                  24 * 60, // a day of minutes
	LogName:                     "kiln-log",
}

func (c *Config) setDefaults() {
	d := &Defaults
	setIf(&c.HeartbeatInterval, c.HeartbeatInterval <= 0, d.HeartbeatInterval)
	setIf(&c.Lease, c.Lease <= 0, d.Lease)
	setIf(&c.ReconnectGrace, c.ReconnectGrace <= 0, d.ReconnectGrace)
	setIf(&c.LogName, c.LogName == "", d.LogName)
	c.ReconnectGrace = min(c.ReconnectGrace, c.Lease)
	setIf(&c.MaxInfraAttempts, c.MaxInfraAttempts <= 0, d.MaxInfraAttempts)
	setIf(&c.LossesBeforeAside, c.LossesBeforeAside <= 0, d.LossesBeforeAside)
	setIf(&c.TimeoutGrace, c.TimeoutGrace <= 0, d.TimeoutGrace)
	setIf(&c.ExcludeFor, c.ExcludeFor <= 0, d.ExcludeFor)
	setIf(&c.ExpireUnmatchedAfter, c.ExpireUnmatchedAfter == 0, d.ExpireUnmatchedAfter)
	setIf(&c.AsideFor, c.AsideFor <= 0, d.AsideFor)
	setIf(&c.MaxLogBytes, c.MaxLogBytes <= 0, d.MaxLogBytes)
	setIf(&c.InlineArtifactBytes, c.InlineArtifactBytes == 0, d.InlineArtifactBytes)
	setIf(&c.MaxArtifactBytes, c.MaxArtifactBytes <= 0, d.MaxArtifactBytes)
	setIf(&c.RequestsPerMinute, c.RequestsPerMinute == 0, d.RequestsPerMinute)
	setIf(&c.RequestsPerMinutePerAddress, c.RequestsPerMinutePerAddress == 0, d.RequestsPerMinutePerAddress)
	setIf(&c.SampleInterval, c.SampleInterval <= 0, d.SampleInterval)
	setIf(&c.SampleKeep, c.SampleKeep <= 0, d.SampleKeep)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Clock = clockOrReal(c.Clock)
	if c.OpenBlobs == nil {
		dir := filepath.Join(c.DataDir, "blobs")
		c.OpenBlobs = func() (cas.BlobStore, error) {
			s, err := cas.Open(dir)
			if err != nil {
				return nil, err // not a nil *cas.Store in the interface
			}
			return s, nil
		}
	}
}

// Server is the metaserver's state and services.
type Server struct {
	kilnv1.UnimplementedWorkerServiceServer
	kilnv1.UnimplementedCompileServiceServer
	kilnv1.UnimplementedStatusServiceServer

	cfg     Config
	log     *slog.Logger
	st      store.Store
	blobs   *artifactStore
	mirrors *mirrors
	logs    *logFiles
	commits *committer
	changes *notifier
	metrics *metrics
	started time.Time
	// clock is cfg.Clock: the only time the server reads (clock.go).
	clock clockwork.Clock

	mu       sync.Mutex
	sched    *sched.Scheduler
	active   map[uint64]*activeBuild
	bySource map[string][]*activeBuild
	sessions map[string]*session
	// keys are the build servers' pinned signing keys seen by this
	// process (provenance.go pinKey).
	keys    map[string][]byte
	notary  *translog.Notary
	uploads map[string]int
	// standings are the build servers' lost-attempt counts and put-aside
	// times (see standing.go), restored from their records at Open.
	standings map[string]*standing
	// tokens caches credential hash -> build server name; revoked holds
	// names revoked while this process runs.
	tokens  sync.Map
	revoked sync.Map
	nextID  uint64
	// expiryChecked is when the lease loop last looked for unmatched
	// builds (leaseRoundLocked).
	expiryChecked time.Time
	// depWaiting holds the active builds waiting for dependency builds
	// (depends.go), by id; nil until the first one.
	depWaiting map[uint64]*activeBuild
	// groupMu serializes the submits that name a request group, from the
	// check of the group's owner to the commit of the request (groups.go).
	groupMu sync.Mutex
	// limiter is keyed by email address, addrLimiter by peer IP address.
	limiter     *limiter
	addrLimiter *limiter

	// cacheBytes is the size of the distinct blobs the cache references.
	cacheBytes atomic.Int64
	// cacheEntries counts cache entries (artifact records).
	cacheEntries atomic.Int64
	evicting     atomic.Bool
	closing      chan struct{}
	closeOnce    sync.Once

	fatal     chan error
	fatalOnce sync.Once
	// diskFull holds the error of the commit that found the disk full,
	// nil once a commit succeeds again (see WriteGate).
	diskFull atomic.Pointer[error]
	stop     context.CancelFunc
	bg       sync.WaitGroup
	// bgCtx is the background loops' context (Start), diffoscopeSlot the
	// one diffoscope run at a time (diffoscope.go).
	bgCtx          context.Context
	diffoscopeSlot chan struct{}
}

// activeBuild is a queued or running build held in memory.
type activeBuild struct {
	rec     *store.Build
	sb      *sched.Build
	waiters int
	// endedLogs are logs of ended attempts, held in memory, that the
	// build's next record commit writes to the store (keepLogLocked).
	endedLogs []endedLog
	// differing is handed from a result's check (session.go, found
	// before taking the lock) to its verification (verify.go): the files
	// in which its artifact differs from the build's first result.
	differing []string
	// statement is the checked statement of the successful attempt, set
	// with its result and logged with the final record (provenance.go).
	statement *signedStatement
}

// Open loads the server's state from st and the data directory. Queued
// builds are queued again and running ones wait for their build servers to
// reconnect for one lease.
func Open(cfg Config, st store.Store) (s *Server, err error) {
	cfg.setDefaults()
	files, err := cfg.OpenBlobs()
	if err != nil {
		return nil, fmt.Errorf("opening blob store: %w", err)
	}
	defer func() {
		if err != nil {
			files.Close()
		}
	}()
	notary, err := openNotary(cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the metaserver's signing key: %w", err)
	}
	blobs := newArtifactStore(files, st, cfg.InlineArtifactBytes, cfg.Clock)
	logs, err := openLogFiles(filepath.Join(cfg.DataDir, "logs"), cfg.MaxLogBytes, st)
	if err != nil {
		return nil, err
	}
	s = &Server{
		cfg:            cfg,
		log:            cfg.Logger,
		st:             st,
		blobs:          blobs,
		mirrors:        newMirrors(filepath.Join(cfg.DataDir, "mirrors")),
		logs:           logs,
		changes:        newNotifier(),
		metrics:        newMetrics(),
		started:        cfg.Clock.Now(),
		clock:          cfg.Clock,
		sched:          sched.New(),
		active:         map[uint64]*activeBuild{},
		bySource:       map[string][]*activeBuild{},
		sessions:       map[string]*session{},
		keys:           map[string][]byte{},
		notary:         notary,
		uploads:        map[string]int{},
		standings:      map[string]*standing{},
		limiter:        newLimiter(cfg.RequestsPerMinute, time.Minute),
		addrLimiter:    newLimiter(cfg.RequestsPerMinutePerAddress, time.Minute),
		fatal:          make(chan error, 1),
		closing:        make(chan struct{}),
		diffoscopeSlot: make(chan struct{}, 1),
	}
	s.commits = newCommitter(st, s.log, s.fail, cfg.Clock)
	s.commits.onSpace = s.setDiskFull
	s.commits.observe = func(changes int, d time.Duration) {
		s.metrics.commitChanges.Add(float64(changes))
		s.metrics.commitSeconds.Observe(d.Seconds())
	}
	if err := s.restore(); err != nil {
		return nil, err
	}
	if err := s.measureCache(); err != nil {
		return nil, err
	}
	return s, nil
}

// fail stops the server after an unrecoverable error (a failed commit).
func (s *Server) fail(err error) {
	s.fatalOnce.Do(func() { s.fatal <- err })
}

// Fatal delivers the error that requires the process to stop.
func (s *Server) Fatal() <-chan error { return s.fatal }

// Start runs the background loops (committer, lease checker, collector of
// unreferenced artifact files) until Stop.
func (s *Server) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.bgCtx = cancel, ctx
	// The loops' timers are made before Start returns: a fake clock
	// advanced after Start moves every one of them.
	leaseTick := s.clock.NewTicker(s.leaseTick())
	firstCollect := s.clock.NewTimer(collectFirst)
	sampleTick := s.clock.NewTicker(s.cfg.SampleInterval)
	s.bg.Add(4)
	go func() { defer s.bg.Done(); s.commits.run(ctx) }()
	go func() { defer s.bg.Done(); s.leaseLoop(ctx, leaseTick) }()
	go func() { defer s.bg.Done(); s.collectLoop(ctx, firstCollect) }()
	go func() { defer s.bg.Done(); s.sampleLoop(ctx, sampleTick) }()
	s.mu.Lock()
	s.dispatchLocked()
	s.mu.Unlock()
}

// Drain ends every long-lived stream (build server sessions, watches, log
// follows) so that a graceful stop only waits for short calls. Build servers
// reconnect to the next metaserver and report what they still run.
func (s *Server) Drain() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		ss.cancel(errStopped)
	}
}

// Stop ends the background loops after the committer has drained. Call it
// after the gRPC servers have stopped.
func (s *Server) Stop() {
	if s.stop != nil {
		s.stop()
	}
	s.bg.Wait()
	// Logs of attempts still running, held in memory, go to their files:
	// the next process measures a restored attempt's log from its file.
	if err := s.logs.saveRunning(); err != nil {
		s.log.Warn("saving the logs of running attempts", "err", err)
	}
	// The directory saves its verifications: the next process reads
	// unchanged blobs without hashing them again.
	if err := s.blobs.close(); err != nil {
		s.log.Warn("closing the blob store", "err", err)
	}
}

// restore loads active builds from the store.
func (s *Server) restore() error {
	now := s.now()
	return s.st.View(func(tx store.Tx) error {
		newest, err := tx.ListBuilds(store.BuildFilter{}, 0, 1)
		if err != nil {
			return err
		}
		s.nextID = 1
		if len(newest) == 1 {
			s.nextID = newest[0].GetBuild().GetId() + 1
		}
		var depWaiting []*activeBuild
		for _, state := range []kilnv1.BuildState{kilnv1.BuildState_BUILD_STATE_QUEUED, kilnv1.BuildState_BUILD_STATE_RUNNING} {
			err := tx.BuildsByState(state, func(rec *store.Build) error {
				reqs, err := tx.RequestsForBuild(rec.GetBuild().GetId())
				if err != nil {
					return err
				}
				ab := s.track(rec)
				for _, r := range reqs {
					if !r.GetNotified() {
						ab.waiters++
					}
				}
				if state == kilnv1.BuildState_BUILD_STATE_QUEUED && waitingOnDependencies(rec.GetBuild()) {
					depWaiting = append(depWaiting, ab)
					return nil
				}
				if state == kilnv1.BuildState_BUILD_STATE_QUEUED {
					s.sched.Enqueue(ab.sb)
					return nil
				}
				atts := rec.GetBuild().GetAttempts()
				if len(atts) == 0 {
					s.sched.Enqueue(ab.sb)
					return nil
				}
				a := atts[len(atts)-1]
				sa := s.sched.Restore(ab.sb, a.GetBuildServer(), a.GetTargetId(), a.GetId(), now.Add(s.cfg.Lease))
				sa.Deadline = a.GetStartedAt().AsTime().Add(s.attemptLimit(rec))
				return nil
			})
			if err != nil {
				return err
			}
		}
		if err := s.restoreDependenciesLocked(tx, depWaiting); err != nil {
			return err
		}
		if err := s.restoreStandings(tx); err != nil {
			return err
		}
		s.log.Info("store loaded", "queued", s.sched.QueueLen(), "running", s.sched.Attempts(), "next_build_id", s.nextID)
		return nil
	})
}

// track registers rec as an active build. Called under s.mu (or before start).
func (s *Server) track(rec *store.Build) *activeBuild {
	b := rec.GetBuild()
	excluded := upgradeExclusions(rec, s.now().Add(s.cfg.ExcludeFor))
	ab := &activeBuild{rec: rec, sb: &sched.Build{
		ID:             b.GetId(),
		Project:        b.GetProject(),
		Constraints:    b.GetConstraints(),
		Requires:       rec.GetRecipe().GetRequires(),
		Options:        b.GetOptions(),
		TimeoutSeconds: rec.GetRecipe().GetTimeoutSeconds(),
		Excluded:       excluded,
		NotBefore:      rec.GetNotBefore().AsTime(),
	}}
	if rec.GetNotBefore() == nil {
		ab.sb.NotBefore = time.Time{}
	}
	s.replicaSchedLocked(ab)
	s.active[b.GetId()] = ab
	s.bySource[rec.GetSourceKey()] = append(s.bySource[rec.GetSourceKey()], ab)
	return ab
}

// untrack forgets a build that became final. Called under s.mu.
func (s *Server) untrack(ab *activeBuild) {
	id := ab.rec.GetBuild().GetId()
	delete(s.active, id)
	key := ab.rec.GetSourceKey()
	list := s.bySource[key]
	for i, x := range list {
		if x == ab {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.bySource, key)
	} else {
		s.bySource[key] = list
	}
	s.sched.Dequeue(ab.sb)
}

// DataDirReady creates the data directory layout.
func DataDirReady(dir string) error {
	for _, sub := range []string{"", "blobs", "mirrors", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// errStopped is returned to callers once the server is stopping.
var errStopped = errors.New("metaserver is stopping")

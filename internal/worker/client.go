package worker

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"github.com/kilnbuild/kiln/internal/provenance"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/kilnbuild/kiln/internal/auth"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// resultFlushTimeout bounds how long a stopping Client waits for the
// acknowledgements of its last results; unacknowledged ones stay on disk and
// are sent at the next start.
const resultFlushTimeout = 5 * time.Second

// Client is a build server's connection to the metaserver: it keeps the
// session up (reconnecting with backoff), runs the attempts it is assigned
// and delivers their logs and results. Create it with New and call Run once.
type Client struct {
	cfg     Config
	log     *slog.Logger
	targets []*kilnv1.Target
	// rejected are cfg.Rejected as Hello carries them (see helloRejected).
	rejected  []*kilnv1.RejectedTarget
	buildsDir string
	results   resultStore
	dirs      *buildDirs
	janitor   *janitor
	trimmer   *idleTrimmer
	runner    *attemptRunner
	started   atomic.Bool
	stopping  atomic.Bool
	flushWait time.Duration
	hbWake    chan struct{}

	mu       sync.Mutex // guards the fields below and every attempt's fields
	life     context.Context
	attempts map[uint64]*attempt
	draining bool
	changed  chan struct{} // closed and replaced on every change of attempts
	// loadAverage reads the machine's 1-minute load average for the
	// idle-only policy (readLoadAverage; tests replace it).
	loadAverage func() (load float64, ok bool)
	wg          sync.WaitGroup

	// key signs the statements of successful attempts (provenance.go);
	// made at the first start, kept in DATA_DIR/provenance.key.
	key ed25519.PrivateKey
	// name is the build server's name as the last Welcome gave it.
	name string

	sendMu sync.Mutex // serializes Send on the stream; guards the fields below
	stream grpc.BidiStreamingClient[kilnv1.SessionRequest, kilnv1.SessionResponse]
	gen    uint64
}

// New checks cfg, applies defaults and prepares the data directory. It does
// not connect; Run does.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("worker: invalid config: %w", err)
	}
	cfg = cfg.withDefaults()
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("worker: data directory: %w", err)
	}
	cfg.DataDir = dataDir
	for _, d := range []string{"", "mirrors", "builds", "results", "trash", "spare"} {
		if err := os.MkdirAll(filepath.Join(dataDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("worker: preparing data directory: %w", err)
		}
	}
	key, err := provenance.LoadOrCreateKey(filepath.Join(dataDir, provenance.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	var users *buildUsers
	if cfg.BuildUID != 0 {
		if users, err = newBuildUsers(cfg.BuildUID, cfg.Slots); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		if err := openToBuildUsers(dataDir); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
	}
	// Steps must not see other builds, mirrors, results or the token (all
	// under the data directory), nor the volunteer's own files.
	hide := []string{dataDir}
	if home, err := os.UserHomeDir(); err == nil && home != "/" && home != "" {
		hide = append(hide, home)
	}
	hide = append(hide, cfg.Hide...)

	targets := withLabels(cfg.Targets, cfg.Labels)
	byID := make(map[string]*Target, len(targets))
	c := &Client{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "worker"),
		buildsDir: filepath.Join(dataDir, "builds"),
		results:   resultStore{dir: filepath.Join(dataDir, "results")},
		flushWait: resultFlushTimeout,
		trimmer:   newIdleTrimmer(idleTrimDelay),
		hbWake:    make(chan struct{}, 1),
		attempts:  map[uint64]*attempt{},
		changed:   make(chan struct{}),

		loadAverage: readLoadAverage,
		key:         key,
	}
	for i := range targets {
		byID[targets[i].Info.GetId()] = &targets[i]
		c.targets = append(c.targets, targets[i].Info)
	}
	c.rejected = helloRejected(cfg.Rejected)
	dirs, stale, err := newBuildDirs(filepath.Join(dataDir, "spare"), cfg.Slots)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	c.dirs = dirs
	c.janitor = newJanitor(filepath.Join(dataDir, "trash"), dirs, c.log)
	for _, d := range stale {
		c.janitor.discard(d, treeKey{})
	}
	ms := newMirrors(filepath.Join(dataDir, "mirrors"))
	ms.maxBytes, ms.log = cfg.MirrorBytes, c.log
	c.janitor.mirrors, c.janitor.boundEvery = ms, defaultBoundEvery
	if cfg.mirrorBoundEvery != 0 {
		c.janitor.boundEvery = cfg.mirrorBoundEvery
	}
	dirs.trees = ms.trees
	fixed := movesDirs(cfg.Sandbox)
	if fixed {
		// Only where every build sees the same paths: a cached object
		// records its build's directory (debug information, __FILE__).
		if ms.caches, err = newCompilerCaches(filepath.Join(dataDir, "ccache"), cfg.CompilerCacheBytes); err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
	}
	c.runner = &attemptRunner{
		sandbox:        cfg.Sandbox,
		hide:           hide,
		limits:         cfg.Limits,
		defaultTimeout: cfg.DefaultTimeout,
		maxArtifact:    cfg.MaxArtifactBytes,
		policy:         cfg.Policy,
		targets:        byID,
		jobs:           jobsPerSlot(runtime.NumCPU(), cfg.Slots),
		mirrors:        ms,
		users:          users,
		fixedLayout:    fixed,
		log:            c.log,
	}
	return c, nil
}

// Run connects to the metaserver and serves until ctx is cancelled or the
// metaserver refuses the credential. Cancelling ctx is the graceful stop:
// the Client drains (announces it, takes no new work), lets running builds
// finish for Config.Grace, returns the rest to the metaserver (RETURNED),
// waits briefly for its results to be acknowledged and returns nil. A
// refused credential stops it at once with an *AuthError. Run may be called
// only once.
func (c *Client) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("worker: Client.Run called twice")
	}
	if u := c.runner.users; u != nil {
		// Run waits for every attempt before it returns: the uids are free.
		defer u.close()
	}
	transport := c.cfg.Transport
	if transport == nil {
		transport = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	opts := append([]grpc.DialOption{
		transport,
		grpc.WithPerRPCCredentials(bearerToken{token: c.cfg.Token, secure: c.cfg.SecureTransport}),
		// The metaserver must permit pings this often (its keepalive
		// EnforcementPolicy.MinTime); a server that does not answers
		// too_many_pings and the client halves its ping rate.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		// A dropped connection is redialled after 100 ms rather than gRPC's
		// default 1 s, growing from there: the metaserver gives a closed
		// session's builds to others after its reconnect grace (3 s by
		// default), and a short blip must come back well within it.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 10 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}, c.cfg.DialOptions...)
	target, ropts, err := auth.MetaserverTarget(c.cfg.Metaserver)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	conn, err := grpc.NewClient(target, append(opts, ropts...)...)
	if err != nil {
		return fmt.Errorf("worker: metaserver address %q: %w", c.cfg.Metaserver, err)
	}
	defer conn.Close()
	rpc := kilnv1.NewWorkerServiceClient(conn)
	c.runner.uploader = rpc
	c.runner.downloader = kilnv1.NewCompileServiceClient(conn)

	// Attempts and the session live on life, which the caller's cancellation
	// does not reach: a stop drains instead of killing builds.
	life, stopLife := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLife()
	c.mu.Lock()
	c.life = life
	c.mu.Unlock()
	c.loadPending()
	c.discardStaleBuilds()
	janitorDone := make(chan struct{})
	go func() {
		defer close(janitorDone)
		c.janitor.run(life)
	}()
	c.janitor.poke()
	if c.cfg.Unsandboxed {
		c.log.Warn("BUILD STEPS RUN WITHOUT A SANDBOX: builds can read and change this machine; this is announced to the metaserver")
	}

	fatal, fatalCancel := context.WithCancelCause(life)
	defer fatalCancel(nil)
	sessionsDone := make(chan struct{})
	go func() {
		defer close(sessionsDone)
		if err := c.sessions(life, rpc); err != nil {
			fatalCancel(err)
		}
	}()

	select {
	case <-fatal.Done():
	case <-ctx.Done():
		c.drain(fatal)
	}
	c.mu.Lock()
	c.draining = true
	c.mu.Unlock()
	c.cancelRunning(errStopping)
	c.wg.Wait()

	c.stopping.Store(true)
	c.sendMu.Lock()
	if c.stream != nil {
		c.stream.CloseSend()
	}
	c.sendMu.Unlock()
	stopLife()
	<-sessionsDone
	// The janitor stops between two directories; Run leaves no file-system
	// work behind.
	<-janitorDone

	var authErr *AuthError
	if err := context.Cause(fatal); errors.As(err, &authErr) {
		return authErr
	}
	c.log.Info("stopped")
	return nil
}

// drain is the graceful stop: no new work, running builds get the grace
// period, then the rest are returned, and the last results get a moment to
// be acknowledged. It returns early when fatal ends.
func (c *Client) drain(fatal context.Context) {
	c.mu.Lock()
	c.draining = true
	running := c.runningLocked()
	c.mu.Unlock()
	c.pokeHeartbeat()
	c.log.Info("stopping: draining", "running", running, "grace", c.cfg.Grace)

	graceCtx, cancel := context.WithTimeout(fatal, max(c.cfg.Grace, 0))
	done := c.waitUntil(graceCtx, func() bool { return c.runningLocked() == 0 })
	cancel()
	if !done && fatal.Err() == nil {
		c.mu.Lock()
		running = c.runningLocked()
		c.mu.Unlock()
		c.log.Warn("grace period over; returning unfinished builds", "running", running)
	}
	c.cancelRunning(errStopping)
	c.waitUntil(fatal, func() bool { return c.runningLocked() == 0 })

	flushCtx, cancel := context.WithTimeout(fatal, c.flushWait)
	defer cancel()
	if !c.waitUntil(flushCtx, func() bool { return len(c.attempts) == 0 }) {
		c.mu.Lock()
		n := len(c.attempts)
		c.mu.Unlock()
		if n > 0 {
			c.log.Warn("results not acknowledged yet; kept on disk for the next start", "count", n)
		}
	}
}

// waitUntil waits until cond (called with c.mu held) is true or ctx ends,
// and reports whether cond became true.
func (c *Client) waitUntil(ctx context.Context, cond func() bool) bool {
	for {
		c.mu.Lock()
		ok, ch := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// notifyLocked wakes waitUntil callers; c.mu must be held.
func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// loadPending takes up the results of a previous run that were never
// acknowledged, with their logs, to send them after connecting.
func (c *Client) loadPending() {
	saved, err := c.results.load()
	if err != nil {
		c.log.Warn("some saved results could not be read", "error", err)
	}
	for _, r := range saved {
		a := &attempt{id: r.GetAttemptId(), dir: c.attemptDir(r.GetAttemptId()), cancel: func(error) {}, result: r}
		l, err := openLog(filepath.Join(a.dir, "log"), a.id, c, int64(r.GetLogSize()))
		if err != nil {
			c.log.Warn("build log of a saved result is unreadable; sending the result without it", "attempt_id", a.id, "error", err)
			l = &logStream{id: a.id, out: c, closed: true}
		}
		a.log = l
		c.mu.Lock()
		c.attempts[a.id] = a
		c.mu.Unlock()
		c.log.Info("unacknowledged result from a previous run", "attempt_id", a.id, "outcome", r.GetOutcome().String())
	}
}

// discardStaleBuilds moves build directories without a pending result (left
// by a crash) to the trash.
func (c *Client) discardStaleBuilds() {
	entries, err := os.ReadDir(c.buildsDir)
	if err != nil {
		c.log.Warn("cannot list build directories", "error", err)
		return
	}
	for _, e := range entries {
		id, err := strconv.ParseUint(e.Name(), 10, 64)
		c.mu.Lock()
		_, pending := c.attempts[id]
		c.mu.Unlock()
		if err != nil || !pending {
			c.janitor.discard(filepath.Join(c.buildsDir, e.Name()), treeKey{})
		}
	}
}

// attemptDir is the build directory of attempt id.
func (c *Client) attemptDir(id uint64) string {
	return filepath.Join(c.buildsDir, strconv.FormatUint(id, 10))
}

// knownIDsLocked lists, sorted, the attempts the metaserver should keep:
// running ones and those with an unacknowledged result. c.mu must be held.
func (c *Client) knownIDsLocked() []uint64 {
	ids := make([]uint64, 0, len(c.attempts))
	for id, a := range c.attempts {
		if !a.dropped {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// runningLocked counts attempts still running. c.mu must be held.
func (c *Client) runningLocked() int {
	n := 0
	for _, a := range c.attempts {
		if a.result == nil {
			n++
		}
	}
	return n
}

// busyLocked reports whether the idle-only policy finds the machine busy.
func (c *Client) busyLocked() bool {
	return c.cfg.Policy.GetIdleOnly() && machineBusy(c.loadAverage, c.runningLocked())
}

// machineBusy reports, for the idle-only policy, whether the machine is busy
// with work of its owner: the 1-minute load average (from load), less one
// per build of ours, above half the CPUs. An unreadable load counts as idle.
func machineBusy(load func() (float64, bool), ourBuilds int) bool {
	l, ok := load()
	if !ok {
		return false
	}
	return l-float64(ourBuilds) > float64(runtime.NumCPU())/2
}

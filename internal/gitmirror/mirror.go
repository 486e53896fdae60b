package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of [Options].
const (
	DefaultFetchFreshness = time.Second
	DefaultFetchTimeout   = 10 * time.Minute
)

// Options tune a [Mirror]. The zero value means the defaults.
type Options struct {
	// FetchFreshness is how old the last successful fetch may be for
	// Resolve to trust the refs it brought instead of fetching again; it
	// bounds how stale a branch name's resolution may be. Zero means
	// DefaultFetchFreshness; negative means always fetch.
	FetchFreshness time.Duration

	// FetchTimeout bounds one clone or fetch process. Fetches are shared by
	// concurrent callers, so they do not run under any one caller's context;
	// this is what stops a hung remote. Zero means DefaultFetchTimeout.
	FetchTimeout time.Duration

	// Logger receives one debug line per clone or fetch and a warning per
	// failure. Nil means slog.Default().
	Logger *slog.Logger
}

// Mirror is a bare mirror of one remote repository in one directory. Create
// it with [New]; the zero value is not usable. It is safe for concurrent use.
type Mirror struct {
	dir, url  string
	freshness time.Duration
	timeout   time.Duration
	log       *slog.Logger

	ready    atomic.Bool // dir is known to hold a repository
	ensureMu sync.Mutex  // serialises clones
	mu       sync.Mutex  // guards the fields below
	inflight *fetchCall
	lastOK   time.Time // start time of the last successful fetch or clone
	known    map[string]struct{}
	fetches  atomic.Int64 // clone/fetch processes started, for tests and metrics
	// remoteChecks counts ls-remote processes started by unchanged.
	remoteChecks atomic.Int64
	testHook     func() // runs before each fetch process, in tests only

	// refs answers ref names without a git process; see refTable. It is
	// replaced (never changed) after each successful fetch, on first use.
	refs    atomic.Pointer[refTable]
	refsSem chan struct{} // one ref listing at a time; a channel so waiters can leave
	// localProcs counts the git processes started to look up names and
	// commits (rev-parse, ref listing), for tests.
	localProcs atomic.Int64
}

// maxKnown bounds the in-memory set of commits known to be present; when it
// is full the set starts over (commits are re-verified with one git process).
const maxKnown = 1 << 16

// New returns the mirror of url kept in directory dir. It does no I/O: the
// directory is created by [Mirror.Ensure] (or the first fetch).
func New(dir, url string) *Mirror {
	return NewWithOptions(dir, url, Options{})
}

// NewWithOptions is [New] with tuning options.
func NewWithOptions(dir, url string, o Options) *Mirror {
	if o.FetchFreshness == 0 {
		o.FetchFreshness = DefaultFetchFreshness
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Mirror{
		dir:       dir,
		url:       url,
		freshness: o.FetchFreshness,
		timeout:   o.FetchTimeout,
		log:       o.Logger.With("component", "gitmirror", "mirror_dir", dir),
		known:     make(map[string]struct{}),
		refsSem:   make(chan struct{}, 1),
	}
}

// Dir returns the mirror's directory.
func (m *Mirror) Dir() string { return m.dir }

// URL returns the remote the mirror copies.
func (m *Mirror) URL() string { return m.url }

// FetchCount returns how many clone or fetch processes this Mirror has
// started; it shows fetch coalescing at work.
func (m *Mirror) FetchCount() int64 { return m.fetches.Load() }

// isRepo reports whether dir holds a bare repository, without running git.
func (m *Mirror) isRepo() bool {
	if m.ready.Load() {
		return true
	}
	for _, p := range []struct {
		name string
		dir  bool
	}{{"HEAD", false}, {"objects", true}, {"refs", true}} {
		fi, err := os.Stat(filepath.Join(m.dir, p.name))
		if err != nil || fi.IsDir() != p.dir {
			return false
		}
	}
	m.ready.Store(true)
	return true
}

// Ensure makes sure the mirror's directory holds a repository, cloning the
// URL if it does not yet. The clone goes into a temporary sibling directory
// that is renamed into place, so dir is either absent or a whole mirror. If
// dir holds a repository already, Ensure does nothing (no network). A clone
// failure wraps [ErrUnreachable]; a dir that exists but is not a repository
// and not empty is an error too.
func (m *Mirror) Ensure(ctx context.Context) error {
	if m.isRepo() {
		return nil
	}
	m.ensureMu.Lock()
	defer m.ensureMu.Unlock()
	if m.isRepo() {
		return nil
	}
	m.fetches.Add(1)
	start := time.Now()
	if err := m.clone(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	m.lastOK = start
	m.mu.Unlock()
	m.log.Debug("cloned mirror", "url", m.url, "duration_ms", time.Since(start).Milliseconds())
	return nil
}

func (m *Mirror) clone(ctx context.Context) error {
	if strings.HasPrefix(m.url, "-") || m.url == "" {
		return fmt.Errorf("gitmirror: clone %q: %w: not a repository URL", m.url, ErrUnreachable)
	}
	parent := filepath.Dir(m.dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("gitmirror: clone: %w", err)
	}
	prefix := "." + filepath.Base(m.dir) + ".clone-"
	m.removeStaleClones(parent, prefix)
	tmp, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return fmt.Errorf("gitmirror: clone: %w", err)
	}
	defer os.RemoveAll(tmp) // no-op after a successful rename
	if m.testHook != nil {
		m.testHook()
	}
	args := []string{"clone", "--mirror", "--quiet", "--template=", "--", m.url, tmp}
	if _, err := run(ctx, "", nil, args...); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("gitmirror: clone %s: %w", m.url, err)
		}
		m.log.Warn("clone failed", "url", m.url, "err", err)
		return fmt.Errorf("gitmirror: clone %s: %w: %w", m.url, ErrUnreachable, err)
	}
	if err := os.Rename(tmp, m.dir); err != nil {
		// Another process may have won the race; its mirror is as good.
		if m.isRepo() {
			return nil
		}
		if errors.Is(err, fs.ErrExist) { // EEXIST or ENOTEMPTY
			return fmt.Errorf("gitmirror: %s exists and is not a git repository", m.dir)
		}
		return fmt.Errorf("gitmirror: clone: %w", err)
	}
	m.ready.Store(true)
	return nil
}

// Fetch brings every ref of the remote into the mirror, pruning refs the
// remote deleted, cloning first if the mirror does not exist yet. Concurrent
// callers share one fetch: a caller that arrives while a fetch runs waits for
// that fetch and gets its result. Fetch returns early with ctx's error when
// ctx ends; the shared fetch is stopped only when every waiter has left.
// Failures wrap [ErrUnreachable].
func (m *Mirror) Fetch(ctx context.Context) error {
	return m.fetch(ctx, time.Time{}, false)
}

// fetchCall is one fetch shared by its waiters.
type fetchCall struct {
	start   time.Time
	done    chan struct{}
	err     error
	waiters int
	cancel  context.CancelFunc
}

// fetch makes sure a fetch that started at or after notBefore has completed.
// With cached, a successful fetch that started at or after notBefore
// satisfies the call without a new one; a running fetch that started at or
// after notBefore is joined; an older running one is waited out first.
func (m *Mirror) fetch(ctx context.Context, notBefore time.Time, cached bool) error {
	for {
		m.mu.Lock()
		if cached && !m.lastOK.IsZero() && !m.lastOK.Before(notBefore) {
			m.mu.Unlock()
			return nil
		}
		c := m.inflight
		if c == nil {
			c = m.startFetch()
		}
		join := !c.start.Before(notBefore)
		c.waiters++
		m.mu.Unlock()

		select {
		case <-c.done:
			m.leave(c)
			if join {
				return c.err
			}
			// That fetch began too early for this caller; go again.
		case <-ctx.Done():
			m.leave(c)
			return fmt.Errorf("gitmirror: fetch %s: %w", m.url, ctx.Err())
		}
	}
}

// startFetch launches a fetch; m.mu must be held.
func (m *Mirror) startFetch() *fetchCall {
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	c := &fetchCall{start: time.Now(), done: make(chan struct{}), cancel: cancel}
	m.inflight = c
	go func() {
		defer cancel()
		err := m.runFetch(ctx, c.start)
		m.mu.Lock()
		if err == nil && c.start.After(m.lastOK) {
			m.lastOK = c.start
		}
		if m.inflight == c {
			m.inflight = nil
		}
		c.err = err
		m.mu.Unlock()
		close(c.done)
	}()
	return c
}

// leave drops one waiter of c. When the last waiter leaves a fetch that is
// still running, the fetch is detached (later callers start their own rather
// than join one that is being stopped) and cancelled.
func (m *Mirror) leave(c *fetchCall) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c.waiters--
	if c.waiters > 0 {
		return
	}
	select {
	case <-c.done:
	default:
		if m.inflight == c {
			m.inflight = nil
		}
		c.cancel()
	}
}

// runFetch clones or fetches; it is the one place a fetch process starts.
// A fetch that would change nothing is skipped (see unchanged); start is
// when the fetch call began, the time a skipped fetch stands for.
func (m *Mirror) runFetch(ctx context.Context, start time.Time) error {
	if !m.isRepo() {
		return m.Ensure(ctx)
	}
	if t := m.unchanged(ctx); t != nil {
		// The refs listed after the last fetch are the remote's refs now:
		// they stand for this "fetch" too, with no listing again.
		m.refs.Store(&refTable{asOf: start, refs: t.refs, head: t.head, root: t.root})
		return nil
	}
	m.fetches.Add(1)
	if m.testHook != nil {
		m.testHook()
	}
	began := time.Now()
	args := []string{"fetch", "--prune", "--prune-tags", "--force", "--quiet", "--no-write-fetch-head",
		"--", m.url, "+refs/*:refs/*"}
	if _, err := run(ctx, m.dir, nil, args...); err != nil {
		m.log.Warn("fetch failed", "url", m.url, "err", err)
		if ctx.Err() != nil {
			return fmt.Errorf("gitmirror: fetch %s: %w", m.url, err)
		}
		return fmt.Errorf("gitmirror: fetch %s: %w: %w", m.url, ErrUnreachable, err)
	}
	m.log.Debug("fetched mirror", "url", m.url, "duration_ms", time.Since(began).Milliseconds())
	return nil
}

// unchanged returns the ref table listed after the last fetch when the
// remote's refs are exactly those (one git ls-remote: the ref
// advertisement a fetch starts with), so a fetch would bring nothing;
// nil when it cannot tell (no valid table, freshness off, ls-remote
// failed, a ref the table cannot peel): then the caller fetches.
//
// Why (issue 20): resolving a branch after the freshness window ran a
// fetch (git fetch and upload-pack), then symbolic-ref and for-each-ref to
// list the refs again: four processes on the path of a request naming a
// branch, most often to learn that nothing moved. An unchanged remote now
// costs ls-remote and its upload-pack. Refs are compared by the commit
// they peel to: a tag moved to a new tag object of the same commit is not
// fetched until something else changes, which no answer of Resolve shows.
func (m *Mirror) unchanged(ctx context.Context) *refTable {
	if m.freshness <= 0 {
		return nil
	}
	t := m.refs.Load()
	if t == nil || t.disabled || !t.asOf.Equal(m.lastFetch()) {
		return nil
	}
	m.remoteChecks.Add(1)
	out, err := run(ctx, "", nil, "ls-remote", "--", m.url)
	if err != nil {
		return nil // the fetch tries, and says why it fails
	}
	remote := make(map[string]string, len(t.refs))
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		oid, name, ok := strings.Cut(line, "\t")
		if !ok || !isCommitID(oid) {
			return nil
		}
		// A tag's line comes before its peeled line (NAME^{}), which wins.
		name = strings.TrimSuffix(name, "^{}")
		if strings.HasPrefix(name, "refs/") {
			remote[name] = oid
		}
	}
	if len(remote) != len(t.refs) {
		return nil
	}
	for name, id := range t.refs {
		if id == "" || remote[name] != id {
			return nil
		}
	}
	m.log.Debug("remote unchanged, fetch skipped", "url", m.url, "refs", len(remote))
	return t
}

// RemoteReachable reports whether the mirror's remote answers now: one
// git ls-remote, which lists its refs and reads nothing of the mirror. A
// caller whose fetch or clone failed (ErrUnreachable) learns from it
// whether the network or the remote was at fault (false) or the mirror
// itself (true: the remote answers, yet fetching into the mirror failed).
func (m *Mirror) RemoteReachable(ctx context.Context) bool {
	if strings.HasPrefix(m.url, "-") || m.url == "" {
		return false
	}
	_, err := run(ctx, "", nil, "ls-remote", "--", m.url)
	return err == nil
}

// RemoteChecks returns how many times the mirror asked the remote for its
// refs to skip a fetch that would change nothing (see unchanged).
func (m *Mirror) RemoteChecks() int64 { return m.remoteChecks.Load() }

// removeStaleClones deletes temporary clone directories that a crashed
// process left behind. Only those older than FetchTimeout go: a younger one
// may belong to a clone still running in another process.
func (m *Mirror) removeStaleClones(parent, prefix string) {
	stale, _ := filepath.Glob(filepath.Join(parent, prefix+"*"))
	for _, p := range stale {
		if fi, err := os.Lstat(p); err == nil && time.Since(fi.ModTime()) > m.timeout {
			m.log.Info("removing stale clone", "path", p, "age_s", int(time.Since(fi.ModTime()).Seconds()))
			_ = os.RemoveAll(p)
		}
	}
}

package worker

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kilnbuild/kiln/internal/sandbox"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Where Debian's ccache package puts the program and the directory of
// links named after every compiler installed (gcc, cc, g++ and each cross
// compiler, TRIPLE-gcc), which run ccache in its "masquerade" mode: first
// in PATH, they make every compiler call of a build go through the cache
// with no change to its recipe, CC or toolchain files.
const (
	ccacheProgram = "/usr/bin/ccache"
	ccacheLinks   = "/usr/lib/ccache"
)

// ccacheDir is where a build's compiler cache is, as its steps see it.
const ccacheDir = buildRoot + "/ccache"

// ccacheStatsName is the file under the build's home where ccache logs
// how each compilation went (stats_log), read once the steps are done.
const ccacheStatsName = ".kiln-ccache-stats"

// maxStatsLogBytes bounds what is read of a build's stats log (~40 bytes
// per compilation: 100,000 compilations).
const maxStatsLogBytes = 4 << 20

// compilerCaches keeps a compiler cache (ccache) per project and target
// under DATA_DIR/ccache, so that a second build of a project on a build
// server compiles only what changed.
//
// Isolation: a cache is a directory of its own, DATA_DIR/ccache/<project
// key>/<target key>, bound into the sandbox at /tmp/kiln/ccache for the
// builds of that project and target only (the rest of DATA_DIR stays
// hidden). It belongs to root with mode 0700 while no build uses it; the
// build using it gets it, and everything in it, as its own (handOver)
// and gives it back at the end, so the build uid, which another project's
// build takes next, holds nothing there. One build uses a cache at a time:
// a second build of the same project and target running meanwhile builds
// without one. What a build leaves in its cache is its project's own
// business (a project may poison only its own later builds), except what
// could reach outside the cache when the build server walks it as root:
// links (symbolic or hard) and special files are removed before the next
// build gets it.
//
// What a cache does not stop (the threat model's "leave nothing that
// affects a later build" holds across projects and targets, not within
// one): a build of one commit may plant, under the hash a later compile
// of the same project will look up, an object of its choosing, which a
// later build of another commit then links. ccache cannot tell a planted
// entry from its own. What catches it is the quorum of volunteers: other
// volunteers' caches never saw that build, so their artifacts' sha256
// differ from the poisoned one. A volunteer who builds projects whose
// commits it does not trust can keep no cache (--compiler-cache-bytes 0).
//
// Reproducibility: the cache must give the same object as the compiler
// run anew; the environment (ccacheEnv) fixes what a volunteer's
// ccache.conf could change, keeps ccache's compiler-argument rewriting
// (base_dir) off, hashes the compiler's content and keeps the working
// directory in the hash (hash_dir, the default): the paths are the same
// in every build anyway (buildRoot).
//
// Bound: ccache's own max_size keeps a cache near maxBytes; a cache
// found larger than that (and a tenth) after a build, whatever the build
// did to its settings, is emptied.
type compilerCaches struct {
	root     string // DATA_DIR/ccache
	maxBytes int64

	mu    sync.Mutex
	inUse map[string]bool
	// owner is the uid that owns the files of each cache since its last
	// build (absent: unknown, e.g. after a restart), so a build of the
	// same uid need not walk it.
	owner map[string]uint32
	// doomed holds the caches in use that a wipe found: each goes when
	// its build releases it.
	doomed map[string]bool
	// wipes numbers the directories wipeKey moves aside before removing
	// them.
	wipes int
}

// newCompilerCaches returns the caches under root, or nil when ccache is
// not installed or maxBytes ≤ 0 (builds then run without one).
func newCompilerCaches(root string, maxBytes int64) (*compilerCaches, error) {
	if maxBytes <= 0 || !ccacheInstalled() {
		return nil, nil
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("compiler caches: %w", err)
	}
	// What a wipe moved aside and a crash left.
	if stale, err := filepath.Glob(filepath.Join(root, wipedPrefix+"*")); err == nil {
		for _, p := range stale {
			_ = os.RemoveAll(p)
		}
	}
	return &compilerCaches{root: root, maxBytes: maxBytes, inUse: map[string]bool{}, owner: map[string]uint32{}, doomed: map[string]bool{}}, nil
}

// wipedPrefix starts the names of caches moved aside to be removed (see
// asideLocked).
const wipedPrefix = ".wiped-"

// ccacheInstalled reports whether ccache and its compiler links are there.
func ccacheInstalled() bool {
	fi, err := os.Stat(ccacheProgram)
	if err != nil || fi.Mode()&0o111 == 0 {
		return false
	}
	fi, err = os.Stat(ccacheLinks)
	return err == nil && fi.IsDir()
}

// projectKey names a project's caches as its mirror is named.
func projectKey(url string) string { return filepath.Base(mirrorDir("", url)) }

// targetKey names a target's cache: its id when it is a plain name, else
// a hash of it.
func targetKey(id string) string {
	plain := id != "" && len(id) <= 64 && !strings.HasPrefix(id, ".")
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			plain = false
		}
	}
	if plain {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "t-" + hex.EncodeToString(sum[:8])
}

// dir returns the host directory of the cache of url's project for target.
func (c *compilerCaches) dir(url, target string) string {
	return filepath.Join(c.root, projectKey(url), targetKey(target))
}

// compilerCache is one build's use of a cache.
type compilerCache struct {
	c        *compilerCaches
	host     string // the cache's directory on the host
	user     *sandbox.User
	statsLog string // the stats log's host path
	note     func(format string, args ...any)

	once  sync.Once
	stats *kilnv1.CompilerCacheStats
}

// take gives the cache of url's project and target to the build run by u
// (nil: the build server's own user): nil, nil when another build uses it
// now. The caller must call release once the build's steps are over.
func (c *compilerCaches) take(url, target string, u *sandbox.User) (*compilerCache, error) {
	host := c.dir(url, target)
	c.mu.Lock()
	if c.inUse[host] {
		c.mu.Unlock()
		return nil, nil
	}
	c.inUse[host] = true
	last, known := c.owner[host]
	c.mu.Unlock()
	cc := &compilerCache{c: c, host: host, user: u}
	if err := cc.prepare(last, known); err != nil {
		c.mu.Lock()
		delete(c.inUse, host)
		c.mu.Unlock()
		return nil, err
	}
	return cc, nil
}

// prepare makes the cache's directory, searchable on the way for the
// build uid, and hands it over.
func (cc *compilerCache) prepare(last uint32, known bool) error {
	project := filepath.Dir(cc.host)
	if err := os.MkdirAll(project, 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(cc.host, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if cc.user == nil {
		return nil
	}
	// The build uid's bubblewrap must reach the cache to bind it: the
	// directories above are searchable (not listable) by others.
	for _, d := range []string{cc.c.root, project} {
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	if known && last == cc.user.UID {
		// Everything inside is the uid's already; nothing of another
		// build could be planted there meanwhile (root's 0700 top).
		return os.Lchown(cc.host, int(cc.user.UID), int(cc.user.GID))
	}
	if err := handOverCache(cc.host, cc.user); err != nil {
		// What a build left may defeat the walk by path (a tree deeper
		// than a path can name): a cache is only a cache, so it starts
		// empty rather than fail every later build here.
		if rerr := os.RemoveAll(cc.host); rerr != nil {
			return errors.Join(err, rerr)
		}
		if err := os.Mkdir(cc.host, 0o700); err != nil {
			return err
		}
		return os.Lchown(cc.host, int(cc.user.UID), int(cc.user.GID))
	}
	return nil
}

// handOverCache removes from dir every entry that is not a plain file or
// directory or is a file linked elsewhere too (a build may have planted a
// link to make the walk below, as root, change a file outside), then
// gives the rest to u.
func handOverCache(dir string, u *sandbox.User) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		plain := fi.IsDir() || fi.Mode().IsRegular()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink != 1 {
			plain = false
		}
		if !plain {
			return os.Remove(p)
		}
		return os.Lchown(p, int(u.UID), int(u.GID))
	})
	if err != nil {
		return fmt.Errorf("handing the compiler cache to uid %d: %w", u.UID, err)
	}
	return nil
}

// env returns the steps' environment with the cache in use: ccache's
// compiler links first in PATH and its settings, all of them fixed here,
// so that neither a volunteer's /etc/ccache.conf nor a file the build
// left in the cache changes them. statsLog is the stats log's path as
// the steps see it.
func (cc *compilerCache) env(env []string, statsLog string) []string {
	out := make([]string, 0, len(env)+16)
	for _, e := range env {
		if p, ok := strings.CutPrefix(e, "PATH="); ok {
			e = "PATH=" + ccacheLinks + ":" + p
		}
		out = append(out, e)
	}
	return append(out,
		"CCACHE_DIR="+ccacheDir,
		// Read no configuration file (with CCACHE_CONFIGPATH set, ccache
		// reads neither /etc/ccache.conf nor the cache's ccache.conf): the
		// volunteer's could share the cache (remote_storage) or change
		// what is hashed; the build's own in the cache would outlive it.
		// The settings that matter are also set below, in case.
		"CCACHE_CONFIGPATH=/dev/null",
		"CCACHE_MAXSIZE="+strconv.FormatInt(max(cc.c.maxBytes>>10, 1), 10)+"Ki",
		"CCACHE_COMPILERCHECK=content",
		"CCACHE_BASEDIR=",
		"CCACHE_HASHDIR=1",
		"CCACHE_NOHARDLINK=1",
		"CCACHE_NOFILECLONE=1",
		"CCACHE_NOINODECACHE=1",
		"CCACHE_REMOTE_STORAGE=",
		"CCACHE_NOREMOTE_ONLY=1",
		"CCACHE_SLOPPINESS=",
		"CCACHE_PREFIX=",
		"CCACHE_PREFIX_CPP=",
		"CCACHE_COMPILER=",
		"CCACHE_PATH=",
		"CCACHE_EXTRAFILES=",
		"CCACHE_NAMESPACE=",
		"CCACHE_NODISABLE=1",
		"CCACHE_NOREADONLY=1",
		"CCACHE_NORECACHE=1",
		"CCACHE_UMASK=077",
		"CCACHE_STATSLOG="+statsLog,
	)
}

// release ends the build's use of the cache: the directory goes back to
// root (0700), so the build uid keeps no way in, and a cache grown past
// its bound is emptied.
func (cc *compilerCache) release() error {
	c := cc.c
	var errs []error
	if cc.user != nil {
		errs = append(errs, os.Lchown(cc.host, 0, 0))
	}
	errs = append(errs, os.Chmod(cc.host, 0o700))
	used, err := sandbox.DiskUsage(cc.host)
	c.mu.Lock()
	// Doomed: a wipe of its project came while the build held it.
	doomed := c.doomed[cc.host]
	var gone string
	if doomed || err != nil || used > c.maxBytes+c.maxBytes/10 {
		var aerr error
		gone, aerr = c.asideLocked(cc.host)
		errs = append(errs, aerr)
	} else if cc.user != nil {
		c.owner[cc.host] = cc.user.UID
	}
	delete(c.inUse, cc.host)
	delete(c.doomed, cc.host)
	c.mu.Unlock()
	if gone != "" {
		errs = append(errs, os.RemoveAll(gone))
	}
	return errors.Join(errs...)
}

// wipeKey removes every cache of the project key (with its mirror: see
// mirrors.wipe). A cache a build holds now stays until that build
// releases it, then goes (the build goes on with its files); the others
// are moved aside at once, under the lock take waits for, so no build
// gets a cache half removed, and removed after.
func (c *compilerCaches) wipeKey(key string) error {
	dir := filepath.Join(c.root, key)
	c.mu.Lock()
	for k := range c.owner {
		if filepath.Dir(k) == dir {
			delete(c.owner, k)
		}
	}
	busy := false
	for h := range c.inUse {
		if filepath.Dir(h) == dir {
			c.doomed[h] = true
			busy = true
		}
	}
	var gone []string
	var errs []error
	aside := func(p string) {
		to, err := c.asideLocked(p)
		if err != nil {
			errs = append(errs, err)
		}
		if to != "" {
			gone = append(gone, to)
		}
	}
	if !busy {
		aside(dir)
	} else if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if h := filepath.Join(dir, e.Name()); !c.inUse[h] {
				aside(h)
			}
		}
	}
	c.mu.Unlock()
	for _, p := range gone {
		errs = append(errs, os.RemoveAll(p))
	}
	return errors.Join(errs...)
}

// asideLocked renames p, a cache or a project's caches, to a name of
// its own under root for the caller to remove: quick, so it is done
// with c.mu held, which take waits for. It returns "" for a p that is
// not there. c.mu must be held.
func (c *compilerCaches) asideLocked(p string) (string, error) {
	c.wipes++
	to := filepath.Join(c.root, fmt.Sprintf("%s%d-%d", wipedPrefix, time.Now().UnixNano(), c.wipes))
	if err := os.Rename(p, to); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	return to, nil
}

// busy reports whether a build holds a cache of the project key now.
func (c *compilerCaches) busy(key string) bool {
	dir := filepath.Join(c.root, key)
	c.mu.Lock()
	defer c.mu.Unlock()
	for h := range c.inUse {
		if filepath.Dir(h) == dir {
			return true
		}
	}
	return false
}

// readCacheStats counts the compilations ccache logged in the stats log
// at path (host path, in the build's home: the build may have put
// anything there, so it is opened without following a link, must be a
// regular file, and only its first maxStatsLogBytes are read). Nil when
// there is no log: no compiler ran through the cache.
func readCacheStats(path string) *kilnv1.CompilerCacheStats {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	st := &kilnv1.CompilerCacheStats{}
	sc := bufio.NewScanner(io.LimitReader(f, maxStatsLogBytes))
	for sc.Scan() {
		// One "# <source>" line per compilation, then its counters.
		switch line := sc.Text(); {
		case strings.HasSuffix(line, "_cache_hit"): // direct_, preprocessed_, remote_
			st.Hits++
		case line == "cache_miss":
			st.Misses++
		case line == "" || strings.HasPrefix(line, "#"), strings.HasPrefix(line, "local_storage"),
			strings.HasPrefix(line, "remote_storage"), line == "direct_cache_miss", line == "preprocessed_cache_miss":
		default:
			st.Uncacheable++
		}
	}
	return st
}

// takeCompilerCache gives the attempt j the compiler cache of its project
// and target, when the build server keeps them; nil when it keeps none
// or another build of the same project and target has it now (j builds
// without one; its log says so). home is the build's home on the host.
func (r *attemptRunner) takeCompilerCache(j job, home string, u *sandbox.User) (*compilerCache, error) {
	caches := r.mirrors.caches
	if caches == nil || !r.fixedLayout {
		return nil, nil
	}
	stats := filepath.Join(home, ccacheStatsName)
	if err := os.Remove(stats); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	cc, err := caches.take(j.asg.GetGitUrl(), j.asg.GetTargetId(), u)
	if cc == nil && err == nil {
		j.log.notef("compiler cache: another build of this project and target has it; building without one")
	}
	if cc != nil {
		cc.statsLog, cc.note = stats, j.log.notef
	}
	return cc, err
}

// end reads the build's compiler cache statistics, notes them in its log
// and releases the cache; later calls only return the statistics. A nil
// cc returns nil.
func (cc *compilerCache) end() *kilnv1.CompilerCacheStats {
	if cc == nil {
		return nil
	}
	cc.once.Do(func() {
		cc.stats = readCacheStats(cc.statsLog)
		if err := cc.release(); err != nil {
			cc.note("compiler cache: releasing it: %v", err)
		}
		if cc.stats != nil {
			cc.note("compiler cache: %s", cc.summary())
		}
	})
	return cc.stats
}

// summary says how the cache served the build, for its log and the build
// server's.
func (cc *compilerCache) summary() string {
	if cc == nil || cc.stats == nil {
		return "none"
	}
	st := cc.stats
	s := fmt.Sprintf("%d hits, %d misses, %d uncacheable calls", st.GetHits(), st.GetMisses(), st.GetUncacheable())
	if n := st.GetHits() + st.GetMisses(); n > 0 {
		s += fmt.Sprintf(" (hit rate %.0f%%)", 100*float64(st.GetHits())/float64(n))
	}
	return s
}

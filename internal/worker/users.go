package worker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kilnbuild/kiln/internal/sandbox"
)

// buildUsers hands each running build a user of its own when the build
// server is root (Config.BuildUID): steps never run as root, and two builds
// running at once never share a uid, so neither can signal, trace or
// exhaust the process limit (RLIMIT_NPROC counts per uid) of the other.
// Like Nix's build users, but numeric: no account is needed, and New
// refuses uids an account already has (its files would be the build's).
type buildUsers struct {
	mu    sync.Mutex
	free  []sandbox.User
	locks []*os.File // held for the process's life: see lockIDs
}

// buildUIDLockDir holds a lock file per build uid in use by a build
// server on this machine.
const buildUIDLockDir = "/run/kiln-build-uids"

// newBuildUsers returns a pool of n users (uid = gid) from first on, after
// checking that no account has any of them and taking them from any other
// build server on this machine (lockIDs).
func newBuildUsers(first uint32, n int) (*buildUsers, error) {
	if first == 0 || uint64(first)+uint64(n) > 1<<31 {
		return nil, fmt.Errorf("build uids %d..%d: out of range (1 to 2^31-1)", first, uint64(first)+uint64(n)-1)
	}
	p := &buildUsers{}
	for i := range n {
		id := first + uint32(i)
		if err := unusedID(id); err != nil {
			return nil, err
		}
		p.free = append(p.free, sandbox.User{UID: id, GID: id})
	}
	locks, err := lockIDs(buildUIDLockDir, first, n)
	if err != nil {
		return nil, err
	}
	p.locks = locks
	return p, nil
}

// lockIDs takes an exclusive lock on dir/<uid> for each uid, so that two
// build servers on one machine never give their builds the same uid (one
// build could then signal or starve the other's processes). The kernel
// drops the locks when the process ends, however it ends.
func lockIDs(dir string, first uint32, n int) ([]*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("build uid locks: %w", err)
	}
	var locks []*os.File
	for i := range n {
		id := first + uint32(i)
		f, err := os.OpenFile(filepath.Join(dir, strconv.FormatUint(uint64(id), 10)), os.O_RDWR|os.O_CREATE, 0o600)
		if err == nil {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if errors.Is(err, unix.EWOULDBLOCK) {
				err = fmt.Errorf("another build server on this machine runs builds as uid %d: give this one other uids with --build-uid", id)
			}
		}
		if err != nil {
			for _, l := range locks {
				l.Close()
			}
			if f != nil {
				f.Close()
			}
			return nil, fmt.Errorf("build uid %d: %w", id, err)
		}
		locks = append(locks, f)
	}
	return locks, nil
}

// unusedID fails when an account or a group has id as its uid or gid,
// unless its name starts with "kiln" (a volunteer may create the build
// users, e.g. kiln-build1).
func unusedID(id uint32) error {
	s := strconv.FormatUint(uint64(id), 10)
	if u, err := user.LookupId(s); err == nil && !strings.HasPrefix(u.Username, "kiln") {
		return fmt.Errorf("build uid %d belongs to the account %q: builds could read its files; choose other uids with --build-uid", id, u.Username)
	}
	if g, err := user.LookupGroupId(s); err == nil && !strings.HasPrefix(g.Name, "kiln") {
		return fmt.Errorf("build gid %d belongs to the group %q: choose other ids with --build-uid", id, g.Name)
	}
	return nil
}

// take returns a free user; false when every one is in use, which the
// slot limit prevents.
func (p *buildUsers) take() (*sandbox.User, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 {
		return nil, false
	}
	u := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return &u, true
}

// close lets another build server on this machine take the uids.
func (p *buildUsers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.locks {
		l.Close()
	}
	p.locks = nil
}

// put gives u back once no process of its build is left (the sandbox's
// PID namespace ends with the step).
func (p *buildUsers) put(u *sandbox.User) {
	p.mu.Lock()
	p.free = append(p.free, *u)
	p.mu.Unlock()
}

// openToBuildUsers lets the build users reach their build directories:
// bwrap runs as the build's user and binds DATA_DIR/builds/ID/{src,dest,home}
// from the host's file system, so DATA_DIR and DATA_DIR/builds become
// 0711 (searchable, not listable; everything else in DATA_DIR stays 0700
// or 0600), and every directory above DATA_DIR must already be searchable
// by others, or New fails saying which one is not.
func openToBuildUsers(dataDir string) error {
	for _, d := range []string{dataDir, filepath.Join(dataDir, "builds")} {
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	for p := filepath.Dir(dataDir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the data directory %s is below %s (mode %#o), which build users cannot search: choose a data directory elsewhere (e.g. /var/lib/kiln) or chmod o+x %s", dataDir, p, fi.Mode().Perm(), p)
		}
		if p == "/" {
			return nil
		}
	}
}

// handOver gives u the build's directories and everything in them (the
// source tree the build server exported as root), so the build can write
// there and nowhere else. Symbolic links are not followed (Lchown); no
// process of the build runs yet, so nothing can swap an entry meanwhile.
func handOver(u *sandbox.User, dirs ...string) error {
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, int(u.UID), int(u.GID))
		})
		if err != nil {
			return fmt.Errorf("handing the build directory to uid %d: %w", u.UID, err)
		}
	}
	return nil
}

// errNoBuildUser: more builds run than there are build users.
var errNoBuildUser = errors.New("no free build user (more builds than --jobs)")

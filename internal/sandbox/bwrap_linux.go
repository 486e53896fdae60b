package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Bwrap runs steps under bubblewrap (see the package doc for the isolation).
// It works as root and as an unprivileged user when user namespaces are
// enabled. Safe for concurrent use.
//
// Telling bwrap's failures from the command's: bwrap is run with
// --json-status-fd, on which it writes {"child-pid": …, "pid-namespace": …}
// once the sandbox exists and {"exit-code": N} only if the command was
// actually executed (bwrap keeps a setup-finished pipe that exec closes).
// A run without an "exit-code" document failed in bwrap itself (a missing
// bind source, an exec failure, no namespaces): a *SetupError carrying the end
// of bwrap's message. Otherwise N is the command's status (bwrap reports death
// by signal N as 128+N).
type Bwrap struct {
	// Path is the bwrap binary, looked up in $PATH; "" means "bwrap".
	Path string
	// Grace is the time between SIGTERM and SIGKILL; 0 means DefaultGrace.
	Grace time.Duration
}

var _ Runner = Bwrap{}

// bwrapPaths caches what exec.LookPath found for each Bwrap.Path: a look-up
// stats every $PATH entry, a few percent of the build server's own CPU per
// no-op step. A binary removed later fails at exec, as a SetupError too.
var bwrapPaths sync.Map // Bwrap.Path → absolute path

func (b Bwrap) binary() (string, error) {
	p := b.Path
	if p == "" {
		p = "bwrap"
	}
	if path, ok := bwrapPaths.Load(p); ok {
		return path.(string), nil
	}
	path, err := exec.LookPath(p)
	if err != nil {
		return "", fmt.Errorf("bubblewrap: %w", err)
	}
	if filepath.IsAbs(path) {
		bwrapPaths.Store(p, path)
	}
	return path, nil
}

// Available reports whether bwrap can create the sandbox Run uses on this
// machine: it runs `true` under the same namespaces and mounts. A non-nil
// error explains why not (bwrap missing, user namespaces disabled, ...).
func (b Bwrap) Available() error { return b.AvailableAs(nil) }

// AvailableAs is Available for steps run as u (see Step.User): for a root
// runner it checks that an unprivileged user may make the sandbox (user
// namespaces allowed to unprivileged users).
func (b Bwrap) AvailableAs(u *User) error {
	path, err := b.binary()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := baseArgs()
	cmd := exec.CommandContext(ctx, path)
	if u != nil && os.Geteuid() == 0 {
		cred, err := stepCredential(u)
		if err != nil {
			return err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	cmd.Args = append(append([]string{path}, args...), "--", "true")
	out, err := cmd.CombinedOutput()
	if err != nil {
		who := ""
		if cmd.SysProcAttr != nil {
			who = fmt.Sprintf(" for uid %d", u.UID)
		}
		return fmt.Errorf("bubblewrap %s does not work here%s: %w: %s", path, who, err, bytes.TrimSpace(out))
	}
	return nil
}

// baseArgs are the isolation options of every step. The step's user
// namespace maps only the user bwrap runs as (the step's, see
// Step.User), and --disable-userns forbids making another inside, so
// nothing in the step can gain a capability even in a namespace of its
// own.
func baseArgs() []string {
	return []string{
		"--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
		"--ro-bind", "/", "/",
		"--dev", "/dev",
		"--proc", "/proc",
		"--tmpfs", "/tmp",
	}
}

// Run runs s as `sh -c s.Command` inside a new bubblewrap sandbox; see Runner.
func (b Bwrap) Run(ctx context.Context, s Step) error {
	path, err := b.binary()
	if err != nil {
		return &SetupError{Err: err}
	}
	args, err := bwrapArgs(s)
	if err != nil {
		return &SetupError{Err: err}
	}
	cred, err := stepCredential(s.User)
	if err != nil {
		return &SetupError{Err: err}
	}
	cmdArgv, err := checkedArgv(s.Limits, s.Command)
	if err != nil {
		return err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return setupErrorf("status pipe: %w", err)
	}
	defer statusR.Close()
	reportR, reportW, nonce, err := newReportChannel()
	if err != nil {
		statusW.Close()
		return setupErrorf("leftover report: %w", err)
	}
	defer reportR.Close()
	// statusW becomes fd 3 of bwrap (ExtraFiles[0]), reportW fd 4, which
	// bwrap passes on to the checking shell (leftoverScript).
	// A network namespace made ahead of time saves bwrap making one.
	netns := takeNetns()
	if netns != nil {
		args = append(args, "--share-net")
	}
	argv := append(append(append([]string{path}, args...), "--json-status-fd", "3", "--"), cmdArgv...)
	status := readBwrapStatus(statusR)

	return execute(ctx, s, launch{
		argv:       argv,
		env:        []string{},
		extraFiles: []*os.File{statusW, reportW},
		cred:       cred,
		netns:      netns,
		grace:      graceOr(b.Grace),
		// --unshare-pid: see launch.pidNamespace.
		pidNamespace: true,
		terminate: func(pid int) {
			if !status.terminate() {
				// Still setting up: nothing of the build runs yet.
				killGroup(pid, sigKill)
			}
		},
		kill: func(pid int) {
			killGroup(pid, sigKill)
			status.kill()
		},
		afterExit: func() { status.waitGone(pipeDrainTimeout) },
		result: func(state *os.ProcessState, tail []byte) error {
			code, ran := status.exitCode()
			switch {
			case !ran:
				return setupErrorf("bwrap exited with status %d before running the command: %s",
					exitCode(state), lastLine(tail))
			}
			// Every process that held reportW is gone (waitGone).
			var err error
			if code != 0 {
				err = &ExitError{Step: s.Name, Code: code}
			}
			left, ok := readReport(reportR, nonce)
			if !ok && code == 0 {
				// The checking shell exited 0 without a valid report.
				left = leftovers{unknown: true}
			}
			return left.attach(s.Name, err)
		},
	})
}

// stepCredential returns the credential bwrap is started with for a step
// run as u: nil when it runs as the runner's own user. A root runner must be
// given a user other than root (ErrRootStep); another runner can only run
// steps as itself.
func stepCredential(u *User) (*syscall.Credential, error) {
	euid := os.Geteuid()
	switch {
	case euid == 0 && (u == nil || u.UID == 0):
		return nil, ErrRootStep
	case euid == 0:
		// No supplementary groups: root's would follow the step.
		return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: []uint32{}}, nil
	case u == nil || int(u.UID) == euid:
		return nil, nil
	default:
		return nil, fmt.Errorf("running a step as uid %d needs root (the build server is uid %d)", u.UID, euid)
	}
}

// bwrapArgs returns the mount, directory and environment options for s.
func bwrapArgs(s Step) ([]string, error) {
	if !filepath.IsAbs(s.Dir) {
		return nil, fmt.Errorf("step %q: build directory %q is not absolute", s.Name, s.Dir)
	}
	type mount struct {
		path  string
		depth int
		args  []string
	}
	var mounts []mount
	// Each bind costs bwrap a read of /proc/self/mountinfo (about 0.2 ms
	// here), so a path given twice, e.g. Dir again in Writable as the build
	// server does, is mounted once: the second mount would change nothing.
	seen := map[string]bool{}
	add := func(path string, args ...string) {
		key := args[0] + "\x00" + path
		if seen[key] {
			return
		}
		seen[key] = true
		mounts = append(mounts, mount{path: path, depth: strings.Count(path, "/"), args: args})
	}
	for _, h := range s.Hide {
		if !filepath.IsAbs(h) {
			return nil, fmt.Errorf("hidden path %q is not absolute", h)
		}
		h = filepath.Clean(h)
		fi, err := os.Stat(h)
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue // nothing to hide
		case err != nil:
			return nil, fmt.Errorf("hidden path: %w", err)
		case fi.IsDir():
			add(h, "--tmpfs", h)
		default:
			add(h, "--ro-bind", "/dev/null", h)
		}
	}
	// Binds come after hides of the same depth, so binding a hidden path
	// exposes it again; the stable sort keeps that order.
	dirs := s.Writable
	if !slices.ContainsFunc(s.Binds, func(b Bind) bool { return filepath.Clean(b.Dst) == filepath.Clean(s.Dir) }) {
		dirs = append([]string{s.Dir}, dirs...)
	}
	for _, w := range dirs {
		if !filepath.IsAbs(w) {
			return nil, fmt.Errorf("writable path %q is not absolute", w)
		}
		w = filepath.Clean(w)
		if fi, err := os.Stat(w); err != nil {
			return nil, fmt.Errorf("writable path: %w", err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("writable path %q is not a directory", w)
		}
		add(w, "--bind", w, w)
	}
	for _, r := range s.ReadOnly {
		if !filepath.IsAbs(r) {
			return nil, fmt.Errorf("read-only path %q is not absolute", r)
		}
		r = filepath.Clean(r)
		if fi, err := os.Stat(r); err != nil {
			return nil, fmt.Errorf("read-only path: %w", err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("read-only path %q is not a directory", r)
		}
		add(r, "--ro-bind", r, r)
	}
	for _, b := range s.Binds {
		if !filepath.IsAbs(b.Src) || !filepath.IsAbs(b.Dst) {
			return nil, fmt.Errorf("bind %q on %q: paths must be absolute", b.Src, b.Dst)
		}
		src, dst := filepath.Clean(b.Src), filepath.Clean(b.Dst)
		check := []string{src}
		if !underTmp(dst) {
			// Only the sandbox's fresh /tmp lets bwrap make a new mount point.
			check = append(check, dst)
		}
		for _, p := range check {
			if fi, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("bind: %w", err)
			} else if !fi.IsDir() {
				return nil, fmt.Errorf("bind: %q is not a directory", p)
			}
		}
		if b.ReadOnly {
			add(dst, "--ro-bind", src, dst)
		} else {
			add(dst, "--bind", src, dst)
		}
	}
	// Parents before children: a deeper mount must not be covered by a
	// later shallower one.
	sort.SliceStable(mounts, func(i, j int) bool { return mounts[i].depth < mounts[j].depth })

	args := baseArgs()
	for _, m := range mounts {
		args = append(args, m.args...)
	}
	if s.Identity != nil {
		if s.Identity.UID == 0 || s.Identity.GID == 0 {
			// Root inside its namespace would hold that namespace's
			// capabilities: never, as for User.
			return nil, fmt.Errorf("step %q: identity %d:%d: %w", s.Name, s.Identity.UID, s.Identity.GID, ErrRootStep)
		}
		args = append(args, "--uid", strconv.FormatUint(uint64(s.Identity.UID), 10), "--gid", strconv.FormatUint(uint64(s.Identity.GID), 10))
	}
	if s.Hostname != "" {
		args = append(args, "--hostname", s.Hostname)
	}
	args = append(args, "--chdir", filepath.Clean(s.Dir), "--clearenv")
	for _, kv := range s.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("environment entry %q is not KEY=value", kv)
		}
		args = append(args, "--setenv", k, v)
	}
	return args, nil
}

// underTmp reports whether p is below /tmp, which every step gets fresh.
func underTmp(p string) bool { return strings.HasPrefix(p, "/tmp/") }

// lastLine returns the last non-empty line of out, for error messages.
func lastLine(out []byte) string {
	out = bytes.TrimSpace(out)
	if i := bytes.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	if len(out) == 0 {
		return "no message"
	}
	return string(out)
}

package farmtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// unitHelperEnv carries a unitSpec to the test binary re-executed as the
// helper that sets a unit's process up and execs it (Main runs it).
const unitHelperEnv = "KILN_FARMTEST_UNIT_SPEC"

// runUnitHelperIfAsked is called first by Main: in the helper process it
// applies the spec and execs the service, never returning; elsewhere it
// returns at once.
func runUnitHelperIfAsked() {
	data := os.Getenv(unitHelperEnv)
	if data == "" {
		return
	}
	var s unitSpec
	err := json.Unmarshal([]byte(data), &s)
	if err == nil {
		err = s.apply()
	}
	fmt.Fprintln(os.Stderr, "farmtest unit helper:", err)
	os.Exit(126)
}

// apply sets the service up in this process's (new, private) mount
// namespace, in the order systemd does, and execs it.
func (s unitSpec) apply() error {
	runtime.LockOSThread() // prctl settings are per thread: exec from this one
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("private mounts: %w", err)
	}
	// The package's files over the host's: read-only overlays, then the
	// writable directories bound from root itself.
	for _, d := range s.Overlays {
		if err := overlayKeepingSubmounts(filepath.Join(s.Root, d), d); err != nil {
			return err
		}
	}
	for _, p := range s.ReadWritePaths {
		if err := unix.Mount(filepath.Join(s.Root, p), p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("ReadWritePaths %s: %w", p, err)
		}
	}
	if s.HideSystemd {
		if err := inaccessible("/run/systemd"); err != nil {
			return fmt.Errorf("hiding /run/systemd: %w", err)
		}
	}
	if s.Strict {
		// Everything read-only but the API file systems and ReadWritePaths.
		err := remountReadOnly(func(mp string) bool {
			for _, api := range []string{"/proc", "/sys", "/dev"} {
				if under(mp, api) {
					return false
				}
			}
			for _, p := range s.ReadWritePaths {
				if under(mp, p) {
					return false
				}
			}
			return true
		})
		if err != nil {
			return fmt.Errorf("ProtectSystem=strict: %w", err)
		}
	}
	if s.ProtectHome {
		for _, d := range []string{"/home", "/root", "/run/user"} {
			if err := inaccessible(d); err != nil {
				return fmt.Errorf("ProtectHome: %w", err)
			}
		}
	}
	if s.PrivateTmp {
		for _, d := range []string{"/tmp", "/var/tmp"} {
			if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
				return fmt.Errorf("PrivateTmp %s: %w", d, err)
			}
		}
	}
	if s.PrivateDevices {
		if err := privateDev(); err != nil {
			return fmt.Errorf("PrivateDevices: %w", err)
		}
	}
	if s.ProtectCgroups {
		if err := remountReadOnly(func(mp string) bool { return under(mp, "/sys/fs/cgroup") }); err != nil {
			return fmt.Errorf("ProtectControlGroups: %w", err)
		}
	}
	if s.ProtectModules {
		for _, d := range []string{"/usr/lib/modules", "/lib/modules"} {
			if err := inaccessible(d); err != nil {
				return fmt.Errorf("ProtectKernelModules: %w", err)
			}
		}
	}
	if s.DropCaps {
		for c := 0; c <= unix.CAP_LAST_CAP; c++ {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				return fmt.Errorf("CapabilityBoundingSet=: dropping %d: %w", c, err)
			}
		}
	}
	syscall.Umask(s.UMask)
	if s.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("NoNewPrivileges: %w", err)
		}
	}
	if err := syscall.Setgroups([]int{}); err != nil {
		return err
	}
	if err := syscall.Setgid(s.GID); err != nil {
		return err
	}
	if err := syscall.Setuid(s.UID); err != nil {
		return err
	}
	if s.Dir != "" {
		if err := os.Chdir(s.Dir); err != nil {
			return fmt.Errorf("WorkingDirectory: %w", err)
		}
	}
	return syscall.Exec(s.Argv[0], s.Argv, s.Env)
}

// under reports whether path p is dir or below it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// overlayKeepingSubmounts lays a read-only overlay of top over dir, then
// binds dir's submounts (a container's /etc/hosts, say) back on top.
func overlayKeepingSubmounts(top, dir string) error {
	if _, err := os.Stat(top); err != nil {
		return nil // the package has nothing there
	}
	mounts, err := mountPoints()
	if err != nil {
		return err
	}
	type kept struct {
		path string
		fd   int
	}
	var subs []kept
	for _, m := range mounts {
		if m.path != dir && under(m.path, dir) {
			fd, err := unix.Open(m.path, unix.O_PATH|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			subs = append(subs, kept{m.path, fd})
		}
	}
	if err := unix.Mount("overlay", dir, "overlay", 0, "lowerdir="+top+":"+dir); err != nil {
		return fmt.Errorf("overlay of %s on %s: %w", top, dir, err)
	}
	for _, k := range subs {
		err := unix.Mount("/proc/self/fd/"+strconv.Itoa(k.fd), k.path, "", unix.MS_BIND|unix.MS_REC, "")
		unix.Close(k.fd)
		if err != nil {
			return fmt.Errorf("re-binding %s: %w", k.path, err)
		}
	}
	return nil
}

// mountPoint is one line of /proc/self/mountinfo.
type mountPoint struct {
	path  string
	flags uintptr // the per-mount flags to keep when remounting
}

// mountPoints lists this namespace's mounts, parents first.
func mountPoints() ([]mountPoint, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountPoint
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		p, err := strconv.Unquote(`"` + strings.NewReplacer(`"`, `\"`).Replace(fields[4]) + `"`)
		if err != nil {
			p = fields[4]
		}
		var fl uintptr
		for _, o := range strings.Split(fields[5], ",") {
			switch o {
			case "nosuid":
				fl |= unix.MS_NOSUID
			case "nodev":
				fl |= unix.MS_NODEV
			case "noexec":
				fl |= unix.MS_NOEXEC
			case "noatime":
				fl |= unix.MS_NOATIME
			case "nodiratime":
				fl |= unix.MS_NODIRATIME
			case "relatime":
				fl |= unix.MS_RELATIME
			}
		}
		out = append(out, mountPoint{path: p, flags: fl})
	}
	return out, sc.Err()
}

// remountReadOnly makes every mount whose path pick accepts read-only,
// for this namespace only (a bind remount changes the mount, never the
// file system).
func remountReadOnly(pick func(string) bool) error {
	mounts, err := mountPoints()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if !pick(m.path) {
			continue
		}
		err := unix.Mount("", m.path, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|m.flags, "")
		if err != nil && err != unix.ENOENT && err != unix.EACCES {
			return fmt.Errorf("%s: %w", m.path, err)
		}
	}
	return nil
}

// inaccessible covers dir, when it exists, with an empty read-only
// directory nobody may enter.
func inaccessible(dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	return unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=000")
}

// privateDev replaces /dev with a tmpfs holding only the pseudo devices
// (null, zero, full, random, urandom, tty), a new devpts and a /dev/shm.
func privateDev() error {
	nodes := []string{"null", "zero", "full", "random", "urandom", "tty"}
	fds := map[string]int{}
	for _, n := range nodes {
		fd, err := unix.Open("/dev/"+n, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		fds[n] = fd
	}
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_STRICTATIME, "mode=755"); err != nil {
		return err
	}
	for _, n := range nodes {
		p := "/dev/" + n
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			return err
		}
		err := unix.Mount("/proc/self/fd/"+strconv.Itoa(fds[n]), p, "", unix.MS_BIND, "")
		unix.Close(fds[n])
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	for _, d := range []string{"/dev/pts", "/dev/shm"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"); err != nil {
		return err
	}
	if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
		return err
	}
	return unix.Mount("tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
}

package farmtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Unit is a systemd service unit file, parsed: each section's settings in
// file order (a key given twice keeps both values; an empty value resets
// the list, as systemd does).
type Unit struct {
	// Path is the file it was read from.
	Path string
	// Sections maps a section name ("Service") to its settings.
	Sections map[string]map[string][]string
}

// ParseUnit reads a unit file. It does not interpret the settings.
func ParseUnit(path string) (*Unit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	u := &Unit{Path: path, Sections: map[string]map[string][]string{}}
	var sec map[string][]string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
			continue
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = map[string][]string{}
			u.Sections[line[1:len(line)-1]] = sec
			continue
		case strings.HasSuffix(line, "\\"):
			return nil, fmt.Errorf("%s:%d: continued lines are not supported", path, n)
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || sec == nil {
			return nil, fmt.Errorf("%s:%d: not a setting: %q", path, n, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if v == "" {
			sec[k] = []string{""}
			continue
		}
		sec[k] = append(sec[k], v)
	}
	return u, sc.Err()
}

// Get returns the last value of key in section ("" when unset).
func (u *Unit) Get(section, key string) string {
	vs := u.Sections[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// unitNotEmulated are the [Service] settings RunUnit accepts without
// applying them, each with the reason that is sound for a test.
var unitNotEmulated = map[string]string{
	"Type":                     "exec/simple: the process is the service",
	"Restart":                  "a test that needs a restart does it itself",
	"RestartSec":               "see Restart",
	"RestartPreventExitStatus": "see Restart; the test checks exit statuses",
	"KillMode":                 "only mixed is accepted: Stop signals the main process, then kills the group",
}

// UnitProcess prepares (does not start) the service of the unit at
// unitPath as systemd would run it from a package unpacked (installed)
// under root: in its own mount namespace where root's /etc, /usr/bin and
// /var/lib lie over the host's (the unit's paths work unchanged; nothing
// on the host changes), as the unit's User and Group looked up in
// root/etc, with its Environment, WorkingDirectory, UMask and ExecStart,
// and with each hardening setting applied the way systemd applies it:
// NoNewPrivileges, CapabilityBoundingSet= (empty), ProtectSystem=strict
// with ReadWritePaths, ProtectHome=yes, PrivateTmp=yes, PrivateDevices=yes,
// ProtectControlGroups=yes, ProtectKernelModules=yes, ProtectHostname=yes.
// A setting it does not know fails the test: a unit cannot gain an option
// the test silently ignores. KillSignal must be SIGTERM (Stop's signal);
// TimeoutStopSec becomes StopTimeout. The test must be root.
func UnitProcess(t testing.TB, unitPath, root string) *Process {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running a unit as systemd would needs root (mount namespaces, another user)")
	}
	u, err := ParseUnit(unitPath)
	if err != nil {
		t.Fatalf("farmtest: %v", err)
	}
	spec, stop, err := u.spec(root)
	if err != nil {
		t.Fatalf("farmtest: %s: %v", unitPath, err)
	}
	data, _ := json.Marshal(spec)
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("farmtest: %v", err)
	}
	p := NewProcess(t, filepath.Base(unitPath), self)
	p.Env = []string{unitHelperEnv + "=" + string(data)}
	p.Cloneflags = syscall.CLONE_NEWNS
	if spec.NewUTS {
		p.Cloneflags |= syscall.CLONE_NEWUTS
	}
	p.StopTimeout = stop
	return p
}

// unitSpec is what the helper process applies before it execs the service.
type unitSpec struct {
	Root           string
	Overlays       []string // host directories root's lie over
	ReadWritePaths []string
	Strict, ProtectHome, PrivateTmp, PrivateDevices,
	ProtectCgroups, ProtectModules, NoNewPrivs, DropCaps, NewUTS bool
	HideSystemd bool
	UID, GID    int
	UMask       int
	Dir         string
	Env, Argv   []string
}

// spec interprets the [Service] section.
func (u *Unit) spec(root string) (unitSpec, time.Duration, error) {
	s := unitSpec{Root: root, Overlays: []string{"/etc", "/usr/bin", "/var/lib"}, UMask: 0o022}
	svc := u.Sections["Service"]
	if svc == nil {
		return s, 0, fmt.Errorf("no [Service] section")
	}
	yes := func(k string) (bool, error) {
		switch v := u.Get("Service", k); v {
		case "yes", "true", "1", "on":
			return true, nil
		case "no", "false", "0", "off", "":
			return false, nil
		default:
			return false, fmt.Errorf("%s=%s: only yes or no is emulated", k, v)
		}
	}
	env := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	stop := 90 * time.Second // systemd's DefaultTimeoutStopSec
	groupGID := -1
	keys := make([]string, 0, len(svc))
	for k := range svc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := u.Get("Service", k)
		var err error
		switch k {
		case "User":
			var home, shell string
			if s.UID, s.GID, home, shell, err = lookupUser(root, v); err == nil {
				env["HOME"], env["USER"], env["LOGNAME"], env["SHELL"] = home, v, v, shell
			}
		case "Group":
			groupGID, err = lookupGroup(root, v)
		case "Environment":
			for _, e := range svc[k] {
				for _, kv := range strings.Fields(e) {
					name, val, ok := strings.Cut(kv, "=")
					if !ok || strings.ContainsAny(kv, `"'$%`) {
						return s, 0, fmt.Errorf("setting Environment=%s: only plain NAME=VALUE words are emulated", e)
					}
					env[name] = val
				}
			}
		case "WorkingDirectory":
			s.Dir = v
		case "ExecStart":
			if len(svc[k]) != 1 || strings.ContainsAny(v, `"'$%\;`) || strings.HasPrefix(v, "-") || strings.HasPrefix(v, "@") {
				return s, 0, fmt.Errorf("ExecStart=%s: only one plain command line is emulated", v)
			}
			s.Argv = strings.Fields(v)
		case "UMask":
			var m uint64
			m, err = strconv.ParseUint(v, 8, 32)
			s.UMask = int(m)
		case "KillSignal":
			if v != "SIGTERM" {
				err = fmt.Errorf("KillSignal=%s: Stop sends SIGTERM", v)
			}
		case "KillMode":
			if v != "mixed" {
				err = fmt.Errorf("KillMode=%s: only mixed is emulated (SIGTERM to the main process)", v)
			}
		case "TimeoutStopSec":
			stop, err = time.ParseDuration(v)
		case "NoNewPrivileges":
			s.NoNewPrivs, err = yes(k)
		case "CapabilityBoundingSet":
			if v != "" {
				err = fmt.Errorf("CapabilityBoundingSet=%s: only the empty set is emulated", v)
			}
			s.DropCaps = true
		case "ProtectSystem":
			if v != "strict" {
				err = fmt.Errorf("ProtectSystem=%s: only strict is emulated", v)
			}
			s.Strict = true
		case "ReadWritePaths":
			for _, e := range svc[k] {
				s.ReadWritePaths = append(s.ReadWritePaths, strings.Fields(e)...)
			}
		case "ProtectHome":
			s.ProtectHome, err = yes(k)
		case "PrivateTmp":
			s.PrivateTmp, err = yes(k)
		case "PrivateDevices":
			s.PrivateDevices, err = yes(k)
		case "ProtectControlGroups":
			s.ProtectCgroups, err = yes(k)
		case "ProtectKernelModules":
			s.ProtectModules, err = yes(k)
		case "ProtectHostname":
			s.NewUTS, err = yes(k)
		default:
			if _, ok := unitNotEmulated[k]; !ok {
				err = fmt.Errorf("%s= is not emulated by farmtest.UnitProcess: teach it (internal/farmtest/unit.go) before using it", k)
			}
		}
		if err != nil {
			return s, 0, err
		}
	}
	if groupGID >= 0 && groupGID != s.GID {
		return s, 0, fmt.Errorf("setting Group=: not User's primary group, which is not emulated")
	}
	if len(s.Argv) == 0 || !filepath.IsAbs(s.Argv[0]) {
		return s, 0, fmt.Errorf("ExecStart must name an absolute program")
	}
	for k, v := range env {
		s.Env = append(s.Env, k+"="+v)
	}
	slices.Sort(s.Env)
	return s, stop, nil
}

// lookupUser finds name in root/etc/passwd.
func lookupUser(root, name string) (uid, gid int, home, shell string, err error) {
	f, err := passwdField(filepath.Join(root, "etc/passwd"), name, 7)
	if err != nil {
		return 0, 0, "", "", err
	}
	uid, err1 := strconv.Atoi(f[2])
	gid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return 0, 0, "", "", fmt.Errorf("user %s: bad ids %q %q", name, f[2], f[3])
	}
	return uid, gid, f[5], f[6], nil
}

// lookupGroup finds name in root/etc/group.
func lookupGroup(root, name string) (int, error) {
	f, err := passwdField(filepath.Join(root, "etc/group"), name, 4)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(f[2])
}

// passwdField returns the fields of name's line in a passwd-format file.
func passwdField(path, name string, n int) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Split(l, ":")
		if len(f) == n && f[0] == name {
			return f, nil
		}
	}
	return nil, fmt.Errorf("%s has no entry %q", path, name)
}

// InRoot returns a command running argv as root, with this process's
// environment, in the file-system view UnitProcess gives a unit: root's
// /etc, /usr/bin and /var/lib over the host's, each of rwPaths (as the
// installed system names them) bound writable from root, and /run/systemd
// hidden, since systemd does not run the throwaway root. Commands a
// volunteer runs on an installed system (buildserver join) run unchanged
// this way; nothing on the host changes. The test must be root. The
// command writes no log of its own: read its output. A program named
// without a slash is looked up in PATH first.
func InRoot(t testing.TB, root string, rwPaths []string, argv ...string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a throwaway root's view needs root (mount namespaces)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("farmtest: %v", err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, unitHelperEnv+"=") {
			env = append(env, kv)
		}
	}
	if !filepath.IsAbs(argv[0]) {
		p, err := exec.LookPath(argv[0])
		if err != nil {
			t.Fatalf("farmtest: %v", err)
		}
		argv = append([]string{p}, argv[1:]...)
	}
	if !filepath.IsAbs(argv[0]) {
		p, err := exec.LookPath(argv[0])
		if err != nil {
			t.Fatalf("farmtest: %v", err)
		}
		argv = append([]string{p}, argv[1:]...)
	}
	s := unitSpec{Root: root, Overlays: []string{"/etc", "/usr/bin", "/var/lib"}, ReadWritePaths: rwPaths,
		HideSystemd: true, UMask: 0o022, Env: env, Argv: argv}
	data, _ := json.Marshal(s)
	cmd := exec.Command(self)
	cmd.Env = append(env, unitHelperEnv+"="+string(data))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

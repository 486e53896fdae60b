package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// releaseVersion is the version the tests give scripts/release.sh.
const releaseVersion = "0.1.0~e2e"

// release runs scripts/release.sh into a new directory with args and
// returns the directory.
func release(t *testing.T, args ...string) string {
	t.Helper()
	root, err := farmtest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, "bash", append([]string{filepath.Join(root, "scripts/release.sh"), "--out", out, "--version", releaseVersion}, args...)...)
	cmd.Dir = root
	start := time.Now()
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("release.sh %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	t.Logf("release.sh %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Second))
	checkSums(t, out)
	return out
}

// checkSums verifies every line of out/SHA256SUMS against its file and
// that every file the release made is listed.
func checkSums(t *testing.T, out string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		sum, name, ok := strings.Cut(l, "  ")
		b, err := os.ReadFile(filepath.Join(out, name))
		if !ok || err != nil {
			t.Fatalf("SHA256SUMS line %q: %v", l, err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
			t.Errorf("SHA256SUMS: %s does not match", name)
		}
		listed[name] = true
	}
	filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != "SHA256SUMS" {
			if rel, _ := filepath.Rel(out, p); !listed[rel] {
				t.Errorf("SHA256SUMS does not list %s", rel)
			}
		}
		return err
	})
}

// treeState describes every file under dir (mode, owner, size, content
// hash, link target), to show that something changed nothing.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d:%d %d", p, fi.Mode(), st.Uid, st.Gid, fi.Size())
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			b.WriteString(" -> " + target)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// installDeb installs a .deb into a new throwaway root with the real dpkg
// (--root, maintainer scripts run outside it with DPKG_ROOT set) and
// returns the root. The root starts with copies of this machine's account
// files, so the system user the package adds takes an id no account here
// has.
func installDeb(t *testing.T, deb string) string {
	t.Helper()
	for _, tool := range []string{"dpkg", "systemd-sysusers", "systemd-tmpfiles"} {
		if _, err := osexec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh installs it): %v", tool, err)
		}
	}
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc", "var/log"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"passwd", "group", "shadow", "gshadow"} {
		data, err := os.ReadFile(filepath.Join("/etc", f))
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(root, "etc", f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := osexec.Command("dpkg", "--root="+root, "--log="+filepath.Join(root, "var/log/dpkg.log"),
		"--force-script-chrootless", "--force-depends", "--install", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg --root %s --install %s: %v\n%s", root, filepath.Base(deb), err, out)
	}
	status, err := osexec.Command("dpkg-query", "--root="+root, "-W", "-f=${Status}", "kiln-buildserver").CombinedOutput()
	if err != nil || string(status) != "install ok installed" {
		t.Fatalf("dpkg-query: %v %q", err, status)
	}
	return root
}

// accountIDs returns name's uid and gid from root/etc/passwd and its shell and home.
func accountIDs(t *testing.T, root, name string) (uid, gid uint32, home, shell string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 7 && f[0] == name {
			var u, g uint32
			fmt.Sscan(f[2], &u)
			fmt.Sscan(f[3], &g)
			return u, g, f[5], f[6]
		}
	}
	t.Fatalf("%s/etc/passwd has no %s", root, name)
	return
}

// wantFile checks a path's type, mode and owner.
func wantFile(t *testing.T, p string, mode fs.FileMode, uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Error(err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode() != mode || st.Uid != uid || st.Gid != gid {
		t.Errorf("%s: %v %d:%d, want %v %d:%d", p, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
	}
}

// TestPackageInstallsJoinsAndBuilds is the volunteer's minute: the
// kiln-buildserver package built by `make release` is installed with dpkg
// into a throwaway root (its maintainer scripts add the system user and a
// 0700 data directory), `buildserver join METASERVER TOKEN` (run as on the
// installed system) spends an enrollment token and writes the
// configuration, and the packaged systemd unit runs, with its hardening
// applied, and builds the sample project (examples/hello); a stop hands
// the build then running back and exits 0. Hostile: a join with an unknown, a used or an expired
// token changes nothing on disk, and a configuration file others may
// write is refused.
func TestPackageInstallsJoinsAndBuilds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("installing a package into a throwaway root and running its unit as its user needs root")
	}
	out := release(t, "--arch", "amd64", "--program", "buildserver")
	deb := filepath.Join(out, "kiln-buildserver_"+releaseVersion+"_amd64.deb")
	root := installDeb(t, deb)

	uid, gid, home, shell := accountIDs(t, root, "kiln-buildserver")
	if home != "/var/lib/kiln/buildserver" || shell != "/usr/sbin/nologin" || uid == 0 || uid >= 1000 {
		t.Errorf("system user kiln-buildserver: uid %d home %s shell %s", uid, home, shell)
	}
	wantFile(t, filepath.Join(root, "var/lib/kiln"), fs.ModeDir|0o755, 0, 0)
	wantFile(t, filepath.Join(root, "var/lib/kiln/buildserver"), fs.ModeDir|0o700, uid, gid)
	wantFile(t, filepath.Join(root, "usr/bin/buildserver"), 0o755, 0, 0)
	unit := filepath.Join(root, "lib/systemd/system/kiln-buildserver.service")
	wantFile(t, unit, 0o644, 0, 0)
	wantFile(t, filepath.Join(root, "etc/kiln"), fs.ModeDir|0o755, 0, 0)
	if _, err := osexec.LookPath("systemd-analyze"); err == nil {
		// systemd's own check of the unit, with the package's binary in place.
		if b, err := farmtest.InRoot(t, root, nil, "systemd-analyze", "verify", "--man=no", unit).CombinedOutput(); err != nil || len(b) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, b)
		}
	}

	// The farm, and the sample project served over git:// (the service
	// user cannot read the test's files, and PrivateTmp hides them).
	f := farmtest.New(t)
	meta := f.StartMetaserver("--heartbeat", "200ms", "--lease", "2s")
	files := map[string]string{}
	examples := filepath.Join(mustModuleRoot(t), "examples/hello")
	for _, n := range []string{"Makefile", "hello.c", "kiln.yaml"} {
		b, err := os.ReadFile(filepath.Join(examples, n))
		if err != nil {
			t.Fatal(err)
		}
		files[n] = string(b)
	}
	repos := t.TempDir()
	repo := filepath.Join(repos, "hello")
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := osexec.Command("git", "-C", repo, "init", "-q", "-b", "main").CombinedOutput(); err != nil {
		t.Fatalf("git init: %v %s", err, b)
	}
	farmtest.Commit(t, repo, files, "the sample project")
	f.AddProject("hello", farmtest.GitDaemon(t, repos)+"hello")

	rw := []string{"/etc/kiln", "/var/lib/kiln/buildserver"}
	join := func(token string, extra ...string) (string, error) {
		args := append([]string{"/usr/bin/buildserver", "join", "--name", "pkg-volunteer", meta.Addr, token}, extra...)
		b, err := farmtest.InRoot(t, root, rw, args...).CombinedOutput()
		return string(b), err
	}
	enrollToken := func(extra ...string) string {
		b, err := osexec.Command(farmtest.Binary(t, "metaserver"), append([]string{"enroll-token", "create", "--data-dir", meta.DataDir}, extra...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("enroll-token create: %v %s", err, b)
		}
		return strings.TrimSpace(string(b))
	}

	// Refused joins change nothing.
	used := enrollToken()
	if b, err := osexec.Command(farmtest.Binary(t, "buildserver"), "join", "--config", filepath.Join(t.TempDir(), "c.conf"),
		"--data-dir", t.TempDir(), "--name", "first-user", "--no-enable", meta.Addr, used).CombinedOutput(); err != nil {
		t.Fatalf("first use of a token: %v %s", err, b)
	}
	expired := enrollToken("--ttl", "1s")
	time.Sleep(1100 * time.Millisecond) // the token's lifetime is wall-clock time
	before := treeState(t, root)
	for _, c := range []struct{ name, token, want string }{
		{"an unknown token", "not-a-token", "unknown enrollment token"},
		{"a used token", used, "already used"},
		{"an expired token", expired, "expired"},
	} {
		out, err := join(c.token, "--jobs", "1")
		var exit *osexec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, c.want) || !strings.Contains(out, "nothing was written") {
			t.Errorf("join with %s: %v\n%s", c.name, err, out)
		}
		if after := treeState(t, root); after != before {
			t.Fatalf("join with %s changed the installed system", c.name)
		}
	}
	if out, err := join(enrollToken(), "--jobs", "1", "--sandbox", "docker"); err == nil || !strings.Contains(out, "--sandbox") {
		t.Errorf("join with a bad setting: %v\n%s", err, out)
	} else if treeState(t, root) != before {
		t.Fatal("join with a bad setting changed the installed system")
	}

	// The volunteer's one command.
	joinOut, err := join(enrollToken(), "--jobs", "1", "--grace", "1s")
	if err != nil || !strings.Contains(joinOut, "joined "+meta.Addr+" as pkg-volunteer") ||
		!strings.Contains(joinOut, "systemd does not run this machine") {
		t.Fatalf("join: %v\n%s", err, joinOut)
	}
	conf := filepath.Join(root, "etc/kiln/buildserver.conf")
	wantFile(t, conf, 0o644, 0, 0)
	wantFile(t, filepath.Join(root, "var/lib/kiln/buildserver/token"), 0o600, uid, gid)
	confText, _ := os.ReadFile(conf)
	if !strings.Contains(string(confText), "metaserver = "+meta.Addr+"\n") || !strings.Contains(string(confText), "data-dir = /var/lib/kiln/buildserver\n") {
		t.Errorf("configuration:\n%s", confText)
	}
	if out, err := join(enrollToken()); err == nil || !strings.Contains(out, "joined already") {
		t.Errorf("a second join: %v\n%s", err, out)
	}

	// A configuration file others may write is refused: exit 2, no restart.
	if err := os.Chmod(conf, 0o666); err != nil {
		t.Fatal(err)
	}
	bad := farmtest.UnitProcess(t, unit, root)
	if err := bad.Start(); err != nil {
		t.Fatal(err)
	}
	var exit *osexec.ExitError
	if err := bad.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(bad.Logs(), "writable by its group or others") {
		t.Fatalf("the unit with a world-writable configuration: %v\n%s", err, bad.Logs())
	}
	if err := os.Chmod(conf, 0o644); err != nil {
		t.Fatal(err)
	}

	// The unit, as systemd would run it, builds the sample project.
	svc := farmtest.UnitProcess(t, unit, root)
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	f.WaitBuildServers(1)
	r := parseResult(t, f.Startcompile("--project", "hello", "--revision", "main", "--wait", "--json", "volunteer@example.com"))
	if r.State != "succeeded" {
		t.Fatalf("the sample project under the packaged unit: %+v\n%s", r, svc.Logs())
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", svc.PID()))
	if err != nil || !strings.Contains(string(status), fmt.Sprintf("Uid:\t%d\t%d", uid, uid)) ||
		!strings.Contains(string(status), "NoNewPrivs:\t1") || !strings.Contains(string(status), "CapBnd:\t0000000000000000") {
		t.Errorf("the service's process is not as the unit says (uid %d, no new privileges, no capabilities): %v\n%s", uid, err, status)
	}
	// A stop hands a running build back: SIGTERM reaches the build server
	// alone (KillMode=mixed), which gives it --grace (1 s here), then
	// returns it and exits 0, within TimeoutStopSec.
	files["kiln.yaml"] = strings.Replace(files["kiln.yaml"], "build:\n", "build:\n  - sleep 120\n", 1)
	slow := farmtest.Commit(t, repo, files, "a slow build")
	id := submit(t, f, "--revision", slow)
	waitRunningOn(t, f, id, "pkg-volunteer")
	if err := svc.Stop(); err != nil {
		t.Errorf("stopping the unit (SIGTERM, TimeoutStopSec): %v", err)
	}
	if b := f.GetBuild(t, id); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || outcomes(b) != "pkg-volunteer:RETURNED" {
		t.Errorf("the build running when the unit stopped: %s %s, want queued, handed back", b.GetState(), outcomes(b))
	}
	if !bytes.Contains([]byte(svc.Logs()), []byte("buildserver starting")) {
		t.Errorf("service log:\n%s", svc.Logs())
	}
}

func mustModuleRoot(t *testing.T) string {
	t.Helper()
	root, err := farmtest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

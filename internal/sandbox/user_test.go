package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// testUser is the unprivileged user Bwrap steps run as when the tests run
// as root: a uid no account has.
var testUser = &User{UID: 1700000123, GID: 1700000123}

// asUser runs Bwrap steps as the build server does: when the tests run as
// root, as testUser, with the step's directories handed to it and their
// parents made searchable (see grantUser).
type asUser struct{ Bwrap }

func (b asUser) Run(ctx context.Context, s Step) error {
	if os.Geteuid() == 0 && s.User == nil {
		s.User = testUser
		for _, d := range append([]string{s.Dir}, s.Writable...) {
			grantUser(d, s.User)
		}
		if filepath.IsAbs(b.Path) {
			grantUser(filepath.Dir(b.Path), nil)
		}
	}
	return b.Bwrap.Run(ctx, s)
}

// grantUser gives u (when not nil) everything under dir, if it exists,
// and lets everyone search dir's parents, as the build server makes its
// data and builds directories 0711.
func grantUser(dir string, u *User) {
	if !filepath.IsAbs(dir) {
		return
	}
	if u != nil {
		filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err == nil {
				os.Lchown(p, int(u.UID), int(u.GID))
			}
			return nil
		})
	}
	for p := dir; ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			os.Chmod(p, fi.Mode().Perm()|0o011)
		}
		if p == "/" {
			return
		}
	}
}

// TestBwrap_Run_RootWithoutUserRefused: a root runner never runs a step
// as root, whatever the caller forgot.
func TestBwrap_Run_RootWithoutUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	b := needBwrap(t).Bwrap
	for _, u := range []*User{nil, {UID: 0, GID: 0}} {
		_, err := run(t, b, Step{Command: "true", User: u})
		var se *SetupError
		if !errors.As(err, &se) || !errors.Is(err, ErrRootStep) {
			t.Errorf("User %v: Run error = %v, want a SetupError wrapping ErrRootStep", u, err)
		}
	}
}

// TestBwrap_Run_StepHoldsNoPrivilege is the hostile case of issue 13: a
// step of a build server running as root tries what took over the
// machine before (remounting /, using a capability, making a user
// namespace of its own to gain one, reading a root-only file, writing
// outside its directories). Each must fail, and the step must not be uid 0
// anywhere.
func TestBwrap_Run_StepHoldsNoPrivilege(t *testing.T) {
	b := needBwrap(t)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "token")
	if err := os.WriteFile(secret, []byte("kiln-secret-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(secretDir, 0o755) // visible, so only the file's mode protects it
	script := strings.Join([]string{
		`echo "uid=$(id -u)"`,
		`echo "capeff=$(awk '/^CapEff/{print $2}' /proc/self/status)"`,
		`echo "capbnd=$(awk '/^CapBnd/{print $2}' /proc/self/status)"`,
		`if mount -o remount,bind,rw / 2>/dev/null; then echo REMOUNTED; fi`,
		`if umount -l /tmp 2>/dev/null; then echo UNMOUNTED; fi`,
		`if unshare -Ur true 2>/dev/null; then echo USERNS; fi`,
		`if cat ` + secret + ` 2>/dev/null; then echo READ-SECRET; fi`,
		`if touch ` + filepath.Join(secretDir, "planted") + ` 2>/dev/null; then echo PLANTED; fi`,
		`if chown 0 . 2>/dev/null; then echo CHOWNED; fi`,
		`echo done`,
	}, "\n")
	dir := t.TempDir()
	out, err := run(t, b, Step{Dir: dir, Command: script + "\ntouch made-by-step"})
	if err != nil {
		t.Fatalf("Run: %v (output %q)", err, out)
	}
	for _, bad := range []string{"REMOUNTED", "UNMOUNTED", "USERNS", "kiln-secret-token", "READ-SECRET", "PLANTED", "CHOWNED"} {
		if strings.Contains(out, bad) {
			t.Errorf("the step could %s:\n%s", bad, out)
		}
	}
	if !strings.Contains(out, "done") || !strings.Contains(out, "capeff=0000000000000000") {
		t.Errorf("the step has capabilities or did not finish:\n%s", out)
	}
	if os.Geteuid() == 0 {
		if want := fmt.Sprintf("uid=%d", testUser.UID); !strings.Contains(out, want) {
			t.Errorf("as root the step should be %s:\n%s", want, out)
		}
		// What the step makes belongs to its user on the host too: it is
		// not host root under another name.
		fi, err := os.Lstat(filepath.Join(dir, "made-by-step"))
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != testUser.UID {
			t.Errorf("a file the step made is owned by uid %d on the host, want %d", uid, testUser.UID)
		}
		if !strings.Contains(out, "capbnd=0000000000000000") {
			t.Errorf("the step's bounding set is not empty:\n%s", out)
		}
	}
	if _, err := os.Stat(filepath.Join(secretDir, "planted")); err == nil {
		t.Error("a file was planted outside the step's directories")
	}
}

// TestBwrap_Run_BindsADirectoryOverASystemPath: what a step writes to
// /usr/local lands in the bound directory; the host's /usr/local is
// untouched and the rest of the system stays read-only.
func TestBwrap_Run_BindsADirectoryOverASystemPath(t *testing.T) {
	b := needBwrap(t)
	dir := t.TempDir()
	capture := filepath.Join(dir, "usr-local")
	if err := os.Mkdir(capture, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, b, Step{Dir: dir, Writable: []string{capture}, Binds: []Bind{{Src: capture, Dst: "/usr/local"}},
		Command: "mkdir -p /usr/local/man/man1 && echo page > /usr/local/man/man1/kiln-test.1 && if touch /usr/kiln-test 2>/dev/null; then echo WROTE-USR; fi"})
	if err != nil {
		t.Fatalf("Run: %v (%s)", err, out)
	}
	if strings.Contains(out, "WROTE-USR") {
		t.Error("/usr was writable")
	}
	if b, err := os.ReadFile(filepath.Join(capture, "man/man1/kiln-test.1")); err != nil || string(b) != "page\n" {
		t.Errorf("captured file = %q, %v", b, err)
	}
	if _, err := os.Stat("/usr/local/man/man1/kiln-test.1"); err == nil {
		t.Error("the step wrote to the host's /usr/local")
	}
	if _, err := run(t, b, Step{Dir: dir, Binds: []Bind{{Src: capture, Dst: "/nonexistent-kiln"}}, Command: "true"}); err == nil {
		t.Error("a bind onto a missing path was accepted")
	}
}

// TestBwrap_Run_ReadOnlyBindIsSeenButNotWritten: a read-only Bind (a
// build's dependency sysroot at /tmp/kiln/sysroot) shows the host
// directory at its new path, and the step can neither change nor add to
// it, although the host directory is writable by everyone.
func TestBwrap_Run_ReadOnlyBindIsSeenButNotWritten(t *testing.T) {
	b := needBwrap(t)
	sysroot := filepath.Join(t.TempDir(), "sysroot")
	if err := os.Mkdir(sysroot, 0o755); err != nil {
		t.Fatal(err)
	}
	header := filepath.Join(sysroot, "lib.h")
	if err := os.WriteFile(header, []byte("int x;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Only the mount may protect them.
	os.Chmod(sysroot, 0o777)
	os.Chmod(header, 0o666)
	os.Chmod(filepath.Dir(sysroot), 0o755)
	out, err := run(t, b, Step{Binds: []Bind{{Src: sysroot, Dst: "/tmp/kiln/sysroot", ReadOnly: true}},
		Command: `cat /tmp/kiln/sysroot/lib.h; if echo bad >> /tmp/kiln/sysroot/lib.h 2>/dev/null; then echo CHANGED; fi; ` +
			`if touch /tmp/kiln/sysroot/new 2>/dev/null; then echo ADDED; fi`})
	if err != nil {
		t.Fatalf("Run: %v (%s)", err, out)
	}
	if !strings.Contains(out, "int x;") {
		t.Errorf("the bound directory is not seen at its new path: %q", out)
	}
	for _, bad := range []string{"CHANGED", "ADDED"} {
		if strings.Contains(out, bad) {
			t.Errorf("the step %s the read-only bind: %q", bad, out)
		}
	}
	if data, _ := os.ReadFile(header); string(data) != "int x;\n" {
		t.Errorf("the host file is now %q", data)
	}
	if _, err := os.Stat(filepath.Join(sysroot, "new")); err == nil {
		t.Error("the step added a file to the host directory")
	}
}

// TestBwrap_Run_IdentityIsTheUidTheStepSees: with Identity the step is
// uid and gid 1000 inside, whatever its real user, and what it makes
// belongs to that real user on the host; root as the identity is refused.
func TestBwrap_Run_IdentityIsTheUidTheStepSees(t *testing.T) {
	b := needBwrap(t)
	dir := t.TempDir()
	out, err := run(t, b, Step{Dir: dir, Identity: &User{UID: 1000, GID: 1000},
		Command: `echo "id=$(id -u):$(id -g)"; touch made; stat -c 'owner=%u:%g' made; ` +
			`echo "capeff=$(awk '/^CapEff/{print $2}' /proc/self/status)"; if mount -o remount,bind,rw / 2>/dev/null; then echo REMOUNTED; fi`})
	if err != nil {
		t.Fatalf("Run: %v (%s)", err, out)
	}
	if !strings.Contains(out, "id=1000:1000") || !strings.Contains(out, "owner=1000:1000") {
		t.Errorf("the step does not see itself as 1000:1000:\n%s", out)
	}
	if !strings.Contains(out, "capeff=0000000000000000") || strings.Contains(out, "REMOUNTED") {
		t.Errorf("with an identity the step holds a capability:\n%s", out)
	}
	fi, err := os.Lstat(filepath.Join(dir, "made"))
	if err != nil {
		t.Fatal(err)
	}
	want := uint32(os.Geteuid())
	if want == 0 {
		want = testUser.UID
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != want {
		t.Errorf("on the host the step's file belongs to uid %d, want the real user %d", uid, want)
	}
	for _, id := range []User{{UID: 0, GID: 1000}, {UID: 1000, GID: 0}} {
		_, err := run(t, b, Step{Identity: &id, Command: "true"})
		var se *SetupError
		if !errors.As(err, &se) || !errors.Is(err, ErrRootStep) {
			t.Errorf("identity %v: %v, want a SetupError wrapping ErrRootStep", id, err)
		}
	}
}

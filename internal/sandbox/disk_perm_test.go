//go:build linux

package sandbox

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A build cannot hide its files from the disk cap by taking its own
// permissions away from a directory: 000 (nothing) and 400 (listable, not
// searchable) are both counted.
func TestDiskUsageCountsDirectoriesTheBuildMadeUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		// Root reads every directory whatever its mode: run this test again
		// as nobody, as a volunteer's build server runs.
		runAsNobody(t, "TestDiskUsageCountsDirectoriesTheBuildMadeUnreadable")
		return
	}
	for _, mode := range []os.FileMode{0o000, 0o400, 0o100} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			hidden := filepath.Join(dir, "hidden")
			if err := os.MkdirAll(filepath.Join(hidden, "deeper"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(hidden, "deeper", "data"), make([]byte, 4<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(hidden, mode); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(hidden, 0o755) })
			used, err := DiskUsage(dir)
			if err != nil {
				t.Fatal(err)
			}
			if used < 4<<20 {
				t.Errorf("DiskUsage = %d bytes with the directory at mode %v, want at least 4 MiB", used, mode)
			}
		})
	}
}

// The mode is only ever changed on a directory of ours, through a
// descriptor of it: a name that is a symbolic link is refused, and its
// target keeps its mode.
func TestReopeningADirectoryNeverFollowsASymlink(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "credential")
	if err := os.WriteFile(secret, []byte("token"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "swapped")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(secret), filepath.Join(dir, "swapped-dir")); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, dirFlags, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, name := range []string{"swapped", "swapped-dir"} {
		if sub, err := reopenOwnerRWX(fd, name); err == nil {
			unix.Close(sub)
			t.Errorf("reopenOwnerRWX(%q) followed a symbolic link", name)
		}
	}
	if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the link's target: %v, %v; want mode 0600 unchanged", fi.Mode(), err)
	}
}

// runAsNobody runs test in a copy of this test binary as uid and gid 65534
// (setpriv), and fails if it does not pass there.
func runAsNobody(t *testing.T, test string) {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("running as root without setpriv (util-linux) to drop to nobody")
	}
	dir, err := os.MkdirTemp("", "kiln-sandbox-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	bin := filepath.Join(dir, "sandbox.test")
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, self); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run", "^"+test+"$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+os.TempDir())
	got, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "--- PASS: "+test) {
		t.Fatalf("%s as nobody: %v\n%s", test, err, got)
	}
}

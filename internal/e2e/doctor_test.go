package e2e

import (
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// TestDoctorSaysWhetherThisMachineCanVolunteerAndWhatToFix runs the real
// `buildserver doctor`: against a running metaserver it passes and names
// the targets it would offer; a metaserver that does not answer, or (as
// root) a build uid of root, makes it fail with the reason.
func TestDoctorSaysWhetherThisMachineCanVolunteerAndWhatToFix(t *testing.T) {
	f := farmtest.New(t)
	m := f.StartMetaserver()
	bin := farmtest.Binary(t, "buildserver")
	data := t.TempDir()

	out, err := runCmd(bin, "doctor", "--metaserver", m.Addr, "--data-dir", data, "--build-uid", "1799100000")
	if err != nil || !strings.Contains(out, "this machine can volunteer") ||
		!strings.Contains(out, "would offer: native") || !strings.Contains(out, "metaserver "+m.Addr+" answers") {
		t.Fatalf("doctor against a running farm: %v\n%s", err, out)
	}

	dead := farmtest.FreeAddr(t)
	out, err = runCmd(bin, "doctor", "--metaserver", dead, "--data-dir", data, "--build-uid", "1799100000")
	var exit *osexec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "FAIL  metaserver "+dead) ||
		!strings.Contains(out, "cannot volunteer yet") {
		t.Errorf("doctor against no metaserver: %v\n%s", err, out)
	}

	if os.Geteuid() == 0 {
		out, err = runCmd(bin, "doctor", "--data-dir", data, "--build-uid", "0")
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "FAIL  bubblewrap") {
			t.Errorf("doctor with root as the build user: %v\n%s", err, out)
		}
	}
}

// TestDoctorSaysBubblewrapOrBinfmtIsMissingAndTheFix runs the real
// `buildserver doctor` on this machine with bubblewrap taken away (a PATH
// holding every program but bwrap) and, as root, with binfmt_misc taken
// away (an empty directory over it in a mount namespace of its own): each
// time it names what is missing and the fix, and exits 1.
func TestDoctorSaysBubblewrapOrBinfmtIsMissingAndTheFix(t *testing.T) {
	bin := farmtest.Binary(t, "buildserver")
	data := t.TempDir()
	var exit *osexec.ExitError

	path := t.TempDir()
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() != "bwrap" {
				os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(path, e.Name())) // the first on PATH wins
			}
		}
	}
	cmd := osexec.Command(bin, "doctor", "--data-dir", data, "--build-uid", "1799100000")
	cmd.Env = append(os.Environ(), "PATH="+path)
	b, err := cmd.CombinedOutput()
	out := string(b)
	if !errors.As(err, &exit) || exit.ExitCode() != 1 ||
		!strings.Contains(out, "FAIL  bubblewrap is not installed (no bwrap on PATH)") ||
		!strings.Contains(out, "to add what is missing: apt-get install -y --no-install-recommends bubblewrap") ||
		!strings.Contains(out, "cannot volunteer yet") {
		t.Errorf("doctor without bubblewrap: %v\n%s", err, out)
	}

	if os.Geteuid() != 0 {
		t.Skip("hiding binfmt_misc needs a mount namespace (root)")
	}
	if _, err := os.Stat("/proc/sys/fs/binfmt_misc/register"); err != nil {
		t.Skip("binfmt_misc is not mounted here (scripts/setup.sh mounts it)")
	}
	b, err = osexec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o ro,mode=755 tmpfs /proc/sys/fs/binfmt_misc && exec "$0" doctor --data-dir "$1" --build-uid 1799100000`, bin, data).CombinedOutput()
	out = string(b)
	if !errors.As(err, &exit) || exit.ExitCode() != 1 ||
		!strings.Contains(out, "FAIL  binfmt_misc is not mounted: programs built for") ||
		!strings.Contains(out, "fix: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable") ||
		!strings.Contains(out, "qemu-user-binfmt binfmt-support") {
		t.Errorf("doctor without binfmt_misc: %v\n%s", err, out)
	}
}

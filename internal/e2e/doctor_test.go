package e2e

import (
	"errors"
	"os"
	osexec "os/exec"
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

package worker

import (
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/kilnbuild/kiln/internal/sysinfo"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// stepEnv is the whole environment of a's steps: a fixed base (nothing of
// the build server's own environment leaks in), the target's toolchain, and
// the KILN_* variables, which win over toolchain entries of the same name.
// jobs is the attempt's share of the machine's CPUs (KILN_JOBS, for make -j);
// files are the NAME=path entries of the target's files (writeTargetFiles).
func stepEnv(a *kilnv1.Assignment, t *Target, home, destDir string, jobs int, files ...string) []string {
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + home,
		"TMPDIR=/tmp",
		"LANG=C.UTF-8",
	}
	env = append(env, t.Env...)
	env = append(env, files...)
	names := make([]string, 0, len(a.GetOptions()))
	for name := range a.GetOptions() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		env = append(env, "KILN_OPT_"+optionVar(name)+"="+a.GetOptions()[name])
	}
	env = append(env,
		"KILN_BUILD_ID="+strconv.FormatUint(a.GetBuildId(), 10),
		"KILN_ATTEMPT_ID="+strconv.FormatUint(a.GetAttemptId(), 10),
		"KILN_TARGET="+a.GetTargetId(),
		"KILN_DESTDIR="+destDir,
		"KILN_JOBS="+strconv.Itoa(max(jobs, 1)),
	)
	return env
}

// optionVar turns an option name into the <NAME> of KILN_OPT_<NAME>: upper
// case, with every character a shell variable name cannot hold replaced by '_'.
func optionVar(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z':
			return r - 'a' + 'A'
		case 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '_':
			return r
		default:
			return '_'
		}
	}, name)
}

// jobsPerSlot is one build's share of cpus when slots builds may run at
// once: at least 1.
func jobsPerSlot(cpus, slots int) int {
	return max(cpus/max(slots, 1), 1)
}

// targetFilesDir is where a target's files go under an attempt's home.
const targetFilesDir = ".kiln"

// writeTargetFiles writes t's files under home/.kiln (replacing what an
// earlier attempt left there) and returns their NAME=path entries.
func writeTargetFiles(t *Target, home string) ([]string, error) {
	return sysinfo.WriteFiles(filepath.Join(home, targetFilesDir), t.Files)
}

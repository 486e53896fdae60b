package worker

import (
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/sandbox"
)

// buildRoot is where a sandboxed build's directories are as its steps see
// them: src, dest ($KILN_DESTDIR) and home ($HOME) below it, the same on
// every volunteer and for every attempt, so that paths a compiler records
// (debug information, __FILE__, rpaths, config.h) are the same in two
// builds of the same source. The sandbox binds the host directories there,
// inside its fresh /tmp.
const buildRoot = "/tmp/kiln"

// buildHostname is the host name every sandboxed step sees.
const buildHostname = "kiln"

// buildIdentity is the uid and gid every sandboxed step sees itself as
// (`id -u`, the owner of its files inside), whatever its real uid: a
// per-build uid on a root build server, the volunteer's own otherwise.
// The sandbox maps it to that real uid, which the host sees.
var buildIdentity = sandbox.User{UID: 1000, GID: 1000}

// layout is where a build's directories are for its steps, and what the
// sandbox must bind or make writable for that.
type layout struct {
	src, dest, home string // as the steps see them
	hostHome        string
	writable        []string
	binds           []sandbox.Bind
}

// hostLayout: the steps see the directories at their host paths (no
// sandbox, or one that cannot move them).
func hostLayout(src, dest, home string) layout {
	return layout{src: src, dest: dest, home: home, hostHome: home, writable: []string{src, dest, home}}
}

// fixedLayout: the sandbox binds the directories below buildRoot.
func fixedLayout(src, dest, home string) layout {
	l := layout{src: buildRoot + "/src", dest: buildRoot + "/dest", home: buildRoot + "/home", hostHome: home}
	l.binds = []sandbox.Bind{{Src: src, Dst: l.src}, {Src: dest, Dst: l.dest}, {Src: home, Dst: l.home}}
	return l
}

// movesDirs reports whether r can show the steps a build's directories at
// buildRoot (bubblewrap binds them; without a sandbox they stay where they
// are).
func movesDirs(r StepRunner) bool {
	if g, ok := r.(diskGuard); ok {
		r = g.StepRunner
	}
	_, ok := r.(sandbox.Bwrap)
	return ok
}

// seen rewrites NAME=path entries naming files under the host's home to
// the path the steps see.
func (l layout) seen(entries []string) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		name, p, _ := strings.Cut(e, "=")
		if rest, ok := strings.CutPrefix(p, l.hostHome+"/"); ok {
			p = path.Join(l.home, rest)
		}
		out[i] = name + "=" + p
	}
	return out
}

// reproducibleEnv is what makes two builds of one source on two volunteers
// see the same environment beyond the fixed paths (docs/manifest.md says
// which): SOURCE_DATE_EPOCH is the commit's time (sourceEpoch; absent for
// an empty tree), TZ and the locale are fixed, and so are the user's name.
// The umask (022) is the build server's own, set at its start.
func reproducibleEnv(epoch time.Time) []string {
	env := []string{"TZ=UTC", "LC_ALL=C.UTF-8", "USER=kiln", "LOGNAME=kiln"}
	if epoch.IsZero() {
		return env
	}
	return append(env, "SOURCE_DATE_EPOCH="+strconv.FormatInt(epoch.Unix(), 10))
}

// sourceEpoch is the commit's time, which git archive stamped on every
// entry of src, read back from the first one before any step runs; the
// zero time for an empty tree.
func sourceEpoch(src string) time.Time {
	entries, err := os.ReadDir(src)
	if err != nil || len(entries) == 0 {
		return time.Time{}
	}
	fi, err := os.Lstat(src + "/" + entries[0].Name())
	if err != nil {
		return time.Time{}
	}
	return time.Unix(fi.ModTime().Unix(), 0)
}

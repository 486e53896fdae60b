package worker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// TestSandboxedBuildsSeeOneFixedEnvironment: under bubblewrap every build
// sees its directories at /tmp/kiln, the host name kiln, UTC, a fixed
// locale and user (name and uid 1000:1000), and SOURCE_DATE_EPOCH = the commit's time; so two
// attempts of one commit in different build directories (as on two
// volunteers) make the same artifact even when the compiler records paths
// (-g, __FILE__).
func TestSandboxedBuildsSeeOneFixedEnvironment(t *testing.T) {
	if _, err := exec.LookPath("cc"); err != nil {
		t.Skip("no cc")
	}
	url, commit := makeRepo(t, map[string]string{"where.c": `#include <stdio.h>
int main(void) { puts(__FILE__); return 0; }
`})
	committed, err := exec.Command("git", "-C", strings.TrimPrefix(url, "file://"), "show", "-s", "--format=%ct", commit).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := startBwrapClient(t)

	r := &kilnv1.Recipe{TimeoutSeconds: 60, Artifacts: []string{"where", "env.txt"}, BuildSteps: []string{
		`cc -g -O0 -o where "$PWD/where.c"`,
		`{ echo "pwd=$PWD"; echo "home=$HOME"; echo "dest=$KILN_DESTDIR"; echo "host=$(hostname)"; echo "tz=$TZ"; echo "lc=$LC_ALL"; echo "user=$USER"; echo "epoch=$SOURCE_DATE_EPOCH"; echo "id=$(id -u):$(id -g)"; } > env.txt`,
	}}
	var shas []string
	for _, id := range []uint64{31, 32} {
		f.push(t, assign(assignment(id, url, commit, r)))
		res := f.waitResult(t, id)
		if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
			t.Fatalf("attempt %d: %v (%s)\nlog:\n%s", id, res.GetOutcome(), res.GetReason(), f.log(id))
		}
		shas = append(shas, res.GetArtifact().GetSha256())
		files := untar(t, f.blob(t, res))
		want := "pwd=/tmp/kiln/src\nhome=/tmp/kiln/home\ndest=/tmp/kiln/dest\nhost=kiln\ntz=UTC\nlc=C.UTF-8\nuser=kiln\nepoch=" +
			strings.TrimSpace(string(committed)) + "\nid=1000:1000\n"
		if files["env.txt"] != want {
			t.Errorf("attempt %d environment:\n%s\nwant:\n%s", id, files["env.txt"], want)
		}
		// The artifact's entries carry the commit's time.
		tr := tar.NewReader(gunzip(t, f.blob(t, res)))
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if got := strconv.FormatInt(h.ModTime.Unix(), 10); got != strings.TrimSpace(string(committed)) {
				t.Errorf("attempt %d: %s packed with time %s, want the commit's", id, h.Name, got)
			}
		}
		if !strings.Contains(files["where"], "/tmp/kiln/src/where.c") {
			t.Errorf("attempt %d: the binary does not record the fixed path", id)
		}
	}
	if shas[0] != shas[1] {
		t.Errorf("two attempts of one commit made different artifacts: %s and %s", shas[0], shas[1])
	}
	if _, err := strconv.ParseInt(strings.TrimSpace(string(committed)), 10, 64); err != nil {
		t.Fatal(err)
	}
}

// gunzip opens a gzip stream held in data.
func gunzip(t *testing.T, data []byte) io.Reader {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return zr
}

package e2e

import (
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// ccacheMakefile compiles and links in two calls, so that the compile is
// one ccache can serve (a compile-and-link call is not cacheable).
const ccacheMakefile = `all: hello
hello.o: hello.c
	$(CC) -O2 -c -o hello.o hello.c
hello: hello.o
	$(CC) -o hello hello.o
install: hello
	mkdir -p $(DESTDIR)/usr/bin && cp hello $(DESTDIR)/usr/bin/hello
.PHONY: all install
`

// TestARebuildOnAVolunteerHitsItsCompilerCache: a real farm (bubblewrap,
// build users as root) builds a C project, then a new commit of it that
// changes no source; the second build's compile comes from the build
// server's compiler cache for that project, which the metaserver keeps on
// the attempt and the build page shows.
func TestARebuildOnAVolunteerHitsItsCompilerCache(t *testing.T) {
	if _, err := exec.LookPath("ccache"); err != nil {
		t.Skip("ccache is not installed (scripts/setup.sh installs it)")
	}
	if _, err := exec.LookPath("bwrap"); err != nil {
		t.Skip("bubblewrap is not installed")
	}
	f := farmtest.New(t)
	f.StartMetaserver()
	dir, _ := farmtest.CProject(t, farmtest.CProjectOptions{Name: "cached", Files: map[string]string{"Makefile": ccacheMakefile}})
	f.AddProject("cached", "file://"+dir)
	f.StartBuildserver(f.AddBuildServer("vol"), "--jobs", "1")
	f.WaitBuildServers(1)

	first, _ := platformRun(t, f, 0, append(platformRequest("cached"), "--wait", "--json", "dev@example.com")...)
	next := farmtest.Commit(t, dir, map[string]string{"README": "a new commit, the same source\n"}, "readme")
	second, _ := platformRun(t, f, 0, append(platformRequest("cached"), "--revision", next, "--wait", "--json", "dev@example.com")...)
	if first.BuildID == second.BuildID {
		t.Fatalf("the new commit was answered by build %d again", first.BuildID)
	}
	cache := func(id uint64) (hits, misses uint32) {
		atts := f.GetBuild(t, id).GetAttempts()
		st := atts[len(atts)-1].GetCompilerCache()
		if st == nil {
			t.Fatalf("build %d: no compiler cache statistics on its attempt\nlog:\n%s", id, platformLog(t, f, id))
		}
		return st.GetHits(), st.GetMisses()
	}
	if h, m := cache(first.BuildID); h != 0 || m != 1 {
		t.Errorf("first build: %d hits, %d misses; want 0 and 1", h, m)
	}
	if h, m := cache(second.BuildID); h != 1 || m != 0 {
		t.Errorf("second build: %d hits, %d misses; want 1 and 0\nlog:\n%s", h, m, platformLog(t, f, second.BuildID))
	}
	if log := platformLog(t, f, second.BuildID); !strings.Contains(log, "[kiln] compiler cache: 1 hits, 0 misses") {
		t.Errorf("the second build's log does not say how its cache served it:\n%s", log)
	}

	ws := f.StartWebstatus()
	resp, err := http.Get(ws.URL + "/build/" + strconv.FormatUint(second.BuildID, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(page), "1 of 1 compilations (100%)") {
		t.Errorf("the build page does not show the attempt's compiler cache hits:\n%s", page)
	}
}

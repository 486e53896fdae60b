package acceptance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
)

// reproSide is one farm of a reproducibility run.
type reproSide struct {
	Side
	f       *farmtest.Farm
	offered map[string]string
}

// startReproSide starts a farm (metaserver and one build server offering
// platforms' targets) whose build server runs under hostname with its
// own data directory and, as root, its own build uids.
func startReproSide(t *testing.T, name, hostname string, projects []Project, platforms []Platform) *reproSide {
	f := farmtest.New(t)
	f.StartMetaserver("--requests-per-minute", "-1")
	for _, p := range projects {
		f.AddProject(p.Name, "file://"+p.Dir)
	}
	args := []string{"--jobs", "1"}
	for _, pl := range platforms {
		args = append(args, "--target", pl.Target)
	}
	var uid uint32
	if os.Geteuid() == 0 {
		uid = farmtest.NextBuildUID()
		args = append(args, "--build-uid", strconv.FormatUint(uint64(uid), 10))
		f.Hostname = hostname
	}
	f.StartBuildserver(f.AddBuildServer(volunteer), args...)
	s := &reproSide{Side: Side{Name: name, DataDir: f.BuildserverDir(1), Hostname: hostname, BuildUID: uid}, f: f}
	if f.Hostname == "" {
		s.Hostname = "(the machine's)"
	}
	s.offered = waitTargetsOf(t, f, len(platforms))
	return s
}

// TestAcceptanceRepro builds every cell of scripts/acceptance.sh --repro
// on two build servers that differ in data directory, host name and
// build uids (two farms, so that neither answers from the other's
// cache), one after the other, compares the artifacts' sha256 and, where they differ, lists
// the differing files and what tells them apart. The section goes into
// KILN_ACCEPTANCE_REPORT (ACCEPTANCE.md), between its markers. It fails
// when a cell built on both sides differs and KILN_ACCEPTANCE_STRICT=1.
func TestAcceptanceRepro(t *testing.T) {
	list := os.Getenv("KILN_ACCEPTANCE_REPRO")
	if list == "" {
		t.Skip("KILN_ACCEPTANCE_REPRO is not set; run scripts/acceptance.sh --repro")
	}
	projects := readProjects(t, list)
	platforms := choosePlatforms(t, os.Getenv("KILN_ACCEPTANCE_PLATFORMS"))
	reportPath := os.Getenv("KILN_ACCEPTANCE_REPORT")
	if reportPath == "" {
		reportPath = filepath.Join(t.TempDir(), "ACCEPTANCE.md")
	}
	rep := &ReproReport{Kiln: kilnRevision(), Started: time.Now(), Machine: machine(), Projects: projects}
	for _, p := range platforms {
		rep.Platforms = append(rep.Platforms, p.Name)
	}
	var sides [2]*reproSide
	for i, host := range []string{"volunteer-a", "a-longer-host-name-b"} {
		sides[i] = startReproSide(t, string(rune('a'+i)), host, projects, platforms)
	}
	rep.Sides = [2]Side{sides[0].Side, sides[1].Side}

	save := func(c ReproCell) {
		rep.Cells = append(rep.Cells, c)
		rep.Elapsed = time.Since(rep.Started)
		var b strings.Builder
		if err := rep.WriteMarkdown(&b); err != nil {
			t.Errorf("report: %v", err)
			return
		}
		old, _ := os.ReadFile(reportPath)
		replaceFile(t, reportPath, SpliceSection(string(old), b.String()))
		t.Logf("%s on %s: %s %s (%d of %d cells done)", c.Project, c.Platform, c.Outcome, c.Reason, len(rep.Cells), len(projects)*len(platforms))
	}
	// One side after the other: two builds at the same moment would hide
	// a build that records the time (to the minute, or the second). On a
	// machine of two cores this costs little: the builds share the CPUs.
	for _, pl := range platforms {
		for _, p := range projects {
			var cells [2]Cell
			for i, s := range sides {
				cells[i] = runCell(t, s.f, p, pl, s.offered)
			}
			save(reproCell(t, sides, cells, p, pl))
		}
	}
	same, built := rep.Reproduced()
	t.Logf("%d of %d cells built on both sides reproduce; report in %s; %s", same, built, reportPath, rep.Elapsed.Round(time.Second))
	if os.Getenv("KILN_ACCEPTANCE_STRICT") == "1" && same != built {
		t.Errorf("%d of %d cells built on both sides reproduce", same, built)
	}
}

// reproCell compares what the two sides made of p on pl.
func reproCell(t *testing.T, sides [2]*reproSide, cells [2]Cell, p Project, pl Platform) ReproCell {
	c := ReproCell{Project: p.Name, Platform: pl.Name, BuildA: cells[0].BuildID, BuildB: cells[1].BuildID}
	for i, cell := range cells {
		// A wrong artifact (the ELF judge) is still an artifact to compare.
		if cell.Outcome != OK && cell.Outcome != Wrong {
			c.Outcome = NotBuilt
			c.Reason = fmt.Sprintf("%s: %s: %s", sides[i].Name, cell.Outcome, cell.Reason)
			return c
		}
	}
	var data [2][]byte
	var dirs [2]string
	for i, s := range sides {
		var sha string
		data[i], sha = s.f.ArtifactBytes(t, cells[i].BuildID)
		if i == 0 {
			c.SHA256A = sha
		} else {
			c.SHA256B = sha
		}
		// runCell unpacked the artifact here.
		dirs[i] = filepath.Join(s.f.Dir, "artifacts", p.Name+"-"+pl.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	Compare(ctx, &c, data[0], data[1], dirs[0], dirs[1], [2]Side{sides[0].Side, sides[1].Side})
	if c.Outcome == Differs {
		tmp := t.TempDir()
		a, b := filepath.Join(tmp, "a.tar.gz"), filepath.Join(tmp, "b.tar.gz")
		if os.WriteFile(a, data[0], 0o644) == nil && os.WriteFile(b, data[1], 0o644) == nil {
			c.Diffoscope = Diffoscope(ctx, a, b)
		}
	}
	return c
}

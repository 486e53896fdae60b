package acceptance

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const (
	// volunteer is the build server's name.
	volunteer = "volunteer"
	// requester is the email every cell is requested with.
	requester = "acceptance@example.com"
	// cellTimeout bounds one cell from submission to download: the default
	// recipe's 1h limit plus the time queued behind other cells.
	cellTimeout = 3 * time.Hour
	// targetsTimeout bounds the build server's probing of its targets.
	targetsTimeout = 3 * time.Minute
	// logTailLines is how much of a failed build's log the report keeps.
	logTailLines = 30
)

// TestAcceptance runs the suite scripts/acceptance.sh prepared: KILN_ACCEPTANCE
// names its project list (name, Debian package, git directory, what it
// covers; tab-separated), KILN_ACCEPTANCE_PLATFORMS the columns,
// KILN_ACCEPTANCE_REPORT where the report goes. With KILN_ACCEPTANCE_STRICT=1
// every cell must succeed; otherwise the test fails below the 90% target.
func TestAcceptance(t *testing.T) {
	list := os.Getenv("KILN_ACCEPTANCE")
	if list == "" {
		t.Skip("KILN_ACCEPTANCE is not set; run scripts/acceptance.sh (make acceptance)")
	}
	projects := readProjects(t, list)
	platforms := choosePlatforms(t, os.Getenv("KILN_ACCEPTANCE_PLATFORMS"))
	reportPath := os.Getenv("KILN_ACCEPTANCE_REPORT")
	if reportPath == "" {
		reportPath = filepath.Join(t.TempDir(), "ACCEPTANCE.md")
	}
	jobs := 2
	if s := os.Getenv("KILN_ACCEPTANCE_JOBS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 64 {
			t.Fatalf("KILN_ACCEPTANCE_JOBS=%q: want 1 to 64", s)
		}
		jobs = n
	}

	rep := &Report{Note: os.Getenv("KILN_ACCEPTANCE_NOTE"), Kiln: kilnRevision(), Started: time.Now(),
		Machine: machine(), Projects: projects}
	for _, p := range platforms {
		rep.Platforms = append(rep.Platforms, p.Name)
	}

	f := farmtest.New(t)
	f.StartMetaserver("--requests-per-minute", "0")
	for _, p := range projects {
		f.AddProject(p.Name, "file://"+p.Dir)
	}
	tok := f.AddBuildServer(volunteer)
	f.StartBuildserver(tok, append([]string{"--jobs", strconv.Itoa(jobs)}, TargetFlags()...)...)
	offered := waitTargets(t, f)

	var (
		mu    sync.Mutex
		cells []Cell
	)
	save := func(c Cell) {
		mu.Lock()
		defer mu.Unlock()
		cells = append(cells, c)
		rep.Cells = append([]Cell(nil), cells...)
		JudgeSharedLibs(rep.Cells)
		rep.Elapsed = time.Since(rep.Started)
		writeReport(t, rep, reportPath)
		c = rep.Cells[len(rep.Cells)-1]
		t.Logf("%s on %s: %s %s (%d of %d cells done)", c.Project, c.Platform, c.Outcome, c.Reason, len(cells), len(projects)*len(platforms))
	}

	// Cells go platform by platform (native first, so its shared libraries
	// are known early), a few at a time: the build server runs `jobs`
	// builds and the metaserver queues the rest.
	type job struct {
		p  Project
		pl Platform
	}
	work := make(chan job)
	var wg sync.WaitGroup
	for i := 0; i < jobs+1; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				save(runCell(t, f, j.p, j.pl, offered))
			}
		}()
	}
	for _, pl := range platforms {
		for _, p := range projects {
			work <- job{p, pl}
		}
	}
	close(work)
	wg.Wait()

	rep.Cells = cells
	JudgeSharedLibs(rep.Cells)
	rep.Elapsed = time.Since(rep.Started)
	writeReport(t, rep, reportPath)
	ok, total := rep.Passed()
	t.Logf("%d of %d cells succeed; report in %s; %s", ok, total, reportPath, rep.Elapsed.Round(time.Second))
	var failed []string
	for _, c := range rep.Cells {
		if c.Outcome != OK {
			failed = append(failed, fmt.Sprintf("%s/%s: %s: %s", c.Project, c.Platform, c.Outcome, c.Reason))
		}
	}
	switch {
	case os.Getenv("KILN_ACCEPTANCE_STRICT") == "1" && len(failed) > 0:
		t.Errorf("every cell must succeed; %d failed:\n%s", len(failed), strings.Join(failed, "\n"))
	case ok*10 < total*9:
		t.Errorf("%d of %d cells succeed, below the 90%% target", ok, total)
	}
}

// readProjects reads the script's project list and each repository's HEAD.
func readProjects(t *testing.T, list string) []Project {
	t.Helper()
	data, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	var ps []Project
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		fields := strings.Split(line, "\t")
		if len(fields) != 4 {
			t.Fatalf("%s: %q: want 4 tab-separated fields", list, line)
		}
		out, err := exec.Command("git", "-C", fields[2], "rev-parse", "HEAD").Output()
		if err != nil {
			t.Fatalf("git rev-parse HEAD in %s: %v", fields[2], err)
		}
		ps = append(ps, Project{Name: fields[0], Package: fields[1], Dir: fields[2], Covers: fields[3],
			Commit: strings.TrimSpace(string(out))})
	}
	return ps
}

// choosePlatforms returns the named platforms (all when names is empty).
func choosePlatforms(t *testing.T, names string) []Platform {
	t.Helper()
	if strings.TrimSpace(names) == "" {
		return Platforms
	}
	var out []Platform
	for _, n := range strings.Fields(names) {
		p, ok := PlatformByName(n)
		if !ok {
			t.Fatalf("unknown platform %q", n)
		}
		out = append(out, p)
	}
	return out
}

// waitTargets waits until the build server has probed every target it was
// given and returns the offered ones' reasons: "" when offered, the
// prober's reason when rejected.
func waitTargets(t *testing.T, f *farmtest.Farm) map[string]string {
	t.Helper()
	return waitTargetsOf(t, f, len(Platforms))
}

// waitTargetsOf is waitTargets for a build server given n targets.
func waitTargetsOf(t *testing.T, f *farmtest.Farm, n int) map[string]string {
	t.Helper()
	status := map[string]string{}
	farmtest.Eventually(t, targetsTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := kilnv1.NewStatusServiceClient(f.Conn()).ListBuildServers(ctx, &kilnv1.ListBuildServersRequest{})
		if err != nil {
			return err
		}
		for _, s := range resp.GetBuildServers() {
			if s.GetName() != volunteer || !s.GetConnected() {
				continue
			}
			got := map[string]string{}
			for _, tg := range s.GetTargets() {
				got[tg.GetId()] = ""
			}
			for _, r := range s.GetRejectedTargets() {
				got[r.GetTargetId()] = "target not offered: " + r.GetReason()
			}
			if len(got) < n {
				return fmt.Errorf("%d of %d targets reported", len(got), n)
			}
			status = got
			return nil
		}
		return fmt.Errorf("%s is not connected", volunteer)
	})
	for id, why := range status {
		if why != "" {
			t.Logf("%s: %s", id, why)
		}
	}
	return status
}

// submitted is the part of startcompile --json the suite reads.
type submitted struct {
	BuildID     uint64 `json:"build_id"`
	State       string `json:"state"`
	Failure     string `json:"failure"`
	FailingStep string `json:"failing_step"`
	Error       string `json:"error"`
}

// runCell builds project p on platform pl with startcompile, downloads the
// artifact and judges it.
func runCell(t *testing.T, f *farmtest.Farm, p Project, pl Platform, offered map[string]string) Cell {
	c := Cell{Project: p.Name, Platform: pl.Name}
	if why, ok := offered[pl.Target]; !ok || why != "" {
		c.Outcome, c.Reason = NoTarget, why
		if !ok {
			c.Reason = "the build server does not offer " + pl.Target
		}
		return c
	}
	dir := filepath.Join(f.Dir, "artifacts", p.Name+"-"+pl.Name)
	args := append([]string{"--project", p.Name, "--revision", p.Commit, "--json", "--wait", "--download", dir}, pl.Pins...)
	ctx, cancel := context.WithTimeout(context.Background(), cellTimeout)
	r := f.StartcompileContext(ctx, append(args, requester)...)
	cancel()
	var res submitted
	jsonErr := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &res)
	c.BuildID = res.BuildID
	switch r.Exit {
	case 0:
		in, err := Inspect(dir, pl)
		if err != nil {
			c.Outcome, c.Reason = Broken, "inspecting the download: "+err.Error()
			break
		}
		JudgeArtifact(&c, in)
	case 1:
		c.Outcome, c.Reason, c.Step = Failed, res.Failure, res.FailingStep
	case 2:
		c.Outcome, c.Reason = Refused, firstNonEmpty(res.Error, lastLine(r.Stderr))
	case -1:
		c.Outcome, c.Reason = Broken, fmt.Sprintf("no result within %s", cellTimeout)
	default:
		c.Outcome, c.Reason = Broken, fmt.Sprintf("startcompile exit %d: %s", r.Exit, firstNonEmpty(res.Error, lastLine(r.Stderr)))
	}
	if jsonErr != nil && c.Reason == "" {
		c.Reason = "startcompile printed no JSON: " + lastLine(r.Stderr)
	}
	if c.BuildID != 0 {
		describeBuild(f, &c, pl)
	}
	return c
}

// describeBuild adds the build's target, build time, recipe (Build.recipe,
// else the log's "recipe: " line) and, for a failure, its log's tail.
func describeBuild(f *farmtest.Farm, c *Cell, pl Platform) {
	ctx, cancel := context.WithTimeout(context.Background(), farmtest.CommandTimeout)
	defer cancel()
	resp, err := kilnv1.NewCompileServiceClient(f.Conn()).GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: c.BuildID})
	if err == nil {
		c.Recipe = resp.GetBuild().GetRecipe()
		if atts := resp.GetBuild().GetAttempts(); len(atts) > 0 {
			last := atts[len(atts)-1]
			c.Target = last.GetTargetId()
			if s, e := last.GetStartedAt(), last.GetFinishedAt(); s != nil && e != nil {
				c.BuildTime = e.AsTime().Sub(s.AsTime())
			}
		}
	}
	if c.Outcome == OK && c.Target != "" && c.Target != pl.Target {
		c.Outcome = Wrong
		c.Reason = fmt.Sprintf("built on target %s, %s is %s", c.Target, pl.Name, pl.Target)
	}
	r := f.StartcompileContext(ctx, "log", strconv.FormatUint(c.BuildID, 10))
	if r.Exit != 0 {
		return
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(r.Stdout))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if len(line) > 400 {
			line = line[:400] + "…"
		}
		if c.Recipe == "" && strings.Contains(line, "recipe: ") {
			c.Recipe = strings.TrimSpace(line[strings.Index(line, "recipe: ")+len("recipe: "):])
		}
		lines = append(lines, line)
	}
	if c.Outcome != OK {
		c.Symptom = Symptom(lines)
		if len(lines) > logTailLines {
			lines = lines[len(lines)-logTailLines:]
		}
		c.LogTail = strings.Join(lines, "\n")
	}
}

func writeReport(t *testing.T, rep *Report, path string) {
	var b strings.Builder
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Errorf("report: %v", err)
		return
	}
	// A reproducibility run's section (scripts/acceptance.sh --repro) stays.
	old, _ := os.ReadFile(path)
	replaceFile(t, path, SpliceSection(b.String(), ReproSection(string(old))))
}

// replaceFile replaces path with data through a temporary file and a rename.
func replaceFile(t *testing.T, path, data string) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Errorf("report: %v", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Errorf("report: %v", err)
	}
}

// kilnRevision names the Kiln code under test.
func kilnRevision() string {
	root, err := farmtest.ModuleRoot()
	if err != nil {
		return "unknown"
	}
	out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	br, _ := exec.Command("git", "-C", root, "rev-parse", "--abbrev-ref", "HEAD").Output()
	return fmt.Sprintf("%s (branch %s)", strings.TrimSpace(string(out)), strings.TrimSpace(string(br)))
}

// machine describes the machine the suite ran on.
func machine() string {
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s/%s, %d CPUs, Linux %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), strings.TrimSpace(string(rel)))
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/manifest"
	"github.com/kilnbuild/kiln/internal/sysinfo"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// realPlatforms are the targets the real scenario builds for: native and
// one emulated (a cross compiler, its tests under qemu-user).
var realPlatforms = []struct {
	target string   // the build server's --target
	pin    []string // startcompile's platform flags for it
}{
	{"native", nil},
	{"cross:s390x-linux-gnu", []string{"--arch", "s390x"}},
}

// runReal builds a real project, Debian's source package --package
// (zlib by default: configure, make, make check through qemu for s390x),
// by hand and through Kiln, alternately, on this machine in one run:
//
//   - by hand: the default recipe's steps (manifest.Detect, the same
//     strings the build server runs), each under sh in a fresh export of
//     the tree, with the target's toolchain environment
//     (sysinfo.Toolchain) and KILN_JOBS as a build server of one slot
//     gives it, at the steps' priority (nice 19, idle I/O class; see
//     byHand); no sandbox, no compiler cache;
//   - Kiln before: a build server without a compiler cache
//     (--compiler-cache-bytes 0, as before issue 20), startcompile --wait;
//   - Kiln cold, then warm: a fresh build server with its compiler cache,
//     whose first build of the project fills it and whose next builds (a
//     new commit of the same tree each: a new build) hit it.
//
// Times are whole: the by-hand script from the export to the last step,
// and the startcompile --wait process, submit to completion (Kiln's own
// overhead included: fetch, sandbox, pack, upload). Each build is of a
// commit of its own with the same tree, so no answer comes from Kiln's
// artifact cache.
//
// The machine may be shared and loaded, so by-hand and Kiln runs
// alternate (A B A B ..., --reps pairs per platform and phase), every
// run notes the load average before and after it, and each comparison
// is given three ways: the pairs' own ratios (a pair sees about the same
// load), their median, and the ratio of the minima (the least disturbed
// run of each kind, the usual estimator of a time under interference).
func runReal(ctx context.Context, e *env) error {
	pkg := e.cfg.Package
	src, tree, err := debianSource(ctx, e, pkg)
	if err != nil {
		return err
	}
	names, err := topNames(tree)
	if err != nil {
		return err
	}
	recipe := manifest.Detect(names)
	steps := append(append(append([]string{}, recipe.Build...), recipe.Check...), recipe.Package...)
	e.rep.logf("%s: recipe %s (%s): %d steps", pkg, recipe.Kind, recipe.Why, len(steps))
	jobs := max(runtime.NumCPU(), 1) // one slot: the build gets every CPU

	var notes []string
	pairs := map[string][]realPair{}
	cold := map[string]time.Duration{}
	var loads []float64
	note := func(format string, args ...any) {
		s := fmt.Sprintf(format, args...)
		e.rep.logf("%s", s)
		notes = append(notes, s)
	}
	reps := max(e.cfg.Reps, 1)
	for _, phase := range []string{"before", "after"} {
		cacheBytes := "0"
		if phase == "after" {
			cacheBytes = fmt.Sprint(256 << 20)
		}
		f, err := startRealFarm(ctx, sub(e, "farm-"+phase), src, cacheBytes)
		if err != nil {
			return err
		}
		for _, p := range realPlatforms {
			if phase == "after" {
				d, hits, err := f.kilnBuild(ctx, e, p.pin)
				if err != nil {
					f.close()
					return err
				}
				cold[p.target] = d
				note("%s: Kiln, cold compiler cache %.1f s (%s)", p.target, d.Seconds(), hits)
			}
			for i := range reps {
				var q realPair
				q.loadHand[0] = loadAverage()
				d, err := byHand(ctx, e, src, p.target, steps, jobs)
				if err != nil {
					f.close()
					return err
				}
				q.loadHand[1] = loadAverage()
				q.loadKiln[0] = q.loadHand[1]
				k, hits, err := f.kilnBuild(ctx, e, p.pin)
				if err != nil {
					f.close()
					return err
				}
				q.loadKiln[1] = loadAverage()
				q.hand, q.kiln = d, k
				loads = append(loads, q.loadHand[0], q.loadHand[1], q.loadKiln[1])
				key := phase + " " + p.target
				pairs[key] = append(pairs[key], q)
				what := "no compiler cache"
				if phase == "after" {
					what = "warm compiler cache"
				}
				note("%s pair %d: by hand %.1f s (load %.1f→%.1f), then Kiln (%s) %.1f s (load →%.1f) = %.3f× (%s)",
					p.target, i+1, d.Seconds(), q.loadHand[0], q.loadHand[1], what, k.Seconds(), q.loadKiln[1], k.Seconds()/d.Seconds(), hits)
			}
		}
		// What Kiln adds besides the steps, from the build server's own
		// timings: steadier under load than a ratio of two whole builds.
		for _, t := range realTimings(f.bsLog) {
			note("%s phase: %s", phase, t)
		}
		f.close()
	}
	sort.Float64s(loads)
	loadNote := ""
	if len(loads) > 0 {
		loadNote = fmt.Sprintf("load average (1 min) over the run: %.1f to %.1f, median %.1f", loads[0], loads[len(loads)-1], loads[(len(loads)-1)/2])
	}
	for _, p := range realPlatforms {
		before := summarize(pairs["before "+p.target])
		warm := summarize(pairs["after "+p.target])
		e.rep.add(figure{Scenario: "real", Name: fmt.Sprintf("%s %s: Kiln (no cache) ÷ by hand, min/min", pkg, p.target), Value: before.minRatio, Unit: "×",
			Target: 1.05, AtMost: true, Note: before.describe() + "\n" + loadNote})
		e.rep.add(figure{Scenario: "real", Name: fmt.Sprintf("%s %s: Kiln (no cache) ÷ by hand, median pair", pkg, p.target), Value: before.median, Unit: "×",
			Target: 1.05, AtMost: true, Note: "see the min/min figure above for the pairs"})
		e.rep.add(figure{Scenario: "real", Name: fmt.Sprintf("%s %s: Kiln warm ÷ by hand, min/min", pkg, p.target), Value: warm.minRatio, Unit: "×", NoTarget: true,
			Note: warm.describe()})
		e.rep.add(figure{Scenario: "real", Name: fmt.Sprintf("%s %s: Kiln cold ÷ by hand", pkg, p.target), Value: float64(cold[p.target]) / float64(warm.handMedian), Unit: "×", NoTarget: true,
			Note: fmt.Sprintf("one cold build (%.1f s) against the median by-hand time of the same phase (%.1f s)", cold[p.target].Seconds(), warm.handMedian.Seconds())})
	}
	e.rep.add(figure{Scenario: "real", Name: "runs, in order", Value: float64(len(notes)), Unit: "", NoTarget: true, Note: strings.Join(notes, "\n")})
	return nil
}

// realPair is a by-hand run and the Kiln build right after it, with the
// load average before and after each.
type realPair struct {
	hand, kiln         time.Duration
	loadHand, loadKiln [2]float64
}

// pairSummary is what a platform's pairs say.
type pairSummary struct {
	pairs []realPair
	// median is the median of the pairs' Kiln ÷ by-hand ratios; minRatio
	// the fastest Kiln build ÷ the fastest by-hand run.
	median, minRatio float64
	handMedian       time.Duration
	minHand, minKiln time.Duration
}

func summarize(pairs []realPair) pairSummary {
	s := pairSummary{pairs: pairs}
	if len(pairs) == 0 {
		return s
	}
	var ratios []float64
	hands := make([]time.Duration, 0, len(pairs))
	minHand, minKiln := pairs[0].hand, pairs[0].kiln
	for _, p := range pairs {
		ratios = append(ratios, float64(p.kiln)/float64(p.hand))
		hands = append(hands, p.hand)
		minHand, minKiln = min(minHand, p.hand), min(minKiln, p.kiln)
	}
	sort.Float64s(ratios)
	sort.Slice(hands, func(i, j int) bool { return hands[i] < hands[j] })
	s.median = (ratios[(len(ratios)-1)/2] + ratios[len(ratios)/2]) / 2
	s.minRatio = float64(minKiln) / float64(minHand)
	s.minHand, s.minKiln = minHand, minKiln
	s.handMedian = hands[(len(hands)-1)/2]
	return s
}

// describe lists the pairs (Kiln / by hand = ratio, load) and the
// estimators.
func (s pairSummary) describe() string {
	var parts []string
	for _, p := range s.pairs {
		parts = append(parts, fmt.Sprintf("%.1f s / %.1f s = %.3f× (load %.1f–%.1f)", p.kiln.Seconds(), p.hand.Seconds(),
			float64(p.kiln)/float64(p.hand), min(p.loadHand[0], p.loadKiln[1]), max(p.loadHand[0], p.loadKiln[1])))
	}
	return fmt.Sprintf("pairs, by hand then Kiln (Kiln / by hand): %s\nmedian of the pairs' ratios %.3f×; minima: Kiln %.1f s / by hand %.1f s = %.3f×",
		strings.Join(parts, "; "), s.median, s.minKiln.Seconds(), s.minHand.Seconds(), s.minRatio)
}

// loadAverage is this machine's 1-minute load average (0 when unknown).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	_, _ = fmt.Sscanf(string(b), "%f", &l)
	return l
}

// debianSource fetches Debian 12's source package pkg (apt-get source;
// deb-src must be enabled, as scripts/acceptance.sh does), unpacks it
// without debian/ and .pc/, commits it into a git repository and returns
// the repository and its work tree (the same directory).
func debianSource(ctx context.Context, e *env, pkg string) (repo, tree string, err error) {
	debs := filepath.Join(e.dir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", "", err
	}
	run := func(dir, name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=load", "GIT_AUTHOR_EMAIL=load@example.com",
			"GIT_COMMITTER_NAME=load", "GIT_COMMITTER_EMAIL=load@example.com", "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	e.rep.logf("apt-get source %s/bookworm", pkg)
	if err := run(debs, "apt-get", "source", "--download-only", "-qq", pkg+"/bookworm"); err != nil {
		return "", "", fmt.Errorf("%w (is deb-src enabled? scripts/acceptance.sh enables it)", err)
	}
	dscs, _ := filepath.Glob(filepath.Join(debs, "*.dsc"))
	if len(dscs) == 0 {
		return "", "", fmt.Errorf("apt-get source %s fetched no .dsc", pkg)
	}
	tree = filepath.Join(e.dir, pkg+"-src")
	if err := run(e.dir, "dpkg-source", "--no-check", "-x", dscs[0], tree); err != nil {
		return "", "", err
	}
	for _, d := range []string{"debian", ".pc"} {
		if err := os.RemoveAll(filepath.Join(tree, d)); err != nil {
			return "", "", err
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A", "-f", "."}, {"commit", "-qm", pkg}} {
		if err := run(tree, "git", args...); err != nil {
			return "", "", err
		}
	}
	return tree, tree, nil
}

// topNames lists the names at the top of tree, as the metaserver gives
// manifest.Detect.
func topNames(tree string) ([]string, error) {
	entries, err := os.ReadDir(tree)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.Name() != ".git" {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// byHand exports the tree of src's HEAD into a fresh directory and runs
// steps there one by one under sh, with target's toolchain environment,
// and returns the whole time.
func byHand(ctx context.Context, e *env, src, target string, steps []string, jobs int) (time.Duration, error) {
	spec, err := sysinfo.ParseTarget(target)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp(e.dir, "hand-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	tree, home, dest := filepath.Join(dir, "src"), filepath.Join(dir, "home"), filepath.Join(dir, "dest")
	for _, d := range []string{tree, home, dest} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return 0, err
		}
	}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "TMPDIR=/tmp", "LANG=C.UTF-8", "TZ=UTC", "LC_ALL=C.UTF-8",
		"KILN_DESTDIR=" + dest, fmt.Sprintf("KILN_JOBS=%d", jobs)}
	env = append(env, spec.Toolchain().Env...)
	start := time.Now()
	export := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive HEAD | tar -x -C "$2"`, "sh", src, tree)
	if out, err := export.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("exporting the tree: %w: %s", err, out)
	}
	for _, s := range steps {
		// At the priority the build server gives its steps (nice 19, the
		// idle I/O class; the export above, like the build server's, at
		// the caller's): on a machine others load with niced work, a step
		// at nice 0 against one at nice 19 would measure the volunteer's
		// priority policy, not what Kiln adds.
		args := []string{"nice", "-n", "19", "ionice", "-c", "3", "sh", "-c", s}
		if e.cfg.HandNormalPriority {
			args = []string{"sh", "-c", s}
		}
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Dir, cmd.Env = tree, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("by hand, %s, step %q: %w: %s", target, s, err, tailString(string(out), 2000))
		}
	}
	return time.Since(start), nil
}

// tailString is the last n bytes of s.
func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// projectFarm is a metaserver with the project and one build server offering
// the real scenario's targets.
type projectFarm struct {
	m      *meta
	src    string
	commit int
	// bsLog is the build server's log (debug: each attempt's timings).
	bsLog string
}

// startRealFarm starts a metaserver with src registered as the project
// and one build server (one slot) with the given --compiler-cache-bytes.
func startRealFarm(ctx context.Context, e *env, src, cacheBytes string) (*projectFarm, error) {
	m, err := startMetaserver(ctx, e.bins, e.dir)
	if err != nil {
		return nil, err
	}
	f := &projectFarm{m: m, src: src}
	if err := m.addProject(ctx, e.cfg.Package, src); err != nil {
		f.close()
		return nil, err
	}
	tok, err := m.addBuildServer(ctx, "volunteer")
	if err != nil {
		f.close()
		return nil, err
	}
	args := []string{"--compiler-cache-bytes", cacheBytes}
	for _, p := range realPlatforms {
		args = append(args, "--target", p.target)
	}
	bs, err := startBuildserver(e.bins, e.dir, m, "volunteer", tok, 1, e.cfg.Sandbox, true, args...)
	if err != nil {
		f.close()
		return nil, err
	}
	f.bsLog = bs.LogPath
	if err := m.waitConnected(ctx, 1, readyTimeout); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// kilnBuild commits the same tree again (a new build) and builds it with
// a whole startcompile --wait process pinned by pin; it returns the
// process's time and what the compiler cache reported.
func (f *projectFarm) kilnBuild(ctx context.Context, e *env, pin []string) (time.Duration, string, error) {
	f.commit++
	cmd := exec.CommandContext(ctx, "git", "-C", f.src, "commit", "-q", "--allow-empty", "-m", fmt.Sprintf("rebuild %d", f.commit))
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=load", "GIT_AUTHOR_EMAIL=load@example.com", "GIT_COMMITTER_NAME=load", "GIT_COMMITTER_EMAIL=load@example.com")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, "", fmt.Errorf("git commit: %w: %s", err, out)
	}
	args := append([]string{"--metaserver", f.m.Addr, "--project", e.cfg.Package, "--wait", "--json", "--timeout", "30m"}, pin...)
	args = append(args, fmt.Sprintf("real-%d@example.com", f.commit))
	cctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	c := exec.CommandContext(cctx, e.bins.Startcompile, args...)
	var stderr strings.Builder
	c.Stderr = &stderr
	t0 := time.Now()
	out, err := c.Output()
	d := time.Since(t0)
	if err != nil {
		return 0, "", fmt.Errorf("startcompile %v: %w: %s", args, err, tailString(stderr.String(), 3000))
	}
	var res struct {
		BuildID uint64 `json:"build_id"`
		State   string `json:"state"`
		Cached  bool   `json:"cached"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.State != "succeeded" || res.Cached {
		return 0, "", fmt.Errorf("startcompile: %s (%v); want a new build that succeeded", out, err)
	}
	b, err := f.m.Compile.GetBuild(ctx, &kilnv1.GetBuildRequest{BuildId: res.BuildID})
	if err != nil {
		return d, "", err
	}
	atts := b.GetBuild().GetAttempts()
	st := atts[len(atts)-1].GetCompilerCache()
	hits := "none"
	if st != nil {
		hits = fmt.Sprintf("%d hits, %d misses, %d uncacheable", st.GetHits(), st.GetMisses(), st.GetUncacheable())
	}
	return d, hits, nil
}

// close stops the farm's processes by PID.
func (f *projectFarm) close() {
	procs.stopAll()
	f.m.close()
}

// realTimings summarizes, per target, the build server's own "attempt
// timings" debug lines in logPath: the medians of fetch (the export),
// steps (sandboxed, the recipe's own work), pack and send (upload or
// inline), and of fetch + pack + send, Kiln's own part on the build
// server.
func realTimings(logPath string) []string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return nil
	}
	fieldsOf := func(line string) map[string]string {
		m := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				m[k] = strings.Trim(v, `"`)
			}
		}
		return m
	}
	target := map[string]string{}
	type sums struct{ fetch, steps, pack, send, own []time.Duration }
	per := map[string]*sums{}
	var order []string
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(line, `msg="attempt started"`):
			f := fieldsOf(line)
			target[f["attempt_id"]] = f["target"]
		case strings.Contains(line, `msg="attempt timings"`):
			f := fieldsOf(line)
			t := target[f["attempt_id"]]
			d := func(k string) time.Duration { v, _ := time.ParseDuration(f[k]); return v }
			send := d("upload") + d("inline")
			s := per[t]
			if s == nil {
				s = &sums{}
				per[t] = s
				order = append(order, t)
			}
			s.fetch, s.steps, s.pack = append(s.fetch, d("fetch")), append(s.steps, d("steps")), append(s.pack, d("pack"))
			s.send, s.own = append(s.send, send), append(s.own, d("fetch")+d("pack")+send)
		}
	}
	med := func(ds []time.Duration) float64 {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return (ds[(len(ds)-1)/2] + ds[len(ds)/2]).Seconds() / 2
	}
	var out []string
	for _, t := range order {
		s := per[t]
		out = append(out, fmt.Sprintf("%s, build server's own timings over %d builds (medians): fetch %.3f s, steps %.2f s, pack %.3f s, send %.3f s; fetch + pack + send %.3f s",
			t, len(s.steps), med(s.fetch), med(s.steps), med(s.pack), med(s.send), med(s.own)))
	}
	return out
}

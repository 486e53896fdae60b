package worker

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// checkBuildDir fails unless dir holds exactly the empty layout of a build
// directory.
func checkBuildDir(t *testing.T, dir string) {
	t.Helper()
	checkBuildDirFiles(t, dir, true)
}

// checkRecycledBuildDir is checkBuildDir for a recycled build directory,
// whose files may hold an earlier build's content (see buildDirs.recycle).
func checkRecycledBuildDir(t *testing.T, dir string) {
	t.Helper()
	checkBuildDirFiles(t, dir, false)
}

func checkBuildDirFiles(t *testing.T, dir string, emptyFiles bool) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		switch e.Name() {
		case srcName, destName, homeName:
			if sub, err := os.ReadDir(filepath.Join(dir, e.Name())); !e.IsDir() || err != nil || len(sub) > 0 {
				t.Errorf("%s: not an empty directory (%v, %v)", e.Name(), sub, err)
			}
		default:
			if !fi.Mode().IsRegular() || (emptyFiles && fi.Size() != 0) {
				t.Errorf("%s: not an empty file (%v, %d bytes)", e.Name(), fi.Mode(), fi.Size())
			}
		}
	}
	want := []string{artifactName, destName, homeName, logName, resultTmpName, srcName}
	if !slices.Equal(names, want) {
		t.Errorf("build directory holds %q, want %q", names, want)
	}
}

func TestBuildDirsHandOutPreparedDirectories(t *testing.T) {
	root := t.TempDir()
	spare := filepath.Join(root, "spare")
	if err := os.Mkdir(spare, 0o755); err != nil {
		t.Fatal(err)
	}
	b, stale, err := newBuildDirs(spare, 2)
	if err != nil || len(stale) > 0 {
		t.Fatalf("newBuildDirs = %v, %v", stale, err)
	}
	if err := b.fill(func() bool { return false }); err != nil {
		t.Fatal(err)
	}
	if m := b.missing(); m != 0 {
		t.Fatalf("%d spares missing after fill", m)
	}
	for i, want := range []bool{true, true, false} {
		dst := filepath.Join(root, "build", string(rune('a'+i)))
		if i == 0 {
			os.Mkdir(filepath.Dir(dst), 0o755)
		}
		spare, _, err := b.take(dst, treeKey{}, nil)
		if err != nil || spare != want {
			t.Fatalf("take %d = %v, %v; want spare %v", i, spare, err, want)
		}
		checkBuildDir(t, dst)
	}
	if m := b.missing(); m != 2 {
		t.Errorf("%d spares missing after taking them all, want 2", m)
	}
}

func TestBuildDirsTakeUpCompleteSparesAfterACrash(t *testing.T) {
	spare := t.TempDir()
	for _, name := range []string{"ready-4", "tmp-5"} {
		if err := makeBuildDir(filepath.Join(spare, name)); err != nil {
			t.Fatal(err)
		}
	}
	b, stale, err := newBuildDirs(spare, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(stale, []string{filepath.Join(spare, "tmp-5")}) {
		t.Errorf("stale = %q, want the incomplete tmp-5", stale)
	}
	if m := b.missing(); m != 1 {
		t.Errorf("%d missing, want 1 (ready-4 taken up)", m)
	}
	if err := b.fill(func() bool { return false }); err != nil {
		t.Fatal(err)
	}
	// New spares are numbered after the old ones, never over them.
	if _, err := os.Stat(filepath.Join(spare, "ready-6")); err != nil {
		t.Errorf("next spare: %v", err)
	}
}

func TestResultIsSavedThroughThePreparedFile(t *testing.T) {
	dir := t.TempDir()
	s := resultStore{dir: filepath.Join(dir, "results")}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	build := filepath.Join(dir, "build")
	if err := makeBuildDir(build); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		id   uint64
		tmp  string
	}{
		{"the prepared file is renamed into place", 1, filepath.Join(build, resultTmpName)},
		{"without a prepared file a temporary one is made", 2, filepath.Join(build, "missing")},
		{"without a build directory a temporary one is made", 3, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &kilnv1.AttemptResult{AttemptId: tc.id, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, Reason: "x"}
			if err := s.save(r, tc.tmp); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(s.path(tc.id))
			if err != nil {
				t.Fatal(err)
			}
			got := &kilnv1.AttemptResult{}
			if err := proto.Unmarshal(data, got); err != nil || !proto.Equal(got, r) {
				t.Errorf("saved %v (%v), want %v", got, err, r)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(build, resultTmpName)); !os.IsNotExist(err) {
		t.Errorf("prepared result file still there: %v", err)
	}
	loaded, err := s.load()
	if err != nil || len(loaded) != 3 {
		t.Errorf("load = %d results, %v; want 3", len(loaded), err)
	}
}

func TestAnAcknowledgedResultFileGoesBackIntoItsBuildDirectoryForRecycling(t *testing.T) {
	dir := t.TempDir()
	s := resultStore{dir: filepath.Join(dir, "results")}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	build := filepath.Join(dir, "build")
	if err := makeBuildDir(build); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(build, resultTmpName)
	before, err := os.Stat(keep)
	if err != nil {
		t.Fatal(err)
	}
	r := &kilnv1.AttemptResult{AttemptId: 7, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED}
	if err := s.save(r, keep); err != nil {
		t.Fatal(err)
	}
	if err := s.remove(7, keep); err != nil {
		t.Fatal(err)
	}
	if loaded, err := s.load(); len(loaded) != 0 || err != nil {
		t.Errorf("load after remove = %v, %v; want nothing", loaded, err)
	}
	after, err := os.Stat(keep)
	if err != nil || !os.SameFile(before, after) {
		t.Errorf("result file in the build directory: %v, %v; want the prepared file back", after, err)
	}
	// Recycling keeps it (written over by the next result).
	trash := filepath.Join(dir, "trash-build")
	if err := os.Rename(build, trash); err != nil {
		t.Fatal(err)
	}
	b := &buildDirs{dir: t.TempDir(), want: 1}
	if !b.recycle(trash, treeKey{}) {
		t.Fatal("the build directory was not recycled")
	}
	recycled, err := os.Stat(filepath.Join(b.ready[0], resultTmpName))
	if err != nil || !os.SameFile(before, recycled) {
		t.Errorf("recycled result file: %v, %v; want the same file", recycled, err)
	}

	// Without its build directory, the result file is deleted.
	if err := s.save(&kilnv1.AttemptResult{AttemptId: 8}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.remove(8, filepath.Join(dir, "gone", resultTmpName)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.path(8)); !os.IsNotExist(err) {
		t.Errorf("result file kept: %v", err)
	}
	if err := s.remove(8, ""); err != nil {
		t.Errorf("removing a removed result: %v", err)
	}
}

func TestAnEmptyResultFileIsDiscarded(t *testing.T) {
	// What an OS crash may leave of a result written without fsync.
	s := resultStore{dir: t.TempDir()}
	if err := os.WriteFile(s.path(5), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, err := s.load()
	if len(loaded) != 0 || err == nil {
		t.Errorf("load = %v, %v; want nothing and an error", loaded, err)
	}
	if _, err := os.Stat(s.path(5)); !os.IsNotExist(err) {
		t.Errorf("empty result file kept: %v", err)
	}
}

func TestIdleTrimmerTrimsOnceAfterTheLastBuild(t *testing.T) {
	tr := newIdleTrimmer(20 * time.Millisecond)
	trimmed := make(chan struct{}, 10)
	tr.trim = func() { trimmed <- struct{}{} }

	tr.busy()
	tr.busy()
	tr.idle() // one still running
	tr.busy() // and another starts
	tr.idle()
	time.Sleep(60 * time.Millisecond) // a trim would be due by now if armed
	if n := tr.trims(); n != 0 {
		t.Fatalf("%d trims while builds ran", n)
	}
	tr.idle()
	select {
	case <-trimmed:
	case <-time.After(5 * time.Second):
		t.Fatal("no trim after the last build ended")
	}
	// A build starting within the delay voids the pending trim.
	tr.busy()
	tr.idle()
	tr.busy()
	time.Sleep(60 * time.Millisecond)
	if n := tr.trims(); n != 1 {
		t.Errorf("%d trims, want 1: a build started before the delay passed", n)
	}
	tr.idle()
}

func TestClientPreparesTheNextBuildDirectory(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	cfg := testConfig(t, f)
	r := startClient(t, cfg)
	spare := filepath.Join(cfg.DataDir, "spare")
	ready := func() int {
		m, _ := filepath.Glob(filepath.Join(spare, "ready-*"))
		return len(m)
	}
	pollUntil(t, "spares for both slots", func() bool { return ready() == 2 })
	f.push(t, assign(assignment(3, url, commit, recipe([]string{"echo built > out"}, "out"))))
	if res := f.waitResult(t, 3); res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("outcome %v: %s", res.GetOutcome(), res.GetReason())
	}
	waitIdle(t, r.c)
	// At least two: the finished directory may be recycled into a third.
	pollUntil(t, "the used spare replaced", func() bool { return ready() >= 2 })
	if err := r.wait(t); err != nil {
		t.Fatal(err)
	}
}

// pollUntil polls cond until it holds, failing the test after 15 s.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/sandbox"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestFormatBytesIsExactInTheLargestUnitThatDividesIt(t *testing.T) {
	for n, want := range map[int64]string{
		4 << 30:    "4 GiB",
		64 << 20:   "64 MiB",
		1536 << 10: "1536 KiB",
		1000:       "1000 bytes",
		0:          "0 bytes",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDiskBoundsDefaultOnAndCanBeTurnedOff(t *testing.T) {
	base := sandbox.Unsandboxed{}
	on := Config{Sandbox: base}.withDefaults()
	g, ok := on.Sandbox.(diskGuard)
	if !ok || g.maxBytes != DefaultMaxDiskBytes || g.minFree != DefaultMinFreeDiskBytes {
		t.Errorf("default step runner %#v, want a diskGuard with the defaults", on.Sandbox)
	}
	off := Config{Sandbox: base, MaxDiskBytes: -1, MinFreeDiskBytes: -1}.withDefaults()
	if _, ok := off.Sandbox.(diskGuard); ok || diskCap(off.Sandbox) != 0 {
		t.Errorf("step runner %#v with both bounds off, want the sandbox itself", off.Sandbox)
	}
}

// fillDisk writes 1 MiB files, each far below any file size limit, until
// it is stopped.
const fillDisk = `i=0; while :; do head -c 1048576 /dev/zero > fill$i || exit 9; i=$((i+1)); done`

func TestBuildsThatLeaveProcessesOrFillTheDiskFailWithAClearReason(t *testing.T) {
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	const capBytes = 16 << 20
	overCap := "build used more than 16 MiB of disk (--max-disk-bytes); stopped"
	for _, tc := range []struct {
		name    string
		recipe  *kilnv1.Recipe
		minFree int64
		outcome kilnv1.AttemptOutcome
		step    string
		reason  string
		// unwatched leaves the step to the check after the last step
		// (the watcher's first check an hour away), however slow the
		// machine runs it.
		unwatched bool
	}{
		{name: "many small files are stopped at the disk cap while the step runs",
			recipe:  recipe([]string{"true", fillDisk}, "x"),
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, step: fillDisk, reason: overCap},
		{name: "a step too short for the watcher is caught after the last step",
			recipe:  recipe([]string{"head -c 20971520 /dev/zero > big; echo x > x"}, "x"),
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, reason: overCap, unwatched: true},
		{name: "the artifact gets only what the disk cap leaves",
			recipe:  recipe([]string{"head -c 10485760 /dev/urandom > noise"}, "noise"),
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, reason: overCap},
		{name: "a file system below the reserve stops the step as the machine's failure",
			recipe: recipe([]string{"sleep 20"}, "x"), minFree: 1 << 60,
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SETUP_FAILED, step: "sleep 20",
			reason: "the build server's disk has less than 1048576 TiB free (--min-free-disk-bytes); build stopped"},
		{name: "a background process left running fails the build",
			recipe:  recipe([]string{"sleep 1000 & echo started"}, "x"),
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, step: "sleep 1000 & echo started",
			reason: `step "sleep 1000 & echo started" left 1 background process running (sleep); they were killed`},
		{name: "a failing step that also leaves processes says both",
			recipe:  recipe([]string{"sleep 1000 & sleep 1000 & exit 4"}, "x"),
			outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED, step: "sleep 1000 & sleep 1000 & exit 4",
			reason: `step "sleep 1000 & sleep 1000 & exit 4" exited with status 4 and left 2 background processes running (sleep, sleep); they were killed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t)
			cfg := testConfig(t, f)
			cfg.MaxDiskBytes = capBytes
			cfg.MinFreeDiskBytes = tc.minFree
			if tc.unwatched {
				cfg.Sandbox = unwatchedSteps{cfg.Sandbox}
			}
			startClient(t, cfg)
			f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
			f.push(t, assign(assignment(1, url, commit, tc.recipe)))
			res := f.waitResult(t, 1)
			if res.GetOutcome() != tc.outcome || res.GetFailingStep() != tc.step || res.GetReason() != tc.reason {
				t.Errorf("result = %v / %q / %q, want %v / %q / %q\nlog:\n%s",
					res.GetOutcome(), res.GetFailingStep(), res.GetReason(), tc.outcome, tc.step, tc.reason, f.log(1))
			}
			if !strings.Contains(f.log(1), tc.reason) {
				t.Errorf("the build log does not give the reason %q:\n%s", tc.reason, f.log(1))
			}
		})
	}
}

// unwatchedSteps runs steps with their disk watcher's first check an hour
// away, so that only the check after the last step can see a step's use.
type unwatchedSteps struct{ StepRunner }

func (u unwatchedSteps) Run(ctx context.Context, s sandbox.Step) error {
	s.Disk.Interval = time.Hour
	return u.StepRunner.Run(ctx, s)
}

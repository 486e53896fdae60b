package worker

import (
	"math"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// fakeLoad is a load average a test sets while a Client reads it.
type fakeLoad struct{ bits atomic.Uint64 }

func (l *fakeLoad) set(v float64) { l.bits.Store(math.Float64bits(v)) }

func (l *fakeLoad) read() (float64, bool) { return math.Float64frombits(l.bits.Load()), true }

// useLoad makes c read its load average from l.
func useLoad(c *Client, l *fakeLoad) {
	c.mu.Lock()
	c.loadAverage = l.read
	c.mu.Unlock()
}

// halfCPUs is the idle-only threshold: the load (less our builds) must
// exceed it for the machine to count as busy.
func halfCPUs() float64 { return float64(runtime.NumCPU()) / 2 }

func TestMachineBusyComparesTheLoadLessOurBuildsWithHalfTheCPUs(t *testing.T) {
	half := halfCPUs()
	for _, tc := range []struct {
		name      string
		load      float64
		unread    bool
		ourBuilds int
		want      bool
	}{
		{name: "a load above half the CPUs is busy", load: half + 0.5, want: true},
		{name: "a load of exactly half the CPUs is idle", load: half, want: false},
		{name: "no load is idle", load: 0, want: false},
		{name: "our own builds are not counted as the owner's work", load: half + 0.5, ourBuilds: 1, want: false},
		{name: "the owner's load beyond our builds is busy", load: half + 2.5, ourBuilds: 2, want: true},
		{name: "an unreadable load counts as idle", load: 1e9, unread: true, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			load := func() (float64, bool) { return tc.load, !tc.unread }
			if got := machineBusy(load, tc.ourBuilds); got != tc.want {
				t.Errorf("machineBusy(load %.2f, %d builds of ours) on %d CPUs = %v, want %v",
					tc.load, tc.ourBuilds, runtime.NumCPU(), got, tc.want)
			}
		})
	}
}

func TestTheDefaultLoadReaderReadsTheMachinesLoad(t *testing.T) {
	load, ok := readLoadAverage()
	if runtime.GOOS != "linux" {
		if ok {
			t.Errorf("readLoadAverage off Linux = %v, true; want not measured", load)
		}
		return
	}
	if !ok || load < 0 || math.IsNaN(load) {
		t.Errorf("readLoadAverage = %v, %v; want a load average from /proc/loadavg", load, ok)
	}
}

// heartbeatsSettle waits until the heartbeats sent after this call (the
// first one may have been composed before it) number at least three, and
// fails the test unless all of them say busy == want.
func heartbeatsSettle(t *testing.T, f *fakeMeta, want bool) {
	t.Helper()
	f.mu.Lock()
	from := len(f.heartbeats) + 1
	f.mu.Unlock()
	var got []*kilnv1.Heartbeat
	f.waitFor(t, "three more heartbeats", func() bool {
		if len(f.heartbeats) < from+3 {
			return false
		}
		got = f.heartbeats[from:]
		return true
	})
	for i, hb := range got {
		if hb.GetBusy() != want {
			t.Fatalf("heartbeat %d after the load changed says busy=%v, want %v", from+i, hb.GetBusy(), want)
		}
	}
}

// noRun fails the test if attempt id sent any progress or log.
func noRun(t *testing.T, f *fakeMeta, id uint64) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.phases[id]) > 0 || len(f.logs[id]) > 0 {
		t.Errorf("attempt %d ran: phases %v, log %q", id, f.phases[id], f.logs[id])
	}
}

func TestAnIdleOnlyBuildServerTakesNoWorkWhileItsOwnerLoadsTheMachine(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	cfg := testConfig(t, f)
	cfg.Policy = &kilnv1.BuildServerPolicy{IdleOnly: true}
	r := startClient(t, cfg)
	var load fakeLoad
	load.set(halfCPUs() + 1)
	useLoad(r.c, &load)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })

	heartbeatsSettle(t, f, true)
	f.push(t, assign(assignment(1, url, commit, recipe([]string{"echo ran; cp README out"}, "out"))))
	res := f.waitResult(t, 1)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RETURNED || !strings.Contains(res.GetReason(), "idle") {
		t.Errorf("assignment while busy: %v (%s), want RETURNED because the machine is busy", res.GetOutcome(), res.GetReason())
	}
	if res.GetArtifact() != nil || res.GetLogSize() != 0 {
		t.Errorf("assignment while busy left an artifact %v or %d log bytes", res.GetArtifact(), res.GetLogSize())
	}
	noRun(t, f, 1)

	// The owner's work ends: the build server says so and builds again.
	load.set(halfCPUs())
	heartbeatsSettle(t, f, false)
	f.push(t, assign(assignment(2, url, commit, recipe([]string{"echo ran; cp README out"}, "out"))))
	res = f.waitResult(t, 2)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("assignment once idle: %v (%s)\nlog:\n%s", res.GetOutcome(), res.GetReason(), f.log(2))
	}
	if log := f.log(2); !strings.Contains(log, "ran\n") {
		t.Errorf("log of the build once idle lacks its step:\n%s", log)
	}
}

func TestWithoutIdleOnlyTheLoadIsIgnored(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	cfg := testConfig(t, f)
	r := startClient(t, cfg)
	var load fakeLoad
	load.set(halfCPUs() + float64(runtime.NumCPU())*4)
	useLoad(r.c, &load)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })

	heartbeatsSettle(t, f, false)
	f.push(t, assign(assignment(1, url, commit, recipe([]string{"echo ran; cp README out"}, "out"))))
	if res := f.waitResult(t, 1); res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Errorf("assignment under load without idle-only: %v (%s), want it built", res.GetOutcome(), res.GetReason())
	}
}

// Busy heartbeats must not be confused with our own builds: a build of ours
// running on an otherwise idle machine raises the load by about one, and the
// build server must not then call itself busy and return its next work.
func TestOurOwnRunningBuildDoesNotMakeAnIdleOnlyBuildServerBusy(t *testing.T) {
	f := startFake(t)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	cfg := testConfig(t, f)
	cfg.Policy = &kilnv1.BuildServerPolicy{IdleOnly: true}
	cfg.Grace = 100 * time.Millisecond // the sleeping build is returned at the end
	r := startClient(t, cfg)
	var load fakeLoad
	load.set(0)
	useLoad(r.c, &load)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })

	f.push(t, assign(assignment(1, url, commit, recipe([]string{"echo started; sleep 60"}, "x"))))
	f.waitFor(t, "the step to start", func() bool { return strings.Contains(string(f.logs[1]), "started") })
	// Our one build adds one to the load: still at the threshold once it
	// is taken off.
	load.set(halfCPUs() + 1)
	heartbeatsSettle(t, f, false)
	f.push(t, assign(assignment(2, url, commit, recipe([]string{"cp README out"}, "out"))))
	if res := f.waitResult(t, 2); res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Errorf("second assignment with only our build loading the machine: %v (%s), want it built",
			res.GetOutcome(), res.GetReason())
	}
	// Beyond our build, the owner's load makes it busy again.
	load.set(halfCPUs() + 1.5)
	heartbeatsSettle(t, f, true)
}

package worker

import (
	"slices"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestRefusal(t *testing.T) {
	target := testTarget()
	policy := &kilnv1.BuildServerPolicy{
		AllowedProjects: []string{"hello", "zlib"},
		MaxBuildSeconds: 600,
		AllowedOptions:  map[string]*kilnv1.OptionValues{"opt": {Values: []string{"O0", "O2"}}},
	}
	base := func() *kilnv1.Assignment {
		return &kilnv1.Assignment{TargetId: "native", Project: "hello", Options: map[string]string{"opt": "O2", "other": "free"},
			Recipe: &kilnv1.Recipe{TimeoutSeconds: 600, Requires: []string{"make"}}}
	}
	for _, tc := range []struct {
		name   string
		edit   func(a *kilnv1.Assignment)
		policy *kilnv1.BuildServerPolicy
		want   string // "" = accepted
	}{
		{name: "an assignment within the policy is accepted", edit: func(*kilnv1.Assignment) {}},
		{name: "no policy accepts anything the target can build", policy: &kilnv1.BuildServerPolicy{},
			edit: func(a *kilnv1.Assignment) { a.Project = "any"; a.Recipe.TimeoutSeconds = 99999 }},
		{name: "a project not on the list is refused", edit: func(a *kilnv1.Assignment) { a.Project = "openssl" }, want: `project "openssl"`},
		{name: "a limited option with another value is refused", edit: func(a *kilnv1.Assignment) { a.Options["opt"] = "O3" }, want: `option opt="O3"`},
		{name: "a time limit over the cap is refused", edit: func(a *kilnv1.Assignment) { a.Recipe.TimeoutSeconds = 601 }, want: "exceeds"},
		{name: "a required tool the target lacks is refused", edit: func(a *kilnv1.Assignment) { a.Recipe.Requires = []string{"cmake"} }, want: `"cmake" is missing`},
		{name: "a target not offered is refused", edit: func(a *kilnv1.Assignment) { a.TargetId = "musl" }, want: `target "musl"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := base()
			tc.edit(a)
			p := policy
			if tc.policy != nil {
				p = tc.policy
			}
			var tgt *Target
			if a.TargetId == "native" {
				tgt = &target
			}
			got := refusal(p, tgt, a)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("refusal = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestBuildTimeout(t *testing.T) {
	a := &kilnv1.Assignment{Recipe: &kilnv1.Recipe{}}
	if got := buildTimeout(&kilnv1.BuildServerPolicy{}, a, time.Hour); got != time.Hour {
		t.Errorf("no limits anywhere: %v, want the default", got)
	}
	if got := buildTimeout(&kilnv1.BuildServerPolicy{MaxBuildSeconds: 60}, a, time.Hour); got != time.Minute {
		t.Errorf("only the policy's cap: %v, want 1m", got)
	}
	a.Recipe.TimeoutSeconds = 30
	if got := buildTimeout(&kilnv1.BuildServerPolicy{MaxBuildSeconds: 60}, a, time.Hour); got != 30*time.Second {
		t.Errorf("recipe's limit: %v, want 30s", got)
	}
}

func TestStepEnv(t *testing.T) {
	a := &kilnv1.Assignment{AttemptId: 5, BuildId: 2, TargetId: "cross:s390x-linux-gnu",
		Options: map[string]string{"with-ssl": "yes", "Level": "3"}}
	tgt := &Target{Env: []string{"CC=s390x-linux-gnu-gcc", "QEMU_LD_PREFIX=/usr/s390x-linux-gnu", "KILN_TARGET=spoofed"}}
	env := stepEnv(a, tgt, "/b/home", "/b/dest", 3, "KILN_CMAKE_TOOLCHAIN_FILE=/b/home/.kiln/toolchain.cmake")
	last := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		last[k] = v // exec keeps the last value of a name
	}
	want := map[string]string{
		"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/b/home", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
		"CC": "s390x-linux-gnu-gcc", "QEMU_LD_PREFIX": "/usr/s390x-linux-gnu",
		"KILN_OPT_WITH_SSL": "yes", "KILN_OPT_LEVEL": "3",
		"KILN_BUILD_ID": "2", "KILN_ATTEMPT_ID": "5", "KILN_TARGET": "cross:s390x-linux-gnu", "KILN_DESTDIR": "/b/dest",
		"KILN_JOBS": "3", "KILN_CMAKE_TOOLCHAIN_FILE": "/b/home/.kiln/toolchain.cmake",
	}
	for k, v := range want {
		if last[k] != v {
			t.Errorf("%s=%q, want %q", k, last[k], v)
		}
	}
	if len(last) != len(want) {
		var extra []string
		for k := range last {
			if _, ok := want[k]; !ok {
				extra = append(extra, k)
			}
		}
		slices.Sort(extra)
		t.Errorf("unexpected variables %q", extra)
	}
}

func TestJobsPerSlot(t *testing.T) {
	for _, c := range []struct{ cpus, slots, want int }{{8, 2, 4}, {2, 1, 2}, {2, 4, 1}, {1, 1, 1}, {7, 2, 3}, {4, 0, 4}} {
		if got := jobsPerSlot(c.cpus, c.slots); got != c.want {
			t.Errorf("jobsPerSlot(%d, %d) = %d, want %d", c.cpus, c.slots, got, c.want)
		}
	}
}

func TestBackoffGrowsToItsCapWithJitter(t *testing.T) {
	var b reconnects
	backoffMin, backoffMax := reconnectDelay.Base, reconnectDelay.Max
	prevMax := time.Duration(0)
	for i := range 20 {
		d := b.next()
		ideal := min(backoffMin<<i, backoffMax)
		if d < ideal/2 || d > ideal {
			t.Fatalf("retry %d: %v outside [%v, %v]", i, d, ideal/2, ideal)
		}
		prevMax = max(prevMax, d)
	}
	if prevMax > backoffMax {
		t.Errorf("delay %v above the cap", prevMax)
	}
	b.reset()
	if d := b.next(); d > backoffMin {
		t.Errorf("after reset: %v, want at most %v", d, backoffMin)
	}
}

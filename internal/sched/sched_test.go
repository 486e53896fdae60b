package sched

import (
	"fmt"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func sys(arch, endian, model, libc string, emulated bool) *kilnv1.SystemInfo {
	return &kilnv1.SystemInfo{Os: "linux", Arch: arch, Endian: endian, DataModel: model, CharBit: 8,
		Libc: libc, LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0", Emulated: emulated,
		Tools: map[string]string{"make": "4.3", "cc": "12.2.0"}}
}

var (
	x86   = sys("x86_64", "little", "LP64", "glibc", false)
	s390x = sys("s390x", "big", "LP64", "glibc", true)
	i686  = sys("i686", "little", "ILP32", "glibc", true)
	musl  = sys("x86_64", "little", "LP64", "musl", false)
)

func server(name string, slots int, infos ...*kilnv1.SystemInfo) *Server {
	srv := &Server{Name: name, Slots: slots}
	for i, info := range infos {
		srv.Targets = append(srv.Targets, &Target{ID: fmt.Sprintf("t%d", i), Info: info})
	}
	return srv
}

func TestMatch(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name        string
		servers     []*Server
		constraints *kilnv1.PlatformConstraints
		requires    []string
		project     string
		options     map[string]string
		excluded    map[string]time.Time
		timeout     uint32 // seconds; 0 stands for the manifest default, one hour
		want        string // "server/target" or "" for no match
	}{
		{name: "a free constraint takes any target", servers: []*Server{server("a", 1, x86)},
			constraints: &kilnv1.PlatformConstraints{}, want: "a/t0"},
		{name: "big endian goes to the s390x target", servers: []*Server{server("a", 1, x86, s390x)},
			constraints: &kilnv1.PlatformConstraints{Endian: "big"}, want: "a/t1"},
		{name: "ILP32 little goes to i686", servers: []*Server{server("a", 1, x86, s390x, i686)},
			constraints: &kilnv1.PlatformConstraints{DataModel: "ILP32", Endian: "little"}, want: "a/t2"},
		{name: "musl only matches the musl target", servers: []*Server{server("a", 1, x86), server("b", 1, musl)},
			constraints: &kilnv1.PlatformConstraints{Libc: "musl"}, want: "b/t0"},
		{name: "native is preferred over emulated when both fit", servers: []*Server{server("emu", 1, s390x), server("nat", 1, x86)},
			constraints: &kilnv1.PlatformConstraints{Os: "linux"}, want: "nat/t0"},
		{name: "nobody offers powerpc", servers: []*Server{server("a", 1, x86, s390x)},
			constraints: &kilnv1.PlatformConstraints{Arch: "ppc"}, want: ""},
		{name: "a missing required tool rules a target out", servers: []*Server{server("a", 1, x86)},
			constraints: &kilnv1.PlatformConstraints{}, requires: []string{"cmake"}, want: ""},
		{name: "an excluded server is skipped", servers: []*Server{server("a", 1, x86), server("b", 1, x86)},
			constraints: &kilnv1.PlatformConstraints{}, excluded: map[string]time.Time{"a": now.Add(time.Minute)}, want: "b/t0"},
		{name: "an exclusion that ended no longer keeps the only server out", servers: []*Server{server("a", 1, x86)},
			constraints: &kilnv1.PlatformConstraints{}, excluded: map[string]time.Time{"a": now}, want: "a/t0"},
		{name: "a policy allowing other projects refuses", servers: []*Server{
			{Name: "p", Slots: 1, Policy: &kilnv1.BuildServerPolicy{AllowedProjects: []string{"other"}}, Targets: []*Target{{ID: "t0", Info: x86}}}},
			constraints: &kilnv1.PlatformConstraints{}, project: "hello", want: ""},
		{name: "a policy limiting an option value refuses other values", servers: []*Server{
			{Name: "p", Slots: 1, Policy: &kilnv1.BuildServerPolicy{AllowedOptions: map[string]*kilnv1.OptionValues{"level": {Values: []string{"0", "1"}}}}, Targets: []*Target{{ID: "t0", Info: x86}}}},
			constraints: &kilnv1.PlatformConstraints{}, options: map[string]string{"level": "3"}, want: ""},
		{name: "a policy limiting an option value accepts allowed values", servers: []*Server{
			{Name: "p", Slots: 1, Policy: &kilnv1.BuildServerPolicy{AllowedOptions: map[string]*kilnv1.OptionValues{"level": {Values: []string{"0", "1"}}}}, Targets: []*Target{{ID: "t0", Info: x86}}}},
			constraints: &kilnv1.PlatformConstraints{}, options: map[string]string{"level": "1"}, want: "p/t0"},
		{name: "a policy capping build time refuses a longer time limit", servers: []*Server{
			{Name: "p", Slots: 1, Policy: &kilnv1.BuildServerPolicy{MaxBuildSeconds: 600}, Targets: []*Target{{ID: "t0", Info: x86}}}},
			constraints: &kilnv1.PlatformConstraints{}, timeout: 601, want: ""},
		{name: "a policy capping build time refuses the one-hour default below an hour", servers: []*Server{
			{Name: "p", Slots: 1, Policy: &kilnv1.BuildServerPolicy{MaxBuildSeconds: 3599}, Targets: []*Target{{ID: "t0", Info: x86}}}},
			constraints: &kilnv1.PlatformConstraints{}, want: ""},
		{name: "a policy capping build time accepts a time limit equal to the cap", servers: []*Server{
			{Name: "p", Slots: 1, Policy: &kilnv1.BuildServerPolicy{MaxBuildSeconds: 600}, Targets: []*Target{{ID: "t0", Info: x86}}}},
			constraints: &kilnv1.PlatformConstraints{}, timeout: 600, want: "p/t0"},
		{name: "a build refused by one server's time cap goes to another without a cap", servers: []*Server{
			{Name: "capped", Slots: 1, Policy: &kilnv1.BuildServerPolicy{MaxBuildSeconds: 60}, Targets: []*Target{{ID: "t0", Info: x86}}},
			server("free", 1, x86)},
			constraints: &kilnv1.PlatformConstraints{}, timeout: 120, want: "free/t0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			for _, srv := range tt.servers {
				s.Connect(srv)
			}
			project := tt.project
			if project == "" {
				project = "hello"
			}
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 3600
			}
			b := &Build{ID: 1, Project: project, Constraints: tt.constraints, Requires: tt.requires, Options: tt.options, Excluded: tt.excluded, TimeoutSeconds: timeout}
			got := ""
			if tg := s.Match(b, now); tg != nil {
				got = tg.Server.Name + "/" + tg.ID
			}
			if got != tt.want {
				t.Fatalf("Match = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDispatchFillsSlotsInQueueOrderAndStopsWhenFull(t *testing.T) {
	s := New()
	s.Connect(server("a", 2, x86))
	now := time.Now()
	var builds []*Build
	for id := uint64(5); id >= 1; id-- { // enqueue out of order
		b := &Build{ID: id, Constraints: &kilnv1.PlatformConstraints{}}
		builds = append(builds, b)
		s.Enqueue(b)
	}
	var started []uint64
	s.Dispatch(now, func(b *Build, tg *Target) bool {
		s.Start(b, tg, b.ID<<8|1, now.Add(time.Minute))
		started = append(started, b.ID)
		return true
	})
	if fmt.Sprint(started) != "[1 2]" {
		t.Fatalf("started %v, want the two oldest [1 2]", started)
	}
	if s.QueueLen() != 3 || s.QueuePosition(builds[2]) != 1 {
		t.Fatalf("queue len %d, position of build 3 = %d; want 3 and 1", s.QueueLen(), s.QueuePosition(builds[2]))
	}
	// Finishing one frees a slot for the next in order.
	s.Finish(s.Attempt(1<<8 | 1))
	started = nil
	s.Dispatch(now, func(b *Build, tg *Target) bool {
		s.Start(b, tg, b.ID<<8|1, now.Add(time.Minute))
		started = append(started, b.ID)
		return true
	})
	if fmt.Sprint(started) != "[3]" {
		t.Fatalf("after a slot freed, started %v, want [3]", started)
	}
}

func TestDrainingAndBusyServersTakeNoWork(t *testing.T) {
	s := New()
	srv := server("a", 1, x86)
	s.Connect(srv)
	b := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{}}
	for _, set := range []func(){func() { srv.Draining = true }, func() { srv.Draining, srv.Busy = false, true }} {
		set()
		s.Refresh(srv)
		if tg := s.Match(b, time.Now()); tg != nil {
			t.Fatalf("draining=%v busy=%v server got work", srv.Draining, srv.Busy)
		}
	}
	srv.Busy = false
	s.Refresh(srv)
	if s.Match(b, time.Now()) == nil {
		t.Fatal("a server that is idle again got no work")
	}
}

func TestDisconnectKeepsAttemptsUntilTheirLeaseLapses(t *testing.T) {
	s := New()
	srv := server("a", 1, x86)
	s.Connect(srv)
	now := time.Now()
	b := &Build{ID: 7, Constraints: &kilnv1.PlatformConstraints{}}
	s.Enqueue(b)
	a := s.Start(b, srv.Targets[0], 7<<8|1, now.Add(30*time.Second))
	s.Disconnect("a")
	if got := s.Expired(now.Add(10 * time.Second)); len(got) != 0 {
		t.Fatalf("attempt expired before its lease: %v", got)
	}
	// The server comes back and reports the attempt: it keeps it.
	srv2 := server("a", 1, x86)
	s.Connect(srv2)
	s.Adopt(a, srv2, now.Add(40*time.Second))
	if a.Detached || srv2.Running[a.ID] != a {
		t.Fatal("adopted attempt not attached to the new session")
	}
	if got := s.Expired(now.Add(35 * time.Second)); len(got) != 0 {
		t.Fatal("a renewed lease expired early")
	}
	if got := s.Expired(now.Add(41 * time.Second)); len(got) != 1 || got[0] != a {
		t.Fatalf("lapsed lease not reported: %v", got)
	}
}

func TestScheduler_LapseBy_ShortensTheLeasesOfAClosedServerUnlessItAdoptsThem(t *testing.T) {
	s := New()
	srv := server("a", 2, x86)
	s.Connect(srv)
	now := time.Now()
	b1 := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{}}
	b2 := &Build{ID: 2, Constraints: &kilnv1.PlatformConstraints{}}
	s.Enqueue(b1)
	s.Enqueue(b2)
	long := s.Start(b1, srv.Targets[0], 1<<8|1, now.Add(30*time.Second))
	short := s.Start(b2, srv.Targets[0], 2<<8|1, now.Add(time.Second))
	if n := s.LapseBy("a", now.Add(3*time.Second)); n != 1 {
		t.Fatalf("LapseBy shortened %d leases, want 1 (a lease ending sooner is kept)", n)
	}
	s.Disconnect("a")
	if !long.LeaseUntil.Equal(now.Add(3*time.Second)) || !short.LeaseUntil.Equal(now.Add(time.Second)) {
		t.Fatalf("leases %s and %s after LapseBy", long.LeaseUntil.Sub(now), short.LeaseUntil.Sub(now))
	}
	if got := s.Expired(now.Add(4 * time.Second)); len(got) != 2 {
		t.Fatalf("%d attempts expired after the grace, want both", len(got))
	}
	if n := s.LapseBy("a", now); n != 0 {
		t.Fatalf("LapseBy of a disconnected server shortened %d leases", n)
	}
	// Reconnecting within the grace, the server adopts the attempt with a
	// whole lease again.
	srv2 := server("a", 2, x86)
	s.Connect(srv2)
	s.Adopt(long, srv2, now.Add(2*time.Second+30*time.Second))
	if got := s.Expired(now.Add(4 * time.Second)); len(got) != 1 || got[0] != short {
		t.Fatalf("expired after adoption: %v, want only the attempt not adopted", got)
	}
}

func TestTarget_Jobs_IsTheBuildsShareOfTheTargetsCPUs(t *testing.T) {
	for _, c := range []struct {
		name        string
		cpus, slots int
		want        int
	}{
		{"a --jobs 2 volunteer on 16 CPUs gives each build 8", 16, 2, 8},
		{"one slot gets every CPU", 4, 1, 4},
		{"more slots than CPUs still give 1", 2, 8, 1},
		{"a target that reports no CPUs gives 1", 0, 1, 1},
		{"an odd count rounds down", 7, 2, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := &Server{Name: "s", Slots: c.slots}
			tg := &Target{ID: "native", Info: &kilnv1.SystemInfo{Cpus: uint32(c.cpus)}, Server: srv}
			if got := tg.Jobs(); got != c.want {
				t.Fatalf("Jobs() = %d for %d CPUs and %d slots, want %d", got, c.cpus, c.slots, c.want)
			}
		})
	}
}

func TestWaitingReasonsCountTargetsPerUnmetConstraint(t *testing.T) {
	s := New()
	s.Connect(server("a", 1, x86, i686))
	s.Connect(server("b", 1, musl))
	b := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{Endian: "big", Libc: "glibc"}}
	got := strings.Join(s.WaitingReasons(b, time.Now()), "\n")
	for _, want := range []string{"endian=big: 3 of 3 connected targets do not match", "libc=glibc: 1 of 3", "no connected target matches"} {
		if !strings.Contains(got, want) {
			t.Errorf("reasons %q lack %q", got, want)
		}
	}
	if r := New().WaitingReasons(b, time.Now()); len(r) != 1 || !strings.Contains(r[0], "no build server") {
		t.Errorf("with nobody connected, reasons = %v", r)
	}
}

func TestWaitingReasonsNamePolicyRefusals(t *testing.T) {
	tests := []struct {
		name   string
		policy *kilnv1.BuildServerPolicy
		build  *Build
		want   string
	}{
		{name: "a time limit above the volunteer's cap is named with both figures",
			policy: &kilnv1.BuildServerPolicy{MaxBuildSeconds: 600},
			build:  &Build{ID: 1, Project: "hello", TimeoutSeconds: 3600},
			want:   "policy: time limit 3600s exceeds the maximum of 600s: 1 of 1 connected targets do not match"},
		{name: "a project outside the allowed list is named",
			policy: &kilnv1.BuildServerPolicy{AllowedProjects: []string{"other"}},
			build:  &Build{ID: 1, Project: "hello", TimeoutSeconds: 60},
			want:   "policy: project \"hello\" is not allowed: 1 of 1 connected targets do not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			s.Connect(&Server{Name: "p", Slots: 1, Policy: tt.policy, Targets: []*Target{{ID: "t0", Info: x86}}})
			tt.build.Constraints = &kilnv1.PlatformConstraints{}
			got := s.WaitingReasons(tt.build, time.Now())
			if len(got) != 2 || got[0] != tt.want || got[1] != "no connected target matches" {
				t.Fatalf("reasons = %q, want [%q, \"no connected target matches\"]", got, tt.want)
			}
			if s.Match(tt.build, time.Now()) != nil {
				t.Fatal("a refused build matched")
			}
		})
	}
}

// BenchmarkMatch10000Targets matches one request against 10,000 connected
// targets on a realistic spread of platforms, all servers with a free slot.
func BenchmarkMatch10000Targets(b *testing.B) {
	s := New()
	platforms := []*kilnv1.SystemInfo{x86, s390x, i686, musl}
	for i := 0; i < 10000; i++ {
		s.Connect(server(fmt.Sprintf("srv%05d", i), 1, platforms[i%len(platforms)]))
	}
	build := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{Endian: "big", DataModel: "LP64"}, Requires: []string{"make"}}
	now := time.Now()
	b.ResetTimer()
	for b.Loop() {
		if s.Match(build, now) == nil {
			b.Fatal("no match")
		}
	}
}

// BenchmarkMatch10000TargetsNoneFits is the worst case: nothing fits.
func BenchmarkMatch10000TargetsNoneFits(b *testing.B) {
	s := New()
	platforms := []*kilnv1.SystemInfo{x86, s390x, i686, musl}
	for i := 0; i < 10000; i++ {
		s.Connect(server(fmt.Sprintf("srv%05d", i), 1, platforms[i%len(platforms)]))
	}
	build := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{Arch: "riscv64"}}
	now := time.Now()
	for b.Loop() {
		if s.Match(build, now) != nil {
			b.Fatal("unexpected match")
		}
	}
}

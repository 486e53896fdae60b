package sched

import (
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestBuild_Exclude_ExpiresAndForgetsEndedExclusions(t *testing.T) {
	now := time.Now()
	s := New()
	s.Connect(server("only", 1, x86))
	b := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{}}
	b.Exclude("gone", now, now.Add(time.Second))
	b.Exclude("only", now, now.Add(time.Minute))
	if tg := s.Match(b, now); tg != nil {
		t.Fatalf("the excluded only server got the build: %s", tg.Server.Name)
	}
	if got := strings.Join(s.WaitingReasons(b, now), "\n"); !strings.Contains(got, "excluded") {
		t.Fatalf("waiting reasons %q do not name the exclusion", got)
	}
	// An earlier end does not shorten an exclusion in place.
	b.Exclude("only", now, now.Add(time.Second))
	if !b.ExcludedAt("only", now.Add(30*time.Second)) {
		t.Fatal("a shorter exclusion replaced a longer one")
	}
	later := now.Add(time.Minute)
	if tg := s.Match(b, later); tg == nil || tg.Server.Name != "only" {
		t.Fatalf("after the exclusion ended Match = %v, want the only server", tg)
	}
	b.Exclude("other", later, later.Add(time.Minute))
	if _, ok := b.Excluded["gone"]; ok {
		t.Fatalf("an ended exclusion is still recorded: %v", b.Excluded)
	}
}

func TestScheduler_Overdue_ReportsOnlyAttemptsPastTheirDeadline(t *testing.T) {
	now := time.Now()
	s := New()
	srv := server("a", 2, x86)
	s.Connect(srv)
	held := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{}}
	free := &Build{ID: 2, Constraints: &kilnv1.PlatformConstraints{}}
	s.Enqueue(held)
	s.Enqueue(free)
	a := s.Start(held, srv.Targets[0], 1<<8|1, now.Add(time.Hour))
	a.Deadline = now.Add(10 * time.Second)
	s.Start(free, srv.Targets[0], 2<<8|1, now.Add(time.Hour)) // no deadline
	if got := s.Overdue(now.Add(10 * time.Second)); len(got) != 0 {
		t.Fatalf("overdue at its deadline: %v", got)
	}
	// Renewing the lease (heartbeats) does not move the deadline.
	s.Renew(srv, []uint64{a.ID}, now.Add(2*time.Hour))
	got := s.Overdue(now.Add(11 * time.Second))
	if len(got) != 1 || got[0] != a {
		t.Fatalf("Overdue = %v, want only the held attempt", got)
	}
	if len(s.Expired(now.Add(11*time.Second))) != 0 {
		t.Fatal("a heartbeating attempt's lease lapsed")
	}
}

func TestScheduler_Unmatched_CountsFromTheFirstCheckAndRestartsWhenATargetFits(t *testing.T) {
	t0 := time.Now()
	s := New()
	big := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{Endian: "big"}}
	open := &Build{ID: 2, Constraints: &kilnv1.PlatformConstraints{}}
	s.Enqueue(big)
	s.Enqueue(open)
	// Nobody connected: both unmatched from the first check on.
	if got := s.Unmatched(t0, time.Hour); len(got) != 0 {
		t.Fatalf("unmatched before an hour passed: %v", got)
	}
	srv := server("x", 1, x86)
	s.Connect(srv)
	// x86 fits the free build (busy or not: a full server still matches).
	s.Start(open, srv.Targets[0], 2<<8|1, t0.Add(time.Hour))
	s.Enqueue(open)
	srv.Busy = true
	s.Refresh(srv)
	got := s.Unmatched(t0.Add(time.Hour), time.Hour)
	if len(got) != 1 || got[0] != big {
		t.Fatalf("Unmatched = %v, want only the big-endian build", got)
	}
	// A big-endian target connects for a while: the clock restarts.
	s.Connect(server("s", 1, s390x))
	if got := s.Unmatched(t0.Add(2*time.Hour), time.Hour); len(got) != 0 {
		t.Fatalf("Unmatched while a target fits = %v", got)
	}
	s.Disconnect("s")
	if got := s.Unmatched(t0.Add(2*time.Hour+time.Minute), time.Hour); len(got) != 0 {
		t.Fatalf("Unmatched right after the fitting target left = %v", got)
	}
	if got := s.Unmatched(t0.Add(3*time.Hour+time.Minute), time.Hour); len(got) != 1 || got[0] != big {
		t.Fatalf("Unmatched an hour after the fitting target left = %v", got)
	}
}

package sched

import (
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestScheduler_WithdrawTarget_UntilTheServerConnectsAgain(t *testing.T) {
	s := New()
	srv := server("liar", 2, s390x, x86)
	s.Connect(srv)
	wantS390x := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{Arch: "s390x"}}
	anyBuild := &Build{ID: 2, Constraints: &kilnv1.PlatformConstraints{Arch: "x86_64"}}
	now := time.Now()
	if tg := s.Match(wantS390x, now); tg == nil || tg.ID != "t0" {
		t.Fatalf("before: s390x build matched %v, want t0", tg)
	}
	if !s.WithdrawTarget(srv, "t0") {
		t.Fatal("WithdrawTarget of an offered target reported false")
	}
	if s.WithdrawTarget(srv, "t0") || s.WithdrawTarget(srv, "nonexistent") {
		t.Fatal("WithdrawTarget of a withdrawn or unknown target reported true")
	}
	if tg := s.Match(wantS390x, now); tg != nil {
		t.Fatalf("withdrawn target still matched: %v", tg.ID)
	}
	if tg := s.Match(anyBuild, now); tg == nil || tg.ID != "t1" {
		t.Fatalf("the server's other target: matched %v, want t1", tg)
	}
	if got := s.TargetCount(); got != 1 {
		t.Fatalf("TargetCount %d after withdrawing one of two, want 1", got)
	}
	// Disconnecting forgets the withdrawn target without counting it twice.
	s.Disconnect("liar")
	if got := s.TargetCount(); got != 0 {
		t.Fatalf("TargetCount %d after disconnecting, want 0", got)
	}
	// A new session offers it again.
	srv2 := server("liar", 2, s390x, x86)
	s.Connect(srv2)
	if tg := s.Match(wantS390x, now); tg == nil || tg.Server != srv2 {
		t.Fatalf("after reconnecting: matched %v, want the new session's s390x target", tg)
	}
	if s.WithdrawTarget(srv, "t1") {
		t.Fatal("WithdrawTarget on a replaced session's server reported true")
	}
}

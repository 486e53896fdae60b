package sched

import (
	"slices"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestReplicaNeverGoesToAnOperatorWithAResult(t *testing.T) {
	info := sys("x86_64", "little", "LP64", "glibc", false)
	s := New()
	a1, a2 := server("a1", 1, info), server("a2", 1, info)
	a1.Operator, a2.Operator = "alice", "alice"
	s.Connect(a1)
	s.Connect(a2)
	now := time.Now()
	b := &Build{ID: 1, Constraints: &kilnv1.PlatformConstraints{}, Replica: true, Quorum: 2,
		HaveOperators: map[string]bool{"alice": true}}
	s.Enqueue(b)
	if t0 := s.Match(b, now); t0 != nil {
		t.Fatalf("replica matched %s of alice, who already has a result", t0.Server.Name)
	}
	if r := s.WaitingReasons(b, now); !slices.Contains(r, "verification: 1 of 2 operators have a matching target") {
		t.Fatalf("waiting reasons %q do not say how many operators match", r)
	}
	bob := server("b1", 1, info)
	bob.Operator = "bob"
	s.Connect(bob)
	if t0 := s.Match(b, now); t0 == nil || t0.Server.Name != "b1" {
		t.Fatalf("replica matched %v, want b1 of bob", t0)
	}
	// Without Replica the operators are not consulted.
	plain := &Build{ID: 2, Constraints: &kilnv1.PlatformConstraints{}, HaveOperators: map[string]bool{"alice": true, "bob": true}}
	if t0 := s.Match(plain, now); t0 == nil {
		t.Fatal("a build that is not a replica matched nothing")
	}
	// A marked server gets no work at all.
	for _, srv := range []*Server{a1, a2, bob} {
		srv.Marked = true
	}
	if t0 := s.Match(b, now); t0 != nil {
		t.Fatalf("replica matched %s, which is marked", t0.Server.Name)
	}
	if t0 := s.Match(plain, now); t0 != nil {
		t.Fatalf("build matched %s, which is marked", t0.Server.Name)
	}
}

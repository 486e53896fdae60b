package sched

import (
	"fmt"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// deepQueue is a scheduler with n queued builds (ids 1..n) and one server
// of one slot.
func deepQueue(n int) (*Scheduler, *Server) {
	s := New()
	for i := 1; i <= n; i++ {
		s.Enqueue(&Build{ID: uint64(i), Constraints: &kilnv1.PlatformConstraints{}})
	}
	srv := server("a", 1, x86)
	s.Connect(srv)
	return s, srv
}

func TestDispatchFromADeepQueueTakesTheOldestFirstAndKeepsPositions(t *testing.T) {
	s, _ := deepQueue(1000)
	now := time.Now()
	// A build requeued (lost attempt) regains its place among the others.
	var started []uint64
	for round := 0; round < 5; round++ {
		var a *Attempt
		s.Dispatch(now, func(b *Build, tg *Target) bool {
			a = s.Start(b, tg, b.ID<<8|1, now.Add(time.Minute))
			started = append(started, b.ID)
			return true
		})
		if a == nil {
			t.Fatalf("round %d dispatched nothing", round)
		}
		s.Finish(a) // frees the one slot for the next round
	}
	if fmt.Sprint(started) != "[1 2 3 4 5]" {
		t.Fatalf("dispatched %v; want the five oldest in order", started)
	}
	if got := s.QueueLen(); got != 995 {
		t.Fatalf("queue length %d; want 995", got)
	}
	back := &Build{ID: 3, Constraints: &kilnv1.PlatformConstraints{}}
	s.Enqueue(back)
	if p := s.QueuePosition(back); p != 1 {
		t.Fatalf("requeued build 3 is at position %d; want first (1)", p)
	}
	if o := s.Oldest(); o != back {
		t.Fatalf("oldest is %d; want 3", o.ID)
	}
	last := &Build{ID: 1000}
	for b := s.queue.after(0); b != nil; b = s.queue.after(b.ID) {
		last = b
	}
	if last.ID != 1000 || s.QueuePosition(last) != 996 {
		t.Fatalf("last queued build %d at position %d; want 1000 at 996", last.ID, s.QueuePosition(last))
	}
}

// BenchmarkDispatchFromA50000DeepQueue frees a slot and dispatches the
// next build, with 50,000 builds queued (a farm with far more requests
// than volunteers); each iteration queues a new build, so the depth stays.
func BenchmarkDispatchFromA50000DeepQueue(b *testing.B) {
	const depth = 50000
	s, _ := deepQueue(depth)
	next := uint64(depth + 1)
	now := time.Now()
	for b.Loop() {
		var a *Attempt
		s.Dispatch(now, func(bd *Build, tg *Target) bool {
			a = s.Start(bd, tg, bd.ID<<8|1, now.Add(time.Minute))
			return true
		})
		if a == nil {
			b.Fatal("nothing dispatched")
		}
		s.Finish(a)
		s.Enqueue(&Build{ID: next, Constraints: &kilnv1.PlatformConstraints{}})
		next++
	}
}

package server

import "testing"

func TestNotifierWakesWaitersAndForgetsReleasedEntries(t *testing.T) {
	n := newNotifier()
	ch, release := n.wait(7)
	ch2, release2 := n.wait(7)
	n.notify(7)
	for _, c := range []<-chan struct{}{ch, ch2} {
		select {
		case <-c:
		default:
			t.Fatal("a waiter was not woken")
		}
	}
	release()
	release2()
	if n.len() != 0 {
		t.Fatalf("%d entries after notify and release", n.len())
	}
	// A watcher of a build that never changes (unknown id, already final)
	// leaves nothing behind once it releases, even twice.
	_, r := n.wait(99)
	if n.len() != 1 {
		t.Fatal("wait did not register")
	}
	r()
	r()
	if n.len() != 0 {
		t.Fatalf("released entry kept: %d", n.len())
	}
}

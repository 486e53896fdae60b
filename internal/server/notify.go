package server

import "sync"

// notifier wakes watchers of a build when it changes. A watcher takes the
// channel first, then reads the state, then waits: a change between the two
// closes the channel it already holds, so no change is missed. Each wait is
// paired with a release, so entries of builds nobody watches any more (an
// unknown id, a build that already ended) do not stay behind.
type notifier struct {
	mu      sync.Mutex
	entries map[uint64]*watch
}

type watch struct {
	ch      chan struct{}
	waiters int
}

func newNotifier() *notifier { return &notifier{entries: map[uint64]*watch{}} }

// wait returns a channel closed at the build's next change, and the release
// to call when the caller stops waiting on it.
func (n *notifier) wait(id uint64) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	w, ok := n.entries[id]
	if !ok {
		w = &watch{ch: make(chan struct{})}
		n.entries[id] = w
	}
	w.waiters++
	released := false
	return w.ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if released {
			return
		}
		released = true
		w.waiters--
		if w.waiters == 0 && n.entries[id] == w {
			delete(n.entries, id)
		}
	}
}

func (n *notifier) notify(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w, ok := n.entries[id]; ok {
		close(w.ch)
		delete(n.entries, id)
	}
}

// len is the number of builds being watched (for tests).
func (n *notifier) len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.entries)
}

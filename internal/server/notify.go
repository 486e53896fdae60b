package server

import "sync"

// notifier wakes watchers of a build when it changes. A watcher takes the
// channel first, then reads the state, then waits: a change between the two
// closes the channel it already holds, so no change is missed.
type notifier struct {
	mu    sync.Mutex
	chans map[uint64]chan struct{}
}

func newNotifier() *notifier { return &notifier{chans: map[uint64]chan struct{}{}} }

func (n *notifier) wait(id uint64) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch, ok := n.chans[id]
	if !ok {
		ch = make(chan struct{})
		n.chans[id] = ch
	}
	return ch
}

func (n *notifier) notify(id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.chans[id]; ok {
		close(ch)
		delete(n.chans, id)
	}
}

package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/kilnbuild/kiln/internal/store"
)

// committer applies state changes to the store in the order they were
// decided, many per transaction (group commit), and runs each change's
// follow-up only after the change is on disk.
//
// Changes are enqueued while the server holds its mutex, so their order is
// the order of the in-memory decisions; a later change to the same build
// can never be overwritten by an earlier one. bbolt's own DB.Batch cannot
// promise that (its callers race to join a batch), hence this type.
//
// A failed commit is fatal: the in-memory state is ahead of the disk, so the
// server stops (onFatal) and a restart reloads the truth from the store.
// Nothing was acknowledged for the failed changes, so nothing acknowledged
// is lost.
//
// A commit that finds the disk full (store.ErrNoSpace) is the exception:
// nothing was written and the store is intact, so the same changes are
// committed again, in the same order with whatever was enqueued since,
// after a growing pause (retryMin to retryMax) until space returns. Their
// callers wait, unanswered, meanwhile; onSpace tells the server when the
// disk fills (with the error) and when a commit succeeds again (nil), so
// that it refuses new writes in between. A change's fn must therefore
// give the same result when it runs again on a fresh transaction: decide
// from what it reads in the transaction, not from state captured outside.
type committer struct {
	st      store.Store
	log     *slog.Logger
	clock   clockwork.Clock // the pauses on a full disk, the commit times
	onFatal func(error)
	// onSpace, when set before run, is called on the committer goroutine
	// with the error when a commit finds the disk full and with nil when
	// a commit succeeds after that.
	onSpace func(full error)
	// full is the last commit's ErrNoSpace error, nil otherwise; only the
	// committer goroutine touches it.
	full error

	mu      sync.Mutex
	pending []change
	// held counts open holds: while any is open no new transaction starts,
	// so changes decided together commit together (see hold). epoch counts
	// holds taken; deferred says the pending changes wait for the hold of
	// epoch deferredFor. They wait for that hold only, never for a later
	// one, so holds taken back to back cannot starve them.
	held        int
	epoch       uint64
	deferred    bool
	deferredFor uint64
	// failed is the first commit error; once set, nothing more is
	// committed or acknowledged (later changes may depend on the lost one).
	failed error
	wake   chan struct{}
	done   chan struct{}
	// observe, when set before run, is told each transaction's number of
	// changes and duration (for metrics).
	observe func(changes int, d time.Duration)
}

// change is one state change: fn writes it, after runs once it is committed.
type change struct {
	fn    func(store.Tx) error
	after func(error)
}

func newCommitter(st store.Store, log *slog.Logger, onFatal func(error), clock clockwork.Clock) *committer {
	return &committer{st: st, log: log, clock: clockOrReal(clock), onFatal: onFatal, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// enqueue schedules fn; after (may be nil) runs on the committer goroutine
// with the commit's result. It must not block for long.
func (c *committer) enqueue(fn func(store.Tx) error, after func(error)) {
	c.mu.Lock()
	c.pending = append(c.pending, change{fn: fn, after: after})
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// hold delays the next transaction until the returned release is called,
// so that the changes enqueued in between share one transaction (one
// fsync) with what is already pending: e.g. a new build and its immediate
// dispatch, or a result and the next dispatch to the same build server.
// A transaction already running is not affected. Hold only while holding
// the server's mutex, around work that takes microseconds: a hold taken
// while waiting for the mutex would keep the committer idle.
func (c *committer) hold() (release func()) {
	c.mu.Lock()
	c.held++
	c.epoch++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.held--
		wake := len(c.pending) > 0
		c.mu.Unlock()
		if wake {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	}
}

// wait enqueues fn and blocks until it is committed. Must not be called with
// the server's mutex held.
func (c *committer) wait(fn func(store.Tx) error) error {
	ch := make(chan error, 1)
	c.enqueue(fn, func(err error) { ch <- err })
	return <-ch
}

// Pauses between commits retried on a full disk.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// run commits until ctx is done, then drains what is pending and returns.
// While the disk is full it commits only when the pause is over, however
// many changes arrive.
func (c *committer) run(ctx context.Context) {
	defer close(c.done)
	var pause time.Duration
	var retry <-chan time.Time
	for {
		select {
		case <-c.wake:
			if retry != nil {
				continue
			}
		case <-retry:
		case <-ctx.Done():
			c.flush(true)
			return
		}
		retry = nil
		if c.flush(false) {
			pause = min(max(2*pause, retryMin), retryMax)
			retry = c.clock.After(pause)
		} else {
			pause = 0
		}
	}
}

// flush commits what is pending, in batches, until nothing is; unless
// final, it leaves what is pending while a hold is open (holds only group
// changes, so the last flush at shutdown ignores them). It reports full
// when a commit found the disk full: the batch is pending again, ahead of
// later changes, to be retried; at the final flush a full disk is fatal
// like any failed commit.
func (c *committer) flush(final bool) (full bool) {
	for {
		c.mu.Lock()
		if c.held > 0 && !final && c.failed == nil && (!c.deferred || c.deferredFor == c.epoch) {
			c.deferred, c.deferredFor = true, c.epoch
			c.mu.Unlock()
			return // the release wakes run again
		}
		batch := c.pending
		c.pending = nil
		c.deferred = false
		failed := c.failed
		c.mu.Unlock()
		if len(batch) == 0 {
			return
		}
		if failed != nil {
			for _, ch := range batch {
				if ch.after != nil {
					ch.after(failed)
				}
			}
			continue
		}
		start := c.clock.Now()
		err := c.st.Update(func(tx store.Tx) error {
			for _, ch := range batch {
				if err := ch.fn(tx); err != nil {
					return err
				}
			}
			return nil
		})
		if c.observe != nil {
			c.observe(len(batch), c.clock.Since(start))
		}
		if err != nil && errors.Is(err, store.ErrNoSpace) && !final {
			if c.full == nil {
				c.log.Error("disk full: commits wait and new writes are refused until space returns", "changes", len(batch), "err", err)
				if c.onSpace != nil {
					c.onSpace(err)
				}
			}
			c.full = err
			c.mu.Lock()
			c.pending = append(batch, c.pending...)
			c.mu.Unlock()
			return true
		}
		if err == nil && c.full != nil {
			c.full = nil
			c.log.Info("disk space is back: waiting changes committed, writes accepted again", "changes", len(batch))
			if c.onSpace != nil {
				c.onSpace(nil)
			}
		}
		if err != nil {
			c.log.Error("commit failed; stopping so a restart reloads the store", "changes", len(batch), "err", err)
			c.mu.Lock()
			c.failed = err
			c.mu.Unlock()
			c.onFatal(err)
		}
		for _, ch := range batch {
			if ch.after != nil {
				ch.after(err)
			}
		}
	}
}

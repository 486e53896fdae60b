package server

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
)

// countingStore counts the transactions written to a real store.
type countingStore struct {
	store.Store
	updates atomic.Int32
}

func (c *countingStore) Update(fn func(store.Tx) error) error {
	c.updates.Add(1)
	return c.Store.Update(fn)
}

func startCommitter(t *testing.T) (*committer, *countingStore, context.CancelFunc) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "kiln.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := &countingStore{Store: db}
	c := newCommitter(st, slog.New(slog.NewTextHandler(io.Discard, nil)), func(err error) { t.Errorf("fatal: %v", err) }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go c.run(ctx)
	t.Cleanup(func() { cancel(); <-c.done })
	return c, st, cancel
}

// committed returns an after func and a channel closed when it ran without error.
func committed(t *testing.T) (func(error), chan struct{}) {
	done := make(chan struct{})
	return func(err error) {
		if err != nil {
			t.Errorf("commit: %v", err)
		}
		close(done)
	}, done
}

func waitClosed(t *testing.T, what string, ch chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s never committed", what)
	}
}

func TestChangesEnqueuedUnderAHoldShareOneTransactionAfterTheRelease(t *testing.T) {
	c, st, _ := startCommitter(t)
	noop := func(store.Tx) error { return nil }

	release := c.hold()
	after1, done1 := committed(t)
	after2, done2 := committed(t)
	c.enqueue(noop, after1)
	c.enqueue(noop, after2)
	select {
	case <-done1:
		t.Fatal("a change committed while the hold was open")
	case <-time.After(50 * time.Millisecond):
	}
	release()
	waitClosed(t, "the first change", done1)
	waitClosed(t, "the second change", done2)
	if n := st.updates.Load(); n != 1 {
		t.Fatalf("%d transactions; want the two held changes in one", n)
	}

	// Without a hold a change commits on its own.
	after3, done3 := committed(t)
	c.enqueue(noop, after3)
	waitClosed(t, "an unheld change", done3)
	if n := st.updates.Load(); n != 2 {
		t.Fatalf("%d transactions; want 2", n)
	}
}

func TestTheLastFlushAtShutdownCommitsChangesEvenUnderAnOpenHold(t *testing.T) {
	c, _, cancel := startCommitter(t)
	release := c.hold()
	defer release()
	after, done := committed(t)
	c.enqueue(func(store.Tx) error { return nil }, after)
	cancel()
	<-c.done
	waitClosed(t, "the held change at shutdown", done)
}

func TestHoldsTakenBackToBackDoNotStarveTheCommitter(t *testing.T) {
	c, _, _ := startCommitter(t)
	after, done := committed(t)
	release := c.hold()
	c.enqueue(func(store.Tx) error { return nil }, after)
	// Each hold is released and the next taken at once, as server calls
	// under the server's mutex do under load; the change waits for the
	// hold it was enqueued under, not for the ones after it.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		r := release
		for {
			next := c.hold()
			r()
			r = next
			select {
			case <-stop:
				r()
				return
			default:
			}
		}
	}()
	waitClosed(t, "a change enqueued under a hold, with holds taken back to back", done)
}

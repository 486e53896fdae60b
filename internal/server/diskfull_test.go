package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// fullDiskStore fails every Update as a full disk would while full is set:
// the closure runs, then the commit fails and nothing is written.
type fullDiskStore struct {
	store.Store
	full  atomic.Bool
	tries atomic.Int32
}

func (f *fullDiskStore) Update(fn func(store.Tx) error) error {
	if !f.full.Load() {
		return f.Store.Update(fn)
	}
	f.tries.Add(1)
	err := f.Store.Update(func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errRollback
	})
	if errors.Is(err, errRollback) {
		return fmt.Errorf("%w: write kiln.db: %w", store.ErrNoSpace, syscall.ENOSPC)
	}
	return err
}

var errRollback = errors.New("rollback")

func TestCommitter_FullDisk_RetriesInOrderUntilSpaceReturns(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "kiln.db"), bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := &fullDiskStore{Store: db}
	clock := clockwork.NewFakeClock()
	c := newCommitter(st, slog.New(slog.NewTextHandler(io.Discard, nil)), func(err error) { t.Errorf("fatal: %v", err) }, clock)
	var mu sync.Mutex
	var spaces []error
	spaceCh := make(chan struct{}, 4)
	c.onSpace = func(full error) {
		mu.Lock()
		spaces = append(spaces, full)
		mu.Unlock()
		spaceCh <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.run(ctx)
	t.Cleanup(func() { cancel(); <-c.done })

	st.full.Store(true)
	var order []int
	put := func(n int) (func(store.Tx) error, func(error)) {
		return func(tx store.Tx) error {
				id, err := tx.NextID("build") // runs again on each retry: same id
				if err != nil {
					return err
				}
				return tx.PutBuild(&store.Build{Build: &kilnv1.Build{Id: id, Project: fmt.Sprint(n), State: kilnv1.BuildState_BUILD_STATE_QUEUED}})
			}, func(err error) {
				if err != nil {
					t.Errorf("change %d: %v", n, err)
				}
				mu.Lock()
				order = append(order, n)
				mu.Unlock()
			}
	}
	c.enqueue(put(1))
	select {
	case <-spaceCh:
	case <-time.After(5 * time.Second):
		t.Fatal("onSpace was not told of the full disk")
	}
	c.enqueue(put(2))
	// Retried after a pause that doubles from retryMin, nothing
	// acknowledged meanwhile: each retry waits for all of its pause (the
	// committer's timer is on the clock: BlockUntil sees it set).
	ctx5, cancel5 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel5()
	pause := retryMin
	for try := int32(1); try <= 3; try++ {
		if err := clock.BlockUntilContext(ctx5, 1); err != nil {
			t.Fatalf("try %d: no retry pause set: %v", try, err)
		}
		if n := st.tries.Load(); n != try {
			t.Fatalf("%d tries before pause %d; want %d", n, try, try)
		}
		clock.Advance(pause - time.Nanosecond)
		// A retry fired too early would run on the committer's goroutine:
		// give it a short window to show.
		for window := time.Now().Add(20 * time.Millisecond); time.Now().Before(window); time.Sleep(time.Millisecond) {
			if n := st.tries.Load(); n != try {
				t.Fatalf("%d tries a nanosecond before the %s pause ended; want still %d", n, pause, try)
			}
		}
		clock.Advance(time.Nanosecond)
		for st.tries.Load() == try && ctx5.Err() == nil {
			time.Sleep(time.Millisecond) // the committer goroutine retries
		}
		pause *= 2
	}
	mu.Lock()
	acked := len(order)
	mu.Unlock()
	if acked != 0 {
		t.Fatalf("while full: %d acknowledged; want none", acked)
	}
	st.full.Store(false)
	if err := clock.BlockUntilContext(ctx5, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(pause)
	select {
	case <-spaceCh:
	case <-time.After(10 * time.Second):
		t.Fatal("onSpace was not told that space returned")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(order)
		mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 2 || order[0] != 1 || order[1] != 2 {
		t.Fatalf("acknowledged %v, want [1 2]", order)
	}
	if len(spaces) != 2 || !errors.Is(spaces[0], store.ErrNoSpace) || spaces[1] != nil {
		t.Fatalf("onSpace calls %v, want [ErrNoSpace, nil]", spaces)
	}
	err = db.View(func(tx store.Tx) error {
		for id, project := range map[uint64]string{1: "1", 2: "2"} {
			b, err := tx.Build(id)
			if err != nil || b.GetBuild().GetProject() != project {
				t.Errorf("build %d: %v, %v; want project %s", id, b, err, project)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestServer_WriteGate_RefusesWritesOnlyWhileFull(t *testing.T) {
	s := &Server{metrics: newMetrics()}
	unary, _ := s.WriteGate()
	call := func(method string) error {
		_, err := unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method},
			func(context.Context, any) (any, error) { return "ok", nil })
		return err
	}
	submit, getBuild := kilnv1.CompileService_Submit_FullMethodName, kilnv1.CompileService_GetBuild_FullMethodName
	if err := call(submit); err != nil {
		t.Fatalf("Submit with space: %v", err)
	}
	s.setDiskFull(fmt.Errorf("%w: %w", store.ErrNoSpace, syscall.ENOSPC))
	if err := call(submit); status.Code(err) != codes.Unavailable {
		t.Fatalf("Submit on a full disk: got %v, want Unavailable", err)
	}
	for _, m := range []string{getBuild, kilnv1.StatusService_ListBuilds_FullMethodName, kilnv1.AdminService_Backup_FullMethodName} {
		if err := call(m); err != nil {
			t.Errorf("%s on a full disk: %v, want served", m, err)
		}
	}
	s.setDiskFull(nil)
	if err := call(submit); err != nil {
		t.Fatalf("Submit once space is back: %v", err)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kilnbuild/kiln/internal/sysinfo"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// requests makes SubmitRequests for the load project, each with a new value
// of option n (a distinct build, a cache miss) and a new requester address
// (the metaserver rate-limits each address to 30 requests a minute; a load
// test stands for many requesters, not one flooding).
type requests struct {
	commit      string
	constraints *kilnv1.PlatformConstraints
	seq         atomic.Int64
}

// newRequests pins the platform the way startcompile does by default: this
// machine's measured os, arch, endian, data model, CHAR_BIT, libc and its
// version (sysinfo.Local).
func newRequests(ctx context.Context, commit string) (*requests, error) {
	info, err := sysinfo.Local(ctx)
	if err != nil {
		return nil, err
	}
	return &requests{commit: commit, constraints: &kilnv1.PlatformConstraints{
		Os: info.GetOs(), Arch: info.GetArch(), Endian: info.GetEndian(), DataModel: info.GetDataModel(),
		Libc: info.GetLibc(), LibcVersion: info.GetLibcVersion(), CharBit: info.GetCharBit(),
	}}, nil
}

// next returns a request for a build never asked for before.
func (r *requests) next() *kilnv1.SubmitRequest {
	i := r.seq.Add(1)
	return r.with(i, i)
}

// with returns a request for option n from requester number who.
func (r *requests) with(n, who int64) *kilnv1.SubmitRequest {
	return &kilnv1.SubmitRequest{
		Project:     projectName,
		Revision:    r.commit,
		Constraints: r.constraints,
		Options:     map[string]string{"n": strconv.FormatInt(n, 10)},
		Email:       fmt.Sprintf("load-%d@example.com", who),
	}
}

// errNotSucceeded is returned for a build that ended other than SUCCEEDED.
var errNotSucceeded = errors.New("build did not succeed")

// watchUntilFinal follows build id with WatchBuild until it is final and
// returns it with the time its final state arrived.
func watchUntilFinal(ctx context.Context, c kilnv1.CompileServiceClient, id uint64) (*kilnv1.Build, time.Time, error) {
	return watchWith(ctx, c, id, nil)
}

// watchWith is watchUntilFinal calling seen (when not nil) with every
// update and the time it arrived.
func watchWith(ctx context.Context, c kilnv1.CompileServiceClient, id uint64, seen func(*kilnv1.Build, time.Time)) (*kilnv1.Build, time.Time, error) {
	stream, err := c.WatchBuild(ctx, &kilnv1.WatchBuildRequest{BuildId: id, LogOffset: -1})
	if err != nil {
		return nil, time.Time{}, err
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return nil, time.Time{}, fmt.Errorf("build %d: watch ended before a final state", id)
		}
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("build %d: watch: %w", id, err)
		}
		at := time.Now()
		if seen != nil && msg.GetBuild() != nil {
			seen(msg.GetBuild(), at)
		}
		if b := msg.GetBuild(); b != nil && b.GetState().Final() {
			if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
				return b, at, fmt.Errorf("build %d: %s (%s): %w", id, b.GetState(), b.GetFailure(), errNotSucceeded)
			}
			return b, at, nil
		}
	}
}

// tracker lets a submitter wait for a build that a simulated build server
// completes, whichever of "submitted" and "completed" is seen first.
type tracker struct {
	mu      sync.Mutex
	waiting map[uint64]chan struct{}
	done    map[uint64]bool
	count   atomic.Int64
}

func newTracker() *tracker {
	return &tracker{waiting: map[uint64]chan struct{}{}, done: map[uint64]bool{}}
}

// wait returns a channel closed when build id has completed.
func (t *tracker) wait(id uint64) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan struct{})
	if t.done[id] {
		delete(t.done, id)
		close(ch)
		return ch
	}
	t.waiting[id] = ch
	return ch
}

// forget drops interest in id (a submitter that gave up).
func (t *tracker) forget(id uint64) {
	t.mu.Lock()
	delete(t.waiting, id)
	t.mu.Unlock()
}

// finish marks build id completed.
func (t *tracker) finish(id uint64) {
	t.count.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	if ch, ok := t.waiting[id]; ok {
		close(ch)
		delete(t.waiting, id)
		return
	}
	t.done[id] = true
}

package compilecli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Reconnect policy of follow: a watch interrupted by an unavailable
// metaserver (restart, network blip) is resumed from the last log offset
// after a growing delay, for at most reconnectWindow without any message.
const (
	reconnectFirstDelay = 100 * time.Millisecond
	reconnectMaxDelay   = 2 * time.Second
	reconnectWindow     = time.Minute
)

// follower watches one build until it is final.
type follower struct {
	client kilnv1.CompileServiceClient
	// progress receives updates; nil shows nothing.
	progress *progress
	// withLog asks for log chunks and writes them to progress.
	withLog bool
	// accept ends the watch at a first, unverified result too
	// (--accept unverified; see answered).
	accept bool
	// seen, when not nil, is called with every state of the build.
	seen func(*kilnv1.Build)
}

// follow watches build id until it reaches a final state and returns that
// last state. It resumes an interrupted watch (Unavailable, or a stream that
// ended early) without repeating log bytes. Other errors are returned as is.
func (f *follower) follow(ctx context.Context, id uint64) (*kilnv1.Build, error) {
	var (
		logNext   uint64 // next log byte wanted
		lastHeard = time.Now()
		delay     = reconnectFirstDelay
		last      *kilnv1.Build
	)
	for {
		offset := int64(-1)
		if f.withLog {
			offset = int64(logNext)
		}
		b, heard, err := f.watchOnce(ctx, id, offset, &logNext)
		if b != nil {
			last = b
		}
		if heard {
			lastHeard, delay = time.Now(), reconnectFirstDelay
		}
		if err == nil && last != nil && answered(last, f.accept) {
			return last, nil
		}
		if err != nil && status.Code(err) != codes.Unavailable {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return last, err
		}
		if time.Since(lastHeard) > reconnectWindow {
			if err == nil {
				err = status.Error(codes.Unavailable, "watch ended before the build was final")
			}
			return last, fmt.Errorf("lost the metaserver for more than %s: %w", reconnectWindow, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, reconnectMaxDelay)
	}
}

// watchOnce runs one WatchBuild stream. It returns the last build seen,
// whether any message arrived, and the stream's error (nil when it ended
// normally or with a final state).
func (f *follower) watchOnce(ctx context.Context, id uint64, logOffset int64, logNext *uint64) (*kilnv1.Build, bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := f.client.WatchBuild(sctx, &kilnv1.WatchBuildRequest{BuildId: id, LogOffset: logOffset})
	if err != nil {
		return nil, false, err
	}
	var last *kilnv1.Build
	heard := false
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return last, heard, nil
		}
		if err != nil {
			return last, heard, err
		}
		heard = true
		if f.withLog && len(m.GetLog()) > 0 {
			data, off := m.GetLog(), m.GetLogOffset()
			if off < *logNext { // overlap after a resume
				skip := *logNext - off
				if skip >= uint64(len(data)) {
					data = nil
				} else {
					data = data[skip:]
				}
				off = *logNext
			}
			if off == *logNext && len(data) > 0 {
				if f.progress != nil {
					f.progress.log(data)
				}
				*logNext += uint64(len(data))
			}
		}
		if b := m.GetBuild(); b != nil {
			last = b
			if f.progress != nil {
				f.progress.update(b)
			}
			if f.seen != nil {
				f.seen(b)
			}
			if answered(b, f.accept) {
				return last, heard, nil
			}
		}
	}
}

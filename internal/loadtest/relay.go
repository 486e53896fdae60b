package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/kilnbuild/kiln/internal/loadtest/relaywire"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// relay is the best case of a local agent for the command line (issue 20
// item 5): a process already running, its connection to the metaserver
// already open, that a short-lived client asks over a unix socket. It is
// the harness's own process and connection, so what a client process pays
// through it beyond its start-up and the harness's build is what no agent
// could save. The protocol is the least there is (relaywire), so the
// figure is a lower bound for a real agent: one SubmitRequest in, the
// build's states out (WatchBuild without the log).
type relay struct {
	ln   net.Listener
	c    kilnv1.CompileServiceClient
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

// startRelay serves the relay on the unix socket at path until close.
func startRelay(path string, c kilnv1.CompileServiceClient) (*relay, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	r := &relay{ln: ln, c: c}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // closed
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer conn.Close()
				if err := r.serve(conn); err != nil {
					r.mu.Lock()
					r.errs = append(r.errs, err)
					r.mu.Unlock()
				}
			}()
		}
	}()
	return r, nil
}

// serve answers one client: its request submitted and watched on the
// harness's connection, every state written back as it arrives.
func (r *relay) serve(conn net.Conn) error {
	if err := conn.SetDeadline(time.Now().Add(completionTimeout)); err != nil {
		return err
	}
	raw, err := relaywire.Read(conn)
	if err != nil {
		return fmt.Errorf("relay: request: %w", err)
	}
	req := &kilnv1.SubmitRequest{}
	if err := req.UnmarshalVT(raw); err != nil {
		return fmt.Errorf("relay: request: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	defer cancel()
	resp, err := r.c.Submit(ctx, req)
	if err != nil {
		return fmt.Errorf("relay: submit: %w", err)
	}
	if resp.GetCached() || resp.GetJoined() {
		return fmt.Errorf("relay: build %d: cached=%v joined=%v; want a new build", resp.GetBuild().GetId(), resp.GetCached(), resp.GetJoined())
	}
	var werr error
	_, _, err = watchWith(ctx, r.c, resp.GetBuild().GetId(), func(b *kilnv1.Build, _ time.Time) {
		if werr != nil {
			return
		}
		out, err := (&kilnv1.WatchBuildResponse{Build: b}).MarshalVT()
		if err == nil {
			err = relaywire.Write(conn, out)
		}
		werr = err
	})
	return errors.Join(err, werr)
}

// close stops the relay and returns what went wrong serving.
func (r *relay) close() error {
	r.ln.Close()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.errs...)
}

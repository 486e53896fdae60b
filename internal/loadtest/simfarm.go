package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kilnbuild/kiln/internal/sysinfo"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// simFarm is a set of simulated build servers connected to one metaserver.
type simFarm struct {
	servers []*simServer
	tracker *tracker
}

// localTarget is the "native" target the simulated build servers offer:
// this machine's system info as startcompile measures it, so requests
// pinned to this machine (startcompile's default) match them.
func localTarget(ctx context.Context) (*kilnv1.Target, error) {
	info, err := sysinfo.Local(ctx)
	if err != nil {
		return nil, err
	}
	info.Compiler, info.CompilerVersion = "gcc", "12.2.0"
	return &kilnv1.Target{Id: "native", System: info}, nil
}

// addCredentials creates n build-server credentials named prefix-0..n-1
// through the running metaserver's AdminService on its unix socket (what
// `metaserver buildserver add` does while serve runs), with a few calls in
// flight at once.
func addCredentials(ctx context.Context, m *meta, prefix string, n int) ([]string, error) {
	admin, closeAdmin, err := m.admin()
	if err != nil {
		return nil, err
	}
	defer closeAdmin()
	tokens := make([]string, n)
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				r, err := admin.AddBuildServer(cctx, &kilnv1.AddBuildServerRequest{Name: fmt.Sprintf("%s-%d", prefix, i)})
				cancel()
				if err != nil {
					select {
					case errs <- fmt.Errorf("AddBuildServer %s-%d: %w", prefix, i, err):
					default:
					}
					continue
				}
				tokens[i] = r.GetToken()
			}
		}()
	}
feed:
	for i := range n {
		select {
		case work <- i:
		case err := <-errs:
			close(work)
			wg.Wait()
			return nil, err
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	return tokens, ctx.Err()
}

// connectSims connects one simulated build server per token, parallel
// connects at a time, each waiting for its Welcome.
func connectSims(ctx context.Context, m *meta, prefix string, tokens []string, slots uint32, tr *tracker, parallel int) (*simFarm, error) {
	target, err := localTarget(ctx)
	if err != nil {
		return nil, err
	}
	f := &simFarm{tracker: tr, servers: make([]*simServer, len(tokens))}
	for i, tok := range tokens {
		f.servers[i] = newSimServer(fmt.Sprintf("%s-%d", prefix, i), tok, target, slots, tr)
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, s := range f.servers {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.connect(ctx, m.Addr); err != nil {
				mu.Lock()
				firstErr = errors.Join(firstErr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		f.close()
		return nil, firstErr
	}
	return f, ctx.Err()
}

// err returns the first error any simulated server ran into, or nil.
func (f *simFarm) err() error {
	for _, s := range f.servers {
		select {
		case err := <-s.errs:
			return err
		default:
		}
	}
	return nil
}

// close ends every session.
func (f *simFarm) close() {
	for _, s := range f.servers {
		s.close()
	}
}

// setDraining sets every server's draining flag (see simServer.setDraining).
func (f *simFarm) setDraining(v bool) error {
	for _, s := range f.servers {
		if err := s.setDraining(v); err != nil {
			return fmt.Errorf("%s: heartbeat: %w", s.name, err)
		}
	}
	return nil
}

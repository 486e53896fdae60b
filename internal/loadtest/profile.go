package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// profiler collects CPU profiles of the real programs over a measuring
// window, when they were built with --pprof.
type profiler struct {
	e     *env
	waits []func() error
}

// cpu starts a CPU profile of the program serving pprof at addr, lasting
// secs, saved as NAME.cpu.pprof in the scenario directory; bin is the
// program, for symbolization. A no-op without --pprof.
func (p *profiler) cpu(ctx context.Context, name, addr, bin string, d time.Duration) {
	if !p.e.bins.Pprof || addr == "" {
		return
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	out := filepath.Join(p.e.dir, name+".cpu.pprof")
	done := make(chan error, 1)
	go func() {
		done <- fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), out)
	}()
	p.waits = append(p.waits, func() error {
		if err := <-done; err != nil {
			return fmt.Errorf("profile of %s: %w", name, err)
		}
		top, err := pprofTop(ctx, bin, out)
		if err != nil {
			return err
		}
		p.e.rep.logf("CPU profile of %s saved in %s; top functions:\n%s", name, out, top)
		return nil
	})
}

// wait waits for every started profile and prints its summary.
func (p *profiler) wait() {
	for _, w := range p.waits {
		if err := w(); err != nil {
			p.e.rep.logf("%v", err)
		}
	}
	p.waits = nil
}

func fetchProfile(ctx context.Context, url, out string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pprofTop renders the top of a profile by cumulative time.
func pprofTop(ctx context.Context, bin, profile string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(cctx, "go", "tool", "pprof", "-top", "-cum", "-nodecount=40", bin, profile).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n"), nil
}

// snapshot saves the heap profile and the goroutine count of the program
// serving pprof at addr and prints the top of the heap by in-use space. A
// no-op without --pprof.
func (p *profiler) snapshot(ctx context.Context, name, addr, bin string) {
	if !p.e.bins.Pprof || addr == "" {
		return
	}
	out := filepath.Join(p.e.dir, name+".heap.pprof")
	if err := fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/heap?gc=1", addr), out); err != nil {
		p.e.rep.logf("heap profile of %s: %v", name, err)
		return
	}
	gor := filepath.Join(p.e.dir, name+".goroutines.txt")
	if err := fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/goroutine?debug=1", addr), gor); err == nil {
		if b, err := os.ReadFile(gor); err == nil {
			first, _, _ := strings.Cut(string(b), "\n")
			p.e.rep.logf("%s: %s (details in %s)", name, first, gor)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	top, err := exec.CommandContext(cctx, "go", "tool", "pprof", "-top", "-sample_index=inuse_space", "-nodecount=25", bin, out).CombinedOutput()
	if err != nil {
		p.e.rep.logf("go tool pprof: %v: %s", err, top)
		return
	}
	p.e.rep.logf("heap profile of %s saved in %s; top by in-use space:\n%s", name, out, top)
}

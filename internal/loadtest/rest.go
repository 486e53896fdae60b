package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// restBurst is how many builds simulated build servers run through the
// metaserver before it rests: memory at rest is what a farm keeps once it
// has worked, not what a fresh process holds.
const restBurst = 5000

// restWindow is how long the rest scenario leaves the farm idle after its
// last build before reading the figure: what a user sees a minute after the
// farm went quiet. It is shorter than the runtime's forced collection (every
// 2 minutes), so garbage a GC policy leaves behind is still counted.
const restWindow = 60 * time.Second

// runRest measures the resident memory of a metaserver and a real
// buildserver at rest after work: the metaserver runs restBurst builds with
// simulated build servers (which then disconnect), then the buildserver
// connects and runs 5 real builds, then both idle for restWindow. The
// figures are the RSS at the end of the window; the notes give the curve.
func runRest(ctx context.Context, e *env) error {
	src, commit, err := makeProject(ctx, e.dir)
	if err != nil {
		return err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	m, err := startMetaserver(ctx, e.bins, e.dir, "--metrics-listen", metricsAddr)
	if err != nil {
		return err
	}
	defer m.close()
	m.MetricsAddr = metricsAddr
	if err := m.addProject(ctx, projectName, src); err != nil {
		return err
	}
	reqs, err := newRequests(ctx, commit)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, e.cfg.Settle); err != nil {
		return err
	}
	fresh, err := readMem(m.Proc.pid())
	if err != nil {
		return err
	}

	burst, err := restBurstRun(ctx, e, m, reqs)
	if err != nil {
		return fmt.Errorf("burst: %w", err)
	}
	afterBurst, err := readMem(m.Proc.pid())
	if err != nil {
		return err
	}

	tok, err := m.addBuildServer(ctx, "volunteer-0")
	if err != nil {
		return err
	}
	bs, err := startBuildserver(e.bins, e.dir, m, "volunteer-0", tok, 1, e.cfg.Sandbox, false)
	if err != nil {
		return err
	}
	if err := m.waitConnected(ctx, 1, readyTimeout); err != nil {
		return err
	}
	if err := sleepCtx(ctx, e.cfg.Settle); err != nil {
		return err
	}
	bsConnected, err := readMem(bs.Proc.pid())
	if err != nil {
		return err
	}
	for range 5 {
		if _, err := oneBuild(ctx, m.Compile, reqs.next()); err != nil {
			return err
		}
	}

	e.rep.logf("at rest for %s: sampling RSS every second", restWindow)
	var ms, bss memCurve
	start := time.Now()
	for {
		mm, err := readMem(m.Proc.pid())
		if err != nil {
			return err
		}
		bm, err := readMem(bs.Proc.pid())
		if err != nil {
			return err
		}
		at := time.Since(start)
		ms.add(at, mm)
		bss.add(at, bm)
		if at >= restWindow {
			break
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
	(&profiler{e: e}).snapshot(ctx, "metaserver", m.PprofAddr, e.bins.Metaserver)
	heap := "metrics unavailable"
	if met, err := scrape(ctx, m.MetricsAddr); err == nil {
		heap = fmt.Sprintf("heap in use %.1f MiB, released to the OS %.1f MiB, next GC at %.1f MiB (GOGC %.0f)",
			mib(int64(met["go_memstats_heap_inuse_bytes"])), mib(int64(met["go_memstats_heap_released_bytes"])),
			mib(int64(met["go_memstats_next_gc_bytes"])), met["go_gc_gogc_percent"])
	}
	mEnd, bEnd := ms.last(), bss.last()
	dbRSS, err := mappedRSS(m.Proc.pid(), filepath.Join(m.DataDir, "kiln.db"))
	if err != nil {
		return err
	}
	e.rep.add(figure{Scenario: "rest", Name: fmt.Sprintf("metaserver RSS at rest (%s after work)", restWindow), Value: mib(mEnd.RSS), Unit: "MiB", Target: 30, AtMost: true,
		Note: fmt.Sprintf("fresh, nothing connected: %.1f MiB (anon %.1f, file %.1f); right after %d simulated builds (%.0f/s, %d simulated servers, then disconnected): %.1f MiB; after 5 real builds, at rest: %s\nat the end: anon %.1f MiB, file %.1f MiB (of which the store's mmap of kiln.db %.1f MiB); %s",
			mib(fresh.RSS), mib(fresh.Anon), mib(fresh.File), burst.Completed, burst.rate(), restSims, mib(afterBurst.RSS), ms.describe(), mib(mEnd.Anon), mib(mEnd.File), mib(dbRSS), heap)})
	e.rep.add(figure{Scenario: "rest", Name: fmt.Sprintf("buildserver RSS at rest (%s after 5 builds)", restWindow), Value: mib(bEnd.RSS), Unit: "MiB", Target: 20, AtMost: true,
		Note: fmt.Sprintf("connected, no build yet: %.1f MiB; after 5 builds, at rest: %s (anon %.1f, file %.1f MiB at the end)",
			mib(bsConnected.RSS), bss.describe(), mib(bEnd.Anon), mib(bEnd.File))})
	return nil
}

// restSims is how many simulated build servers run the rest burst.
const restSims = 32

// restBurstRun runs restBurst builds through restSims simulated build
// servers, disconnects them and waits until the metaserver has ended their
// sessions.
func restBurstRun(ctx context.Context, e *env, m *meta, reqs *requests) (*driveResult, error) {
	tokens, err := addCredentials(ctx, m, "burst", restSims)
	if err != nil {
		return nil, err
	}
	farm, err := connectSims(ctx, m, "burst", tokens, 1, newTracker(), restSims)
	if err != nil {
		return nil, err
	}
	defer farm.close()
	if err := m.waitConnected(ctx, restSims, time.Minute); err != nil {
		return nil, err
	}
	clients, closeClients, err := compileClients(m, 4)
	if err != nil {
		return nil, err
	}
	defer closeClients()
	res, err := drive(ctx, clients, reqs, 2*restSims, time.Minute, restBurst, trackerWait(farm.tracker))
	if err != nil {
		return nil, err
	}
	if err := farm.err(); err != nil {
		return nil, err
	}
	e.rep.logf("burst: %d builds in %s; disconnecting the simulated build servers", res.Completed, res.Elapsed.Round(time.Millisecond))
	farm.close()
	err = pollUntil(ctx, 30*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		o, err := m.Status.GetOverview(cctx, &kilnv1.GetOverviewRequest{})
		if err != nil {
			return err
		}
		if n := o.GetConnectedBuildServers(); n > 0 {
			return fmt.Errorf("%d simulated build servers still connected", n)
		}
		return nil
	})
	return res, err
}

// memCurve is a process's RSS sampled over time.
type memCurve struct {
	at  []time.Duration
	mem []memInfo
}

func (c *memCurve) add(at time.Duration, m memInfo) {
	c.at = append(c.at, at)
	c.mem = append(c.mem, m)
}

// last is the latest sample.
func (c *memCurve) last() memInfo { return c.mem[len(c.mem)-1] }

// describe gives the RSS at the first sample, after 10 s, 30 s and at the
// end, and the largest after the first 10 s.
func (c *memCurve) describe() string {
	var parts []string
	var peak int64
	marks := []time.Duration{0, 10 * time.Second, 30 * time.Second}
	for i, at := range c.at {
		if len(marks) > 0 && at >= marks[0] {
			parts = append(parts, fmt.Sprintf("%.1f MiB at %s", mib(c.mem[i].RSS), at.Round(time.Second)))
			marks = marks[1:]
		}
		if at >= 10*time.Second {
			peak = max(peak, c.mem[i].RSS)
		}
	}
	end := len(c.at) - 1
	parts = append(parts, fmt.Sprintf("%.1f MiB at %s", mib(c.mem[end].RSS), c.at[end].Round(time.Second)))
	return fmt.Sprintf("%s (largest from 10 s on: %.1f MiB)", strings.Join(parts, ", "), mib(peak))
}

// mappedRSS is the resident memory of pid's mappings of the file path, from
// /proc/PID/smaps.
func mappedRSS(pid int, path string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header: address perms offset dev inode [path]
			in = len(fields) >= 6 && fields[5] == path
			continue
		}
		if in && fields[0] == "Rss:" && len(fields) == 3 {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/smaps: %w", pid, err)
			}
			total += kb << 10
		}
	}
	return total, sc.Err()
}

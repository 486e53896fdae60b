package worker

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/kilnbuild/kiln/internal/sandbox"
)

// diskGuard is the StepRunner a Client runs steps with when a disk bound
// is configured: Config.Sandbox, with every step bounded by the build's
// disk cap and the data directory's free-space reserve (sandbox.DiskLimit
// over the step's writable directories: the build's src, dest and home).
// The attempt runner also reads the bounds from it for the check after the
// last step and for the artifact's share (see attemptRunner.diskBudget).
type diskGuard struct {
	StepRunner
	maxBytes int64 // 0: no cap
	minFree  int64 // 0: no reserve
}

// Run runs s with its disk bounds set.
func (g diskGuard) Run(ctx context.Context, s sandbox.Step) error {
	s.Disk = sandbox.DiskLimit{
		Paths:        hostDirs(s),
		MaxBytes:     g.maxBytes,
		MinFreeBytes: g.minFree,
	}
	return g.StepRunner.Run(ctx, s)
}

// withDiskGuard returns r bounded by maxBytes and minFree (each ≤ 0: none).
func withDiskGuard(r StepRunner, maxBytes, minFree int64) StepRunner {
	g := diskGuard{StepRunner: r, maxBytes: max(maxBytes, 0), minFree: max(minFree, 0)}
	if g.maxBytes == 0 && g.minFree == 0 {
		return r
	}
	return g
}

// diskCap returns the disk cap of a build run by r, 0 for none.
func diskCap(r StepRunner) int64 {
	if g, ok := r.(diskGuard); ok {
		return g.maxBytes
	}
	return 0
}

// overDiskCap is the reason of a build stopped for holding more than
// maxBytes on disk.
func overDiskCap(maxBytes int64) string {
	return fmt.Sprintf("build used more than %s of disk (--max-disk-bytes); stopped", formatBytes(maxBytes))
}

// diskLow is the reason of a build stopped because the build server's disk
// had less than reserve available.
func diskLow(reserve int64) string {
	return fmt.Sprintf("the build server's disk has less than %s free (--min-free-disk-bytes); build stopped", formatBytes(reserve))
}

// formatBytes prints n exactly, in the largest binary unit that divides
// it: "4 GiB", "64 MiB", "1536 KiB", "1000 bytes".
func formatBytes(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// hostDirs lists the host directories a step may write: its Writable ones
// and the sources of its Binds, leaving out any inside another so that
// nothing is counted twice.
func hostDirs(s sandbox.Step) []string {
	all := append(append([]string(nil), s.Writable...), bindSources(s.Binds)...)
	var out []string
	for _, p := range all {
		inside := false
		for _, q := range all {
			if q != p && strings.HasPrefix(p, q+"/") {
				inside = true
				break
			}
		}
		if !inside && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func bindSources(binds []sandbox.Bind) []string {
	var out []string
	for _, b := range binds {
		out = append(out, b.Src)
	}
	return out
}

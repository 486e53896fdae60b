package worker

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/sysinfo"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Target is one build target this build server offers.
type Target struct {
	// Info is the measured target as sent in Hello; Info.Id is the id
	// Assignments name it by ("native", "musl", "cross:s390x-linux-gnu").
	Info *kilnv1.Target
	// Env is the toolchain environment every step on this target gets
	// (CC, AR, ..., QEMU_LD_PREFIX, KILN_EMULATOR), as NAME=value.
	Env []string
	// Files are written under each attempt's $HOME/.kiln before its steps
	// (CMake toolchain and Meson cross files, musl's kernel headers); the
	// steps see each one's path in its variable.
	Files []sysinfo.TargetFile
	// AfterStep is the toolchain's command every step ends with (see
	// sysinfo.Toolchain.AfterStep); "" for none.
	AfterStep string
}

// ProbeFunc measures one target spec; sysinfo.Probe is the real one.
type ProbeFunc func(ctx context.Context, spec sysinfo.TargetSpec, workDir string) (*kilnv1.Target, error)

// Limits on the rejected targets a build server reports in Hello; the
// metaserver refuses a Hello over them (see kilnv1.Hello.rejected_targets).
const (
	// MaxRejectedTargets is how many rejected targets Hello carries at most.
	MaxRejectedTargets = 32
	// MaxRejectReasonBytes bounds one rejected target's reason in Hello.
	MaxRejectReasonBytes = 512
	// maxRejectedIDBytes bounds one rejected target's id in Hello.
	maxRejectedIDBytes = 128
)

// ProbeTargets measures each spec with probe (nil: sysinfo.Probe), using
// workDir for scratch files. A target whose probe fails is logged and left
// out; when none remains it returns ErrNoTargets (wrapping the failures).
// It is ProbeAll without the list of rejected targets.
func ProbeTargets(ctx context.Context, specs []sysinfo.TargetSpec, probe ProbeFunc, workDir string, log *slog.Logger) ([]Target, error) {
	targets, _, err := ProbeAll(ctx, specs, probe, workDir, log)
	return targets, err
}

// probeParallel is how many probes ProbeAll runs at once: a probe is a
// compile and one or two runs, mostly one CPU's work, and a Windows one
// waits tens of seconds for wine to make its prefix; 16 targets probed
// one by one took over a minute longer than two at a time.
var probeParallel = max(2, min(runtime.NumCPU(), 4))

// ProbeAll measures each spec like ProbeTargets (probeParallel at a time)
// and also returns the specs whose probe failed, in spec order, each with
// the probe's error text as its reason, ready for Config.Rejected (and so
// for Hello). Targets come back in spec order too. When no target probes
// it returns ErrNoTargets (wrapping the failures) and the rejected list.
func ProbeAll(ctx context.Context, specs []sysinfo.TargetSpec, probe ProbeFunc, workDir string, log *slog.Logger) ([]Target, []*kilnv1.RejectedTarget, error) {
	if probe == nil {
		probe = sysinfo.Probe
	}
	if log == nil {
		log = slog.Default()
	}
	type outcome struct {
		info *kilnv1.Target
		err  error
	}
	outcomes := make([]outcome, len(specs))
	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			info, err := probe(ctx, spec, workDir)
			outcomes[i] = outcome{info, err}
		}()
	}
	wg.Wait()
	var targets []Target
	var rejected []*kilnv1.RejectedTarget
	var failures []error
	for i, spec := range specs {
		info, err := outcomes[i].info, outcomes[i].err
		if err != nil {
			log.Error("target probe failed; not offering it", "target", fmt.Sprint(spec), "error", err)
			failures = append(failures, err)
			rejected = append(rejected, &kilnv1.RejectedTarget{TargetId: spec.ID, Reason: err.Error()})
			continue
		}
		log.Info("target probed", "target", info.GetId(),
			"arch", info.GetSystem().GetArch(), "libc", info.GetSystem().GetLibc(),
			"compiler", info.GetSystem().GetCompiler(), "emulated", info.GetSystem().GetEmulated())
		tc := spec.Toolchain()
		targets = append(targets, Target{Info: info, Env: tc.Env, Files: spec.Files(info.GetSystem()), AfterStep: tc.AfterStep})
	}
	if len(targets) == 0 {
		return nil, rejected, fmt.Errorf("%w: %d of %d probes failed: %v", ErrNoTargets, len(failures), len(specs), failures)
	}
	return targets, rejected, nil
}

// helloRejected returns rejected as Hello may carry it: at most
// MaxRejectedTargets entries, entries without an id dropped, ids and
// reasons truncated at a UTF-8 boundary to their limits. The caller's
// messages are not modified.
func helloRejected(rejected []*kilnv1.RejectedTarget) []*kilnv1.RejectedTarget {
	var out []*kilnv1.RejectedTarget
	for _, r := range rejected {
		if len(out) == MaxRejectedTargets {
			break
		}
		if r.GetTargetId() == "" {
			continue
		}
		out = append(out, &kilnv1.RejectedTarget{
			TargetId: truncateUTF8(r.GetTargetId(), maxRejectedIDBytes),
			Reason:   truncateUTF8(r.GetReason(), MaxRejectReasonBytes),
		})
	}
	return out
}

// truncateUTF8 returns s cut to at most n bytes without splitting a rune;
// invalid UTF-8 is replaced first, so the result is valid UTF-8.
func truncateUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// withLabels returns copies of targets whose system info carries labels too.
func withLabels(targets []Target, labels []string) []Target {
	out := make([]Target, len(targets))
	for i, t := range targets {
		info := proto.Clone(t.Info).(*kilnv1.Target)
		if len(labels) > 0 {
			if info.System == nil {
				info.System = &kilnv1.SystemInfo{}
			}
			info.System.Labels = append(info.System.Labels, labels...)
		}
		out[i] = t
		out[i].Info = info
	}
	return out
}

package worker

import (
	"context"
	"fmt"
	"log/slog"

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
}

// ProbeFunc measures one target spec; sysinfo.Probe is the real one.
type ProbeFunc func(ctx context.Context, spec sysinfo.TargetSpec, workDir string) (*kilnv1.Target, error)

// ProbeTargets measures each spec with probe (nil: sysinfo.Probe), using
// workDir for scratch files. A target whose probe fails is logged and left
// out; when none remains it returns ErrNoTargets (wrapping the failures).
func ProbeTargets(ctx context.Context, specs []sysinfo.TargetSpec, probe ProbeFunc, workDir string, log *slog.Logger) ([]Target, error) {
	if probe == nil {
		probe = sysinfo.Probe
	}
	if log == nil {
		log = slog.Default()
	}
	var targets []Target
	var failures []error
	for _, spec := range specs {
		info, err := probe(ctx, spec, workDir)
		if err != nil {
			log.Error("target probe failed; not offering it", "target", fmt.Sprint(spec), "error", err)
			failures = append(failures, err)
			continue
		}
		log.Info("target probed", "target", info.GetId(),
			"arch", info.GetSystem().GetArch(), "libc", info.GetSystem().GetLibc(),
			"compiler", info.GetSystem().GetCompiler(), "emulated", info.GetSystem().GetEmulated())
		targets = append(targets, Target{Info: info, Env: spec.Toolchain().Env})
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w: %d of %d probes failed: %v", ErrNoTargets, len(failures), len(specs), failures)
	}
	return targets, nil
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
		out[i] = Target{Info: info, Env: t.Env}
	}
	return out
}

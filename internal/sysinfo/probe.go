package sysinfo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// ErrProbeFailed is wrapped by every error Probe returns when the target
// cannot be measured: compiler or emulator missing, program failing, output
// not understood. Such a target cannot build and must not be offered.
var ErrProbeFailed = errors.New("sysinfo: probe failed")

// ProbeError describes a failed probe step. It unwraps to ErrProbeFailed and
// to the underlying error (for example exec.ErrNotFound when the compiler is
// missing).
type ProbeError struct {
	Target string // TargetSpec.ID
	Step   string // what failed: "compile with s390x-linux-gnu-gcc", "run ...", "arch"
	Stderr string // the compiler's or runner's stderr, trimmed and bounded
	Err    error
}

// Error names the target and step and includes the stderr.
func (e *ProbeError) Error() string {
	s := fmt.Sprintf("probe target %s: %s: %v", e.Target, e.Step, e.Err)
	if e.Stderr != "" {
		s += "\n" + e.Stderr
	}
	return s
}

// Unwrap returns ErrProbeFailed and the underlying error.
func (e *ProbeError) Unwrap() []error { return []error{ErrProbeFailed, e.Err} }

// probeEnv is what the attribute probers read.
type probeEnv struct {
	spec     TargetSpec
	tc       Toolchain
	prog     *program
	hostArch string // canonical architecture of this host
}

// prober fills one attribute group of info from the probe program's output
// (and, for libc, from the target's loader). Probers run in order; each may
// rely on the fields set by earlier ones.
type prober struct {
	name  string
	probe func(ctx context.Context, env *probeEnv, info *kilnv1.SystemInfo) error
}

// targetProbers are the probers of the target's own attributes, in order.
var targetProbers = []prober{
	{"os", probeOS},
	{"arch", probeArch},
	{"sizes", probeSizes},
	{"abi", probeABI},
	{"endian", probeEndian},
	{"compiler", probeCompiler},
	{"libc", probeLibc},
	{"emulated", probeEmulated},
}

// Probe measures one target: it writes csrc/probe.c into a fresh directory
// under workDir (removed before returning), compiles it with the target's
// compiler, runs it (under the emulator for cross targets) and lets one
// prober per attribute read the result. Meanwhile it measures the host:
// tools with their versions (see Tools; plus "cc" = the target compiler's
// version), cpus and memory. workDir must exist; "" means os.TempDir().
//
// Any failure returns an error wrapping ErrProbeFailed, with the compiler's
// or runner's stderr when there is one. ctx bounds every process started;
// Probe waits for all of them before returning. Safe for concurrent use.
func Probe(ctx context.Context, spec TargetSpec, workDir string) (*kilnv1.Target, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		wg    sync.WaitGroup
		tools map[string]string
		host  hostFacts
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tools = Tools(ctx)
		host = measureHost()
	}()
	// On every return: stop the host probes first, then wait for them.
	defer wg.Wait()
	defer cancel()

	if workDir == "" {
		workDir = os.TempDir()
	}
	dir, err := os.MkdirTemp(workDir, "kiln-probe-")
	if err != nil {
		return nil, &ProbeError{Target: spec.ID, Step: "make work directory", Err: err}
	}
	defer os.RemoveAll(dir)

	tc := spec.Toolchain()
	defer stopWine(tc, dir)
	prog, err := runProgram(ctx, spec, tc, dir)
	if err != nil {
		return nil, err
	}
	if spec.Kind == KindCross {
		if err := runDirectly(ctx, spec, tc, dir, prog); err != nil {
			return nil, &ProbeError{Target: spec.ID, Step: "run ./probe directly", Err: err}
		}
	}
	env := &probeEnv{spec: spec, tc: tc, prog: prog, hostArch: platform.CanonicalArch(runtime.GOARCH)}
	info := &kilnv1.SystemInfo{}
	for _, p := range targetProbers {
		if err := p.probe(ctx, env, info); err != nil {
			return nil, &ProbeError{Target: spec.ID, Step: p.name, Err: err}
		}
	}

	wg.Wait()
	if tools == nil {
		tools = make(map[string]string)
	}
	if info.CompilerVersion != "" {
		tools["cc"] = info.CompilerVersion
	} else {
		tools["cc"] = unknownVersion
	}
	info.Tools = tools
	info.Cpus = host.cpus
	info.MemoryBytes = host.memoryBytes
	return &kilnv1.Target{Id: spec.ID, System: info}, nil
}

// hostFacts is the host capacity every target of a machine shares.
type hostFacts struct {
	cpus        uint32
	memoryBytes uint64
}

// measureHost reads the host's capacity; memory is 0 when unreadable.
func measureHost() hostFacts {
	mem, _ := memoryBytes()
	return hostFacts{cpus: uint32(runtime.NumCPU()), memoryBytes: mem}
}

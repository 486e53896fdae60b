package sysinfo

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// programSource is the C probe; see csrc/probe.c for what it prints.
//
//go:embed csrc/probe.c
var programSource []byte

// Step limits. Generous because a cold cross compiler on a busy machine can
// take seconds; a warm probe takes well under one. The caller's ctx still
// bounds the whole probe.
const (
	compileTimeout = 60 * time.Second
	runTimeout     = 30 * time.Second
	// wineRunTimeout bounds a Windows target's run: the first one makes
	// the wine prefix, 15 to 45 s on the project's 2-core machine.
	wineRunTimeout = 3 * time.Minute
	// maxStderr bounds the compiler or runner output kept in a ProbeError.
	maxStderr = 4 << 10
)

// program is the outcome of compiling and running csrc/probe.c on a target.
type program struct {
	// values are the key=value lines the program printed.
	values map[string]string
	// binary is the compiled program, valid until Probe returns.
	binary string
	// interp is the binary's ELF program interpreter (dynamic loader), e.g.
	// "/lib/ld-musl-x86_64.so.1"; empty for a static binary or a non-ELF
	// format.
	interp string
}

// runProgram compiles csrc/probe.c in dir with the target's compiler,
// dynamically as builds link, and runs it under the target's emulator.
func runProgram(ctx context.Context, spec TargetSpec, tc Toolchain, dir string) (*program, error) {
	src := filepath.Join(dir, "probe.c")
	bin := filepath.Join(dir, "probe"+tc.ExeSuffix)
	if err := os.WriteFile(src, programSource, 0o644); err != nil {
		return nil, &ProbeError{Target: spec.ID, Step: "write", Err: err}
	}

	cctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	if _, stderr, err := run(cctx, dir, []string{tc.CC, "-O0", "-o", bin, src}, nil); err != nil {
		return nil, &ProbeError{Target: spec.ID, Step: "compile with " + tc.CC, Stderr: stderr, Err: err}
	}

	rctx, cancel := context.WithTimeout(ctx, tc.runTimeout())
	defer cancel()
	argv := append(append([]string(nil), tc.Emulator...), bin)
	stdout, stderr, err := tc.runTarget(rctx, dir, argv, runEnv(tc, dir))
	if err != nil {
		return nil, &ProbeError{Target: spec.ID, Step: "run " + strings.Join(argv, " "), Stderr: stderr, Err: err}
	}
	values, err := parseValues(stdout)
	if err != nil {
		return nil, &ProbeError{Target: spec.ID, Step: "parse output", Stderr: stderr, Err: err}
	}
	return &program{values: values, binary: bin, interp: elfInterp(bin)}, nil
}

// runEnv is the environment a target binary runs in: the toolchain's
// (QEMU_LD_PREFIX matters for binfmt-launched children) and C locale; for
// a Windows target, a wine prefix in the probe's directory dir, so that
// the probe neither uses nor leaves one in the build server's home.
func runEnv(tc Toolchain, dir string) []string {
	env := append([]string{"LC_ALL=C"}, tc.Env...)
	if tc.Windows {
		env = append(env, "WINEPREFIX="+winePrefix(dir))
	}
	return env
}

// runTimeout bounds one run of a probe program on the target.
func (tc Toolchain) runTimeout() time.Duration {
	if tc.Windows {
		return wineRunTimeout
	}
	return runTimeout
}

// winePrefix is the probe's wine prefix under its directory dir.
func winePrefix(dir string) string { return filepath.Join(dir, "wineprefix") }

// stopWine ends the wineserver of the probe's wine prefix, which would
// otherwise outlive the probe for a few seconds with the prefix removed
// under it. Best effort: wineserver -k kills only that prefix's server.
func stopWine(tc Toolchain, dir string) {
	if !tc.Windows || !fileExists(winePrefix(dir)) {
		return
	}
	server := wineServerCommand(tc.Emulator[0])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, _ = run(ctx, dir, []string{server, "-k"}, []string{"WINEPREFIX=" + winePrefix(dir)})
}

// parseValues reads key=value lines and checks the final end=1 marker, so a
// truncated run is never taken for a measurement.
func parseValues(out []byte) (map[string]string, error) {
	values := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			return nil, fmt.Errorf("unexpected line %q", sc.Text())
		}
		values[k] = strings.TrimSpace(v)
	}
	if values["end"] != "1" {
		return nil, fmt.Errorf("output incomplete (%d bytes)", len(out))
	}
	return values, nil
}

// elfInterp returns the PT_INTERP path of an ELF binary, or "".
func elfInterp(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return ""
		}
		return string(bytes.TrimRight(b, "\x00"))
	}
	return ""
}

// run executes argv in dir with extra environment entries added to the
// process's own, returning stdout and a bounded stderr. The whole process
// group is killed when ctx ends (a compiler driver has children).
func run(ctx context.Context, dir string, argv, extraEnv []string) (stdout []byte, stderr string, err error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), extraEnv...)
	setProcessGroup(cmd)
	cmd.WaitDelay = time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	err = cmd.Run()
	if ctxErr := ctx.Err(); err != nil && ctxErr != nil {
		err = fmt.Errorf("%w (%w)", err, ctxErr)
	}
	return out.Bytes(), truncate(errOut.String(), maxStderr), err
}

// runTarget is run for a target program. A Windows one writes its output
// to files rather than pipes: the wineserver that wine starts outlives
// the program holding its stdout and stderr, so a pipe would not reach
// its end until that server quits.
func (tc Toolchain) runTarget(ctx context.Context, dir string, argv, extraEnv []string) (stdout []byte, stderr string, err error) {
	if !tc.Windows {
		return run(ctx, dir, argv, extraEnv)
	}
	outF, err := os.CreateTemp(dir, "stdout-")
	if err != nil {
		return nil, "", err
	}
	defer outF.Close()
	errF, err := os.CreateTemp(dir, "stderr-")
	if err != nil {
		return nil, "", err
	}
	defer errF.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), extraEnv...)
	setProcessGroup(cmd)
	cmd.Stdout, cmd.Stderr = outF, errF
	err = cmd.Run()
	if ctxErr := ctx.Err(); err != nil && ctxErr != nil {
		err = fmt.Errorf("%w (%w)", err, ctxErr)
	}
	stdout, _ = os.ReadFile(outF.Name())
	errOut, _ := os.ReadFile(errF.Name())
	return stdout, truncate(string(errOut), maxStderr), err
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

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
	bin := filepath.Join(dir, "probe")
	if err := os.WriteFile(src, programSource, 0o644); err != nil {
		return nil, &ProbeError{Target: spec.ID, Step: "write", Err: err}
	}

	cctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	if _, stderr, err := run(cctx, dir, []string{tc.CC, "-O0", "-o", bin, src}, nil); err != nil {
		return nil, &ProbeError{Target: spec.ID, Step: "compile with " + tc.CC, Stderr: stderr, Err: err}
	}

	rctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	argv := append(append([]string(nil), tc.Emulator...), bin)
	stdout, stderr, err := run(rctx, dir, argv, runEnv(tc))
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
// (QEMU_LD_PREFIX matters for binfmt-launched children) and C locale.
func runEnv(tc Toolchain) []string {
	return append([]string{"LC_ALL=C"}, tc.Env...)
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

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

package sysinfo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBinfmtMagic_MatchesExecutablesAndPIEsOfTheMachine(t *testing.T) {
	// An i386 PIE header (e_type 3, e_machine 3) and an s390x executable's
	// (big-endian, e_type 2, e_machine 22).
	i386 := []byte("\x7fELF\x01\x01\x01\x03\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x03\x00")
	magic, mask, err := binfmtMagic(i386)
	if err != nil {
		t.Fatal(err)
	}
	if got := escapeBinfmt(magic); got != `\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00` {
		t.Errorf("i386 magic %s", got)
	}
	if got := escapeBinfmt(mask); got != `\xff\xff\xff\xff\xff\xff\xff\x00\x00\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff` {
		t.Errorf("i386 mask %s", got)
	}
	s390x := []byte("\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16")
	magic, mask, _ = binfmtMagic(s390x)
	if magic[17] != 2 || mask[17] != 0xfe || mask[16] != 0xff {
		t.Errorf("big-endian e_type not masked in its low byte: magic %x mask %x", magic, mask)
	}
	for _, m := range [][]byte{i386, s390x} {
		magic, mask, _ := binfmtMagic(m)
		for _, typ := range []byte{2, 3} {
			h := append([]byte(nil), m...)
			if h[5] == 2 {
				h[17] = typ
			} else {
				h[16] = typ
			}
			for i := range h {
				if (h[i]^magic[i])&mask[i] != 0 {
					t.Errorf("header %x (e_type %d) does not match at byte %d", h, typ, i)
				}
			}
		}
	}
	if _, _, err := binfmtMagic([]byte("#!/bin/sh\nexit 0\n\x00\x00\x00")); err == nil {
		t.Error("a script's header gave a magic")
	}
}

// TestRunDirectly_SaysWhyABinaryCannotRun: a format no handler takes
// (exec format error) and an ELF whose loader is missing are each refused
// with what to do about it.
func TestRunDirectly_SaysWhyABinaryCannotRun(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := TargetSpec{ID: "cross:i686-linux-gnu", Kind: KindCross, Triple: "i686-linux-gnu"}
	tc := spec.Toolchain()

	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("\x00\x01\x02\x03 not a program of any format\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := runDirectly(ctx, spec, tc, dir, &program{binary: junk})
	if err == nil || !strings.Contains(err.Error(), "exec format error") {
		t.Errorf("an unknown format: %v, want an exec format error explained", err)
	}

	cc, lerr := exec.LookPath("cc")
	if lerr != nil {
		t.Skip("no cc")
	}
	src := filepath.Join(dir, "p.c")
	os.WriteFile(src, programSource, 0o644)
	bin := filepath.Join(dir, "noloader")
	if out, err := exec.Command(cc, "-o", bin, src, "-Wl,--dynamic-linker=/nonexistent/ld-kiln.so").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v: %s", err, out)
	}
	err = runDirectly(ctx, spec, tc, dir, &program{binary: bin, interp: elfInterp(bin)})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/ld-kiln.so") || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing loader: %v, want it named", err)
	}
}

// TestRegisterBinfmt_RunsForeignBinariesDirectly registers, as root, the
// handler the build server registers where the kernel refuses a target's
// binaries, and runs a probe through it; the handler is removed after.
func TestRegisterBinfmt_RunsForeignBinariesDirectly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	spec := TargetSpec{ID: "cross:s390x-linux-gnu", Kind: KindCross, Triple: "s390x-linux-gnu"}
	tc := spec.Toolchain()
	if _, err := exec.LookPath(tc.CC); err != nil {
		t.Skipf("no %s", tc.CC)
	}
	if _, err := exec.LookPath(tc.Emulator[0]); err != nil {
		t.Skipf("no %s", tc.Emulator[0])
	}
	handler := binfmtDir + "/kiln-s390x"
	if _, err := os.Stat(handler); err == nil {
		t.Skip("kiln-s390x is registered already (a build server runs here)")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := runProgram(ctx, spec, tc, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := registerBinfmt(spec.Triple, p.binary, tc.Emulator[0]); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(handler, []byte("-1"), 0) })
	b, err := os.ReadFile(handler)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "enabled") || !strings.Contains(string(b), "flags: F") ||
		!strings.Contains(string(b), "magic 7f454c4602020100000000000000000000020016") {
		t.Errorf("handler registered as:\n%s", b)
	}
	if err := runBinary(ctx, dir, p.binary, tc); err != nil {
		t.Errorf("the probe does not run directly: %v", err)
	}
}

package sysinfo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kilnbuild/kiln/internal/platform"
)

// runDirectly checks that a cross target's binaries run when executed
// directly, as a project's `make check` runs ./test (not only through
// KILN_EMULATOR): the kernel must hand them to qemu-user through a
// binfmt_misc handler, or run them natively with their loader installed
// (i386 on an x86-64 kernel with IA32 emulation: /lib/ld-linux.so.2 from
// libc6-i386).
//
// When the kernel refuses the format (ENOEXEC) and this process may, it
// registers a binfmt_misc handler for the target's qemu (see
// registerBinfmt) and tries again. Otherwise the error says what is
// missing; the caller then does not offer the target.
func runDirectly(ctx context.Context, spec TargetSpec, tc Toolchain, dir string, p *program) error {
	err := runBinary(ctx, dir, p.binary, tc)
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, syscall.ENOEXEC):
		if os.Geteuid() != 0 {
			return fmt.Errorf("the kernel cannot run %s binaries directly (exec format error) and no binfmt_misc handler takes them; a root build server registers one for %s", spec.Triple, tc.Emulator[0])
		}
		if rerr := registerBinfmt(spec.Triple, p.binary, tc.Emulator[0]); rerr != nil {
			return fmt.Errorf("the kernel cannot run %s binaries directly (exec format error), and registering a binfmt_misc handler failed: %w", spec.Triple, rerr)
		}
		if err := runBinary(ctx, dir, p.binary, tc); err != nil {
			return fmt.Errorf("%s binaries still do not run directly after registering a binfmt_misc handler: %w", spec.Triple, err)
		}
		return nil
	case errors.Is(err, syscall.ENOENT) && p.interp != "":
		return fmt.Errorf("this kernel runs %s binaries itself, but their loader %s is missing on this machine (for i686: apt-get install libc6-i386)", spec.Triple, p.interp)
	default:
		return err
	}
}

// runBinary runs bin with the toolchain's environment (QEMU_LD_PREFIX lets
// a binfmt-launched qemu find the target's libraries) and checks its
// output is the probe's.
func runBinary(ctx context.Context, dir, bin string, tc Toolchain) error {
	rctx, cancel := context.WithTimeout(ctx, tc.runTimeout())
	defer cancel()
	stdout, stderr, err := tc.runTarget(rctx, dir, []string{bin}, runEnv(tc, dir))
	if err != nil {
		if stderr != "" {
			return fmt.Errorf("%w: %s", err, stderr)
		}
		return err
	}
	if _, err := parseValues(stdout); err != nil {
		return err
	}
	return nil
}

var lookPath = exec.LookPath

// binfmtDir is where binfmt_misc is mounted.
const binfmtDir = "/proc/sys/fs/binfmt_misc"

// registerBinfmt registers a binfmt_misc handler that runs ELF files like
// bin (same class, byte order and machine; executables and PIEs) with
// qemu, named kiln-<qemu>. The magic is taken from bin's own header, so
// any architecture qemu-user runs is covered. Flag F opens qemu now, so the
// handler also works inside sandboxes that do not see its path. It mounts
// binfmt_misc first if needed. An existing handler of that name is left.
func registerBinfmt(triple, bin, qemu string) error {
	if qemu == "" {
		return errors.New("the target has no emulator")
	}
	qemuPath, err := lookPath(qemu)
	if err != nil {
		return err
	}
	// The handler runs for every user and outlives the build server: its
	// interpreter must be a root-owned file nobody else may change.
	if qemuPath, err = filepath.Abs(qemuPath); err != nil {
		return err
	}
	fi, err := os.Stat(qemuPath)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is not a root-owned file only root may change: not registered as a binfmt_misc interpreter", qemuPath)
	}
	if err := mountBinfmt(); err != nil {
		return err
	}
	name := "kiln-" + strings.TrimPrefix(QemuName(triple), "qemu-")
	if IsWindowsTriple(triple) {
		name = "kiln-wine-" + platform.CanonicalArch(triple)
	}
	if _, err := os.Stat(binfmtDir + "/" + name); err == nil {
		return nil
	}
	f, err := os.Open(bin)
	if err != nil {
		return err
	}
	hdr := make([]byte, peHeadMax)
	n, err := f.ReadAt(hdr, 0)
	f.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading the probe's header: %w", err)
	}
	hdr = hdr[:n]
	offset, magic, mask, err := 0, []byte(nil), []byte(nil), error(nil)
	if bytes.HasPrefix(hdr, []byte("MZ")) {
		offset, magic, mask, err = peMagic(hdr)
	} else {
		magic, mask, err = binfmtMagic(hdr)
	}
	if err != nil {
		return err
	}
	line := fmt.Sprintf(":%s:M:%d:%s:%s:%s:F", name, offset, escapeBinfmt(magic), escapeBinfmt(mask), qemuPath)
	if err := os.WriteFile(binfmtDir+"/register", []byte(line), 0); err != nil {
		return fmt.Errorf("registering %s: %w", name, err)
	}
	return nil
}

// binfmtMagic returns the magic and mask matching ELF files with hdr's
// first 20 bytes: identification (OS ABI and ABI version ignored), and
// e_machine exactly, e_type ET_EXEC or ET_DYN.
func binfmtMagic(hdr []byte) (magic, mask []byte, err error) {
	if len(hdr) < 20 || string(hdr[:4]) != "\x7fELF" {
		return nil, nil, errors.New("the probe is not an ELF file")
	}
	magic = append([]byte(nil), hdr[:20]...)
	mask = make([]byte, 20)
	for i := range mask {
		mask[i] = 0xff
	}
	mask[7], mask[8] = 0, 0 // OS ABI, ABI version
	magic[7], magic[8] = 0, 0
	// e_type: 2 (EXEC) or 3 (DYN), in the file's byte order.
	lo := 16 // little-endian: low byte first
	if hdr[5] == 2 {
		lo = 17
	}
	magic[lo] &^= 1
	mask[lo] = 0xfe
	return magic, mask, nil
}

// peHeadMax bounds where a PE header may start for a binfmt_misc rule: the
// kernel reads only the first 128 bytes after the offset, and GNU ld puts
// the header at 0x80.
const peHeadMax = 512

// peMagic returns the offset, magic and mask matching PE files like the
// one hdr starts: the "PE\0\0" signature at the file's e_lfanew and its
// COFF machine, so that a 64-bit wine and a 32-bit one each get their own
// programs (files of the same linker put the header at the same offset).
func peMagic(hdr []byte) (offset int, magic, mask []byte, err error) {
	if len(hdr) < 0x40 {
		return 0, nil, nil, errors.New("the probe is too short to be a PE file")
	}
	off := int(binary.LittleEndian.Uint32(hdr[0x3c:]))
	if off+6 > len(hdr) || string(hdr[off:off+4]) != "PE\x00\x00" {
		return 0, nil, nil, errors.New("the probe is not a PE file with its header in its first bytes")
	}
	magic = append([]byte(nil), hdr[off:off+6]...)
	mask = bytes.Repeat([]byte{0xff}, 6)
	return off, magic, mask, nil
}

// escapeBinfmt writes bytes as \xNN, as the register file reads them.
func escapeBinfmt(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		fmt.Fprintf(&s, "\\x%02x", c)
	}
	return s.String()
}

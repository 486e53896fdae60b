package sysinfo

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/kilnbuild/kiln/internal/platform"
)

// Skipped is a target Discover found a trace of but will not offer, and why.
type Skipped struct {
	ID, Reason string
	// Install is the Debian package line that would add what is missing.
	Install []string
}

// Discover lists the targets this machine may offer (--target auto): native
// (when a C compiler is in PATH), musl (musl-gcc), and cross:TRIPLE for
// each TRIPLE-gcc in PATH building for another architecture, when the
// qemu-user binary that runs its programs is installed, or for Windows
// (a mingw-w64 TRIPLE, any architecture) when its wine launcher is. Each candidate
// must still pass its probe (Probe builds and runs a program, directly
// too) before it is offered. What it passes over is returned with the
// reason and the packages that would add it.
func Discover() (specs []TargetSpec, skipped []Skipped) {
	if _, err := exec.LookPath("cc"); err == nil {
		specs = append(specs, TargetSpec{ID: string(KindNative), Kind: KindNative})
	} else if _, err := exec.LookPath("gcc"); err == nil {
		specs = append(specs, TargetSpec{ID: string(KindNative), Kind: KindNative})
	} else {
		skipped = append(skipped, Skipped{ID: "native", Reason: "no C compiler (cc or gcc) in PATH", Install: []string{"gcc", "libc6-dev"}})
	}
	if _, err := exec.LookPath("musl-gcc"); err == nil {
		specs = append(specs, TargetSpec{ID: string(KindMusl), Kind: KindMusl})
	} else {
		skipped = append(skipped, Skipped{ID: "musl", Reason: "musl-gcc is not installed", Install: []string{"musl-tools"}})
	}
	host := platform.CanonicalArch(runtime.GOARCH)
	for _, triple := range crossTriples() {
		if platform.CanonicalArch(triple) == host && !IsWindowsTriple(triple) {
			continue // the host's own compiler under its triple name
		}
		id := string(KindCross) + ":" + triple
		if _, err := ParseTarget(id); err != nil {
			continue
		}
		runner, pkgs := QemuName(triple), []string{"qemu-user", "qemu-user-binfmt"}
		if IsWindowsTriple(triple) {
			runner, pkgs = WineCommand(triple), []string{"wine64"}
			if platform.CanonicalArch(triple) == "i686" {
				pkgs = []string{"wine32:i386 (after dpkg --add-architecture i386)"}
			}
		}
		if !commandExists(runner) {
			skipped = append(skipped, Skipped{ID: id, Reason: runner + " is not installed: its programs could not run", Install: pkgs})
			continue
		}
		specs = append(specs, TargetSpec{ID: id, Kind: KindCross, Triple: triple})
	}
	return specs, skipped
}

// commandExists reports whether cmd, a name looked up in PATH or an
// absolute path, exists.
func commandExists(cmd string) bool {
	if filepath.IsAbs(cmd) {
		return fileExists(cmd)
	}
	_, err := exec.LookPath(cmd)
	return err == nil
}

// crossTriples returns the TRIPLE of every TRIPLE-gcc in PATH whose triple
// names Linux or Windows (mingw-w64) (TRIPLE-gcc-12 and the like are
// versions of the same), sorted and once each.
func crossTriples() []string {
	var out []string
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			triple, ok := strings.CutSuffix(e.Name(), "-gcc")
			if !ok || !(strings.Contains(triple, "-linux-") || IsWindowsTriple(triple)) || slices.Contains(out, triple) {
				continue
			}
			out = append(out, triple)
		}
	}
	slices.Sort(out)
	return out
}

package worker

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/internal/compilecli"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// sysrootName is where an attempt's dependency artifacts are unpacked,
// under its build directory; steps see it read-only as $KILN_SYSROOT.
const sysrootName = "sysroot"

// dependencyTimeout bounds the download of one dependency artifact.
const dependencyTimeout = 10 * time.Minute

// stageDependencies downloads the artifacts of deps from the metaserver
// (compilecli.Fetch: size and sha256 verified before extraction), refuses
// one that is not the artifact the assignment names, unpacks them all into
// sysroot and makes their pkg-config files point into it. It returns the
// environment that lets the steps build against them (sysrootEnv).
func stageDependencies(ctx context.Context, client kilnv1.CompileServiceClient, deps []*kilnv1.BuildDependency, sysroot string, env []string) ([]string, error) {
	if client == nil {
		return nil, fmt.Errorf("no connection to download dependencies")
	}
	// A recycled build directory may hold an earlier build's sysroot.
	if err := os.RemoveAll(sysroot); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(sysroot, 0o755); err != nil {
		return nil, err
	}
	for _, d := range deps {
		want := d.GetArtifact()
		lim := compilecli.DefaultLimits
		lim.MaxArchiveBytes = want.GetSize()
		dctx, cancel := context.WithTimeout(ctx, dependencyTimeout)
		h, _, err := compilecli.Fetch(dctx, client, d.GetBuildId(), sysroot, lim)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("dependency %s (build %d): %w", d.GetProject(), d.GetBuildId(), err)
		}
		if got := h.GetArtifact(); got.GetSha256() != want.GetSha256() || got.GetSize() != want.GetSize() {
			return nil, fmt.Errorf("dependency %s (build %d): the metaserver sent artifact %s (%d bytes), the assignment names %s (%d bytes)",
				d.GetProject(), d.GetBuildId(), got.GetSha256(), got.GetSize(), want.GetSha256(), want.GetSize())
		}
	}
	if err := relocatePkgConfig(sysroot); err != nil {
		return nil, fmt.Errorf("relocating pkg-config files: %w", err)
	}
	return sysrootEnv(sysroot, env), nil
}

// relocatePkgConfig rewrites every *.pc file under sysroot so that each
// variable holding an absolute path ("prefix=/usr/local") holds it under
// sysroot: the artifacts were installed for their prefix, and are found
// here instead.
func relocatePkgConfig(sysroot string) error {
	return filepath.WalkDir(sysroot, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || !strings.HasSuffix(path, ".pc") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var out bytes.Buffer
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := sc.Text()
			if name, val, ok := strings.Cut(line, "="); ok && !strings.ContainsAny(name, ": \t") &&
				strings.HasPrefix(val, "/") && !strings.HasPrefix(val, sysroot+"/") {
				line = name + "=" + sysroot + val
			}
			out.WriteString(line)
			out.WriteByte('\n')
		}
		if err := sc.Err(); err != nil {
			return err
		}
		return os.WriteFile(path, out.Bytes(), 0o644)
	})
}

// sysrootEnv returns the variables that point a build at the dependency
// artifacts under sysroot, for each install prefix found there ("usr/local",
// "usr", the root): KILN_SYSROOT; PKG_CONFIG_PATH (searched before the
// target's PKG_CONFIG_LIBDIR); CPPFLAGS and CPATH (-I, headers); LDFLAGS
// and LIBRARY_PATH (-L, libraries, also for Makefiles that ignore
// LDFLAGS); LD_LIBRARY_PATH (shared libraries at run time, also under
// qemu-user; on the musl target a run path in LDFLAGS instead, see
// below); CMAKE_PREFIX_PATH. Values env (the target's) already has are
// kept after the sysroot's.
func sysrootEnv(sysroot string, env []string) []string {
	var incs, libs, pcs, prefixes []string
	isDir := func(p string) bool { fi, err := os.Stat(p); return err == nil && fi.IsDir() }
	for _, p := range []string{"usr/local", "usr", ""} {
		root := filepath.Join(sysroot, p)
		found := false
		if inc := filepath.Join(root, "include"); isDir(inc) {
			incs, found = append(incs, inc), true
		}
		for _, l := range []string{"lib", "lib64"} {
			if lib := filepath.Join(root, l); isDir(lib) {
				libs, found = append(libs, lib), true
				if pc := filepath.Join(lib, "pkgconfig"); isDir(pc) {
					pcs = append(pcs, pc)
				}
			}
		}
		if pc := filepath.Join(root, "share", "pkgconfig"); isDir(pc) {
			pcs = append(pcs, pc)
		}
		if found {
			prefixes = append(prefixes, root)
		}
	}
	old := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			old[k] = v
		}
	}
	join := func(name, sep string, vals []string) string {
		v := strings.Join(vals, sep)
		if o := old[name]; o != "" {
			v = strings.TrimPrefix(v+sep+o, sep)
		}
		return name + "=" + v
	}
	flags := func(flag string, dirs []string) []string {
		out := make([]string, len(dirs))
		for i, d := range dirs {
			out[i] = flag + d
		}
		return out
	}
	ldflags := flags("-L", libs)
	runtime := join("LD_LIBRARY_PATH", ":", libs)
	if old["CC"] == "musl-gcc" {
		// The musl target's programs run on the host beside its glibc
		// tools, which LD_LIBRARY_PATH would give the musl libraries
		// (cc1 loading the dependency's musl libz died): the programs
		// find them through their run path instead.
		ldflags = append(ldflags, flags("-Wl,-rpath,", libs)...)
		runtime = ""
	}
	out := []string{
		"KILN_SYSROOT=" + sysroot,
		join("PKG_CONFIG_PATH", ":", pcs),
		join("CPPFLAGS", " ", flags("-I", incs)),
		join("CPATH", ":", incs),
		join("LDFLAGS", " ", ldflags),
		join("LIBRARY_PATH", ":", libs),
	}
	if runtime != "" {
		out = append(out, runtime)
	}
	return append(out, join("CMAKE_PREFIX_PATH", ":", prefixes))
}

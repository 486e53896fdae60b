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
// under its build directory; steps see it read-only as $KILN_SYSROOT, at
// buildRoot/sysroot under bubblewrap (fixedSysroot) so that the paths a
// build records from it (-I and -L flags, pkg-config and libtool files,
// run paths) are the same on every volunteer, else at its host path.
const sysrootName = "sysroot"

// fixedSysroot is where sandboxed steps see the sysroot.
const fixedSysroot = buildRoot + "/" + sysrootName

// dependencyTimeout bounds the download of one dependency artifact.
const dependencyTimeout = 10 * time.Minute

// stageDependencies downloads the artifacts of deps from the metaserver
// (compilecli.Fetch: size and sha256 verified before extraction), refuses
// one that is not the artifact the assignment names, unpacks them all into
// the host directory sysroot and makes their pkg-config files point into
// it as the steps see it, at seen. It returns the environment that lets
// the steps build against them (sysrootEnv).
func stageDependencies(ctx context.Context, client kilnv1.CompileServiceClient, deps []*kilnv1.BuildDependency, sysroot, seen string, env []string) ([]string, error) {
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
	if err := relocatePkgConfig(sysroot, seen); err != nil {
		return nil, fmt.Errorf("relocating pkg-config files: %w", err)
	}
	return sysrootEnv(sysroot, seen, env), nil
}

// relocatePkgConfig rewrites every *.pc file under the host directory
// sysroot so that each variable holding an absolute path
// ("prefix=/usr/local") holds it under seen, where the steps see sysroot:
// the artifacts were installed for their prefix, and are found there
// instead.
func relocatePkgConfig(sysroot, seen string) error {
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
				strings.HasPrefix(val, "/") && !strings.HasPrefix(val, seen+"/") {
				line = name + "=" + seen + val
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
// artifacts under the host directory sysroot, named as the steps see it
// (under seen), for each install prefix found there ("usr/local",
// "usr", the root): KILN_SYSROOT; PKG_CONFIG_PATH (searched before the
// target's PKG_CONFIG_LIBDIR); CPPFLAGS and CPATH (-I, headers); LDFLAGS
// and LIBRARY_PATH (-L, libraries, also for Makefiles that ignore
// LDFLAGS); LD_LIBRARY_PATH (shared libraries at run time, also under
// qemu-user; on the musl target a run path in LDFLAGS instead, see
// below); CMAKE_PREFIX_PATH. Values env (the target's) already has are
// kept after the sysroot's.
func sysrootEnv(sysroot, seen string, env []string) []string {
	var incs, libs, pcs, prefixes []string
	isDir := func(rel string) bool {
		fi, err := os.Stat(filepath.Join(sysroot, rel))
		return err == nil && fi.IsDir()
	}
	for _, p := range []string{"usr/local", "usr", ""} {
		root := filepath.Join(seen, p)
		found := false
		if inc := filepath.Join(p, "include"); isDir(inc) {
			incs, found = append(incs, filepath.Join(seen, inc)), true
		}
		for _, l := range []string{"lib", "lib64"} {
			if lib := filepath.Join(p, l); isDir(lib) {
				libs, found = append(libs, filepath.Join(seen, lib)), true
				if pc := filepath.Join(lib, "pkgconfig"); isDir(pc) {
					pcs = append(pcs, filepath.Join(seen, pc))
				}
			}
		}
		if pc := filepath.Join(p, "share", "pkgconfig"); isDir(pc) {
			pcs = append(pcs, filepath.Join(seen, pc))
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
		"KILN_SYSROOT=" + seen,
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

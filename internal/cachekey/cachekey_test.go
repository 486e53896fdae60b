package cachekey

import (
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func info() *kilnv1.SystemInfo {
	return &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", CharBit: 8,
		Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0"}
}

func TestSourceIgnoresOptionOrderButNotValues(t *testing.T) {
	a := Source("p", "c", map[string]string{"a": "1", "b": "2"})
	b := Source("p", "c", map[string]string{"b": "2", "a": "1"})
	if a != b {
		t.Fatalf("same options in another order gave %s and %s", a, b)
	}
	for name, other := range map[string]string{
		"another value":   Source("p", "c", map[string]string{"a": "1", "b": "3"}),
		"another project": Source("q", "c", map[string]string{"a": "1", "b": "2"}),
		"another commit":  Source("p", "d", map[string]string{"a": "1", "b": "2"}),
		"an option fewer": Source("p", "c", map[string]string{"a": "1"}),
		// Length prefixes keep "a"+"12" apart from "a1"+"2".
		"shifted bytes": Source("p", "c", map[string]string{"a1": "", "b": "2"}),
	} {
		if other == a {
			t.Errorf("%s: key did not change", name)
		}
	}
}

func TestKeyChangesWithEveryPlatformIdentityField(t *testing.T) {
	src := Source("p", "c", nil)
	base := Key(src, info())
	mutations := map[string]func(*kilnv1.SystemInfo){
		"compiler version": func(i *kilnv1.SystemInfo) { i.CompilerVersion = "12.3.0" },
		"libc":             func(i *kilnv1.SystemInfo) { i.Libc = "musl" },
		"libc version":     func(i *kilnv1.SystemInfo) { i.LibcVersion = "2.37" },
		"arch":             func(i *kilnv1.SystemInfo) { i.Arch = "s390x" },
		"endian":           func(i *kilnv1.SystemInfo) { i.Endian = "big" },
		"data model":       func(i *kilnv1.SystemInfo) { i.DataModel = "ILP32" },
		"char bit":         func(i *kilnv1.SystemInfo) { i.CharBit = 16 },
		"os":               func(i *kilnv1.SystemInfo) { i.Os = "freebsd" },
		"compiler":         func(i *kilnv1.SystemInfo) { i.Compiler = "clang" },
	}
	for name, mutate := range mutations {
		i := info()
		mutate(i)
		if Key(src, i) == base {
			t.Errorf("changing %s kept the cache key", name)
		}
	}
	i := info()
	i.Cpus, i.MemoryBytes, i.Labels = 64, 1<<40, []string{"fast"}
	if Key(src, i) != base {
		t.Error("capacity and labels must not enter the cache key")
	}
}

func BenchmarkKey(b *testing.B) {
	i := info()
	opts := map[string]string{"level": "2", "flavor": "plain"}
	for b.Loop() {
		Key(Source("project", "0123456789abcdef0123456789abcdef01234567", opts), i)
	}
}

func TestSourceRecipe_DefaultRecipeChangesTheKey(t *testing.T) {
	opts := map[string]string{"a": "1"}
	own := Source("p", "c", opts)
	if got := SourceRecipe("p", "c", opts, ""); got != own {
		t.Errorf("SourceRecipe with no recipe key = %s, want Source's %s (kiln.yaml keys must not move)", got, own)
	}
	cmake := SourceRecipe("p", "c", opts, "default-2/cmake")
	for name, k := range map[string]string{
		"kiln.yaml":            own,
		"another kind":         SourceRecipe("p", "c", opts, "default-2/meson"),
		"another version":      SourceRecipe("p", "c", opts, "default-3/cmake"),
		"an option named like": Source("p", "c", map[string]string{"a": "1", "recipe": "default-2/cmake"}),
	} {
		if k == cmake {
			t.Errorf("%s: same source key as the default cmake recipe", name)
		}
	}
}

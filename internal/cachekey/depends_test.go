package cachekey

import "testing"

func TestSourceWithDeps(t *testing.T) {
	src := Source("app", "c1", nil)
	if got := SourceWithDeps(src, nil); got != src {
		t.Fatalf("no dependencies changed the key: %s != %s", got, src)
	}
	zlib := Source("zlib", "z1", nil)
	a := SourceWithDeps(src, []Dep{{"zlib", zlib}})
	if a == src {
		t.Fatal("a dependency did not change the source key")
	}
	for name, other := range map[string]string{
		"dependency's commit": SourceWithDeps(src, []Dep{{"zlib", Source("zlib", "z2", nil)}}),
		"another project":     SourceWithDeps(src, []Dep{{"zlib2", zlib}}),
		"one more":            SourceWithDeps(src, []Dep{{"zlib", zlib}, {"png", Source("png", "p", nil)}}),
	} {
		if other == a {
			t.Errorf("%s: key did not change", name)
		}
	}
}

func TestKeyWithDeps_ChangesWithTheDependencysArtifact(t *testing.T) {
	src := Source("app", "c1", nil)
	if got := KeyWithDeps(src, info(), nil); got != Key(src, info()) {
		t.Fatal("no dependencies changed the cache key")
	}
	sha1 := "1111111111111111111111111111111111111111111111111111111111111111"
	sha2 := "2222222222222222222222222222222222222222222222222222222222222222"
	a := KeyWithDeps(src, info(), []Dep{{"zlib", sha1}})
	b := KeyWithDeps(src, info(), []Dep{{"zlib", sha2}})
	switch {
	case a == b:
		t.Fatal("another dependency artifact gave the same cache key")
	case a == Key(src, info()):
		t.Fatal("a dependency artifact did not enter the cache key")
	}
	other := info()
	other.Arch = "s390x"
	if KeyWithDeps(src, other, []Dep{{"zlib", sha1}}) == a {
		t.Fatal("another platform gave the same cache key")
	}
}

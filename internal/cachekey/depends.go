package cachekey

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const dependsDomain = "kiln-source-depends-v1"

// Dep is one dependency of a build, in the manifest's order: the project
// and, for SourceWithDeps, the dependency's source key, for KeyWithDeps its
// artifact's hex sha256.
type Dep struct {
	Project, Value string
}

func deps(h hash.Hash, ds []Dep) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(ds)))
	h.Write(n[:])
	for _, d := range ds {
		field(h, d.Project)
		field(h, d.Value)
	}
}

// SourceWithDeps returns the source key of a build whose own source key is
// source and whose dependencies have the given source keys (which hold
// their own dependencies' in turn): another commit or options of a
// dependency is another source. Without dependencies it returns source
// unchanged, so the keys of builds without depends: stay as they were.
func SourceWithDeps(source string, ds []Dep) string {
	if len(ds) == 0 {
		return source
	}
	h := sha256.New()
	field(h, dependsDomain)
	field(h, source)
	deps(h, ds)
	return hex.EncodeToString(h.Sum(nil))
}

// KeyWithDeps returns the cache key of an artifact with the given source key
// built on a target measured as info against dependency artifacts with the
// given sha256: another artifact of a dependency (rebuilt after eviction,
// not reproducible) is another key. Without dependencies it is Key.
func KeyWithDeps(source string, info *kilnv1.SystemInfo, ds []Dep) string {
	if len(ds) == 0 {
		return Key(source, info)
	}
	h := sha256.New()
	field(h, cacheDomain)
	field(h, source)
	field(h, string(platform.IdentityKey(info)))
	field(h, "depends")
	deps(h, ds)
	return hex.EncodeToString(h.Sum(nil))
}

// Package cachekey computes the keys under which Kiln finds reusable work.
//
// The source key identifies what is built: project, resolved commit and the
// normalized compile options (manifest defaults applied, so order and
// spelled-out defaults do not matter). The cache key adds the full measured
// platform identity of the target that built it (os, arch, endianness, data
// model, CHAR_BIT, libc and version, compiler and version), so two targets
// that differ in any of these never share an entry. Both are hex sha256 of a
// canonical, length-prefixed encoding: never of JSON or protojson text, whose
// spelling is not stable. docs/cache-key.md describes the encoding.
package cachekey

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"sort"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const (
	sourceDomain = "kiln-source-v1"
	cacheDomain  = "kiln-cache-v1"
)

func field(h hash.Hash, s string) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// Source returns the source key of (project, commit, options). options must
// already be normalized by the manifest. It is SourceRecipe with no recipe
// key: a project's own kiln.yaml.
func Source(project, commit string, options map[string]string) string {
	return SourceRecipe(project, commit, options, "")
}

// SourceRecipe returns the source key of (project, commit, options) built by
// the recipe recipeKey names (manifest.Manifest.RecipeKey): "" for the
// project's own kiln.yaml, which gives Source's key unchanged, else the
// default recipe's version and kind, appended to the encoding.
func SourceRecipe(project, commit string, options map[string]string, recipeKey string) string {
	h := sha256.New()
	field(h, sourceDomain)
	field(h, project)
	field(h, commit)
	names := make([]string, 0, len(options))
	for name := range options {
		names = append(names, name)
	}
	sort.Strings(names)
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(names)))
	h.Write(n[:])
	for _, name := range names {
		field(h, name)
		field(h, options[name])
	}
	if recipeKey != "" {
		field(h, "recipe")
		field(h, recipeKey)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Key returns the cache key of an artifact with the given source key built on
// a target measured as info.
func Key(source string, info *kilnv1.SystemInfo) string {
	h := sha256.New()
	field(h, cacheDomain)
	field(h, source)
	id := platform.IdentityKey(info)
	field(h, string(id))
	return hex.EncodeToString(h.Sum(nil))
}

package platform

import (
	"encoding/binary"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// identityKeyVersion prefixes every key so that a future change of the
// encoding can never collide with this one.
const identityKeyVersion = "kiln.platform.identity.v1"

// IdentityKey returns the canonical encoding of info's identity fields
// (IdentityFields): a version tag, then for each field in fixed order its
// name and its value, each preceded by its length as a uvarint. The
// encoding is deterministic and injective: any change of an identity field
// changes it, while tools, cpus, memory, sizes, labels and emulation never
// enter it. It is meant to be hashed into cache keys; it is not text and not
// protojson. A nil info encodes as all fields empty.
//
// The fields of the first version (IdentityOrder 1 to 9: os to
// compiler_version) are always encoded; those added since (char
// signedness, alignments, long double and wchar_t sizes) only when
// measured. A system measured by a build server older than them thus
// keeps the key it always had, and the encoding stays injective (each pair
// carries its name). A build server that measures them gives every one of
// its platforms a new key: its first build of each source is a cache miss
// (docs/cache-key.md).
func IdentityKey(info *kilnv1.SystemInfo) []byte {
	buf := make([]byte, 0, 160)
	buf = appendString(buf, identityKeyVersion)
	for _, f := range identity {
		v := f.Measured(info)
		if v == "" && f.IdentityOrder > firstIdentityFields {
			continue
		}
		buf = appendString(buf, f.Name)
		buf = appendString(buf, v)
	}
	return buf
}

// firstIdentityFields is how many fields the first version of the
// identity had; those are encoded even when empty.
const firstIdentityFields = 9

// identity is the fields of IdentityFields.
var identity = func() []*Field {
	out := make([]*Field, len(IdentityFields))
	for i, name := range IdentityFields {
		out[i] = byName[name]
	}
	return out
}()

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

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
func IdentityKey(info *kilnv1.SystemInfo) []byte {
	buf := make([]byte, 0, 160)
	buf = appendString(buf, identityKeyVersion)
	for _, f := range identity {
		buf = appendString(buf, f.Name)
		buf = appendString(buf, f.Measured(info))
	}
	return buf
}

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

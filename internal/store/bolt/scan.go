package bolt

import (
	"encoding/binary"

	"google.golang.org/protobuf/encoding/protowire"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// The Put methods read the previous version of a record only for the few
// fields its index entries derive from. Decoding the whole record (a build
// with its attempts, options and platform) allocated every field of it; the
// functions below read those fields from the encoding instead, with the
// semantics of proto.Unmarshal: the last value of a scalar field wins, and
// the occurrences of a message field merge. Field numbers are those of
// proto/kilnstore/v1 and proto/kiln/v1; TestScan checks every function
// against a full decode.

// Field numbers read by the scanners.
const (
	fieldBuildRecordBuild     = 1 // BuildRecord.build
	fieldBuildProject         = 2 // Build.project
	fieldBuildConstraints     = 6 // Build.constraints
	fieldBuildState           = 7 // Build.state
	fieldBuildPlatform        = 12
	fieldConstraintsArch      = 2 // PlatformConstraints.arch
	fieldSystemInfoArch       = 2 // SystemInfo.arch
	fieldRequestBuildID       = 2 // RequestRecord.build_id
	fieldArtifactRecordSource = 2 // ArtifactRecord.source_key
)

// eachField calls fn for every field of the message encoded in b, with its
// number, its type and, for a varint, its value or, for a length-delimited
// field, its bytes. It fails on a malformed encoding.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, varint uint64, bytes []byte)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			fn(num, typ, v, nil)
			n = m
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			fn(num, typ, 0, v)
			n = m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
		}
		b = b[n:]
	}
	return nil
}

// buildIndexFields are the fields of a build record its index entries and
// state count derive from.
type buildIndexFields struct {
	project      string
	state        kilnv1.BuildState
	pinnedArch   string
	hasPlatform  bool
	platformArch string
}

// arch is store.BuildArch of the record.
func (f *buildIndexFields) arch() string {
	if f.hasPlatform {
		return f.platformArch
	}
	return f.pinnedArch
}

// scanBuildIndexFields reads the index fields of the BuildRecord encoded in v.
func scanBuildIndexFields(v []byte) (buildIndexFields, error) {
	var f buildIndexFields
	var err error
	archOf := func(field protowire.Number, dst *string) func(protowire.Number, protowire.Type, uint64, []byte) {
		return func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) {
			if num == field && typ == protowire.BytesType {
				*dst = string(b)
			}
		}
	}
	build := func(num protowire.Number, typ protowire.Type, x uint64, b []byte) {
		switch {
		case num == fieldBuildProject && typ == protowire.BytesType:
			f.project = string(b)
		case num == fieldBuildState && typ == protowire.VarintType:
			f.state = kilnv1.BuildState(int32(x))
		case num == fieldBuildConstraints && typ == protowire.BytesType:
			err = firstErr(err, eachField(b, archOf(fieldConstraintsArch, &f.pinnedArch)))
		case num == fieldBuildPlatform && typ == protowire.BytesType:
			f.hasPlatform = true
			err = firstErr(err, eachField(b, archOf(fieldSystemInfoArch, &f.platformArch)))
		}
	}
	scanErr := eachField(v, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) {
		if num == fieldBuildRecordBuild && typ == protowire.BytesType {
			err = firstErr(err, eachField(b, build))
		}
	})
	return f, firstErr(scanErr, err)
}

// keys are the index keys of build id with these fields (indexKeys).
func (f *buildIndexFields) keys(id uint64) buildIndexKeys {
	sb, _ := stateByte(f.state)
	return buildIndexKeys{
		state:   binary.BigEndian.AppendUint64([]byte{sb}, id),
		project: strIDKey(f.project, id),
		arch:    strIDKey(f.arch(), id),
	}
}

// scanRequestBuildID reads build_id of the RequestRecord encoded in v.
func scanRequestBuildID(v []byte) (uint64, error) {
	var id uint64
	err := eachField(v, func(num protowire.Number, typ protowire.Type, x uint64, _ []byte) {
		if num == fieldRequestBuildID && typ == protowire.VarintType {
			id = x
		}
	})
	return id, err
}

// scanArtifactSourceKey reads source_key of the ArtifactRecord encoded in v.
func scanArtifactSourceKey(v []byte) (string, error) {
	var key string
	err := eachField(v, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) {
		if num == fieldArtifactRecordSource && typ == protowire.BytesType {
			key = string(b)
		}
	})
	return key, err
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

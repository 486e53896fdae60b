package compilecli

import (
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// check --json names each entry's platform by its fields, typed.
func TestCheckEntry_JSONCarriesThePlatformsFields(t *testing.T) {
	e := CheckEntry{Platform: "linux/s390x big LP64", BuildID: 7, State: "failed"}
	e.record(&kilnv1.Build{State: kilnv1.BuildState_BUILD_STATE_FAILED, Platform: &kilnv1.SystemInfo{
		Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", Libc: "glibc", CharBit: 8,
		CharSigned: proto.Bool(false), AlignLongLong: 8, AlignDouble: 8, AlignPointer: 8,
		SizeofLongDouble: 16, SizeofSizeT: 8, SizeofWcharT: 4, PageSize: 4096,
	}}, nil)
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"os": "linux", "arch": "s390x", "endian": "big", "data_model": "LP64", "libc": "glibc",
		"char_signed": false, "align_long_long": 8.0, "align_double": 8.0, "align_pointer": 8.0,
		"sizeof_long_double": 16.0, "sizeof_size_t": 8.0, "sizeof_wchar_t": 4.0, "page_size": 4096.0,
		"char_bit": 8.0, "build_id": 7.0, "state": "failed",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v (in %s)", k, got[k], v, b)
		}
	}
	if _, ok := got["libc_version"]; ok {
		t.Errorf("an unmeasured field is present: %s", b)
	}

	// No target built it: no platform fields, only the constraints.
	b, _ = json.Marshal(CheckEntry{Platform: "[arch=m68k]"})
	got = nil
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["arch"]; ok {
		t.Errorf("an entry without a build has platform fields: %s", b)
	}
}

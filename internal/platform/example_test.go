package platform_test

import (
	"fmt"

	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func ExampleSatisfies() {
	target := &kilnv1.SystemInfo{Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", CharBit: 8, Emulated: true}

	req := &kilnv1.PlatformConstraints{}
	_ = platform.Set(req, "arch", "s390x-linux-gnu") // a triple's arch is canonicalized
	_ = platform.Set(req, platform.FieldName("data-model"), "lp64")
	fmt.Println(platform.DescribeConstraints(req))
	fmt.Println(platform.Satisfies(target, req))

	_ = platform.Set(req, "endian", "little")
	fmt.Println(platform.Unmet(target, req))
	// Output:
	// arch=s390x data_model=LP64
	// true
	// [endian]
}

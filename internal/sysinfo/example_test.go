package sysinfo_test

import (
	"fmt"

	"github.com/kilnbuild/kiln/internal/sysinfo"
)

func ExampleTargetSpec_Toolchain() {
	spec, err := sysinfo.ParseTarget("cross:s390x-linux-gnu")
	if err != nil {
		panic(err)
	}
	tc := spec.Toolchain()
	fmt.Println(spec.Kind, spec.Triple)
	fmt.Println(tc.CC)
	fmt.Println(tc.Emulator)
	// Output:
	// cross s390x-linux-gnu
	// s390x-linux-gnu-gcc
	// [qemu-s390x -L /usr/s390x-linux-gnu]
}

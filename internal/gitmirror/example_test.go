package gitmirror_test

import (
	"fmt"

	"github.com/kilnbuild/kiln/internal/gitmirror"
)

func ExampleParseRange() {
	for _, rev := range []string{"v1.0..main", "main", "v1.0...main"} {
		from, to, ok, err := gitmirror.ParseRange(rev)
		fmt.Printf("%q: from=%q to=%q range=%v err=%v\n", rev, from, to, ok, err != nil)
	}
	// Output:
	// "v1.0..main": from="v1.0" to="main" range=true err=false
	// "main": from="" to="main" range=false err=false
	// "v1.0...main": from="" to="" range=false err=true
}

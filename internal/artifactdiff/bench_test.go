package artifactdiff

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkDiff compares two artifacts of 1,000 files (16 MiB of
// incompressible content in all) that differ in one file: the cost of
// explaining one not-reproducible report.
func BenchmarkDiff(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	var as, bs []member
	for i := range 1000 {
		body := make([]byte, 16<<10)
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		m := file(fmt.Sprintf("lib/f%04d.o", i), string(body))
		as = append(as, m)
		if i == 500 {
			body[0] ^= 1
			m = file(m.name, string(body))
		}
		bs = append(bs, m)
	}
	a, bb := archive(b, true, as...), archive(b, true, bs...)
	b.SetBytes(int64(2 * 1000 * 16 << 10))
	b.ReportAllocs()
	for b.Loop() {
		r, err := Diff(context.Background(), bytes.NewReader(a), bytes.NewReader(bb), Limits{})
		if err != nil || len(r.Differences) != 1 {
			b.Fatalf("%v %v", err, r.Differences)
		}
	}
}

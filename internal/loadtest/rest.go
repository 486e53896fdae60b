package main

import (
	"context"
	"fmt"
)

// runRest measures the resident memory of an idle metaserver and an idle
// real buildserver: right after connecting, and at rest after a few builds
// (the figure: memory a farm keeps once it has worked).
func runRest(ctx context.Context, e *env) error {
	m, reqs, bss, err := realFarm(ctx, e, 1, 1, false)
	if m != nil {
		defer m.close()
	}
	if err != nil {
		return err
	}
	bs := bss[0]
	read := func() (memInfo, memInfo, error) {
		if err := sleepCtx(ctx, e.cfg.Settle); err != nil {
			return memInfo{}, memInfo{}, err
		}
		mm, err := readMem(m.Proc.pid())
		if err != nil {
			return memInfo{}, memInfo{}, err
		}
		bm, err := readMem(bs.Proc.pid())
		return mm, bm, err
	}
	m0, b0, err := read()
	if err != nil {
		return err
	}
	for range 5 {
		if _, err := oneBuild(ctx, m.Compile, reqs.next()); err != nil {
			return err
		}
	}
	m1, b1, err := read()
	if err != nil {
		return err
	}
	describe := func(a, b memInfo) string {
		return fmt.Sprintf("connected, no build yet: RSS %.1f MiB (anon %.1f, file %.1f); after 5 builds and %s at rest: RSS %.1f MiB (anon %.1f, file %.1f)",
			mib(a.RSS), mib(a.Anon), mib(a.File), e.cfg.Settle, mib(b.RSS), mib(b.Anon), mib(b.File))
	}
	e.rep.add(figure{Scenario: "rest", Name: "metaserver RSS at rest", Value: mib(max(m0.RSS, m1.RSS)), Unit: "MiB", Target: 30, AtMost: true, Note: describe(m0, m1)})
	e.rep.add(figure{Scenario: "rest", Name: "buildserver RSS at rest", Value: mib(max(b0.RSS, b1.RSS)), Unit: "MiB", Target: 20, AtMost: true, Note: describe(b0, b1)})
	return nil
}

package storetest

import (
	"fmt"
	"testing"

	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// list returns the ids ListBuilds gives.
func (h *harness) list(f store.BuildFilter, beforeID uint64, limit int) []uint64 {
	h.t.Helper()
	var ids []uint64
	h.view(func(tx store.Tx) error {
		bs, err := tx.ListBuilds(f, beforeID, limit)
		if err != nil {
			return err
		}
		for _, b := range bs {
			if !filterMatches(f, b) {
				h.t.Errorf("ListBuilds(%+v) gave non-matching build %v", f, b.GetBuild())
			}
		}
		ids = buildIDs(bs)
		return nil
	})
	return ids
}

func filterMatches(f store.BuildFilter, b *store.Build) bool {
	v := b.GetBuild()
	if (f.State != 0 && v.GetState() != f.State) || (f.Project != "" && v.GetProject() != f.Project) {
		return false
	}
	for _, pf := range platform.Registry {
		if want := pf.Constraint(f.Platform); want != "" && store.BuildPlatformValue(b, pf.Name) != want {
			return false
		}
	}
	return true
}

// mixedBuilds stores builds 1..12 across projects, states and archs:
//
//	id  project state     arch (pinned / built)
//	1   awk     succeeded x86_64 built
//	2   make    queued    s390x pinned
//	3   awk     running   s390x pinned, x86_64 built
//	4   make    failed    i686 built
//	5   awk     queued    none
//	6   make    succeeded s390x built
//	7.. alternating awk/make, queued, x86_64 pinned
func (h *harness) mixedBuilds() {
	h.putBuilds(
		newBuild(buildSpec{id: 1, project: "awk", state: succeeded, platArch: "x86_64"}),
		newBuild(buildSpec{id: 2, project: "make", state: queued, pinArch: "s390x"}),
		newBuild(buildSpec{id: 3, project: "awk", state: running, pinArch: "s390x", platArch: "x86_64"}),
		newBuild(buildSpec{id: 4, project: "make", state: failed, platArch: "i686"}),
		newBuild(buildSpec{id: 5, project: "awk", state: queued}),
		newBuild(buildSpec{id: 6, project: "make", state: succeeded, platArch: "s390x"}),
	)
	for id := uint64(7); id <= 12; id++ {
		p := "awk"
		if id%2 == 0 {
			p = "make"
		}
		h.putBuilds(newBuild(buildSpec{id: id, project: p, state: queued, pinArch: "x86_64"}))
	}
}

var listCases = []testCase{
	{"ListBuilds returns newest first and pages with beforeID", func(t *testing.T, h *harness) {
		for id := uint64(1); id <= 10; id++ {
			h.putBuilds(newBuild(buildSpec{id: id, state: queued}))
		}
		all := store.BuildFilter{}
		wantIDs(t, "first page", h.list(all, 0, 4), []uint64{10, 9, 8, 7})
		wantIDs(t, "second page", h.list(all, 7, 4), []uint64{6, 5, 4, 3})
		wantIDs(t, "last page", h.list(all, 3, 4), []uint64{2, 1})
		wantIDs(t, "past the end", h.list(all, 1, 4), nil)
		wantIDs(t, "beforeID above every id", h.list(all, 1000, 2), []uint64{10, 9})
		wantIDs(t, "limit above the count", h.list(all, 0, 100), []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1})
	}},
	{"ListBuilds filters by state, project and arch", func(t *testing.T, h *harness) {
		h.mixedBuilds()
		cases := []struct {
			f    store.BuildFilter
			want []uint64
		}{
			{store.BuildFilter{State: succeeded}, []uint64{6, 1}},
			{store.BuildFilter{State: running}, []uint64{3}},
			{store.BuildFilter{State: cancelled}, nil},
			{store.BuildFilter{Project: "make"}, []uint64{12, 10, 8, 6, 4, 2}},
			{store.BuildFilter{Project: "nope"}, nil},
			// A dispatched build matches the arch it ran on, not the one pinned.
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Arch: "s390x"}}, []uint64{6, 2}},
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Arch: "x86_64"}}, []uint64{12, 11, 10, 9, 8, 7, 3, 1}},
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Arch: "i686"}}, []uint64{4}},
			{store.BuildFilter{Project: "awk", State: queued}, []uint64{11, 9, 7, 5}},
			{store.BuildFilter{Project: "make", Platform: &kilnv1.PlatformConstraints{Arch: "s390x"}}, []uint64{6, 2}},
			{store.BuildFilter{State: queued, Platform: &kilnv1.PlatformConstraints{Arch: "x86_64"}}, []uint64{12, 11, 10, 9, 8, 7}},
			{store.BuildFilter{Project: "awk", State: running, Platform: &kilnv1.PlatformConstraints{Arch: "x86_64"}}, []uint64{3}},
			{store.BuildFilter{Project: "awk", State: running, Platform: &kilnv1.PlatformConstraints{Arch: "s390x"}}, nil},
		}
		for _, c := range cases {
			wantIDs(t, fmt.Sprintf("%+v", c.f), h.list(c.f, 0, 50), c.want)
		}
	}},
	{"ListBuilds filters by os, endian, data model and libc, built or pinned", func(t *testing.T, h *harness) {
		plat := func(arch, endian, model, libc string) *kilnv1.SystemInfo {
			return &kilnv1.SystemInfo{Os: "linux", Arch: arch, Endian: endian, DataModel: model, Libc: libc}
		}
		b1 := newBuild(buildSpec{id: 1, project: "awk", state: succeeded})
		b1.Build.Platform = plat("s390x", "big", "LP64", "glibc")
		b2 := newBuild(buildSpec{id: 2, project: "make", state: queued})
		b2.Build.Constraints = &kilnv1.PlatformConstraints{Os: "linux", Endian: "big", DataModel: "ILP32"}
		b3 := newBuild(buildSpec{id: 3, project: "awk", state: running})
		b3.Build.Constraints = &kilnv1.PlatformConstraints{Libc: "musl"}
		b3.Build.Platform = plat("x86_64", "little", "LP64", "glibc") // built elsewhere than pinned: the built value counts
		b4 := newBuild(buildSpec{id: 4, project: "make", state: failed})
		b4.Build.Platform = plat("i686", "little", "ILP32", "musl")
		h.putBuilds(b1, b2, b3, b4)
		cases := []struct {
			f    store.BuildFilter
			want []uint64
		}{
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Os: "linux"}}, []uint64{4, 3, 2, 1}},
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Os: "freebsd"}}, nil},
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Endian: "big"}}, []uint64{2, 1}},
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Endian: "little"}}, []uint64{4, 3}},
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{DataModel: "ILP32"}}, []uint64{4, 2}},
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Libc: "musl"}}, []uint64{4}},
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Libc: "glibc"}}, []uint64{3, 1}},
			{store.BuildFilter{State: queued, Platform: &kilnv1.PlatformConstraints{Endian: "big"}}, []uint64{2}},
			{store.BuildFilter{Project: "make", Platform: &kilnv1.PlatformConstraints{DataModel: "ILP32", Libc: "musl"}}, []uint64{4}},
			{store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Arch: "s390x", Endian: "little"}}, nil},
		}
		for _, c := range cases {
			wantIDs(t, fmt.Sprintf("%+v", c.f), h.list(c.f, 0, 50), c.want)
		}
		wantIDs(t, "little endian below 4", h.list(store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Endian: "little"}}, 4, 10), []uint64{3})
	}},
	{"ListBuilds pages through a filtered list", func(t *testing.T, h *harness) {
		h.mixedBuilds()
		f := store.BuildFilter{Project: "make"}
		var got []uint64
		before := uint64(0)
		for range 10 {
			page := h.list(f, before, 4)
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			before = page[len(page)-1]
		}
		wantIDs(t, "pages", got, []uint64{12, 10, 8, 6, 4, 2})
		wantIDs(t, "queued below 9", h.list(store.BuildFilter{State: queued}, 9, 3), []uint64{8, 7, 5})
		wantIDs(t, "x86_64 below 7", h.list(store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Arch: "x86_64"}}, 7, 10), []uint64{3, 1})
	}},
	{"ListBuilds follows a build into its new state and arch", func(t *testing.T, h *harness) {
		b := newBuild(buildSpec{id: 1, state: queued, pinArch: "s390x", project: "awk"})
		h.putBuilds(b)
		b = withState(b, running)
		b.Build.Platform = newBuild(buildSpec{platArch: "armv7"}).Build.Platform
		h.putBuilds(b)
		wantIDs(t, "queued", h.list(store.BuildFilter{State: queued}, 0, 10), nil)
		wantIDs(t, "running", h.list(store.BuildFilter{State: running}, 0, 10), []uint64{1})
		wantIDs(t, "pinned arch", h.list(store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Arch: "s390x"}}, 0, 10), nil)
		wantIDs(t, "built arch", h.list(store.BuildFilter{Platform: &kilnv1.PlatformConstraints{Arch: "armv7"}}, 0, 10), []uint64{1})
	}},
}

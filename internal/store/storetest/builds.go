package storetest

import (
	"errors"
	"maps"
	"testing"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// byState returns the ids BuildsByState visits for s.
func byState(t *testing.T, tx store.Tx, s kilnv1.BuildState) []uint64 {
	t.Helper()
	var ids []uint64
	must(t, tx.BuildsByState(s, func(b *store.Build) error {
		if b.GetBuild().GetState() != s {
			t.Errorf("BuildsByState(%v) gave build %d in state %v", s, b.GetBuild().GetId(), b.GetBuild().GetState())
		}
		ids = append(ids, b.GetBuild().GetId())
		return nil
	}))
	return ids
}

// activeBySource returns the ids ActiveBuildsBySource gives for key.
func activeBySource(t *testing.T, tx store.Tx, key string) []uint64 {
	t.Helper()
	bs, err := tx.ActiveBuildsBySource(key)
	must(t, err)
	return buildIDs(bs)
}

// wantCounts compares CountBuildsByState with want, a zero count being the
// same as an absent state.
func wantCounts(t *testing.T, tx store.Tx, want map[kilnv1.BuildState]uint64) {
	t.Helper()
	got, err := tx.CountBuildsByState()
	must(t, err)
	maps.DeleteFunc(got, func(_ kilnv1.BuildState, n uint64) bool { return n == 0 })
	if !maps.Equal(got, want) {
		t.Fatalf("CountBuildsByState: got %v, want %v", got, want)
	}
}

var buildCases = []testCase{
	{"a missing build is ErrNotFound", func(t *testing.T, h *harness) {
		h.view(func(tx store.Tx) error {
			_, err := tx.Build(42)
			wantErr(t, "Build", err, store.ErrNotFound)
			return nil
		})
	}},
	{"a put build reads back equal and a second put replaces it", func(t *testing.T, h *harness) {
		want := newBuild(buildSpec{id: 1, state: queued, source: "s", pinArch: "s390x", options: map[string]string{"opt": "O2", "debug": "no"}})
		h.putBuilds(want)
		h.view(func(tx store.Tx) error {
			got, err := tx.Build(1)
			must(t, err)
			wantEqual(t, "Build", got, want)
			return nil
		})
		want = withState(want, running)
		want.Build.Platform = &kilnv1.SystemInfo{Arch: "s390x", Endian: "big"}
		h.putBuilds(want)
		h.view(func(tx store.Tx) error {
			got, err := tx.Build(1)
			must(t, err)
			wantEqual(t, "Build after replace", got, want)
			return nil
		})
	}},
	{"the state index moves with PutBuild", func(t *testing.T, h *harness) {
		b := []*store.Build{nil}
		for id := uint64(1); id <= 4; id++ {
			b = append(b, newBuild(buildSpec{id: id, state: queued}))
		}
		h.putBuilds(b[1:]...)
		h.putBuilds(withState(b[2], running), withState(b[4], running))
		h.putBuilds(withState(b[4], failed))
		h.view(func(tx store.Tx) error {
			wantIDs(t, "queued", byState(t, tx, queued), []uint64{1, 3})
			wantIDs(t, "running", byState(t, tx, running), []uint64{2})
			wantIDs(t, "failed", byState(t, tx, failed), []uint64{4})
			wantIDs(t, "succeeded", byState(t, tx, succeeded), nil)
			return nil
		})
	}},
	{"BuildsByState visits in ascending id order and stops quietly at ErrStop", func(t *testing.T, h *harness) {
		for _, id := range []uint64{300, 2, 256, 1, 70000} {
			h.putBuilds(newBuild(buildSpec{id: id, state: queued}))
		}
		h.view(func(tx store.Tx) error {
			wantIDs(t, "all", byState(t, tx, queued), []uint64{1, 2, 256, 300, 70000})
			var seen []uint64
			err := tx.BuildsByState(queued, func(b *store.Build) error {
				seen = append(seen, b.GetBuild().GetId())
				if len(seen) == 2 {
					return store.ErrStop
				}
				return nil
			})
			must(t, err)
			wantIDs(t, "until ErrStop", seen, []uint64{1, 2})
			return nil
		})
	}},
	{"BuildsByState returns the callback's error as is", func(t *testing.T, h *harness) {
		h.putBuilds(newBuild(buildSpec{id: 1, state: queued}), newBuild(buildSpec{id: 2, state: queued}))
		errBoom := errors.New("boom")
		calls := 0
		err := h.s.View(func(tx store.Tx) error {
			return tx.BuildsByState(queued, func(*store.Build) error { calls++; return errBoom })
		})
		if !errors.Is(err, errBoom) || calls != 1 {
			t.Fatalf("got error %v after %d calls, want boom after 1", err, calls)
		}
	}},
	{"BuildsByState lets the callback move each build out of the state", func(t *testing.T, h *harness) {
		for id := uint64(1); id <= 20; id++ {
			h.putBuilds(newBuild(buildSpec{id: id, state: queued, source: "s"}))
		}
		var seen []uint64
		h.update(func(tx store.Tx) error {
			seen = seen[:0]
			return tx.BuildsByState(queued, func(b *store.Build) error {
				seen = append(seen, b.GetBuild().GetId())
				return tx.PutBuild(withState(b, running))
			})
		})
		if len(seen) != 20 {
			t.Fatalf("visited %v, want each of the 20 builds once", seen)
		}
		h.view(func(tx store.Tx) error {
			wantIDs(t, "queued", byState(t, tx, queued), nil)
			if got := byState(t, tx, running); len(got) != 20 {
				t.Fatalf("running: got %v", got)
			}
			return nil
		})
	}},
	{"BuildsByState skips a build the callback moved out of the state before its turn", func(t *testing.T, h *harness) {
		for id := uint64(1); id <= 6; id++ {
			h.putBuilds(newBuild(buildSpec{id: id, state: queued, source: "s"}))
		}
		var seen []uint64
		h.update(func(tx store.Tx) error {
			seen = seen[:0]
			return tx.BuildsByState(queued, func(b *store.Build) error {
				seen = append(seen, b.GetBuild().GetId())
				if b.GetBuild().GetId() == 5 && b.GetSourceKey() != "changed" {
					t.Errorf("build 5 visited as it was before the change: source key %q", b.GetSourceKey())
				}
				if b.GetBuild().GetId() != 2 {
					return nil
				}
				// Build 2's turn takes 4 out of the queue and changes 5.
				four, err := tx.Build(4)
				if err != nil {
					return err
				}
				if err := tx.PutBuild(withState(four, running)); err != nil {
					return err
				}
				five, err := tx.Build(5)
				if err != nil {
					return err
				}
				five = withState(five, queued)
				five.SourceKey = "changed"
				return tx.PutBuild(five)
			})
		})
		wantIDs(t, "visited", seen, []uint64{1, 2, 3, 5, 6})
	}},
	{"the active-by-source index holds queued and running builds only", func(t *testing.T, h *harness) {
		b1 := newBuild(buildSpec{id: 1, state: queued, source: "s"})
		b2 := newBuild(buildSpec{id: 2, state: running, source: "s"})
		b3 := newBuild(buildSpec{id: 3, state: succeeded, source: "s"})
		b4 := newBuild(buildSpec{id: 4, state: queued, source: "t"})
		h.putBuilds(b1, b2, b3, b4)
		h.view(func(tx store.Tx) error {
			wantIDs(t, "s", activeBySource(t, tx, "s"), []uint64{1, 2})
			wantIDs(t, "t", activeBySource(t, tx, "t"), []uint64{4})
			wantIDs(t, "u", activeBySource(t, tx, "u"), nil)
			return nil
		})
		// A retried build stays active; a final one leaves.
		h.putBuilds(withState(b1, failed), withState(b2, queued))
		h.view(func(tx store.Tx) error {
			wantIDs(t, "s after 1 failed, 2 requeued", activeBySource(t, tx, "s"), []uint64{2})
			return nil
		})
		for _, final := range []kilnv1.BuildState{succeeded, errored, cancelled} {
			b := newBuild(buildSpec{id: 10 + uint64(final), state: running, source: "f"})
			h.putBuilds(b)
			h.putBuilds(withState(b, final))
			h.view(func(tx store.Tx) error {
				wantIDs(t, "after "+final.String(), activeBySource(t, tx, "f"), nil)
				return nil
			})
		}
	}},
	{"changing a build's source key moves it in the active index", func(t *testing.T, h *harness) {
		b := newBuild(buildSpec{id: 1, state: queued, source: "old"})
		h.putBuilds(b)
		b.SourceKey = "new"
		h.putBuilds(b)
		h.view(func(tx store.Tx) error {
			wantIDs(t, "old", activeBySource(t, tx, "old"), nil)
			wantIDs(t, "new", activeBySource(t, tx, "new"), []uint64{1})
			return nil
		})
	}},
	{"a source key that is a prefix of another sees only its own builds", func(t *testing.T, h *harness) {
		h.putBuilds(
			newBuild(buildSpec{id: 1, state: queued, source: "ab"}),
			newBuild(buildSpec{id: 2, state: queued, source: "abc"}),
			newBuild(buildSpec{id: 3, state: queued, source: "a"}),
		)
		h.view(func(tx store.Tx) error {
			wantIDs(t, "a", activeBySource(t, tx, "a"), []uint64{3})
			wantIDs(t, "ab", activeBySource(t, tx, "ab"), []uint64{1})
			wantIDs(t, "abc", activeBySource(t, tx, "abc"), []uint64{2})
			return nil
		})
	}},
	{"counts by state follow transitions", func(t *testing.T, h *harness) {
		b := []*store.Build{nil}
		for id := uint64(1); id <= 3; id++ {
			b = append(b, newBuild(buildSpec{id: id, state: queued}))
		}
		type counts = map[kilnv1.BuildState]uint64
		steps := []struct {
			put  []*store.Build
			want counts
		}{
			{b[1:], counts{queued: 3}},
			{[]*store.Build{withState(b[1], running)}, counts{queued: 2, running: 1}},
			{[]*store.Build{withState(b[1], running)}, counts{queued: 2, running: 1}}, // same state again
			{[]*store.Build{withState(b[1], succeeded), withState(b[2], running)}, counts{queued: 1, running: 1, succeeded: 1}},
			{[]*store.Build{withState(b[2], queued), withState(b[3], cancelled)}, counts{queued: 1, succeeded: 1, cancelled: 1}},
		}
		for i, s := range steps {
			h.putBuilds(s.put...)
			h.view(func(tx store.Tx) error {
				t.Logf("step %d", i)
				wantCounts(t, tx, s.want)
				return nil
			})
		}
	}},
	{"the counts read in the transaction that changed them include the change, and a failed one changes none", func(t *testing.T, h *harness) {
		type counts = map[kilnv1.BuildState]uint64
		h.update(func(tx store.Tx) error {
			for id := uint64(1); id <= 3; id++ {
				must(t, tx.PutBuild(newBuild(buildSpec{id: id, state: queued})))
			}
			wantCounts(t, tx, counts{queued: 3})
			must(t, tx.PutBuild(newBuild(buildSpec{id: 1, state: running})))
			must(t, tx.PutBuild(newBuild(buildSpec{id: 2, state: succeeded})))
			wantCounts(t, tx, counts{queued: 1, running: 1, succeeded: 1})
			return nil
		})
		h.view(func(tx store.Tx) error {
			wantCounts(t, tx, counts{queued: 1, running: 1, succeeded: 1})
			return nil
		})
		failed := errors.New("changed my mind")
		err := h.s.Update(func(tx store.Tx) error {
			must(t, tx.PutBuild(newBuild(buildSpec{id: 3, state: cancelled})))
			must(t, tx.PutBuild(newBuild(buildSpec{id: 4, state: queued})))
			return failed
		})
		wantErr(t, "failed Update", err, failed)
		h.view(func(tx store.Tx) error {
			wantCounts(t, tx, counts{queued: 1, running: 1, succeeded: 1})
			return nil
		})
	}},
}

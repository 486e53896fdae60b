package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func request(id, buildID uint64) *store.Request {
	return &store.Request{
		Id: id, BuildId: buildID, Email: "dev@example.invalid", CreatedAt: ts(0), Revision: "main",
		Constraints: &kilnv1.PlatformConstraints{Arch: "x86_64"},
	}
}

// requestIDs returns the ids RequestsForBuild gives for buildID.
func requestIDs(t *testing.T, tx store.Tx, buildID uint64) []uint64 {
	t.Helper()
	rs, err := tx.RequestsForBuild(buildID)
	must(t, err)
	var ids []uint64
	for _, r := range rs {
		if r.GetBuildId() != buildID {
			t.Errorf("RequestsForBuild(%d) gave request %d of build %d", buildID, r.GetId(), r.GetBuildId())
		}
		ids = append(ids, r.GetId())
	}
	return ids
}

var requestCases = []testCase{
	{"a missing request is ErrNotFound", func(t *testing.T, h *harness) {
		h.view(func(tx store.Tx) error {
			_, err := tx.Request(9)
			wantErr(t, "Request", err, store.ErrNotFound)
			return nil
		})
	}},
	{"a put request reads back equal", func(t *testing.T, h *harness) {
		want := request(1, 5)
		h.update(func(tx store.Tx) error { return tx.PutRequest(want) })
		want = request(1, 5)
		want.Notified = true
		h.update(func(tx store.Tx) error { return tx.PutRequest(want) })
		h.view(func(tx store.Tx) error {
			got, err := tx.Request(1)
			must(t, err)
			wantEqual(t, "Request", got, want)
			wantIDs(t, "for build 5", requestIDs(t, tx, 5), []uint64{1})
			return nil
		})
	}},
	{"the requests of each build BuildsByState visits, over several pages, in views and updates", func(t *testing.T, h *harness) {
		// Builds 1..600 queued (more than a page of any engine); build
		// id has id%3 requests, numbered id*10+k, put in reverse order.
		h.update(func(tx store.Tx) error {
			for id := uint64(1); id <= 600; id++ {
				if err := tx.PutBuild(newBuild(buildSpec{id: id, state: kilnv1.BuildState_BUILD_STATE_QUEUED, source: "s"})); err != nil {
					return err
				}
				for k := id % 3; k > 0; k-- {
					if err := tx.PutRequest(request(id*10+k, id)); err != nil {
						return err
					}
				}
			}
			return nil
		})
		visit := func(tx store.Tx) error {
			n := 0
			err := tx.BuildsByState(kilnv1.BuildState_BUILD_STATE_QUEUED, func(b *store.Build) error {
				id := b.GetBuild().GetId()
				var want []uint64
				for k := uint64(1); k <= id%3; k++ {
					want = append(want, id*10+k)
				}
				wantIDs(t, fmt.Sprint("requests of build ", id), requestIDs(t, tx, id), want)
				n++
				return nil
			})
			if n != 600 {
				t.Errorf("visited %d builds, want 600", n)
			}
			return err
		}
		h.view(visit)
		h.update(visit)
		// In an update, a request put during the visit is seen at once.
		h.update(func(tx store.Tx) error {
			return tx.BuildsByState(kilnv1.BuildState_BUILD_STATE_QUEUED, func(b *store.Build) error {
				id := b.GetBuild().GetId()
				if id != 1 {
					return store.ErrStop
				}
				if err := tx.PutRequest(request(9999, 2)); err != nil {
					return err
				}
				return nil
			})
		})
		h.update(func(tx store.Tx) error {
			return tx.BuildsByState(kilnv1.BuildState_BUILD_STATE_QUEUED, func(b *store.Build) error {
				if id := b.GetBuild().GetId(); id == 1 {
					return tx.PutRequest(request(8888, 2))
				}
				wantIDs(t, "requests of build 2 after one more", requestIDs(t, tx, 2), []uint64{21, 22, 8888, 9999})
				return store.ErrStop
			})
		})
	}},
	{"requests are found by build and follow a change of build", func(t *testing.T, h *harness) {
		h.update(func(tx store.Tx) error {
			for _, r := range []*store.Request{request(3, 1), request(1, 1), request(2, 2), request(4, 256), request(5, 1)} {
				if err := tx.PutRequest(r); err != nil {
					return err
				}
			}
			return nil
		})
		h.view(func(tx store.Tx) error {
			wantIDs(t, "build 1", requestIDs(t, tx, 1), []uint64{1, 3, 5})
			wantIDs(t, "build 2", requestIDs(t, tx, 2), []uint64{2})
			wantIDs(t, "build 256", requestIDs(t, tx, 256), []uint64{4})
			wantIDs(t, "build 3", requestIDs(t, tx, 3), nil)
			return nil
		})
		h.update(func(tx store.Tx) error { return tx.PutRequest(request(3, 2)) })
		h.view(func(tx store.Tx) error {
			wantIDs(t, "build 1 after the move", requestIDs(t, tx, 1), []uint64{1, 5})
			wantIDs(t, "build 2 after the move", requestIDs(t, tx, 2), []uint64{2, 3})
			return nil
		})
	}},
}

func artifact(cacheKey, sourceKey string) *store.Artifact {
	return &store.Artifact{
		CacheKey: cacheKey, SourceKey: sourceKey, BuildId: 1, Project: "hello", Commit: "abc",
		Artifact:  &kilnv1.Artifact{Sha256: "ff", Size: 10, Files: []string{"bin/hello"}},
		Platform:  &kilnv1.SystemInfo{Arch: "x86_64", Tools: map[string]string{"make": "4.3", "sh": ""}},
		CreatedAt: ts(0),
	}
}

// cacheKeys returns the sorted cache keys of as.
func cacheKeys(as []*store.Artifact) []string {
	var keys []string
	for _, a := range as {
		keys = append(keys, a.GetCacheKey())
	}
	slices.Sort(keys)
	return keys
}

func bySource(t *testing.T, tx store.Tx, sourceKey string) []string {
	t.Helper()
	as, err := tx.ArtifactsBySource(sourceKey)
	must(t, err)
	for _, a := range as {
		if a.GetSourceKey() != sourceKey {
			t.Errorf("ArtifactsBySource(%s) gave %s of source %s", sourceKey, a.GetCacheKey(), a.GetSourceKey())
		}
	}
	return cacheKeys(as)
}

func wantKeys(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) || !slices.Equal(got, want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func (h *harness) putArtifacts(as ...*store.Artifact) {
	h.t.Helper()
	h.update(func(tx store.Tx) error {
		for _, a := range as {
			if err := tx.PutArtifact(a); err != nil {
				return err
			}
		}
		return nil
	})
}

var artifactCases = []testCase{
	{"a missing artifact is ErrNotFound, to read and to delete", func(t *testing.T, h *harness) {
		h.view(func(tx store.Tx) error {
			_, err := tx.Artifact("k")
			wantErr(t, "Artifact", err, store.ErrNotFound)
			return nil
		})
		err := h.s.Update(func(tx store.Tx) error { return tx.DeleteArtifact("k") })
		wantErr(t, "DeleteArtifact", err, store.ErrNotFound)
	}},
	{"a put artifact reads back equal", func(t *testing.T, h *harness) {
		want := artifact("k1", "s")
		h.putArtifacts(want)
		want = artifact("k1", "s")
		want.Pins = []string{"v1"}
		want.LastUsed = ts(60)
		h.putArtifacts(want)
		h.view(func(tx store.Tx) error {
			got, err := tx.Artifact("k1")
			must(t, err)
			wantEqual(t, "Artifact", got, want)
			wantKeys(t, "by source", bySource(t, tx, "s"), "k1")
			return nil
		})
	}},
	{"artifacts are found by source and leave it when deleted or moved", func(t *testing.T, h *harness) {
		h.putArtifacts(artifact("k1", "s"), artifact("k2", "s"), artifact("k3", "t"), artifact("k4", "st"))
		h.view(func(tx store.Tx) error {
			wantKeys(t, "s", bySource(t, tx, "s"), "k1", "k2")
			wantKeys(t, "t", bySource(t, tx, "t"), "k3")
			wantKeys(t, "st", bySource(t, tx, "st"), "k4")
			wantKeys(t, "u", bySource(t, tx, "u"))
			return nil
		})
		h.update(func(tx store.Tx) error { return tx.DeleteArtifact("k1") })
		h.putArtifacts(artifact("k3", "s"))
		h.view(func(tx store.Tx) error {
			_, err := tx.Artifact("k1")
			wantErr(t, "deleted Artifact", err, store.ErrNotFound)
			wantKeys(t, "s", bySource(t, tx, "s"), "k2", "k3")
			wantKeys(t, "t", bySource(t, tx, "t"))
			return nil
		})
	}},
	{"Artifacts visits every entry and stops quietly at ErrStop", func(t *testing.T, h *harness) {
		h.putArtifacts(artifact("k1", "s"), artifact("k2", "s"), artifact("k3", "t"))
		h.view(func(tx store.Tx) error {
			var all []*store.Artifact
			must(t, tx.Artifacts(func(a *store.Artifact) error { all = append(all, a); return nil }))
			wantKeys(t, "all", cacheKeys(all), "k1", "k2", "k3")
			n := 0
			must(t, tx.Artifacts(func(*store.Artifact) error { n++; return store.ErrStop }))
			if n != 1 {
				t.Fatalf("ErrStop after %d calls, want 1", n)
			}
			errBoom := errors.New("boom")
			if err := tx.Artifacts(func(*store.Artifact) error { return errBoom }); !errors.Is(err, errBoom) {
				t.Fatalf("Artifacts returned %v, want the callback's error", err)
			}
			return nil
		})
	}},
	{"Artifacts lets the callback delete each entry", func(t *testing.T, h *harness) {
		for _, k := range []string{"a", "b", "c", "d", "e"} {
			h.putArtifacts(artifact(k, "s"))
		}
		var seen []string
		h.update(func(tx store.Tx) error {
			seen = seen[:0]
			return tx.Artifacts(func(a *store.Artifact) error {
				seen = append(seen, a.GetCacheKey())
				return tx.DeleteArtifact(a.GetCacheKey())
			})
		})
		slices.Sort(seen)
		wantKeys(t, "visited", seen, "a", "b", "c", "d", "e")
		h.view(func(tx store.Tx) error {
			wantKeys(t, "s", bySource(t, tx, "s"))
			return nil
		})
	}},
}

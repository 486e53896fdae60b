package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// writeOneOfEach stores one record of every kind through tx.
func writeOneOfEach(tx store.Tx) error {
	if _, err := tx.NextID("build"); err != nil {
		return fmt.Errorf("NextID: %w", err)
	}
	for _, w := range []func() error{
		func() error { return tx.CreateProject(project("hello")) },
		func() error { return tx.CreateBuildServer(server("alpha", "aaaa")) },
		func() error {
			return tx.PutBuild(newBuild(buildSpec{id: 1, state: queued, source: "s", pinArch: "x86_64"}))
		},
		func() error { return tx.PutRequest(request(1, 1)) },
		func() error { return tx.PutArtifact(artifact("k1", "s")) },
		func() error { return tx.CreatePin(&store.Pin{Name: "v1", CacheKey: "k1"}) },
		func() error { return tx.PutOutbox(message(1, ts(0))) },
	} {
		if err := w(); err != nil {
			return err
		}
	}
	return nil
}

// wantNothing checks that none of writeOneOfEach's records is visible.
func wantNothing(t *testing.T, tx store.Tx) {
	t.Helper()
	_, err := tx.Project("hello")
	wantErr(t, "Project", err, store.ErrNotFound)
	_, err = tx.BuildServer("alpha")
	wantErr(t, "BuildServer", err, store.ErrNotFound)
	wantServerByHash(t, tx, "aaaa", "")
	_, err = tx.Build(1)
	wantErr(t, "Build", err, store.ErrNotFound)
	wantIDs(t, "queued", byState(t, tx, queued), nil)
	wantIDs(t, "active by source", activeBySource(t, tx, "s"), nil)
	wantIDs(t, "listed", listIDs(t, tx, store.BuildFilter{}), nil)
	wantCounts(t, tx, map[kilnv1.BuildState]uint64{})
	_, err = tx.Request(1)
	wantErr(t, "Request", err, store.ErrNotFound)
	wantIDs(t, "requests for build", requestIDs(t, tx, 1), nil)
	_, err = tx.Artifact("k1")
	wantErr(t, "Artifact", err, store.ErrNotFound)
	wantKeys(t, "artifacts by source", bySource(t, tx, "s"))
	_, err = tx.Pin("v1")
	wantErr(t, "Pin", err, store.ErrNotFound)
	ms, err := tx.DueOutbox(base, 10)
	must(t, err)
	n, err := tx.OutboxLen()
	must(t, err)
	if len(ms) != 0 || n != 0 {
		t.Fatalf("outbox: %d due, %d counted, want none", len(ms), n)
	}
}

// listIDs returns the ids ListBuilds gives inside tx.
func listIDs(t *testing.T, tx store.Tx, f store.BuildFilter) []uint64 {
	t.Helper()
	bs, err := tx.ListBuilds(f, 0, 10)
	must(t, err)
	return buildIDs(bs)
}

// wantOneOfEach checks that writeOneOfEach's records are all there, indexes
// included.
func wantOneOfEach(t *testing.T, tx store.Tx) {
	t.Helper()
	p, err := tx.Project("hello")
	must(t, err)
	wantEqual(t, "Project", p, project("hello"))
	wantServerByHash(t, tx, "aaaa", "alpha")
	b, err := tx.Build(1)
	must(t, err)
	wantEqual(t, "Build", b, newBuild(buildSpec{id: 1, state: queued, source: "s", pinArch: "x86_64"}))
	wantIDs(t, "queued", byState(t, tx, queued), []uint64{1})
	wantIDs(t, "active by source", activeBySource(t, tx, "s"), []uint64{1})
	wantIDs(t, "listed by arch", listIDs(t, tx, store.BuildFilter{Project: "hello", Platform: &kilnv1.PlatformConstraints{Arch: "x86_64"}}), []uint64{1})
	wantCounts(t, tx, map[kilnv1.BuildState]uint64{queued: 1})
	wantIDs(t, "requests for build", requestIDs(t, tx, 1), []uint64{1})
	wantKeys(t, "artifacts by source", bySource(t, tx, "s"), "k1")
	_, err = tx.Pin("v1")
	must(t, err)
	ms, err := tx.DueOutbox(base, 10)
	must(t, err)
	n, err := tx.OutboxLen()
	must(t, err)
	if len(ms) != 1 || n != 1 {
		t.Fatalf("outbox: %d due, %d counted, want 1", len(ms), n)
	}
}

var txCases = []testCase{
	{"Update with an error writes nothing and returns the error", func(t *testing.T, h *harness) {
		errAbort := errors.New("abort")
		err := h.s.Update(func(tx store.Tx) error {
			if err := writeOneOfEach(tx); err != nil {
				return err
			}
			return errAbort
		})
		wantErr(t, "Update", err, errAbort)
		h.view(func(tx store.Tx) error { wantNothing(t, tx); return nil })
	}},
	{"a failed Update leaves earlier commits and the indexes intact", func(t *testing.T, h *harness) {
		h.update(writeOneOfEach)
		errAbort := errors.New("abort")
		err := h.s.Update(func(tx store.Tx) error {
			b, err := tx.Build(1)
			if err != nil {
				return err
			}
			if err := tx.PutBuild(withState(b, failed)); err != nil {
				return err
			}
			if err := tx.DeleteArtifact("k1"); err != nil {
				return err
			}
			if err := tx.DeleteOutbox(1); err != nil {
				return err
			}
			return errAbort
		})
		wantErr(t, "Update", err, errAbort)
		h.view(func(tx store.Tx) error { wantOneOfEach(t, tx); return nil })
	}},
	{"writes inside View fail and change nothing", func(t *testing.T, h *harness) {
		var calls, failures int
		h.view(func(tx store.Tx) error {
			try := func(err error) {
				calls++
				if err != nil {
					failures++
				}
			}
			_, err := tx.NextID("build")
			try(err)
			try(tx.CreateProject(project("hello")))
			try(tx.CreateBuildServer(server("alpha", "aaaa")))
			try(tx.PutBuildServer(server("alpha", "aaaa")))
			try(tx.PutBuild(newBuild(buildSpec{id: 1, state: queued, source: "s"})))
			try(tx.PutRequest(request(1, 1)))
			try(tx.PutArtifact(artifact("k1", "s")))
			try(tx.DeleteArtifact("k1"))
			try(tx.CreatePin(&store.Pin{Name: "v1"}))
			try(tx.PutOutbox(message(1, ts(0))))
			try(tx.DeleteOutbox(1))
			return nil
		})
		if failures != calls {
			t.Fatalf("%d of %d writes inside View succeeded", calls-failures, calls)
		}
		h.view(func(tx store.Tx) error { wantNothing(t, tx); return nil })
		wantIDs(t, "first build id", h.nextIDs("build", 1), []uint64{1})
	}},
	{"records read are the caller's to change", func(t *testing.T, h *harness) {
		h.update(writeOneOfEach)
		h.update(func(tx store.Tx) error {
			b, err := tx.Build(1)
			must(t, err)
			b.Build.Project = "changed"
			b.Build.Options = map[string]string{"x": "y"}
			a, err := tx.Artifact("k1")
			must(t, err)
			a.Platform.Arch = "changed"
			a.Artifact.Files[0] = "changed"
			return nil
		})
		h.view(func(tx store.Tx) error {
			b, err := tx.Build(1)
			must(t, err)
			b.Build.Project = "changed in view"
			wantOneOfEach(t, tx)
			return nil
		})
	}},
	{"everything committed survives Close and reopen", func(t *testing.T, h *harness) {
		h.update(writeOneOfEach)
		h.reopen()
		h.view(func(tx store.Tx) error { wantOneOfEach(t, tx); return nil })
		// And the store keeps working after the reopen.
		h.update(func(tx store.Tx) error {
			b, err := tx.Build(1)
			if err != nil {
				return err
			}
			return tx.PutBuild(withState(b, succeeded))
		})
		h.view(func(tx store.Tx) error {
			wantCounts(t, tx, map[kilnv1.BuildState]uint64{succeeded: 1})
			wantIDs(t, "active by source", activeBySource(t, tx, "s"), nil)
			return nil
		})
	}},
}

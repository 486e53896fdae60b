package pgstore_test

import (
	"testing"

	"github.com/kilnbuild/kiln/internal/farmtest"
	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/pgstore"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// BenchmarkRecovery_QueuedBuildsWithTheirRequests reads what a metaserver
// reads at start (server.restore): every queued build and its requests,
// in one View, over 50,000 queued builds, just after a restart that
// followed their submission.
func BenchmarkRecovery_QueuedBuildsWithTheirRequests(b *testing.B) {
	const n = 50_000
	pg := farmtest.StartPostgres(b)
	url := pg.SchemaURL(b, "postgres", "recovery")
	db, err := pgstore.Open(b.Context(), url, pgstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { db.Close() }()
	if err := db.Update(func(tx store.Tx) error {
		for id := uint64(1); id <= n; id++ {
			if err := tx.PutBuild(&store.Build{SourceKey: "s", Build: &kilnv1.Build{Id: id, Project: "p", State: kilnv1.BuildState_BUILD_STATE_QUEUED}}); err != nil {
				return err
			}
			if err := tx.PutRequest(&store.Request{Id: id, BuildId: id, Email: "dev@example.com"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	// A restart right after the burst, as a metaserver that crashed
	// with its queue full.
	db.Close()
	db, err = pgstore.Open(b.Context(), url, pgstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		builds, requests := 0, 0
		err := db.View(func(tx store.Tx) error {
			return tx.BuildsByState(kilnv1.BuildState_BUILD_STATE_QUEUED, func(rec *store.Build) error {
				reqs, err := tx.RequestsForBuild(rec.GetBuild().GetId())
				builds++
				requests += len(reqs)
				return err
			})
		})
		if err != nil {
			b.Fatal(err)
		}
		if builds != n || requests != n {
			b.Fatalf("%d builds, %d requests; want %d of each", builds, requests, n)
		}
	}
}

package bolt_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Queue a build in one transaction, then find it by state in another.
func ExampleDB_Update() {
	dir, err := os.MkdirTemp("", "kiln-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	db, err := bolt.Open(filepath.Join(dir, "kiln.db"), bolt.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()

	err = db.Update(func(tx store.Tx) error {
		id, err := tx.NextID("build")
		if err != nil {
			return err
		}
		return tx.PutBuild(&store.Build{
			Build:     &kilnv1.Build{Id: id, Project: "hello", State: kilnv1.BuildState_BUILD_STATE_QUEUED},
			SourceKey: "3f1c",
		})
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// The build is on disk now: acknowledge it to the requester.

	_ = db.View(func(tx store.Tx) error {
		active, _ := tx.ActiveBuildsBySource("3f1c")
		counts, _ := tx.CountBuildsByState()
		fmt.Println(len(active), "active,", counts[kilnv1.BuildState_BUILD_STATE_QUEUED], "queued")
		return tx.BuildsByState(kilnv1.BuildState_BUILD_STATE_QUEUED, func(b *store.Build) error {
			fmt.Println("queued:", b.GetBuild().GetId(), b.GetBuild().GetProject())
			return nil
		})
	})
	// Output:
	// 1 active, 1 queued
	// queued: 1 hello
}

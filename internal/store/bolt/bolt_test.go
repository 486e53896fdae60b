package bolt_test

import (
	"testing"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	"github.com/kilnbuild/kiln/internal/store/storetest"
)

func TestStoreSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T, path string) store.Store {
		db, err := bolt.Open(path, bolt.Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return db
	})
}

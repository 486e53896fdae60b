package cas_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kilnbuild/kiln/internal/cas"
	"github.com/kilnbuild/kiln/internal/cas/castest"
)

func TestBlobStoreSuite(t *testing.T) {
	castest.Run(t, func(t *testing.T) castest.Harness {
		dir := t.TempDir()
		s, err := cas.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return castest.Harness{Store: s, Overwrite: func(t *testing.T, sha string, data []byte) {
			if err := os.WriteFile(filepath.Join(dir, sha[:2], sha), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}}
	})
}

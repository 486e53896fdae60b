package s3blob

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/kilnbuild/kiln/internal/cas"
)

// The HEAD that found the object trusted and the GET that reads its bytes
// are two requests: an object replaced between them, by other bytes of the
// same size and CRC-32C, must not be read as the verified blob.
func TestStore_ReplacementBetweenHeadAndGetIsRefused(t *testing.T) {
	f := startMemoFarm(t)
	s := f.open(t, "")
	sha, data := put(t, s, 1<<20)
	r, _, err := s.Open(t.Context(), sha)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	bad := sameCRC(t, data)
	f.rawPut(t, sha, bad)
	got, err := io.ReadAll(r)
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("read of an object replaced after its HEAD ended cleanly (%d bytes, same as replacement: %v)", len(got), bytes.Equal(got, bad))
	}
	t.Logf("refused: %v (ErrCorrupt %v)", err, errors.Is(err, cas.ErrCorrupt))
}

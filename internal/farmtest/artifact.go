package farmtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// maxArtifactBytes bounds what ArtifactBytes keeps in memory.
const maxArtifactBytes = 1 << 30

// ArtifactBytes downloads the artifact of build id as the metaserver
// stores it (the packed tar.gz, not unpacked) through
// CompileService.DownloadArtifact, checks it against the sha256 and size
// of its header, and returns it with that sha256. Failures fail t.
// Safe to call from several goroutines with their own t.
func (f *Farm) ArtifactBytes(t testing.TB, id uint64) (data []byte, sha string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	stream, err := kilnv1.NewCompileServiceClient(f.Conn()).DownloadArtifact(ctx,
		&kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: id}})
	if err != nil {
		t.Fatalf("farmtest: download of build %d: %v", id, err)
	}
	var buf bytes.Buffer
	var want *kilnv1.Artifact
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("farmtest: download of build %d: %v", id, err)
		}
		if h := msg.GetHeader(); h != nil {
			want = h.GetArtifact()
			continue
		}
		if buf.Len()+len(msg.GetData()) > maxArtifactBytes {
			t.Fatalf("farmtest: artifact of build %d is over %d bytes", id, maxArtifactBytes)
		}
		buf.Write(msg.GetData())
	}
	sum := sha256.Sum256(buf.Bytes())
	sha = hex.EncodeToString(sum[:])
	if want == nil || want.GetSha256() != sha || want.GetSize() != uint64(buf.Len()) {
		t.Fatalf("farmtest: artifact of build %d: got %d bytes %s, header says %v", id, buf.Len(), sha, fmt.Sprint(want))
	}
	return buf.Bytes(), sha
}

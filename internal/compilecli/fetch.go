package compilecli

import (
	"context"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Fetch downloads the artifact of build id into dir, created if missing, as
// startcompile download does: streamed to a temporary file, its size and
// sha256 verified against the download header (a mismatch wraps
// ErrArtifactMismatch), and only then extracted with Extract's checks and
// lim. It returns the header, which the caller compares with what it
// expected, and the non-directory entries extracted. The build server
// stages its builds' dependency artifacts with it.
func Fetch(ctx context.Context, client kilnv1.CompileServiceClient, id uint64, dir string, lim Limits) (*kilnv1.DownloadHeader, []string, error) {
	d, err := download(ctx, client, &kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: id}}, dir, lim, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	return d.header, d.files, nil
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Upload: data messages carry at most uploadChunk bytes (the protocol's
// limit); one upload may wait through a short outage of the metaserver
// (WaitForReady) but not longer than uploadTimeout.
const (
	uploadChunk   = kilnv1.MaxUploadChunkBytes
	uploadTimeout = 10 * time.Minute
)

// artifactUploader is the part of kilnv1.WorkerServiceClient the runner uses.
type artifactUploader interface {
	UploadArtifact(ctx context.Context, opts ...grpc.CallOption) (grpc.ClientStreamingClient[kilnv1.UploadArtifactRequest, kilnv1.UploadArtifactResponse], error)
}

// maxUploadTries bounds the tries of one upload cut by a lost connection.
const maxUploadTries = 8

// upload sends the artifact file at path for attempt id, starting again
// from its first byte when the connection is lost on the way (a metaserver
// restarted, or another took over): the attempt is still this server's
// there, and a cut upload is not the build server's failure. Any other
// error ends it; all tries together take at most uploadTimeout.
func upload(ctx context.Context, up artifactUploader, id uint64, path string, art *kilnv1.Artifact) error {
	ctx, cancel := context.WithTimeout(ctx, uploadTimeout)
	defer cancel()
	for try := 1; ; try++ {
		err := uploadOnce(ctx, up, id, path, art)
		if err == nil || status.Code(err) != codes.Unavailable || try == maxUploadTries || ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(reconnectDelay.Delay(try)):
		case <-ctx.Done():
			return err
		}
	}
}

// uploadOnce streams the artifact file at path for attempt id: the header,
// then chunks read from the file. It succeeds only when the metaserver
// confirms the same sha256 and size.
func uploadOnce(ctx context.Context, up artifactUploader, id uint64, path string, art *kilnv1.Artifact) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening artifact: %w", err)
	}
	defer f.Close()
	stream, err := up.UploadArtifact(ctx, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("starting upload: %w", err)
	}
	send := func(m *kilnv1.UploadArtifactRequest) error {
		err := stream.Send(m)
		if errors.Is(err, io.EOF) {
			// The server ended the call; its status comes with CloseAndRecv.
			_, err = stream.CloseAndRecv()
			if err == nil {
				err = errors.New("metaserver ended the upload early")
			}
		}
		return err
	}
	if err := send(&kilnv1.UploadArtifactRequest{Msg: &kilnv1.UploadArtifactRequest_Header{Header: &kilnv1.UploadHeader{
		AttemptId: id, Sha256: art.GetSha256(), Size: art.GetSize(),
	}}}); err != nil {
		return fmt.Errorf("uploading artifact: %w", err)
	}
	// Most artifacts are far smaller than a chunk; a full-size buffer for
	// each would be most of what a small build allocates.
	buf := make([]byte, max(1, min(uploadChunk, art.GetSize())))
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			// Send marshals before it returns, so buf may be reused.
			if err := send(&kilnv1.UploadArtifactRequest{Msg: &kilnv1.UploadArtifactRequest_Data{Data: buf[:n]}}); err != nil {
				return fmt.Errorf("uploading artifact: %w", err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading artifact: %w", rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("uploading artifact: %w", err)
	}
	if resp.GetSha256() != art.GetSha256() || resp.GetSize() != art.GetSize() {
		return fmt.Errorf("metaserver stored %s (%d bytes), expected %s (%d bytes)",
			resp.GetSha256(), resp.GetSize(), art.GetSha256(), art.GetSize())
	}
	return nil
}

package compilecli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/grpc"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// Limits bounds what a download may put on this machine.
type Limits struct {
	// MaxArchiveBytes bounds the compressed artifact as announced and as
	// received.
	MaxArchiveBytes uint64
	// MaxExtractBytes bounds the sum of the regular files' sizes unpacked.
	MaxExtractBytes int64
	// MaxEntries bounds the number of archive entries.
	MaxEntries int
}

// DefaultLimits are generous for programs and libraries yet stop a
// decompression bomb.
var DefaultLimits = Limits{
	MaxArchiveBytes: 4 << 30,
	MaxExtractBytes: 16 << 30,
	MaxEntries:      200000,
}

// downloaded is what a download produced.
type downloaded struct {
	header *kilnv1.DownloadHeader
	// files are the archive's non-directory entries as extracted, relative
	// to the download directory, in archive order.
	files []string
}

// download streams the artifact named by req into a temporary file,
// verifying its size and sha256 against the header while writing, and only
// then extracts it into dir (created if missing) with Extract. A mismatch
// wraps ErrArtifactMismatch and leaves dir untouched; the temporary file is
// always removed. When show is not nil, the meter it returns for the
// header shows the transfer.
//
// pc, when not nil, checks the artifact's provenance after its sha256 and
// before extracting (a failure wraps ErrProvenance and extracts nothing),
// and keeps the archive and the proof in dir/ProvenanceDir afterwards.
func download(ctx context.Context, client kilnv1.CompileServiceClient, req *kilnv1.DownloadArtifactRequest, dir string, lim Limits, show func(*kilnv1.DownloadHeader) *meter, pc *provenanceCheck) (*downloaded, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.DownloadArtifact(sctx, req)
	if err != nil {
		return nil, err
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: empty download stream", ErrArtifactMismatch)
	}
	if err != nil {
		return nil, err
	}
	h := first.GetHeader()
	if h == nil || h.GetArtifact() == nil {
		return nil, fmt.Errorf("%w: download stream does not start with a header", ErrArtifactMismatch)
	}
	art := h.GetArtifact()
	want := strings.ToLower(art.GetSha256())
	if len(want) != sha256.Size*2 {
		return nil, fmt.Errorf("%w: header carries sha256 %q", ErrArtifactMismatch, art.GetSha256())
	}
	if art.GetSize() > lim.MaxArchiveBytes {
		return nil, fmt.Errorf("%w: artifact of %d bytes exceeds the limit of %d", ErrUnsafeArchive, art.GetSize(), lim.MaxArchiveBytes)
	}

	tmp, err := os.CreateTemp("", "startcompile-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("temporary file for the artifact: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()

	var m *meter
	if show != nil {
		m = show(h)
	}
	got, err := receive(stream, art, tmp, m)
	m.finish(err == nil)
	if err != nil {
		return nil, err
	}
	if hex.EncodeToString(got) != want {
		return nil, fmt.Errorf("%w: received sha256 %s, announced %s", ErrArtifactMismatch, hex.EncodeToString(got), want)
	}
	if pc != nil {
		if err := pc.check(ctx, h); err != nil {
			return nil, err
		}
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewinding %s: %w", tmp.Name(), err)
	}
	files, err := Extract(tmp, dir, lim)
	if err != nil {
		return nil, err
	}
	if pc != nil {
		if err := pc.keep(dir, tmp); err != nil {
			return nil, err
		}
	}
	return &downloaded{header: h, files: files}, nil
}

// receive writes the stream's data messages to tmp, counting them on m,
// and returns their sha256 once exactly the announced size has come.
func receive(stream grpc.ServerStreamingClient[kilnv1.DownloadArtifactResponse], art *kilnv1.Artifact, tmp *os.File, mt *meter) ([]byte, error) {
	sum := sha256.New()
	var n uint64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		data := m.GetData()
		if m.GetHeader() != nil {
			return nil, fmt.Errorf("%w: second header in download stream", ErrArtifactMismatch)
		}
		n += uint64(len(data))
		if n > art.GetSize() {
			return nil, fmt.Errorf("%w: received more than the announced %d bytes", ErrArtifactMismatch, art.GetSize())
		}
		sum.Write(data)
		if _, err := tmp.Write(data); err != nil {
			return nil, fmt.Errorf("writing %s: %w", tmp.Name(), err)
		}
		mt.add(len(data))
	}
	if n != art.GetSize() {
		return nil, fmt.Errorf("%w: received %d of %d bytes", ErrArtifactMismatch, n, art.GetSize())
	}
	return sum.Sum(nil), nil
}

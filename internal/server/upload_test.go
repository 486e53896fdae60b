package server

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/cas"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// uploadChunk is the data message size the helpers send, below the
// protocol's 1 MiB.
const uploadChunk = 256 << 10

// openUpload starts an UploadArtifact stream of ss's build server and sends
// its header; the stream ends with the test.
func (ss *testSession) openUpload(h *kilnv1.UploadHeader) grpc.ClientStreamingClient[kilnv1.UploadArtifactRequest, kilnv1.UploadArtifactResponse] {
	ss.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	ss.t.Cleanup(cancel)
	up, err := kilnv1.NewWorkerServiceClient(ss.conn).UploadArtifact(ctx)
	if err != nil {
		ss.t.Fatal(err)
	}
	if err := up.Send(&kilnv1.UploadArtifactRequest{Msg: &kilnv1.UploadArtifactRequest_Header{Header: h}}); err != nil {
		ss.t.Fatal(err)
	}
	return up
}

// finishUpload sends data on an open upload and returns the server's
// answer. A send refused because the server already answered is not an
// error here: the answer comes from CloseAndRecv.
func finishUpload(up grpc.ClientStreamingClient[kilnv1.UploadArtifactRequest, kilnv1.UploadArtifactResponse], data []byte) error {
	for len(data) > 0 {
		n := min(len(data), uploadChunk)
		if err := up.Send(&kilnv1.UploadArtifactRequest{Msg: &kilnv1.UploadArtifactRequest_Data{Data: data[:n]}}); err != nil {
			break
		}
		data = data[n:]
	}
	_, err := up.CloseAndRecv()
	return err
}

// upload uploads data under header h as ss's build server.
func (ss *testSession) upload(h *kilnv1.UploadHeader, data []byte) error {
	ss.t.Helper()
	return finishUpload(ss.openUpload(h), data)
}

// header declares data as the artifact of attempt.
func header(attempt uint64, data []byte) *kilnv1.UploadHeader {
	return &kilnv1.UploadHeader{AttemptId: attempt, Sha256: digest(data), Size: uint64(len(data))}
}

// payload is n bytes that differ with seed.
func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// expectCode fails the test unless err carries code.
func expectCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v; want %s", what, err, code)
	}
}

// expectNotStored fails the test if the blob sha is stored or pending, or
// if the blob directory holds any file (a stored blob or a left temp file).
func (ts *testServer) expectNotStored(sha string) {
	ts.t.Helper()
	if size, err := ts.srv.blobs.stat(ts.t.Context(), sha); !errors.Is(err, cas.ErrNotFound) {
		ts.t.Fatalf("blob %s: size %d, %v; want not stored", sha, size, err)
	}
	var files []string
	err := filepath.WalkDir(filepath.Join(ts.srv.cfg.DataDir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		ts.t.Fatal(err)
	}
	if len(files) > 0 {
		ts.t.Fatalf("the blob directory holds %v; want nothing", files)
	}
}

func TestAnUploadBeyondTheArtifactLimitIsRefusedAndNothingIsStored(t *testing.T) {
	const limit = 1024
	for _, store := range []struct {
		name   string
		inline int64
	}{
		{"held in the store until its result", 4096},
		{"streamed into a file", -1},
	} {
		t.Run(store.name, func(t *testing.T) {
			ts := startTestServer(t, Config{MaxArtifactBytes: limit, InlineArtifactBytes: store.inline}, queuedBuild(1, "hello", 60))
			ss := ts.connect("bs", nil)
			attempt := ss.assignment().GetAttemptId()

			// Declares (and sends, matching) one byte more than the limit:
			// only the limit stands in its way.
			big := payload(limit+1, 1)
			err := ss.upload(header(attempt, big), big)
			expectCode(t, "an upload declaring limit+1 bytes", err, codes.InvalidArgument)
			if !strings.Contains(status.Convert(err).Message(), "exceeds the limit of 1024") {
				t.Fatalf("refusal %q does not name the limit", status.Convert(err).Message())
			}
			ts.expectNotStored(digest(big))

			// Declares the limit and sends more than it declared.
			h := header(attempt, big)
			h.Size = limit
			err = ss.upload(h, big)
			expectCode(t, "an upload sending more than it declared", err, codes.InvalidArgument)
			ts.expectNotStored(digest(big))

			// Control: exactly the limit is accepted and stored.
			fits := payload(limit, 2)
			if err := ss.upload(header(attempt, fits), fits); err != nil {
				t.Fatalf("an upload of exactly the limit: %v", err)
			}
			if size, err := ts.srv.blobs.stat(t.Context(), digest(fits)); err != nil || size != limit {
				t.Fatalf("the accepted upload: size %d, %v; want %d stored", size, err, limit)
			}
		})
	}
}

func TestAFifthConcurrentUploadOfOneBuildServerIsRefusedWhileFourAreOpen(t *testing.T) {
	ts := startTestServer(t, Config{InlineArtifactBytes: -1}, queuedBuild(1, "hello", 60), queuedBuild(2, "other", 60))
	ss := ts.connect("bs", nil)
	attempt := ss.assignment().GetAttemptId()
	neighbour := ts.connect("neighbour", nil)
	neighbourAttempt := neighbour.assignment().GetAttemptId()

	datas := make([][]byte, maxUploadsPerServer+2)
	for i := range datas {
		datas[i] = payload(1000+i, byte(i))
	}
	var open []grpc.ClientStreamingClient[kilnv1.UploadArtifactRequest, kilnv1.UploadArtifactResponse]
	for i := 0; i < maxUploadsPerServer; i++ {
		open = append(open, ss.openUpload(header(attempt, datas[i])))
	}
	ts.waitUploads("bs", maxUploadsPerServer)

	fifth := datas[maxUploadsPerServer]
	err := ss.upload(header(attempt, fifth), fifth)
	expectCode(t, "the fifth concurrent upload", err, codes.ResourceExhausted)
	if size, err := ts.srv.blobs.stat(t.Context(), digest(fifth)); !errors.Is(err, cas.ErrNotFound) {
		t.Fatalf("the refused upload is stored: size %d, %v", size, err)
	}

	// The cap is per build server: another one uploads meanwhile.
	other := payload(500, 9)
	if err := neighbour.upload(header(neighbourAttempt, other), other); err != nil {
		t.Fatalf("another build server's upload while bs has %d open: %v", maxUploadsPerServer, err)
	}

	// One finishes; its slot is free again.
	if err := finishUpload(open[0], datas[0]); err != nil {
		t.Fatalf("finishing an open upload: %v", err)
	}
	ts.waitUploads("bs", maxUploadsPerServer-1)
	if err := ss.upload(header(attempt, fifth), fifth); err != nil {
		t.Fatalf("the fifth upload once one finished: %v", err)
	}
	for i, up := range open[1:] {
		if err := finishUpload(up, datas[i+1]); err != nil {
			t.Fatalf("finishing open upload %d: %v", i+2, err)
		}
	}
	ts.waitUploads("bs", 0)
	for i, d := range append(datas[:maxUploadsPerServer+1], other) {
		if _, err := ts.srv.blobs.stat(t.Context(), digest(d)); err != nil {
			t.Fatalf("accepted upload %d is not stored: %v", i+1, err)
		}
	}
}

// waitUploads polls until build server name has n uploads open.
func (ts *testServer) waitUploads(name string, n int) {
	ts.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.srv.mu.Lock()
		got := ts.srv.uploads[name]
		ts.srv.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			ts.t.Fatalf("%s has %d uploads open; want %d", name, got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

package compilecli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// fakeMeta is a fake metaserver: CompileService and StatusService served
// over a real loopback gRPC listener, scripted per test. Unscripted calls
// fail with Unimplemented.
type fakeMeta struct {
	kilnv1.UnimplementedCompileServiceServer
	kilnv1.UnimplementedStatusServiceServer

	addr string

	mu sync.Mutex
	// submit answers Submit; the requests are recorded in submits.
	submit  func(*kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error)
	submits []*kilnv1.SubmitRequest
	// watch answers the n-th (0-based) WatchBuild call for a build.
	watch   func(req *kilnv1.WatchBuildRequest, n int, send func(*kilnv1.WatchBuildResponse) error, ctx context.Context) error
	watches map[uint64]int
	// builds answers GetBuild.
	builds map[uint64]*kilnv1.Build
	// downloads answers DownloadArtifact, keyed by "build:ID" or "pin:NAME".
	downloads map[string][]*kilnv1.DownloadArtifactResponse
	dlReqs    []*kilnv1.DownloadArtifactRequest
	// cancel answers Cancel.
	cancel  func(*kilnv1.CancelRequest) (*kilnv1.CancelResponse, error)
	cancels []*kilnv1.CancelRequest
	// seals records SealGroup calls.
	seals []*kilnv1.SealGroupRequest
	// logs answers GetLog.
	logs    []*kilnv1.GetLogResponse
	logReqs []*kilnv1.GetLogRequest
	// servers answers ListBuildServers; listCalls counts the calls.
	servers   []*kilnv1.BuildServerStatus
	listCalls int
	// tlog answers GetProvenance (fake_provenance_test.go).
	tlog *fakeLog
}

func startFake(t *testing.T) *fakeMeta {
	t.Helper()
	f := &fakeMeta{watches: map[uint64]int{}, builds: map[uint64]*kilnv1.Build{}, downloads: map[string][]*kilnv1.DownloadArtifactResponse{},
		tlog: newFakeLog(t)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	kilnv1.RegisterCompileServiceServer(s, f)
	kilnv1.RegisterStatusServiceServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	f.addr = lis.Addr().String()
	return f
}

func (f *fakeMeta) Submit(ctx context.Context, req *kilnv1.SubmitRequest) (*kilnv1.SubmitResponse, error) {
	f.mu.Lock()
	f.submits = append(f.submits, req)
	h := f.submit
	f.mu.Unlock()
	if h == nil {
		return f.UnimplementedCompileServiceServer.Submit(ctx, req)
	}
	return h(req)
}

func (f *fakeMeta) WatchBuild(req *kilnv1.WatchBuildRequest, stream grpc.ServerStreamingServer[kilnv1.WatchBuildResponse]) error {
	f.mu.Lock()
	n := f.watches[req.GetBuildId()]
	f.watches[req.GetBuildId()]++
	h := f.watch
	f.mu.Unlock()
	if h == nil {
		return f.UnimplementedCompileServiceServer.WatchBuild(req, stream)
	}
	return h(req, n, stream.Send, stream.Context())
}

func (f *fakeMeta) GetBuild(ctx context.Context, req *kilnv1.GetBuildRequest) (*kilnv1.GetBuildResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.builds[req.GetBuildId()]
	if !ok {
		return nil, errNotFound
	}
	return &kilnv1.GetBuildResponse{Build: b}, nil
}

func (f *fakeMeta) DownloadArtifact(req *kilnv1.DownloadArtifactRequest, stream grpc.ServerStreamingServer[kilnv1.DownloadArtifactResponse]) error {
	f.mu.Lock()
	f.dlReqs = append(f.dlReqs, req)
	key := "pin:" + req.GetPin()
	if req.GetPin() == "" {
		key = "build:" + itoa(req.GetBuildId())
	}
	msgs, ok := f.downloads[key]
	f.mu.Unlock()
	if !ok {
		return errNotFound
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMeta) Cancel(ctx context.Context, req *kilnv1.CancelRequest) (*kilnv1.CancelResponse, error) {
	f.mu.Lock()
	f.cancels = append(f.cancels, req)
	h := f.cancel
	f.mu.Unlock()
	return h(req)
}

func (f *fakeMeta) SealGroup(_ context.Context, req *kilnv1.SealGroupRequest) (*kilnv1.SealGroupResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seals = append(f.seals, req)
	return &kilnv1.SealGroupResponse{Requests: uint32(len(f.submits))}, nil
}

func (f *fakeMeta) GetLog(req *kilnv1.GetLogRequest, stream grpc.ServerStreamingServer[kilnv1.GetLogResponse]) error {
	f.mu.Lock()
	f.logReqs = append(f.logReqs, req)
	logs := f.logs
	f.mu.Unlock()
	for _, m := range logs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMeta) ListBuildServers(ctx context.Context, req *kilnv1.ListBuildServersRequest) (*kilnv1.ListBuildServersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listCalls++
	return &kilnv1.ListBuildServersResponse{BuildServers: f.servers}, nil
}

// calls counts every RPC the fake received.
func (f *fakeMeta) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.submits) + len(f.dlReqs) + len(f.cancels) + len(f.logReqs) + f.listCalls
	for _, c := range f.watches {
		n += c
	}
	return n
}

// run executes the command line against the fake with a fixed local
// platform and returns stdout, stderr and the exit status.
func (f *fakeMeta) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runWith(t, Env{Getenv: envWith(EnvMetaserver, f.addr), Measure: measured(x86Info())}, args...)
}

func runWith(t *testing.T, env Env, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	env.Stdout, env.Stderr = &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	code := Run(ctx, env, args)
	return stdout.String(), stderr.String(), code
}

func envWith(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func measured(info *kilnv1.SystemInfo) func(context.Context) (*kilnv1.SystemInfo, error) {
	return func(context.Context) (*kilnv1.SystemInfo, error) { return info, nil }
}

func x86Info() *kilnv1.SystemInfo {
	return &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", CharBit: 8,
		Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0"}
}

func s390xInfo() *kilnv1.SystemInfo {
	return &kilnv1.SystemInfo{Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", CharBit: 8,
		Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0", Emulated: true}
}

// tarEntry describes one member of a test archive.
type tarEntry struct {
	name     string
	typ      byte
	body     string
	linkname string
	mode     int64
}

// makeTarGz builds a gzip-compressed tar archive.
func makeTarGz(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.linkname, Mode: e.mode, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// artifactStream is a download answer for data: a header announcing sha and
// size, then data in chunks of chunk bytes.
func artifactStream(buildID uint64, data []byte, announced []byte, chunk int, files []string) []*kilnv1.DownloadArtifactResponse {
	sum := sha256.Sum256(announced)
	msgs := []*kilnv1.DownloadArtifactResponse{{Msg: &kilnv1.DownloadArtifactResponse_Header{Header: &kilnv1.DownloadHeader{
		BuildId:  buildID,
		Artifact: &kilnv1.Artifact{Sha256: hex.EncodeToString(sum[:]), Size: uint64(len(announced)), Files: files},
		Platform: x86Info(),
	}}}}
	for len(data) > 0 {
		n := min(chunk, len(data))
		msgs = append(msgs, &kilnv1.DownloadArtifactResponse{Msg: &kilnv1.DownloadArtifactResponse_Data{Data: data[:n]}})
		data = data[n:]
	}
	return msgs
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/platform"
	"github.com/kilnbuild/kiln/internal/web"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// farm is a fake metaserver: it implements StatusService and CompileService
// over a real loopback gRPC listener, with realistic data and logs that the
// test grows over time.
type farm struct {
	mu        sync.Mutex
	overview  *kilnv1.GetOverviewResponse
	servers   []*kilnv1.BuildServerStatus
	builds    map[uint64]*kilnv1.Build
	logs      map[uint64]*fakeLog
	artifacts map[uint64][]byte
	// dataLoss lists builds whose artifact stream fails with DATA_LOSS
	// after half the bytes.
	dataLoss map[uint64]bool
	// logChunk, when non-zero, splits every log chunk into pieces of this
	// many bytes (to exercise UTF-8 carrying).
	logChunk int
	// pins answers ListPins (filtered by project).
	pins []*kilnv1.PinStatus
	// samples answers GetHistory (filtered by since).
	samples []*kilnv1.Sample
}

type fakeLog struct {
	data    []byte
	final   bool
	changed chan struct{} // closed and replaced on every change
}

type fakeStatus struct {
	kilnv1.UnimplementedStatusServiceServer
	f *farm
}

type fakeCompile struct {
	kilnv1.UnimplementedCompileServiceServer
	f *farm
}

// Well-known builds of the fake farm.
const (
	buildOK       = 101 // hello, succeeded on alice-box after a lost attempt on carol-old
	buildFailed   = 102 // hello, failed on s390x (emulated)
	buildRunning  = 103 // libfoo, running on alice-box's s390x target; its log grows on demand
	buildQueued   = 104 // libfoo, queued for ppc64 big-endian nobody has
	buildCorrupt  = 105 // hello, succeeded, but its blob is corrupt (DATA_LOSS)
	fillerFirst   = 1   // builds 1..fillerCount are older filler builds
	fillerCount   = 20
	artifactBytes = 300 << 10
)

var (
	// t0 is the fake farm's "now"; the handler's clock is pinned to it.
	t0       = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	okCommit = "3f2a9c1d5e7b8a6f4c3d2e1f0a9b8c7d6e5f4a3b"
)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }

func x86System() *kilnv1.SystemInfo {
	return &kilnv1.SystemInfo{
		Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", CharBit: 8,
		SizeofShort: 2, SizeofInt: 4, SizeofLong: 8, SizeofLongLong: 8, SizeofPointer: 8,
		Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0",
		Tools: map[string]string{"make": "4.3", "autoconf": "2.71", "git": "2.39.5"},
		Cpus:  2, MemoryBytes: 8 << 30,
	}
}

func s390xSystem() *kilnv1.SystemInfo {
	return &kilnv1.SystemInfo{
		Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", CharBit: 8,
		SizeofShort: 2, SizeofInt: 4, SizeofLong: 8, SizeofLongLong: 8, SizeofPointer: 8,
		Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0",
		Tools: map[string]string{"make": "4.3"}, Cpus: 2, MemoryBytes: 8 << 30, Emulated: true,
		CharSigned: proto.Bool(false), AlignLongLong: 8, AlignDouble: 8, AlignPointer: 8,
		SizeofLongDouble: 16, SizeofSizeT: 8, SizeofWcharT: 4, PageSize: 4096,
	}
}

// newFarm builds the fake farm's data.
func newFarm() *farm {
	f := &farm{
		builds:    map[uint64]*kilnv1.Build{},
		logs:      map[uint64]*fakeLog{},
		artifacts: map[uint64][]byte{},
		dataLoss:  map[uint64]bool{},
	}
	f.overview = &kilnv1.GetOverviewResponse{
		ConnectedBuildServers: 2, ConnectedTargets: 3,
		BuildsByState: map[string]uint64{"queued": 1, "running": 1, "succeeded": 12, "failed": 9, "cancelled": 2},
		QueueLength:   1, OldestQueuedAt: ts(-95 * time.Second),
		CacheArtifacts: 14, CacheBytes: 123456789, CacheHits: 30, CacheMisses: 10,
		WaitingRequests: 3, StartedAt: ts(-26 * time.Hour), Version: "v0.1.0-test",
	}
	f.servers = []*kilnv1.BuildServerStatus{
		{
			Name: "alice-box", Connected: true, Slots: 2, PublicKey: []byte("0123456789abcdef0123456789abcdef"),
			Targets: []*kilnv1.Target{
				{Id: "native", System: x86System()},
				{Id: "cross:s390x-linux-gnu", System: s390xSystem()},
			},
			RunningBuildIds: []uint64{buildRunning}, LastSeen: ts(-3 * time.Second),
			BuildsSucceeded: 11, BuildsFailed: 4,
			Policy: &kilnv1.BuildServerPolicy{AllowedProjects: []string{"hello", "libfoo"}, MaxBuildSeconds: 3600},
		},
		{
			Name: "bob-unsafe", Connected: true, Slots: 1, Unsandboxed: true, Draining: true,
			Targets: []*kilnv1.Target{{Id: "musl", System: &kilnv1.SystemInfo{Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", CharBit: 8, Libc: "musl", LibcVersion: "1.2.3", Compiler: "gcc", CompilerVersion: "12.2.0", Cpus: 4, MemoryBytes: 16 << 30}}},
			RejectedTargets: []*kilnv1.RejectedTarget{
				{TargetId: "cross:nonexistent-linux-gnu", Reason: `compiling the probe: exec: "nonexistent-linux-gnu-gcc": <not found>`},
			},
			LastSeen: ts(-7 * time.Second), BuildsSucceeded: 1, BuildsFailed: 5,
			PutAsideUntil: ts(4 * time.Minute), PutAsideReason: "3 attempts lost in a row; the last: lease lapsed", ConsecutiveLosses: 3, AttemptsLost: 7,
			Operator: "bobco", DisputesLost: 1, Marked: "its result of build 101 lost a dispute that alice-box, dave-box settled",
			Policy: &kilnv1.BuildServerPolicy{IdleOnly: true, AllowedOptions: map[string]*kilnv1.OptionValues{"opt": {Values: []string{"-O0", "-O2"}}}},
		},
		{
			Name: "carol-old", Connected: false, Revoked: true,
			Targets:  []*kilnv1.Target{{Id: "native", System: x86System()}},
			LastSeen: ts(-50 * time.Hour), BuildsFailed: 1,
		},
	}
	art := make([]byte, artifactBytes)
	for i := range art {
		art[i] = byte(i*7 + i/251)
	}
	sum := sha256.Sum256(art)
	artifact := &kilnv1.Artifact{Sha256: hex.EncodeToString(sum[:]), Size: uint64(len(art)), Files: []string{"bin/hello", "share/doc/hello/README"}}

	f.add(&kilnv1.Build{
		Id: buildOK, Project: "hello", Revision: "v1.2", Commit: okCommit,
		Options: map[string]string{"opt": "-O2", "debug": "off"}, Constraints: &kilnv1.PlatformConstraints{Arch: "x86_64", Libc: "glibc"},
		State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED, CreatedAt: ts(-10 * time.Minute), StartedAt: ts(-9 * time.Minute), FinishedAt: ts(-8 * time.Minute),
		Attempts: []*kilnv1.Attempt{
			{Id: 7, BuildServer: "carol-old", TargetId: "native", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST, StartedAt: ts(-9*time.Minute - 30*time.Second), FinishedAt: ts(-9 * time.Minute), Reason: "lease expired"},
			{Id: 8, BuildServer: "alice-box", TargetId: "native", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED, StartedAt: ts(-9 * time.Minute), FinishedAt: ts(-8 * time.Minute),
				CompilerCache: &kilnv1.CompilerCacheStats{Hits: 30, Misses: 10, Uncacheable: 3}},
		},
		Platform: x86System(), Artifact: artifact, Waiters: 2, CacheKey: "c4c4e1b2d3", Recipe: "cmake — found CMakeLists.txt",
		Verification: kilnv1.Verification_VERIFICATION_VERIFIED, Quorum: 2, AgreeingBuildServers: []string{"alice-box", "dave-box"},
		Replicas: []*kilnv1.Replica{
			{AttemptId: 8, BuildServer: "alice-box", Operator: "alice", Artifact: artifact},
			{AttemptId: 12, BuildServer: "bob-unsafe", Operator: "bobco", Artifact: &kilnv1.Artifact{Sha256: "bad0"}, Discounted: "lost the dispute: 2 operators agree on another result"},
			{AttemptId: 13, BuildServer: "dave-box", Operator: "dave", Artifact: artifact},
		},
		DifferingFiles: []string{"bin/hello"},
		Dependencies:   []*kilnv1.BuildDependency{{Project: "zlib", BuildId: 97, Artifact: &kilnv1.Artifact{Sha256: "5eed", Size: 10}}},
		Provenance: []*kilnv1.LogEntryRef{
			{Index: 40, Kind: "statement", Signer: "alice-box", Sha256: "57a7e0", AttemptId: 8},
			{Index: 41, Kind: "summary", Signer: "metaserver", Sha256: "5a33a7"},
		},
	}, "configure: ok\nmake: building hello\nmake check: 3 tests passed\n", true)
	f.artifacts[buildOK] = art

	f.add(&kilnv1.Build{
		Id: buildFailed, Project: "hello", Revision: "main", Commit: "aa11bb22cc33dd44ee55ff6677889900aabbccdd",
		Constraints: &kilnv1.PlatformConstraints{Arch: "s390x", Endian: "big"},
		State:       kilnv1.BuildState_BUILD_STATE_FAILED, CreatedAt: ts(-20 * time.Minute), StartedAt: ts(-19 * time.Minute), FinishedAt: ts(-17 * time.Minute),
		Attempts: []*kilnv1.Attempt{{Id: 9, BuildServer: "alice-box", TargetId: "cross:s390x-linux-gnu", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED,
			Phase: kilnv1.Phase_PHASE_CHECKING, StartedAt: ts(-19 * time.Minute), FinishedAt: ts(-17 * time.Minute), Reason: "make exited with status 2"}},
		Platform: s390xSystem(), Failure: "make check exited with status 2", FailingStep: "make check", Waiters: 1,
	}, "make check\ntest_endian: FAIL <expected little>\n", true)

	f.add(&kilnv1.Build{
		Id: buildRunning, Project: "libfoo", Revision: "main", Commit: "0123456789abcdef0123456789abcdef01234567",
		Constraints: &kilnv1.PlatformConstraints{Arch: "s390x"},
		State:       kilnv1.BuildState_BUILD_STATE_RUNNING, CreatedAt: ts(-2 * time.Minute), StartedAt: ts(-90 * time.Second),
		Attempts: []*kilnv1.Attempt{{Id: 10, BuildServer: "alice-box", TargetId: "cross:s390x-linux-gnu", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_RUNNING,
			Phase: kilnv1.Phase_PHASE_BUILDING, StartedAt: ts(-90 * time.Second)}},
		Platform: s390xSystem(), Waiters: 1,
	}, "", false)

	f.add(&kilnv1.Build{
		Id: buildQueued, Project: "libfoo", Revision: "v2..v3", Commit: "fedcba9876543210fedcba9876543210fedcba98",
		Constraints: &kilnv1.PlatformConstraints{Arch: "ppc64", Endian: "big"},
		State:       kilnv1.BuildState_BUILD_STATE_QUEUED, CreatedAt: ts(-95 * time.Second),
		WaitingReasons: []string{"arch=ppc64: 3 of 3 connected targets differ", "endian=big: 2 of 3 connected targets differ"},
		QueuePosition:  1, Waiters: 1,
	}, "", false)

	f.add(&kilnv1.Build{
		Id: buildCorrupt, Project: "hello", Revision: "v1.1", Commit: "9999999999999999999999999999999999999999",
		State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED, CreatedAt: ts(-5 * time.Minute), StartedAt: ts(-4 * time.Minute), FinishedAt: ts(-3 * time.Minute),
		Attempts: []*kilnv1.Attempt{{Id: 11, BuildServer: "alice-box", TargetId: "native", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED,
			StartedAt: ts(-4 * time.Minute), FinishedAt: ts(-3 * time.Minute)}},
		Platform: x86System(), Artifact: proto.Clone(artifact).(*kilnv1.Artifact), Verification: kilnv1.Verification_VERIFICATION_VERIFIED,
	}, "ok\n", true)
	f.artifacts[buildCorrupt] = art
	f.dataLoss[buildCorrupt] = true

	for i := uint64(fillerFirst); i < fillerFirst+fillerCount; i++ {
		st := kilnv1.BuildState_BUILD_STATE_SUCCEEDED
		if i%3 == 0 {
			st = kilnv1.BuildState_BUILD_STATE_FAILED
		}
		f.add(&kilnv1.Build{
			Id: i, Project: "filler", Revision: "r" + strconv.FormatUint(i, 10), Commit: "1111111111111111111111111111111111111111",
			State: st, CreatedAt: ts(-time.Duration(100-i) * time.Hour), StartedAt: ts(-time.Duration(100-i) * time.Hour),
			FinishedAt: ts(-time.Duration(100-i)*time.Hour + time.Minute), Platform: x86System(),
		}, "filler\n", true)
	}
	return f
}

func (f *farm) add(b *kilnv1.Build, log string, final bool) {
	f.builds[b.GetId()] = b
	b.LogSize = uint64(len(log))
	f.logs[b.GetId()] = &fakeLog{data: []byte(log), final: final, changed: make(chan struct{})}
}

// appendLog adds text to build id's log and wakes followers.
func (f *farm) appendLog(id uint64, text string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.logs[id]
	l.data = append(l.data, text...)
	f.builds[id].LogSize = uint64(len(l.data))
	close(l.changed)
	l.changed = make(chan struct{})
}

// finish makes build id final in state st and ends its log.
func (f *farm) finish(id uint64, st kilnv1.BuildState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.builds[id]
	b.State, b.FinishedAt = st, ts(0)
	l := f.logs[id]
	l.final = true
	close(l.changed)
	l.changed = make(chan struct{})
}

func (s *fakeStatus) GetOverview(context.Context, *kilnv1.GetOverviewRequest) (*kilnv1.GetOverviewResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	return proto.Clone(s.f.overview).(*kilnv1.GetOverviewResponse), nil
}

func (s *fakeStatus) ListBuildServers(context.Context, *kilnv1.ListBuildServersRequest) (*kilnv1.ListBuildServersResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	resp := &kilnv1.ListBuildServersResponse{}
	for _, bs := range s.f.servers {
		resp.BuildServers = append(resp.BuildServers, proto.Clone(bs).(*kilnv1.BuildServerStatus))
	}
	return resp, nil
}

func (s *fakeStatus) ListPins(_ context.Context, req *kilnv1.ListPinsRequest) (*kilnv1.ListPinsResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	resp := &kilnv1.ListPinsResponse{}
	for _, p := range s.f.pins {
		if req.GetProject() == "" || p.GetProject() == req.GetProject() {
			resp.Pins = append(resp.Pins, proto.Clone(p).(*kilnv1.PinStatus))
		}
	}
	return resp, nil
}

func (s *fakeStatus) GetHistory(_ context.Context, req *kilnv1.GetHistoryRequest) (*kilnv1.GetHistoryResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	resp := &kilnv1.GetHistoryResponse{IntervalSeconds: 60}
	for _, sm := range s.f.samples {
		if req.GetSince() == nil || !sm.GetAt().AsTime().Before(req.GetSince().AsTime()) {
			resp.Samples = append(resp.Samples, sm)
		}
	}
	return resp, nil
}

// ListBuilds filters like the metaserver: newest (highest id) first, the
// page token is the index of the page's first build.
func (s *fakeStatus) ListBuilds(_ context.Context, req *kilnv1.ListBuildsRequest) (*kilnv1.ListBuildsResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	var ids []uint64
	for id, b := range s.f.builds {
		// Platform fields match the built platform, else the pinned one.
		value := func(field string) string {
			if b.GetPlatform() != nil {
				return platform.Value(b.GetPlatform(), field)
			}
			return platform.Get(b.GetConstraints(), field)
		}
		match := (req.GetState() == 0 || b.GetState() == req.GetState()) &&
			(req.GetProject() == "" || b.GetProject() == req.GetProject())
		for _, pf := range platform.Registry {
			if want := pf.ListFilter(req); want != "" && value(pf.Name) != want {
				match = false
			}
		}
		if match {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	size := int(req.GetPageSize())
	if size == 0 {
		size = 50
	}
	start := 0
	if tok := req.GetPageToken(); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 || n > len(ids) {
			return nil, status.Errorf(codes.InvalidArgument, "bad page token %q", tok)
		}
		start = n
	}
	end := min(start+size, len(ids))
	resp := &kilnv1.ListBuildsResponse{}
	for _, id := range ids[start:end] {
		resp.Builds = append(resp.Builds, proto.Clone(s.f.builds[id]).(*kilnv1.Build))
	}
	if end < len(ids) {
		resp.NextPageToken = strconv.Itoa(end)
	}
	return resp, nil
}

func (c *fakeCompile) GetBuild(_ context.Context, req *kilnv1.GetBuildRequest) (*kilnv1.GetBuildResponse, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	b, ok := c.f.builds[req.GetBuildId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "build %d not found", req.GetBuildId())
	}
	return &kilnv1.GetBuildResponse{Build: proto.Clone(b).(*kilnv1.Build)}, nil
}

func (c *fakeCompile) GetLog(req *kilnv1.GetLogRequest, stream grpc.ServerStreamingServer[kilnv1.GetLogResponse]) error {
	c.f.mu.Lock()
	l, ok := c.f.logs[req.GetBuildId()]
	c.f.mu.Unlock()
	if !ok {
		return status.Errorf(codes.NotFound, "build %d not found", req.GetBuildId())
	}
	off := req.GetOffset()
	for {
		c.f.mu.Lock()
		var data []byte
		if off < uint64(len(l.data)) {
			data = slices.Clone(l.data[off:])
		}
		final, changed, chunk := l.final, l.changed, c.f.logChunk
		c.f.mu.Unlock()
		for len(data) > 0 {
			n := len(data)
			if chunk > 0 {
				n = min(n, chunk)
			}
			if err := stream.Send(&kilnv1.GetLogResponse{Offset: off, Data: data[:n]}); err != nil {
				return err
			}
			off += uint64(n)
			data = data[n:]
		}
		if final || !req.GetFollow() {
			return nil
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (c *fakeCompile) DownloadArtifact(req *kilnv1.DownloadArtifactRequest, stream grpc.ServerStreamingServer[kilnv1.DownloadArtifactResponse]) error {
	c.f.mu.Lock()
	id := req.GetBuildId()
	b, ok := c.f.builds[id]
	data, loss := c.f.artifacts[id], c.f.dataLoss[id]
	var art *kilnv1.Artifact
	if ok {
		art = proto.Clone(b.GetArtifact()).(*kilnv1.Artifact)
	}
	c.f.mu.Unlock()
	if !ok || data == nil {
		return status.Errorf(codes.NotFound, "no artifact for build %d", id)
	}
	if err := stream.Send(&kilnv1.DownloadArtifactResponse{Msg: &kilnv1.DownloadArtifactResponse_Header{Header: &kilnv1.DownloadHeader{BuildId: id, Artifact: art, Platform: b.GetPlatform()}}}); err != nil {
		return err
	}
	const chunk = 64 << 10
	for off := 0; off < len(data); off += chunk {
		if loss && off >= len(data)/2 {
			return status.Error(codes.DataLoss, "blob failed sha256 verification")
		}
		end := min(off+chunk, len(data))
		if err := stream.Send(&kilnv1.DownloadArtifactResponse{Msg: &kilnv1.DownloadArtifactResponse_Data{Data: data[off:end]}}); err != nil {
			return err
		}
	}
	return nil
}

// startFarm serves f on a loopback gRPC listener and webstatus's handler
// over it on an httptest server; both stop at the end of the test.
func startFarm(t testing.TB, f *farm) *httptest.Server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	kilnv1.RegisterStatusServiceServer(gs, &fakeStatus{f: f})
	kilnv1.RegisterCompileServiceServer(gs, &fakeCompile{f: f})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return startWeb(t, lis.Addr().String())
}

// startWeb serves webstatus's handler for the metaserver at addr.
func startWeb(t testing.TB, addr string) *httptest.Server {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc client: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	// RPCTimeout is only a safety net against a hung fake: no test waits
	// for it to fire. A page's calls share one bound, and the biggest
	// (the overview of 50,000 samples) takes about a second of CPU under
	// -race, many times that on a slow, loaded machine.
	h := web.NewHandler(kilnv1.NewStatusServiceClient(cc), kilnv1.NewCompileServiceClient(cc), web.Options{
		Now: func() time.Time { return t0 }, RPCTimeout: time.Minute,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	srv := httptest.NewUnstartedServer(h)
	// Requests end when the test does, so Close never waits on a followed log.
	ctx, cancel := context.WithCancel(context.Background())
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(cancel)
	return srv
}

package server

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// builtOn returns a finished build that ran on the given platform.
func builtOn(id uint64, project, arch, endian, model, libc string) *store.Build {
	b := queuedBuild(id, project, 60)
	b.Build.State = kilnv1.BuildState_BUILD_STATE_SUCCEEDED
	b.Build.Platform = &kilnv1.SystemInfo{Os: "linux", Arch: arch, Endian: endian, DataModel: model, Libc: libc}
	return b
}

func TestListBuildsFiltersByEveryPlatformField(t *testing.T) {
	pinned := queuedBuild(5, "hello", 60)
	pinned.Build.Constraints = &kilnv1.PlatformConstraints{Endian: "big", DataModel: "ILP32"}
	ts := startTestServer(t, Config{},
		builtOn(1, "hello", "x86_64", "little", "LP64", "glibc"),
		builtOn(2, "hello", "s390x", "big", "LP64", "glibc"),
		builtOn(3, "libfoo", "i686", "little", "ILP32", "glibc"),
		builtOn(4, "hello", "x86_64", "little", "LP64", "musl"),
		pinned,
	)
	c := kilnv1.NewStatusServiceClient(ts.conn)
	tests := []struct {
		name string
		req  *kilnv1.ListBuildsRequest
		want []uint64
	}{
		{name: "no filter lists every build newest first", req: &kilnv1.ListBuildsRequest{}, want: []uint64{5, 4, 3, 2, 1}},
		{name: "endian big matches the built s390x and the pinned queued build", req: &kilnv1.ListBuildsRequest{Endian: "big"}, want: []uint64{5, 2}},
		{name: "the data model matches built and pinned", req: &kilnv1.ListBuildsRequest{DataModel: "ILP32"}, want: []uint64{5, 3}},
		{name: "libc musl matches the musl build alone", req: &kilnv1.ListBuildsRequest{Libc: "musl"}, want: []uint64{4}},
		{name: "os linux matches the dispatched builds", req: &kilnv1.ListBuildsRequest{Os: "linux"}, want: []uint64{4, 3, 2, 1}},
		{name: "spellings are canonicalized like constraints", req: &kilnv1.ListBuildsRequest{Arch: "amd64", Endian: "LITTLE", DataModel: "lp64", Libc: "GLIBC"}, want: []uint64{1}},
		{name: "any frees a field", req: &kilnv1.ListBuildsRequest{Endian: "any", Project: "libfoo"}, want: []uint64{3}},
		{name: "filters combine with state and project", req: &kilnv1.ListBuildsRequest{State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED, Project: "hello", Endian: "little", Libc: "glibc"}, want: []uint64{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.ListBuilds(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, b := range resp.GetBuilds() {
				got = append(got, b.GetId())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("ListBuilds(%v) = %v, want %v", tt.req, got, tt.want)
			}
		})
	}
	for _, req := range []*kilnv1.ListBuildsRequest{{Endian: "middle"}, {DataModel: "LP48"}, {Libc: "g libc"}} {
		if _, err := c.ListBuilds(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ListBuilds(%v): %v, want InvalidArgument", req, err)
		}
	}
}

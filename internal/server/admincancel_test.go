package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestAnAdministratorCancelsAQueuedBuildOnceAndARunningOneOnItsBuildServer(t *testing.T) {
	ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 60), queuedBuild(2, "other", 60))
	admin := &Admin{Store: ts.st, Cancel: ts.srv.AdminCancel}
	ctx := context.Background()

	resp, err := admin.CancelBuild(ctx, &kilnv1.CancelBuildRequest{BuildId: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b := resp.GetBuild(); b.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED || b.GetFailure() != "cancelled by an administrator" {
		t.Fatalf("cancelled build: state %v, failure %q", b.GetState(), b.GetFailure())
	}
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED {
		t.Fatalf("GetBuild after cancel: state %v", b.GetState())
	}
	_, err = admin.CancelBuild(ctx, &kilnv1.CancelBuildRequest{BuildId: 1})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "already cancelled") {
		t.Fatalf("second cancel: %v, want FailedPrecondition saying it is already cancelled", err)
	}
	if _, err := admin.CancelBuild(ctx, &kilnv1.CancelBuildRequest{BuildId: 99}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown build: %v, want NotFound", err)
	}

	ss := ts.connect("bs", nil)
	a := ss.assignment()
	if a.GetBuildId() != 2 {
		t.Fatalf("assigned build %d, want 2", a.GetBuildId())
	}
	resp, err = admin.CancelBuild(ctx, &kilnv1.CancelBuildRequest{BuildId: 2, Reason: "runaway build"})
	if err != nil {
		t.Fatal(err)
	}
	if b := resp.GetBuild(); b.GetState() != kilnv1.BuildState_BUILD_STATE_CANCELLED || b.GetFailure() != "runaway build" {
		t.Fatalf("running build cancelled: state %v, failure %q", b.GetState(), b.GetFailure())
	}
	msg := ss.next(5 * time.Second)
	if c := msg.GetCancel(); c == nil || c.GetAttemptId() != a.GetAttemptId() || c.GetReason() != "runaway build" {
		t.Fatalf("build server got %v, want a cancel of attempt %d", msg, a.GetAttemptId())
	}
}

func TestCancelBuildRefusesWithoutARunningMetaserverAndBadRequests(t *testing.T) {
	ts := startTestServer(t, Config{}, queuedBuild(1, "hello", 60))
	tests := []struct {
		name  string
		admin *Admin
		req   *kilnv1.CancelBuildRequest
		want  codes.Code
	}{
		{name: "without the running metaserver it fails its precondition", admin: &Admin{Store: ts.st},
			req: &kilnv1.CancelBuildRequest{BuildId: 1}, want: codes.FailedPrecondition},
		{name: "build id 0 is invalid", admin: &Admin{Store: ts.st, Cancel: ts.srv.AdminCancel},
			req: &kilnv1.CancelBuildRequest{}, want: codes.InvalidArgument},
		{name: "an overlong reason is invalid", admin: &Admin{Store: ts.st, Cancel: ts.srv.AdminCancel},
			req: &kilnv1.CancelBuildRequest{BuildId: 1, Reason: strings.Repeat("x", maxReasonBytes+1)}, want: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.admin.CancelBuild(context.Background(), tt.req); status.Code(err) != tt.want {
				t.Fatalf("CancelBuild: %v, want %v", err, tt.want)
			}
		})
	}
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED {
		t.Fatalf("a refused cancel changed the build: %v", b.GetState())
	}
}

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

func TestListBuildServersShowsTheTargetsWhoseProbeFailed(t *testing.T) {
	ts := startTestServer(t, Config{})
	rejected := []*kilnv1.RejectedTarget{
		{TargetId: "cross:nonexistent-linux-gnu", Reason: "nonexistent-linux-gnu-gcc: executable file not found in $PATH"},
		{TargetId: "musl", Reason: "musl-gcc: not found"},
	}
	ss := ts.connectHello("volunteer", &kilnv1.Hello{
		Version: "test", Slots: 1,
		Targets:         []*kilnv1.Target{{Id: "native", System: testSystem}},
		RejectedTargets: rejected,
	})
	ts.connect("plain", nil)

	c := kilnv1.NewStatusServiceClient(ts.conn)
	resp, err := c.ListBuildServers(context.Background(), &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*kilnv1.BuildServerStatus{}
	for _, bs := range resp.GetBuildServers() {
		byName[bs.GetName()] = bs
	}
	got := byName["volunteer"].GetRejectedTargets()
	if len(got) != 2 || got[0].GetTargetId() != rejected[0].GetTargetId() || got[0].GetReason() != rejected[0].GetReason() ||
		got[1].GetTargetId() != "musl" {
		t.Errorf("volunteer's rejected targets = %v, want %v", got, rejected)
	}
	if ts := byName["volunteer"].GetTargets(); len(ts) != 1 || ts[0].GetId() != "native" {
		t.Errorf("volunteer's targets = %v, want only native", ts)
	}
	if r := byName["plain"].GetRejectedTargets(); len(r) != 0 {
		t.Errorf("plain reports rejected targets %v, want none", r)
	}

	// They live with the session: once it ends they are no longer shown.
	if err := ss.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := c.ListBuildServers(context.Background(), &kilnv1.ListBuildServersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var vol *kilnv1.BuildServerStatus
		for _, bs := range resp.GetBuildServers() {
			if bs.GetName() == "volunteer" {
				vol = bs
			}
		}
		if !vol.GetConnected() {
			if len(vol.GetRejectedTargets()) != 0 {
				t.Errorf("disconnected volunteer still shows rejected targets %v", vol.GetRejectedTargets())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("volunteer still connected 5s after closing its session")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAHelloOverTheRejectedTargetLimitsIsRefused(t *testing.T) {
	many := make([]*kilnv1.RejectedTarget, maxRejectedTargets+1)
	for i := range many {
		many[i] = &kilnv1.RejectedTarget{TargetId: "cross:x", Reason: "no"}
	}
	tests := []struct {
		name     string
		rejected []*kilnv1.RejectedTarget
	}{
		{"more than 32 entries", many},
		{"a reason longer than 512 bytes", []*kilnv1.RejectedTarget{{TargetId: "musl", Reason: strings.Repeat("x", maxRejectReasonBytes+1)}}},
		{"an entry without a target id", []*kilnv1.RejectedTarget{{Reason: "no"}}},
		{"a target id longer than 128 bytes", []*kilnv1.RejectedTarget{{TargetId: strings.Repeat("x", maxRejectedIDBytes+1)}}},
	}
	ts := startTestServer(t, Config{})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ss := ts.open("bs"+string(rune('a'+i)), &kilnv1.Hello{
				Version: "test", Slots: 1,
				Targets:         []*kilnv1.Target{{Id: "native", System: testSystem}},
				RejectedTargets: tt.rejected,
			})
			select {
			case msg, ok := <-ss.msgs:
				if ok {
					t.Fatalf("got %v, want the session refused", msg)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no answer within 5s")
			}
			if status.Code(ss.end) != codes.InvalidArgument {
				t.Errorf("session ended with %v, want InvalidArgument", ss.end)
			}
		})
	}
	// At the limits exactly, the Hello is accepted.
	atLimit := many[:maxRejectedTargets]
	atLimit[0] = &kilnv1.RejectedTarget{TargetId: strings.Repeat("x", maxRejectedIDBytes), Reason: strings.Repeat("x", maxRejectReasonBytes)}
	ts.connectHello("atlimit", &kilnv1.Hello{
		Version: "test", Slots: 1,
		Targets:         []*kilnv1.Target{{Id: "native", System: testSystem}},
		RejectedTargets: atLimit,
	})
}

package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestServer_GetHistory_SamplesStayBounded(t *testing.T) {
	ts := startSeededServer(t, Config{SampleInterval: 5 * time.Millisecond, SampleKeep: 4}, func(store.Tx) error { return nil })
	client := kilnv1.NewStatusServiceClient(ts.conn)
	// Many more samples than kept are taken; the store keeps 4.
	deadline := time.Now().Add(10 * time.Second)
	var resp *kilnv1.GetHistoryResponse
	var first time.Time
	for {
		var err error
		resp, err = client.GetHistory(context.Background(), &kilnv1.GetHistoryRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.GetSamples()); n > 4 {
			t.Fatalf("%d samples kept, want at most 4", n)
		}
		if len(resp.GetSamples()) == 4 {
			oldest := resp.GetSamples()[0].GetAt().AsTime()
			if first.IsZero() {
				first = oldest
			} else if oldest.After(first) {
				break // the window moved on: older samples were deleted
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sample window did not move: %v", resp)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := 1; i < len(resp.GetSamples()); i++ {
		if !resp.GetSamples()[i].GetAt().AsTime().After(resp.GetSamples()[i-1].GetAt().AsTime()) {
			t.Fatalf("samples out of order: %v", resp.GetSamples())
		}
	}
	if resp.GetIntervalSeconds() != 1 {
		t.Errorf("interval %d s, want 1 (rounded up)", resp.GetIntervalSeconds())
	}
	later, err := client.GetHistory(context.Background(), &kilnv1.GetHistoryRequest{Since: timestamppb.New(time.Now().Add(time.Hour))})
	if err != nil || len(later.GetSamples()) != 0 {
		t.Fatalf("samples from the future: %v %v", later, err)
	}
	_, err = client.GetHistory(context.Background(), &kilnv1.GetHistoryRequest{Since: &timestamppb.Timestamp{Seconds: 1, Nanos: -5}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an invalid since: %v, want InvalidArgument", err)
	}
}

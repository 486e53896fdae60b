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
	ts := startSeededServer(t, withFakeClock(Config{SampleInterval: 5 * time.Millisecond, SampleKeep: 4}), func(store.Tx) error { return nil })
	client := kilnv1.NewStatusServiceClient(ts.conn)
	// One sample at start and one a tick, six in all; the store keeps
	// the newest 4.
	start := ts.fake().Now()
	for range 5 {
		ts.sampleAt(5 * time.Millisecond)
	}
	resp, err := client.GetHistory(context.Background(), &kilnv1.GetHistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetSamples()); n != 4 {
		t.Fatalf("%d samples kept, want 4: %v", n, resp.GetSamples())
	}
	if oldest := resp.GetSamples()[0].GetAt().AsTime(); !oldest.Equal(start.Add(10 * time.Millisecond)) {
		t.Fatalf("the oldest sample kept is at start+%s, want start+10ms: the two oldest deleted", oldest.Sub(start))
	}
	for i := 1; i < len(resp.GetSamples()); i++ {
		if !resp.GetSamples()[i].GetAt().AsTime().After(resp.GetSamples()[i-1].GetAt().AsTime()) {
			t.Fatalf("samples out of order: %v", resp.GetSamples())
		}
	}
	if resp.GetIntervalSeconds() != 1 {
		t.Errorf("interval %d s, want 1 (rounded up)", resp.GetIntervalSeconds())
	}
	later, err := client.GetHistory(context.Background(), &kilnv1.GetHistoryRequest{Since: timestamppb.New(ts.fake().Now().Add(time.Hour))})
	if err != nil || len(later.GetSamples()) != 0 {
		t.Fatalf("samples from the future: %v %v", later, err)
	}
	_, err = client.GetHistory(context.Background(), &kilnv1.GetHistoryRequest{Since: &timestamppb.Timestamp{Seconds: 1, Nanos: -5}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an invalid since: %v, want InvalidArgument", err)
	}
}

package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestOneAddressIsLimitedWhateverTheEmailAddresses(t *testing.T) {
	ts := startTestServer(t, Config{RequestsPerMinute: 100, RequestsPerMinutePerAddress: 3})
	c := kilnv1.NewCompileServiceClient(ts.conn)
	submit := func(i int) error {
		_, err := c.Submit(context.Background(), &kilnv1.SubmitRequest{Project: "nosuch", Email: fmt.Sprintf("r%d@example.com", i)})
		return err
	}
	for i := 0; i < 3; i++ {
		// Within the limit the request goes on to be refused for its
		// unknown project.
		if err := submit(i); status.Code(err) != codes.NotFound {
			t.Fatalf("request %d: %v, want NotFound for the unknown project", i+1, err)
		}
	}
	err := submit(3)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "too many requests from address 127.0.0.1") {
		t.Fatalf("fourth request from loopback with a new email: %v, want ResourceExhausted naming the address", err)
	}
}

func TestANegativePerAddressLimitAllowsEverything(t *testing.T) {
	ts := startTestServer(t, Config{RequestsPerMinute: 1000, RequestsPerMinutePerAddress: -1})
	c := kilnv1.NewCompileServiceClient(ts.conn)
	for i := 0; i < 400; i++ {
		_, err := c.Submit(context.Background(), &kilnv1.SubmitRequest{Project: "nosuch", Email: fmt.Sprintf("r%d@example.com", i)})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("request %d: %v, want NotFound (no address limit)", i+1, err)
		}
	}
}

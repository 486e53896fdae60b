package server

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestServer_ListPins_ListsAProjectsPinsWithTheirBuilds(t *testing.T) {
	ts := startSeededServer(t, Config{}, func(tx store.Tx) error {
		if err := purgeSeed(tx); err != nil {
			return err
		}
		other := succeededBuild(7, "good", []byte("other"))
		other.GetBuild().Project = "other"
		if err := tx.PutBuild(other); err != nil {
			return err
		}
		for _, p := range []*store.Pin{{Name: "stable", BuildId: 3}, {Name: "elsewhere", BuildId: 7}, {Name: "purged", BuildId: 99}} {
			if err := tx.CreatePin(p); err != nil {
				return err
			}
		}
		return nil
	})
	// Build 1 ("release") is withdrawn by the purge.
	admin := &Admin{Store: ts.st, DataDir: ts.srv.cfg.DataDir, OnRevoke: ts.srv.Disconnect, Purge: ts.srv.Purge}
	if _, err := admin.RevokeBuildServer(context.Background(), &kilnv1.RevokeBuildServerRequest{Name: "bad", Purge: true}); err != nil {
		t.Fatal(err)
	}
	client := kilnv1.NewStatusServiceClient(ts.conn)
	resp, err := client.ListPins(context.Background(), &kilnv1.ListPinsRequest{Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range resp.GetPins() {
		got = append(got, p.GetName())
		if p.GetProject() != "p" || p.GetPlatform() == nil || p.GetSize() == 0 {
			t.Errorf("pin %v lacks its build's project, platform or size", p)
		}
	}
	if strings.Join(got, " ") != "release stable" || resp.GetTruncated() {
		t.Fatalf("pins %v (truncated %v), want release stable", got, resp.GetTruncated())
	}
	if w := resp.GetPins()[0].GetWithdrawn(); !strings.Contains(w, "revoked") {
		t.Errorf("withdrawn pin says %q", w)
	}
	all, err := client.ListPins(context.Background(), &kilnv1.ListPinsRequest{})
	if err != nil || len(all.GetPins()) != 3 {
		t.Fatalf("every pin: %v %v, want 3 (the purged build's pin left out)", all, err)
	}
	_, err = client.ListPins(context.Background(), &kilnv1.ListPinsRequest{Project: strings.Repeat("p", 300)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an overlong project: %v, want InvalidArgument", err)
	}
}

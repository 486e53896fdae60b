package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// purgeFixture is a store as a farm leaves it: build servers bad (to be
// revoked), good and gone (revoked earlier), and succeeded builds:
//
//	1  bad   sha A   pinned "release", only bad built A  -> withdrawn
//	2  bad   sha B                                       -> kept (good built B in 3)
//	3  good  sha B                                       -> untouched
//	4  bad   sha C                                       -> withdrawn (gone is revoked)
//	5  gone  sha C                                       -> untouched
//	6  bad   sha D   entry evicted, blob gone            -> withdrawn (no entry)
var purgeData = map[string][]byte{"A": []byte("artifact A"), "B": []byte("artifact B"), "C": []byte("artifact C"), "D": []byte("artifact D")}

func purgeSeed(tx store.Tx) error {
	for _, bs := range []*store.BuildServer{{Name: "bad"}, {Name: "good"}, {Name: "gone", Revoked: true}} {
		bs.TokenHash = "hash-" + bs.GetName()
		if err := tx.CreateBuildServer(bs); err != nil {
			return err
		}
	}
	for _, b := range []struct {
		id           uint64
		server, data string
		pins         []string
		evicted      bool
	}{{1, "bad", "A", []string{"release"}, false}, {2, "bad", "B", nil, false}, {3, "good", "B", nil, false},
		{4, "bad", "C", nil, false}, {5, "gone", "C", nil, false}, {6, "bad", "D", nil, true}} {
		rec := succeededBuild(b.id, b.server, purgeData[b.data])
		if err := tx.PutBuild(rec); err != nil {
			return err
		}
		if b.evicted {
			continue
		}
		bb := rec.GetBuild()
		if err := tx.PutArtifact(&store.Artifact{CacheKey: bb.GetCacheKey(), SourceKey: rec.GetSourceKey(), BuildId: bb.GetId(),
			Artifact: bb.GetArtifact(), Platform: bb.GetPlatform(), Pins: b.pins, CreatedAt: bb.GetFinishedAt(), LastUsed: bb.GetFinishedAt()}); err != nil {
			return err
		}
		if err := tx.PutBlob(bb.GetArtifact().GetSha256(), purgeData[b.data]); err != nil {
			return err
		}
		for _, p := range b.pins {
			if err := tx.CreatePin(&store.Pin{Name: p, BuildId: bb.GetId(), Sha256: bb.GetArtifact().GetSha256(), CacheKey: bb.GetCacheKey()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// succeededBuild is build id, succeeded on server with data as its artifact.
func succeededBuild(id uint64, server string, data []byte) *store.Build {
	rec := queuedBuild(id, "p", 60)
	b := rec.GetBuild()
	b.State = kilnv1.BuildState_BUILD_STATE_SUCCEEDED
	b.Verification = kilnv1.Verification_VERIFICATION_VERIFIED
	b.Platform = testSystem
	b.FinishedAt = timestamppb.Now()
	b.Attempts = []*kilnv1.Attempt{
		{Id: attemptID(id, 1), BuildServer: "someone-else", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST},
		{Id: attemptID(id, 2), BuildServer: server, Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED},
	}
	b.Artifact = &kilnv1.Artifact{Sha256: digest(data), Size: uint64(len(data))}
	b.CacheKey = "key-" + string(rune('0'+id))
	return rec
}

func buildIDs(ws []*kilnv1.WithdrawnArtifact) []uint64 {
	var ids []uint64
	for _, w := range ws {
		ids = append(ids, w.GetBuildId())
	}
	slices.Sort(ids)
	return ids
}

// expectPurged checks the store after bad's purge (see purgeFixture).
func expectPurged(t *testing.T, st store.Store, resp *kilnv1.RevokeBuildServerResponse) {
	t.Helper()
	if got := buildIDs(resp.GetWithdrawn()); !slices.Equal(got, []uint64{1, 4, 6}) {
		t.Errorf("withdrawn builds %v, want [1 4 6]", got)
	}
	if got := buildIDs(resp.GetKept()); !slices.Equal(got, []uint64{2}) || !slices.Equal(resp.GetKept()[0].GetAlsoBuiltBy(), []string{"good"}) {
		t.Errorf("kept %v (%v), want build 2 also built by good", got, resp.GetKept())
	}
	for _, w := range resp.GetWithdrawn() {
		if w.GetBuildId() == 1 && !slices.Equal(w.GetPins(), []string{"release"}) {
			t.Errorf("build 1 withdrawn with pins %v, want [release]", w.GetPins())
		}
	}
	err := st.View(func(tx store.Tx) error {
		bs, err := tx.BuildServer("bad")
		if err != nil || !bs.GetRevoked() {
			t.Errorf("bad: %v, revoked=%v; want revoked", err, bs.GetRevoked())
		}
		for id, withdrawn := range map[uint64]bool{1: true, 2: false, 3: false, 4: true, 5: false, 6: true} {
			rec, err := tx.Build(id)
			if err != nil {
				return err
			}
			b := rec.GetBuild()
			if got := b.GetWithdrawn() != ""; got != withdrawn {
				t.Errorf("build %d withdrawn=%v (%q), want %v", id, got, b.GetWithdrawn(), withdrawn)
			}
			if withdrawn && (b.GetWithdrawn() != "its build server's credential was revoked (bad)" || b.GetWithdrawnAt() == nil) {
				t.Errorf("build %d withdrawn as %q at %v", id, b.GetWithdrawn(), b.GetWithdrawnAt())
			}
			if b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
				t.Errorf("build %d is %s; a withdrawn build stays succeeded", id, b.GetState())
			}
			_, err = tx.Artifact(b.GetCacheKey())
			if cached := err == nil; cached == withdrawn && id != 6 {
				t.Errorf("build %d: cache entry present=%v (%v), want %v", id, cached, err, !withdrawn)
			}
		}
		for name, kept := range map[string]bool{"A": false, "B": true, "C": true} {
			_, err := tx.Blob(digest(purgeData[name]))
			if kept != (err == nil) {
				t.Errorf("blob %s: %v, want kept=%v", name, err, kept)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAdmin_RevokeBuildServer_PurgeWithdrawsWhatItAloneProduced(t *testing.T) {
	ts := startSeededServer(t, Config{}, purgeSeed)
	before := ts.srv.cacheEntries.Load()
	admin := &Admin{Store: ts.st, DataDir: ts.srv.cfg.DataDir, OnRevoke: ts.srv.Disconnect, Purge: ts.srv.Purge}
	resp, err := admin.RevokeBuildServer(context.Background(), &kilnv1.RevokeBuildServerRequest{Name: "bad", Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	expectPurged(t, ts.st, resp)
	if got := ts.srv.cacheEntries.Load(); got != before-2 {
		t.Errorf("cache entries %d after the purge, want %d", got, before-2)
	}

	download := func(req *kilnv1.DownloadArtifactRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := kilnv1.NewCompileServiceClient(ts.conn).DownloadArtifact(ctx, req)
		if err != nil {
			return err
		}
		for i := 0; i < 100; i++ {
			if _, err := st.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
		return errors.New("download did not end")
	}
	err = download(&kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_Pin{Pin: "release"}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `pin "release" names the artifact of build 1, which was withdrawn: its build server's credential was revoked (bad)`) {
		t.Errorf("download by a pin of a withdrawn build: %v; want FAILED_PRECONDITION saying why", err)
	}
	err = download(&kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: 4}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "withdrawn") {
		t.Errorf("download of withdrawn build 4: %v; want FAILED_PRECONDITION", err)
	}
	if err := download(&kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: 2}}); err != nil {
		t.Errorf("download of kept build 2: %v", err)
	}
	_, err = admin.Pin(context.Background(), &kilnv1.PinRequest{Name: "again", BuildId: 1})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "withdrawn") {
		t.Errorf("pinning withdrawn build 1: %v; want FAILED_PRECONDITION", err)
	}

	// A second purge finds nothing more to withdraw and keeps what it kept.
	again, err := admin.RevokeBuildServer(context.Background(), &kilnv1.RevokeBuildServerRequest{Name: "bad", Purge: true})
	if err != nil || len(again.GetWithdrawn()) != 0 || len(again.GetKept()) != 1 {
		t.Errorf("second purge: %v, %v; want nothing withdrawn, build 2 kept", again, err)
	}
}

func TestAdmin_RevokeBuildServer_PurgeWithoutAMetaserver(t *testing.T) {
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "kiln.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(purgeSeed); err != nil {
		t.Fatal(err)
	}
	admin := &Admin{Store: st, DataDir: dir}
	resp, err := admin.RevokeBuildServer(context.Background(), &kilnv1.RevokeBuildServerRequest{Name: "bad", Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	expectPurged(t, st, resp)
}

func TestAdmin_RevokeBuildServer_WithoutPurgeWithdrawsNothing(t *testing.T) {
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "kiln.db"), bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(purgeSeed); err != nil {
		t.Fatal(err)
	}
	admin := &Admin{Store: st, DataDir: dir}
	resp, err := admin.RevokeBuildServer(context.Background(), &kilnv1.RevokeBuildServerRequest{Name: "bad"})
	if err != nil || len(resp.GetWithdrawn())+len(resp.GetKept()) != 0 {
		t.Fatalf("revoke: %v, %v", resp, err)
	}
	err = st.View(func(tx store.Tx) error {
		_, err := tx.Artifact("key-1")
		return err
	})
	if err != nil {
		t.Errorf("build 1's cache entry after a revocation without purge: %v", err)
	}
}

// A result that succeeds on a server after its purge began cannot enter the
// cache: the revoked server's session is closed and its results refused.
func TestServer_Purge_ThenTheSameRequestIsNoCacheHit(t *testing.T) {
	ts := startTestServer(t, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, queuedBuild(1, "p", 60))
	ss := ts.connect("bad", nil)
	a := ss.assignment()
	data := payload(500, 5)
	ss.report(inlineResult(a.GetAttemptId(), data, data))
	if b := ts.build(1); b.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
		t.Fatalf("build 1 is %s, want succeeded", b.GetState())
	}
	admin := &Admin{Store: ts.st, OnRevoke: ts.srv.Disconnect, Purge: ts.srv.Purge}
	resp, err := admin.RevokeBuildServer(context.Background(), &kilnv1.RevokeBuildServerRequest{Name: "bad", Purge: true})
	if err != nil || !slices.Equal(buildIDs(resp.GetWithdrawn()), []uint64{1}) {
		t.Fatalf("purge: %v, %v; want build 1 withdrawn", resp, err)
	}
	err = ts.st.View(func(tx store.Tx) error {
		arts, err := tx.ArtifactsBySource("source-p")
		if len(arts) != 0 {
			t.Errorf("cache entries for the source after the purge: %v", arts)
		}
		if _, err := tx.Blob(digest(data)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("the withdrawn inline artifact: %v, want it deleted", err)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if b := ts.build(1); !strings.Contains(b.GetWithdrawn(), "credential was revoked (bad)") {
		t.Errorf("build 1's view says withdrawn=%q", b.GetWithdrawn())
	}
	if got := ts.srv.cacheEntries.Load(); got != 0 {
		t.Errorf("cache entries %d after the purge, want 0", got)
	}
}

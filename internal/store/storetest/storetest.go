// Package storetest is the behaviour every store.Store implementation must
// show, written once and run against each engine:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, path string) store.Store {
//			s, err := bolt.Open(path, bolt.Options{NoSync: true})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// The suite never looks inside a store: it only calls store.Store and
// store.Tx, and decides with errors.Is on store.ErrNotFound, store.ErrExists
// and store.ErrStop.
package storetest

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// OpenFunc opens the store identified by path, creating it empty the first
// time. Opening the same path after the previous store was closed must show
// everything committed before. A file-based store uses path as its file; a
// server-based one may derive a database or schema name from it. OpenFunc
// fails t itself rather than returning an error.
type OpenFunc func(t *testing.T, path string) store.Store

// Run runs the whole suite as subtests of t, each on a fresh store at a path
// inside its own t.TempDir(). It closes every store it opens.
func Run(t *testing.T, open OpenFunc) {
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"sequences", sequenceCases},
		{"projects", projectCases},
		{"build servers", buildServerCases},
		{"operators", operatorCases},
		{"pins", pinCases},
		{"enrollment tokens", enrollTokenCases},
		{"inline blobs", blobCases},
		{"logs", logCases},
		{"transparency log", tlogCases},
		{"builds", buildCases},
		{"listing builds", listCases},
		{"requests", requestCases},
		{"artifacts", artifactCases},
		{"outbox", outboxCases},
		{"samples", sampleCases},
		{"request groups", requestGroupCases},
		{"transactions", txCases},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, tc := range g.cases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, newHarness(t, open))
				})
			}
		})
	}
}

// testCase is one sentence-named behaviour.
type testCase struct {
	name string
	run  func(t *testing.T, h *harness)
}

// harness holds the store under test and can close and reopen it.
type harness struct {
	t    *testing.T
	open OpenFunc
	path string
	s    store.Store
}

func newHarness(t *testing.T, open OpenFunc) *harness {
	h := &harness{t: t, open: open, path: filepath.Join(t.TempDir(), "kiln.db")}
	h.s = open(t, h.path)
	t.Cleanup(func() {
		if h.s != nil {
			if err := h.s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	return h
}

// reopen closes the store and opens the same path again.
func (h *harness) reopen() {
	h.t.Helper()
	s := h.s
	h.s = nil
	if err := s.Close(); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
	h.s = h.open(h.t, h.path)
}

// update runs fn in Update and fails the test on error.
func (h *harness) update(fn func(store.Tx) error) {
	h.t.Helper()
	if err := h.s.Update(fn); err != nil {
		h.t.Fatalf("Update: %v", err)
	}
}

// view runs fn in View and fails the test on error.
func (h *harness) view(fn func(store.Tx) error) {
	h.t.Helper()
	if err := h.s.View(fn); err != nil {
		h.t.Fatalf("View: %v", err)
	}
}

// must fails the test when err is not nil.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr fails the test unless errors.Is(err, want).
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

// wantEqual fails the test unless got and want are equal messages.
func wantEqual(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// base is a fixed instant the records are stamped from.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(base.Add(d)) }

const (
	queued    = kilnv1.BuildState_BUILD_STATE_QUEUED
	running   = kilnv1.BuildState_BUILD_STATE_RUNNING
	succeeded = kilnv1.BuildState_BUILD_STATE_SUCCEEDED
	failed    = kilnv1.BuildState_BUILD_STATE_FAILED
	errored   = kilnv1.BuildState_BUILD_STATE_ERROR
	cancelled = kilnv1.BuildState_BUILD_STATE_CANCELLED
)

// buildSpec describes a build record for newBuild.
type buildSpec struct {
	id        uint64
	state     kilnv1.BuildState
	project   string
	source    string
	pinArch   string // constraints.arch
	platArch  string // platform.arch; platform is set when non-empty
	options   map[string]string
	createdAt time.Duration
}

func newBuild(s buildSpec) *store.Build {
	if s.project == "" {
		s.project = "hello"
	}
	b := &store.Build{
		Build: &kilnv1.Build{
			Id:          s.id,
			Project:     s.project,
			Revision:    "main",
			Commit:      "0123456789abcdef0123456789abcdef01234567",
			Options:     s.options,
			Constraints: &kilnv1.PlatformConstraints{Arch: s.pinArch, Os: "linux"},
			State:       s.state,
			CreatedAt:   ts(s.createdAt),
		},
		Recipe:    &kilnv1.Recipe{BuildSteps: []string{"make"}},
		SourceKey: s.source,
		GitUrl:    "https://example.invalid/" + s.project + ".git",
	}
	if s.platArch != "" {
		b.Build.Platform = &kilnv1.SystemInfo{Os: "linux", Arch: s.platArch, Endian: "little"}
	}
	return b
}

// withState returns a copy of b in state s.
func withState(b *store.Build, s kilnv1.BuildState) *store.Build {
	c := proto.Clone(b).(*store.Build)
	c.Build.State = s
	return c
}

// buildIDs returns the ids of bs in their order.
func buildIDs(bs []*store.Build) []uint64 {
	ids := make([]uint64, 0, len(bs))
	for _, b := range bs {
		ids = append(ids, b.GetBuild().GetId())
	}
	return ids
}

// wantIDs fails the test unless got equals want (nil and empty are equal).
func wantIDs(t *testing.T, what string, got, want []uint64) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got ids %v, want %v", what, got, want)
	}
}

// putBuilds stores bs in one Update.
func (h *harness) putBuilds(bs ...*store.Build) {
	h.t.Helper()
	h.update(func(tx store.Tx) error {
		for _, b := range bs {
			if err := tx.PutBuild(b); err != nil {
				return err
			}
		}
		return nil
	})
}

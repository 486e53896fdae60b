package server

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kilnbuild/kiln/internal/cachekey"
	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

const (
	libManifest = "build: [make]\nartifacts: [libx.a]\n"
	appManifest = "depends: [lib]\nbuild: [make]\nartifacts: [app]\n"
)

// dependsServer is a test server with projects lib and app (app depends
// on lib).
func dependsServer(t *testing.T) *testServer {
	t.Helper()
	ts := startTestServer(t, Config{})
	libURL, _ := gitRepo(t, map[string]string{"kiln.yaml": libManifest})
	appURL, _ := gitRepo(t, map[string]string{"kiln.yaml": appManifest})
	ts.addProject("lib", libURL)
	ts.addProject("app", appURL)
	return ts
}

func (ts *testServer) submitProject(project string) (*kilnv1.SubmitResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return kilnv1.NewCompileServiceClient(ts.conn).Submit(ctx, &kilnv1.SubmitRequest{
		Project: project, Revision: "main", Email: "ada@example.org"})
}

// buildApp submits app, builds lib with libData as its artifact, and
// returns app's assignment and build.
func buildApp(t *testing.T, ts *testServer, ss *testSession, libData string) (*kilnv1.Assignment, *kilnv1.Build) {
	t.Helper()
	resp, err := ts.submitProject("app")
	if err != nil {
		t.Fatal(err)
	}
	app := resp.GetBuild()
	deps := app.GetDependencies()
	if len(deps) != 1 || deps[0].GetProject() != "lib" || deps[0].GetBuildId() == 0 {
		t.Fatalf("app's dependencies = %v, want one lib build", deps)
	}
	libID := deps[0].GetBuildId()
	want := "waiting for dependency lib (build " + itoa(libID) + ")"
	if r := app.GetWaitingReasons(); app.GetState() != kilnv1.BuildState_BUILD_STATE_QUEUED || len(r) != 1 || r[0] != want {
		t.Fatalf("app is %v waiting for %q, want queued waiting for %q", app.GetState(), r, want)
	}
	asg := ss.assignment()
	if asg.GetBuildId() != libID || asg.GetProject() != "lib" {
		t.Fatalf("first assignment is build %d of %s, want lib's build %d", asg.GetBuildId(), asg.GetProject(), libID)
	}
	ss.report(inlineResult(asg.GetAttemptId(), []byte(libData), []byte(libData)))
	asg = ss.assignment()
	if asg.GetBuildId() != app.GetId() {
		t.Fatalf("second assignment is build %d, want app's %d", asg.GetBuildId(), app.GetId())
	}
	return asg, ts.build(app.GetId())
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func TestServer_Depends_DependencyBuiltFirstAndItsArtifactInTheCacheKey(t *testing.T) {
	keys := map[string]string{}
	for _, libData := range []string{"lib artifact one", "lib artifact two"} {
		ts := dependsServer(t)
		ss := ts.connect("bs", nil)
		asg, app := buildApp(t, ts, ss, libData)
		d := asg.GetDependencies()
		if len(d) != 1 || d[0].GetProject() != "lib" || d[0].GetArtifact().GetSha256() != digest([]byte(libData)) ||
			d[0].GetArtifact().GetSize() != uint64(len(libData)) {
			t.Fatalf("app's assignment carries dependencies %v, want lib's artifact %s", d, digest([]byte(libData)))
		}
		// Narrowed to the dependency's platform identity.
		if c := app.GetConstraints(); c.GetArch() != "x86_64" || c.GetCompilerVersion() != "12.2.0" || c.GetLibcVersion() != "2.36" {
			t.Fatalf("app's constraints %v are not narrowed to lib's platform", c)
		}
		ss.report(inlineResult(asg.GetAttemptId(), []byte("app"), []byte("app")))
		app = ts.build(app.GetId())
		if app.GetState() != kilnv1.BuildState_BUILD_STATE_SUCCEEDED {
			t.Fatalf("app ended %v: %s", app.GetState(), app.GetFailure())
		}
		var source string
		ts.st.View(func(tx store.Tx) error {
			rec, err := tx.Build(app.GetId())
			source = rec.GetSourceKey()
			return err
		})
		want := cachekey.KeyWithDeps(source, testSystem, []cachekey.Dep{{Project: "lib", Value: digest([]byte(libData))}})
		if app.GetCacheKey() != want {
			t.Fatalf("app's cache key %s, want %s", app.GetCacheKey(), want)
		}
		keys[libData] = app.GetCacheKey()

		// Asked again: both come from the cache.
		resp, err := ts.submitProject("app")
		if err != nil || !resp.GetCached() || resp.GetBuild().GetId() != app.GetId() {
			t.Fatalf("app asked again: %v, %v; want the cached build %d", resp, err, app.GetId())
		}
	}
	if keys["lib artifact one"] == keys["lib artifact two"] {
		t.Fatal("another dependency artifact gave the dependent the same cache key")
	}
}

func TestServer_Depends_FailedDependencyFailsTheDependent(t *testing.T) {
	ts := dependsServer(t)
	ss := ts.connect("bs", nil)
	resp, err := ts.submitProject("app")
	if err != nil {
		t.Fatal(err)
	}
	app := resp.GetBuild()
	asg := ss.assignment()
	ss.report(&kilnv1.AttemptResult{AttemptId: asg.GetAttemptId(), Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED,
		Reason: "step make: exit status 2", FailingStep: "make"})
	deadline := time.Now().Add(5 * time.Second)
	for app.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		app = ts.build(app.GetId())
	}
	want := "dependency lib failed on x86_64: build " + itoa(asg.GetBuildId()) + ": step make: exit status 2"
	if app.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || app.GetFailure() != want {
		t.Fatalf("app ended %v %q, want failed %q", app.GetState(), app.GetFailure(), want)
	}
	select {
	case msg := <-ss.msgs:
		if msg.GetAssignment() != nil {
			t.Fatalf("app was dispatched after its dependency failed: %v", msg)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

func TestServer_Depends_RefusedAtSubmit(t *testing.T) {
	ts := startTestServer(t, Config{})
	unknownURL, _ := gitRepo(t, map[string]string{"kiln.yaml": "depends: [nothere]\nbuild: [make]\nartifacts: [x]\n"})
	aURL, _ := gitRepo(t, map[string]string{"kiln.yaml": "depends: [b]\nbuild: [make]\nartifacts: [x]\n"})
	bURL, _ := gitRepo(t, map[string]string{"kiln.yaml": "depends: [a]\nbuild: [make]\nartifacts: [x]\n"})
	ts.addProject("unknown", unknownURL)
	ts.addProject("a", aURL)
	ts.addProject("b", bURL)
	for project, want := range map[string]string{
		"unknown": `unknown depends on "nothere", which is not a registered project`,
		"a":       "depends: cycle a → b → a",
	} {
		_, err := ts.submitProject(project)
		expectCode(t, project, err, codes.InvalidArgument)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", project, err, want)
		}
	}
	if n := len(ts.listBuilds()); n != 0 {
		t.Fatalf("%d builds stored after refused requests", n)
	}
}

// waitingApp is build 2 of app as stored while it waits for lib's build
// 1, and lib's build 1 in the given state.
func waitingApp(libState kilnv1.BuildState, libFailure string) []*store.Build {
	lib := queuedBuild(1, "lib", 60)
	lib.Build.State, lib.Build.Failure = libState, libFailure
	tmpl := queuedBuild(0, "lib", 60)
	tmpl.Build.State, tmpl.Build.CreatedAt, tmpl.Build.Constraints = 0, nil, nil
	app := queuedBuild(2, "app", 60)
	app.Build.Dependencies = []*kilnv1.BuildDependency{{Project: "lib", BuildId: 1}}
	app.DependencyTemplates = []*store.Build{tmpl}
	return []*store.Build{lib, app}
}

func TestServer_Depends_RestoredDependentWaitsForItsDependency(t *testing.T) {
	ts := startTestServer(t, Config{}, waitingApp(kilnv1.BuildState_BUILD_STATE_QUEUED, "")...)
	if r := ts.build(2).GetWaitingReasons(); len(r) != 1 || r[0] != "waiting for dependency lib (build 1)" {
		t.Fatalf("restored app waits for %q", r)
	}
	ss := ts.connect("bs", nil)
	asg := ss.assignment()
	if asg.GetBuildId() != 1 {
		t.Fatalf("after a restart the first assignment is build %d, want lib's 1 (app must wait)", asg.GetBuildId())
	}
	ss.report(inlineResult(asg.GetAttemptId(), []byte("lib"), []byte("lib")))
	if asg = ss.assignment(); asg.GetBuildId() != 2 || len(asg.GetDependencies()) != 1 ||
		asg.GetDependencies()[0].GetArtifact().GetSha256() != digest([]byte("lib")) {
		t.Fatalf("then build %d with %v, want app 2 with lib's artifact", asg.GetBuildId(), asg.GetDependencies())
	}
}

func TestServer_Depends_RestoredDependentFailsWithItsEndedDependency(t *testing.T) {
	// The metaserver stopped after lib's failure was committed and before
	// app's was.
	ts := startTestServer(t, Config{}, waitingApp(kilnv1.BuildState_BUILD_STATE_FAILED, "step make: exit status 2")...)
	app := ts.build(2)
	for deadline := time.Now().Add(5 * time.Second); app.GetState() == kilnv1.BuildState_BUILD_STATE_QUEUED && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // committed by the committer once started
		app = ts.build(2)
	}
	want := "dependency lib failed on any platform: build 1: step make: exit status 2"
	if app.GetState() != kilnv1.BuildState_BUILD_STATE_FAILED || app.GetFailure() != want {
		t.Fatalf("restored app is %v %q, want failed %q", app.GetState(), app.GetFailure(), want)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnbuild/kiln/internal/farmtest"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// trustResult is the part of startcompile --json the trust tests read.
type trustResult struct {
	result
	Verification         string   `json:"verification"`
	AgreeingBuildServers []string `json:"agreeing_build_servers"`
}

func parseTrust(t *testing.T, r farmtest.Result) trustResult {
	t.Helper()
	var out trustResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &out); err != nil {
		t.Fatalf("startcompile --json printed %q: %v", r.Stdout, err)
	}
	return out
}

// trustFarm starts a metaserver with --quorum 2 and registers project
// hello (opts) and the operators.
func trustFarm(t *testing.T, opts farmtest.CProjectOptions, operators ...string) *farmtest.Farm {
	t.Helper()
	f := farmtest.New(t)
	f.StartMetaserver("--quorum", "2", "--heartbeat", "200ms", "--lease", "2s", "--inline-artifact-bytes", "0")
	repo, _ := farmtest.CProject(t, opts)
	f.AddProject("hello", repo)
	for _, op := range operators {
		f.AddOperator(op)
	}
	return f
}

// waitTrust polls build id until ok holds (at most timeout).
func waitTrust(t *testing.T, f *farmtest.Farm, id uint64, timeout time.Duration, what string, ok func(*kilnv1.Build) bool) *kilnv1.Build {
	t.Helper()
	var b *kilnv1.Build
	farmtest.Eventually(t, timeout, func() error {
		b = f.GetBuild(t, id)
		if !ok(b) {
			return errorf("build %d not %s: %s %s, replicas %v, waiting %q", id, what, b.GetState().Word(),
				b.GetVerification().Word(), b.GetReplicas(), b.GetWaitingReasons())
		}
		return nil
	})
	return b
}

// downloadCode is the status code of a default download of build id.
func downloadCode(t *testing.T, f *farmtest.Farm, id uint64) codes.Code {
	t.Helper()
	stream, err := kilnv1.NewCompileServiceClient(f.Conn()).DownloadArtifact(context.Background(),
		&kilnv1.DownloadArtifactRequest{What: &kilnv1.DownloadArtifactRequest_BuildId{BuildId: id}})
	if err != nil {
		return status.Code(err)
	}
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return codes.OK
		}
		if err != nil {
			return status.Code(err)
		}
	}
}

func TestTrust_ThreeOperatorsOutvoteACheatingBuildServer(t *testing.T) {
	port := farmtest.FreePort(t)
	sink := mailStartSink(t, port)
	f := mailFarm(t, port, farmtest.CProjectOptions{Manifest: true}, "--quorum", "2")
	for _, op := range []string{"mallory", "alice", "bob", "carol"} {
		f.AddOperator(op)
	}
	cheatBin := farmtest.BinaryTags(t, "buildserver", "kiln_cheat")
	f.StartBuildserverBinary(cheatBin, f.AddBuildServerOf("mallory", "cheat"))
	f.WaitBuildServers(1)

	r := f.Startcompile("--project", "hello", "--json", "dev@example.com")
	expectExit(t, r, 0)
	id := parseResult(t, r).BuildID

	// The cheater alone: its result is unverified, and the farm says why.
	b := waitTrust(t, f, id, 2*time.Minute, "unverified with the cheater's result", func(b *kilnv1.Build) bool {
		return b.GetVerification() == kilnv1.Verification_VERIFICATION_UNVERIFIED && !slices.Contains(b.GetWaitingReasons(), "")
	})
	tampered := b.GetArtifact().GetSha256()
	if rs := b.GetReplicas(); len(rs) != 1 || rs[0].GetBuildServer() != "cheat" {
		t.Fatalf("replicas %v, want the cheater's alone", rs)
	}
	waitTrust(t, f, id, 30*time.Second, "saying why it waits", func(b *kilnv1.Build) bool {
		return slices.Contains(b.GetWaitingReasons(), "verification: 1 of 2 operators have a matching target")
	})
	if c := downloadCode(t, f, id); c != codes.FailedPrecondition {
		t.Fatalf("default download of the cheater's artifact: %s, want FailedPrecondition", c)
	}
	out, err := exec.Command(farmtest.Binary(t, "metaserver"), "pin", "--data-dir", f.MetaDataDir(), "early", strconv.FormatUint(id, 10)).CombinedOutput()
	if err == nil {
		t.Fatalf("pinning the unverified build succeeded: %s", out)
	}
	// --accept unverified takes the first result: the cheater's, marked so.
	// Downloaded, it has no provenance to check yet (it enters the log
	// only once verified), and the requester is told so.
	udir := filepath.Join(t.TempDir(), "unverified")
	ur := f.Startcompile("--project", "hello", "--accept", "unverified", "--wait", "--download", udir, "--json", "early@example.com")
	expectExit(t, ur, 0)
	if u := parseTrust(t, ur); u.Verification != "unverified" || u.ArtifactSHA256 != tampered {
		t.Fatalf("--accept unverified: %+v, want the unverified first result", u)
	}
	if !strings.Contains(ur.Stderr, "provenance not checked") {
		t.Fatalf("--accept unverified --download does not say its provenance was not checked:\n%s", ur.Stderr)
	}

	// A second credential of the cheater's operator never counts twice;
	// three honest operators join.
	f.StartBuildserverBinary(cheatBin, f.AddBuildServerOf("mallory", "cheat-2"))
	for _, op := range []string{"alice", "bob", "carol"} {
		f.StartBuildserver(f.AddBuildServerOf(op, op+"-1"))
	}
	f.WaitBuildServers(5)
	dir := filepath.Join(t.TempDir(), "out")
	vr := f.Startcompile("status", "--download", dir, "--json", strconv.FormatUint(id, 10))
	expectExit(t, vr, 0)
	v := parseTrust(t, vr)
	if v.Verification != "verified" || v.ArtifactSHA256 == tampered || len(v.AgreeingBuildServers) != 2 {
		t.Fatalf("after the honest operators: %+v, want verified by two of them, not the tampered sha", v)
	}
	for _, s := range v.AgreeingBuildServers {
		if strings.HasPrefix(s, "cheat") {
			t.Fatalf("agreeing servers %v include a cheater", v.AgreeingBuildServers)
		}
	}
	got, err := exec.Command(filepath.Join(dir, "hello")).Output()
	if err != nil || strings.TrimSpace(string(got)) != farmtest.Greeting {
		t.Fatalf("the verified hello printed %q (%v)", got, err)
	}
	b = f.GetBuild(t, id)
	for _, rp := range b.GetReplicas() {
		if rp.GetBuildServer() == "cheat-2" {
			t.Fatalf("the cheater's second credential got a replica: %v", b.GetReplicas())
		}
	}
	// Pinned: the verified bytes, never the tampered ones.
	f.Pin("release", id)
	pdir := filepath.Join(t.TempDir(), "pin")
	pr := f.Startcompile("--pin", "release", "--download", pdir, "--json", "dev@example.com")
	expectExit(t, pr, 0)
	if p := parseResult(t, pr); p.ArtifactSHA256 != v.ArtifactSHA256 {
		t.Fatalf("pin serves %s, want %s", p.ArtifactSHA256, v.ArtifactSHA256)
	}
	// A later default request is answered from the cache with the honest artifact.
	cr := f.Startcompile("--project", "hello", "--json", "later@example.com")
	expectExit(t, cr, 0)
	if c := parseTrust(t, cr); !c.Cached || c.ArtifactSHA256 != v.ArtifactSHA256 || c.Verification != "verified" {
		t.Fatalf("cached answer %+v, want the verified artifact", c)
	}
	// The cheater is marked: on the status service and in the metric.
	list, err := kilnv1.NewStatusServiceClient(f.Conn()).ListBuildServers(context.Background(), &kilnv1.ListBuildServersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, bs := range list.GetBuildServers() {
		if (bs.GetName() == "cheat") != (bs.GetMarked() != "") {
			t.Errorf("%s of %s: marked %q", bs.GetName(), bs.GetOperator(), bs.GetMarked())
		}
	}
	if n, err := mailMetric(f, "kiln_build_servers_marked"); err != nil || n != 1 {
		t.Errorf("kiln_build_servers_marked = %v (%v), want 1", n, err)
	}
	// One mail, to the default requester, at verification, naming the
	// honest artifact: the tampered one is never mailed as ready (the
	// --accept unverified request was answered from the cache, unmailed).
	msgs := mailWaitSettled(t, f, sink, 1, mailDeliveryTimeout)
	if got := mailFor(msgs, "dev@example.com"); len(got) != 1 || !strings.Contains(got[0].Text, v.ArtifactSHA256) ||
		strings.Contains(got[0].Text, tampered) || !strings.Contains(got[0].Subject(), "succeeded (verified)") {
		t.Fatalf("mail: %d to dev@example.com; subject %q; text:\n%s", len(got), msgs[0].Subject(), msgs[0].Text)
	}
	t.Logf("builds per verified artifact with one cheater: %d results", len(b.GetReplicas()))
}

// stampManifest builds hello and writes stamp with cmd.
func stampManifest(cmd string) string {
	return `build:
  - make
  - ` + cmd + ` > stamp
artifacts:
  - hello
  - stamp
timeout: 5m
`
}

func TestTrust_ABuildThatEmbedsItsBuildTimeIsNotReproducible(t *testing.T) {
	f := trustFarm(t, farmtest.CProjectOptions{ManifestText: stampManifest("date +%s%N")}, "alice", "bob", "carol")
	for _, op := range []string{"alice", "bob", "carol"} {
		f.StartBuildserver(f.AddBuildServerOf(op, op+"-1"))
	}
	f.WaitBuildServers(3)
	r := f.Startcompile("--project", "hello", "--wait", "--json", "dev@example.com")
	res := parseTrust(t, r)
	if r.Exit == 0 || res.State != "failed" || res.Verification != "not_reproducible" || !strings.Contains(res.Failure, "stamp") ||
		strings.Contains(res.Failure, "hello,") {
		t.Fatalf("exit %d, %+v; want failed, not_reproducible, naming stamp (and not hello)", r.Exit, res)
	}
	b := f.GetBuild(t, res.BuildID)
	if len(b.GetReplicas()) != 3 || !slices.Equal(b.GetDifferingFiles(), []string{"stamp"}) {
		t.Fatalf("replicas %d, differing %v; want 3 and [stamp]", len(b.GetReplicas()), b.GetDifferingFiles())
	}
}

func TestTrust_ABuildThatUsesSourceDateEpochReproduces(t *testing.T) {
	f := trustFarm(t, farmtest.CProjectOptions{ManifestText: stampManifest(`date -u -d "@$SOURCE_DATE_EPOCH"`)}, "alice", "bob")
	for _, op := range []string{"alice", "bob"} {
		f.StartBuildserver(f.AddBuildServerOf(op, op+"-1"))
	}
	f.WaitBuildServers(2)
	r := f.Startcompile("--project", "hello", "--wait", "--json", "dev@example.com")
	expectExit(t, r, 0)
	res := parseTrust(t, r)
	if res.Verification != "verified" || len(res.AgreeingBuildServers) != 2 {
		t.Fatalf("%+v; want verified by both operators", res)
	}
	t.Logf("builds per verified artifact, honest farm: %d", len(f.GetBuild(t, res.BuildID).GetReplicas()))
}

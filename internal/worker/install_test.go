package worker

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/sandbox"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// TestInstallIgnoringDESTDIRLandsInTheArtifact: a package step that
// installs into /usr/local and /opt itself (a Makefile without DESTDIR)
// succeeds, its files are in the artifact under usr/local and opt, the
// host's /usr/local is untouched, and an artifact whose install honours
// DESTDIR shows no empty usr/local of Kiln's making.
func TestInstallIgnoringDESTDIRLandsInTheArtifact(t *testing.T) {
	url, commit := makeRepo(t, map[string]string{"tool.sh": "echo tool\n"})
	f := startBwrapClient(t)

	ignoring := &kilnv1.Recipe{BuildSteps: []string{"true"}, InstallTree: true, TimeoutSeconds: 60,
		PackageSteps: []string{"mkdir -p /usr/local/bin /usr/local/man/man1 && cp tool.sh /usr/local/bin/kiln-tool && echo page > /usr/local/man/man1/kiln-tool.1 && if [ -d /opt ]; then mkdir -p /opt/kiln && echo x > /opt/kiln/x; fi"}}
	f.push(t, assign(assignment(21, url, commit, ignoring)))
	res := f.waitResult(t, 21)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("outcome %v (%s)\nlog:\n%s", res.GetOutcome(), res.GetReason(), f.log(21))
	}
	files := untar(t, f.blob(t, res))
	want := map[string]string{"usr/local/bin/kiln-tool": "echo tool\n", "usr/local/man/man1/kiln-tool.1": "page\n"}
	if _, err := os.Stat("/opt"); err == nil {
		want["opt/kiln/x"] = "x\n"
	}
	for name, want := range want {
		if files[name] != want {
			t.Errorf("artifact %s = %q, want %q (files %v)", name, files[name], want, keys(files))
		}
	}
	if _, err := os.Stat("/usr/local/bin/kiln-tool"); err == nil {
		t.Error("the install reached the host's /usr/local")
	}

	honouring := &kilnv1.Recipe{BuildSteps: []string{"true"}, InstallTree: true, TimeoutSeconds: 60,
		PackageSteps: []string{`mkdir -p "$KILN_DESTDIR/bin" && cp tool.sh "$KILN_DESTDIR/bin/tool"`}}
	f.push(t, assign(assignment(22, url, commit, honouring)))
	res = f.waitResult(t, 22)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED {
		t.Fatalf("outcome %v (%s)", res.GetOutcome(), res.GetReason())
	}
	files = untar(t, f.blob(t, res))
	for name := range files {
		if strings.HasPrefix(name, "usr") || strings.HasPrefix(name, "opt") {
			t.Errorf("artifact has %s, made by the capture, not the build", name)
		}
	}
	if files["bin/tool"] != "echo tool\n" {
		t.Errorf("artifact bin/tool = %q", files["bin/tool"])
	}
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// blob returns the artifact of a successful result, sent inline or
// uploaded.
func (f *fakeMeta) blob(t *testing.T, res *kilnv1.AttemptResult) []byte {
	t.Helper()
	if d := res.GetArtifactData(); d != nil {
		return d
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.blobs[res.GetArtifact().GetSha256()]
	if !ok {
		t.Fatalf("artifact %s neither inline nor uploaded", res.GetArtifact().GetSha256())
	}
	return b
}

// TestInstallCaptureFollowsNoLinkTheBuildPlanted is the red team's attack:
// a build links $KILN_DESTDIR/usr to a host directory so that the build
// server, root, makes usr/local there and binds it (or, after the package
// step, removes usr/local there). The build fails as its own doing (not a
// setup failure, which would put the volunteer aside), nothing is made
// on the host, and nothing there is removed.
func TestInstallCaptureFollowsNoLinkTheBuildPlanted(t *testing.T) {
	victim := t.TempDir()
	os.Chmod(victim, 0o755)
	if err := os.Mkdir(victim+"/local", 0o755); err != nil {
		t.Fatal(err)
	}
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	f := startBwrapClient(t)

	planted := &kilnv1.Recipe{InstallTree: true, TimeoutSeconds: 60,
		BuildSteps:   []string{`ln -s ` + victim + ` "$KILN_DESTDIR/usr"`},
		PackageSteps: []string{"echo planted > /usr/local/planted"}}
	f.push(t, assign(assignment(41, url, commit, planted)))
	res := f.waitResult(t, 41)
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED || !strings.Contains(res.GetReason(), "not a directory") {
		t.Errorf("a linked $KILN_DESTDIR/usr: %v (%s), want FAILED naming it", res.GetOutcome(), res.GetReason())
	}
	if _, err := os.Stat(victim + "/local/planted"); err == nil {
		t.Error("the build wrote through its link to the host")
	}

	swapped := &kilnv1.Recipe{InstallTree: true, TimeoutSeconds: 60, BuildSteps: []string{"true"},
		PackageSteps: []string{`rmdir /usr/local 2>/dev/null; true`, `rm -rf "$KILN_DESTDIR/usr" && ln -s ` + victim + ` "$KILN_DESTDIR/usr"`}}
	f.push(t, assign(assignment(42, url, commit, swapped)))
	res = f.waitResult(t, 42)
	if _, err := os.Stat(victim + "/local"); err != nil {
		t.Errorf("the build server removed a host directory through the build's link: %v (outcome %v %s)", err, res.GetOutcome(), res.GetReason())
	}
}

// TestInstallCaptureRechecksBeforeEveryPackageStep: the first package
// step replaces the captured $KILN_DESTDIR/opt with a link to a host
// directory; the second must not get that directory bound at /opt.
func TestInstallCaptureRechecksBeforeEveryPackageStep(t *testing.T) {
	if _, err := os.Stat("/opt"); err != nil {
		t.Skip("no /opt to capture")
	}
	victim := t.TempDir()
	os.Chmod(victim, 0o777)
	url, commit := makeRepo(t, map[string]string{"README": "x\n"})
	f := startBwrapClient(t)

	r := &kilnv1.Recipe{InstallTree: true, TimeoutSeconds: 60, BuildSteps: []string{"true"},
		PackageSteps: []string{
			`rmdir "$KILN_DESTDIR/opt" && ln -s ` + victim + ` "$KILN_DESTDIR/opt"`,
			`echo planted > /opt/planted`,
		}}
	f.push(t, assign(assignment(51, url, commit, r)))
	res := f.waitResult(t, 51)
	if _, err := os.Stat(victim + "/planted"); err == nil {
		t.Fatal("the second package step wrote through the link into the host directory")
	}
	if res.GetOutcome() != kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_FAILED || !strings.Contains(res.GetReason(), "between package steps") {
		t.Errorf("outcome %v (%s), want FAILED naming the link", res.GetOutcome(), res.GetReason())
	}
}

// startBwrapClient starts a Client building under bubblewrap, as the build
// server does (build users when root), against a fake metaserver that has
// seen its Hello; it skips the test where bubblewrap cannot work.
func startBwrapClient(t *testing.T) *fakeMeta {
	t.Helper()
	f, _ := startBwrapClientWith(t, nil)
	return f
}

// startBwrapClientWith is startBwrapClient with the Config changed by
// edit (when not nil) before the Client starts; it returns the Config too.
func startBwrapClientWith(t *testing.T, edit func(*Config)) (*fakeMeta, Config) {
	t.Helper()
	bw := sandbox.Bwrap{Grace: 200 * time.Millisecond}
	if err := bw.Available(); err != nil {
		t.Skipf("bubblewrap unavailable: %v", err)
	}
	f := startFake(t)
	cfg := testConfig(t, f)
	cfg.Sandbox = bw
	withBuildUsers(t, &cfg)
	if edit != nil {
		edit(&cfg)
	}
	startClient(t, cfg)
	f.waitFor(t, "Hello", func() bool { return len(f.hellos) == 1 })
	return f, cfg
}

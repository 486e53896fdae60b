package compilecli

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// downloadFromFake downloads build 5 from f into a new directory with
// config as XDG_CONFIG_HOME and returns the directory.
func downloadFromFake(t *testing.T, f *fakeMeta, config string) string {
	t.Helper()
	data := goodArchive(t)
	f.downloads["build:5"] = artifactStream(5, data, data, 100, nil)
	dir := filepath.Join(t.TempDir(), "out")
	_, stderr, code := runWith(t, Env{Getenv: envWith(EnvMetaserver, f.addr, "XDG_CONFIG_HOME", config)}, "status", "--download", dir, "5")
	if code != 0 {
		t.Fatalf("download: exit %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "built by fakebs") || !strings.Contains(stderr, "verified by fake-log") {
		t.Fatalf("download does not say who built and verified it:\n%s", stderr)
	}
	return dir
}

func verifyRun(t *testing.T, addr, config string, args ...string) (string, string, int) {
	t.Helper()
	return runWith(t, Env{Getenv: envWith(EnvMetaserver, addr, "XDG_CONFIG_HOME", config)}, append([]string{"verify", "--dial-timeout", "1s"}, args...)...)
}

func TestVerify_OnlineThenOfflineThenRefusals(t *testing.T) {
	f := startFake(t)
	f.builds[5] = final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
	config := t.TempDir()
	dir := downloadFromFake(t, f, config)
	if _, err := os.Stat(filepath.Join(config, "kiln", "logs")); err != nil {
		t.Fatalf("no checkpoint kept: %v", err)
	}
	if out, stderr, code := verifyRun(t, f.addr, config, dir); code != 0 || !strings.Contains(out, "built by fakebs") {
		t.Fatalf("verify online: exit %d\n%s%s", code, out, stderr)
	}
	// Offline: nothing listens at this address.
	if out, stderr, code := verifyRun(t, "127.0.0.1:1", config, filepath.Join(dir, "usr/bin/hello")); code != 0 {
		// A fresh address has no checkpoint seen: checked against the
		// bundle's own key, which is not pinned.
		t.Fatalf("verify offline: exit %d\n%s%s", code, out, stderr)
	}
	// A changed byte in an unpacked file.
	p := filepath.Join(dir, "usr/bin/hello")
	if err := os.WriteFile(p, []byte("\x7fELF binarz"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := verifyRun(t, f.addr, config, dir); code != ExitFailed || !strings.Contains(stderr, "usr/bin/hello differs") {
		t.Fatalf("changed file: exit %d, %s", code, stderr)
	}
	// Not a download directory: cannot check.
	if _, stderr, code := verifyRun(t, f.addr, config, t.TempDir()); code != ExitInfra || !strings.Contains(stderr, "no provenance bundle") {
		t.Fatalf("plain directory: exit %d, %s", code, stderr)
	}
}

// The same address later serving another log (another key): refused, by
// verify and by --download, which unpacks nothing.
func TestVerify_AnotherLogAtTheSameAddressIsRefused(t *testing.T) {
	f := startFake(t)
	f.builds[5] = final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
	config := t.TempDir()
	dir := downloadFromFake(t, f, config)

	f.mu.Lock()
	other := newFakeLog(t)
	other.notary = otherNotary(t)
	f.tlog = other
	f.mu.Unlock()
	if _, stderr, code := verifyRun(t, f.addr, config, dir); code != ExitFailed || !strings.Contains(stderr, "not from the log this machine knows") {
		t.Fatalf("verify against another log: exit %d, %s", code, stderr)
	}
	out := filepath.Join(t.TempDir(), "again")
	_, stderr, code := runWith(t, Env{Getenv: envWith(EnvMetaserver, f.addr, "XDG_CONFIG_HOME", config)}, "status", "--download", out, "5")
	if code != ExitInfra || !strings.Contains(stderr, "not from the log this machine knows") {
		t.Fatalf("download from another log: exit %d, %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "usr/bin/hello")); err == nil {
		t.Fatal("an artifact that failed its provenance check was unpacked")
	}
}

// Red team: a file of a download that happens to end in .json (or one
// planted there) is a file to check, never a pointer to another download
// to check instead: otherwise verify passes for a file nobody signed.
func TestVerify_JSONFileInsideADownloadIsCheckedItself(t *testing.T) {
	f := startFake(t)
	f.builds[5] = final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
	config := t.TempDir()
	dir := downloadFromFake(t, f, config)
	planted := filepath.Join(dir, "usr/share/doc/evil.json")
	if err := os.WriteFile(planted, []byte(`{"download_dir": "`+dir+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := verifyRun(t, f.addr, config, planted); code != ExitFailed || !strings.Contains(stderr, "not a file of the artifact") {
		t.Fatalf("planted .json file: exit %d\n%s%s", code, out, stderr)
	}
	// The --json output written outside the download still works.
	res := filepath.Join(t.TempDir(), "result.json")
	if err := os.WriteFile(res, []byte(`{"download_dir": "`+dir+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := verifyRun(t, f.addr, config, res); code != 0 {
		t.Fatalf("--json output: exit %d\n%s%s", code, out, stderr)
	}
}

// Red team: a symlink of the artifact pointed elsewhere, or a regular file
// replaced by a symlink, is a changed download.
func TestVerify_RepointedSymlinkIsRefused(t *testing.T) {
	f := startFake(t)
	f.builds[5] = final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
	config := t.TempDir()
	dir := downloadFromFake(t, f, config)
	evil := filepath.Join(t.TempDir(), "evil")
	if err := os.WriteFile(evil, []byte("#!/bin/sh\necho pwned\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hi := filepath.Join(dir, "usr/bin/hi")
	if err := os.Remove(hi); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(evil, hi); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := verifyRun(t, f.addr, config, dir); code != ExitFailed || !strings.Contains(stderr, "usr/bin/hi") {
		t.Fatalf("repointed symlink: exit %d\n%s%s", code, out, stderr)
	}
	if err := os.Remove(hi); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("hello", hi); err != nil {
		t.Fatal(err)
	}
	// A regular file swapped for a symlink to a copy outside the download.
	hello := filepath.Join(dir, "usr/bin/hello")
	copyOf := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(copyOf, []byte("\x7fELF binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(hello); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(copyOf, hello); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := verifyRun(t, f.addr, config, dir); code != ExitFailed || !strings.Contains(stderr, "usr/bin/hello") {
		t.Fatalf("file swapped for a symlink: exit %d\n%s%s", code, out, stderr)
	}
}

// Red team: a directory of the download swapped for a link to a copy
// elsewhere (which can change later, and hold more) is refused.
func TestVerify_DirectorySwappedForALinkIsRefused(t *testing.T) {
	f := startFake(t)
	f.builds[5] = final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
	config := t.TempDir()
	dir := downloadFromFake(t, f, config)
	elsewhere := filepath.Join(t.TempDir(), "bin")
	if err := os.Rename(filepath.Join(dir, "usr/bin"), elsewhere); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "usr/bin")); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := verifyRun(t, f.addr, config, dir); code != ExitFailed || !strings.Contains(stderr, "usr/bin") {
		t.Fatalf("directory swapped for a link: exit %d\n%s%s", code, out, stderr)
	}
}

// Red team: verify offline on a machine that never saw the metaserver's
// log checks the bundle against the bundle's own key. That key must not
// be pinned for the metaserver's address: a directory from anywhere (an
// attacker's, or another farm's download) would otherwise make this
// machine refuse the real log there from then on, and trust the other.
func TestVerify_OfflineFirstSightPinsNothing(t *testing.T) {
	other := startFake(t)
	other.builds[5] = final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
	other.mu.Lock()
	other.tlog.notary = otherNotary(t)
	other.mu.Unlock()
	foreign := downloadFromFake(t, other, t.TempDir())

	// An address where the real metaserver will listen, down for now.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	config := t.TempDir()
	if out, stderr, code := verifyRun(t, addr, config, foreign); code != 0 {
		t.Fatalf("offline verify of a bundle: exit %d\n%s%s", code, out, stderr)
	}

	// The real metaserver comes up there: its artifact downloads.
	real := &fakeMeta{watches: map[uint64]int{}, builds: map[uint64]*kilnv1.Build{}, downloads: map[string][]*kilnv1.DownloadArtifactResponse{},
		tlog: newFakeLog(t), addr: addr}
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the address was taken meanwhile: %v", err)
	}
	s := grpc.NewServer()
	kilnv1.RegisterCompileServiceServer(s, real)
	kilnv1.RegisterStatusServiceServer(s, real)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	real.builds[5] = final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)
	downloadFromFake(t, real, config)
}

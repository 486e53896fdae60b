package compilecli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		// A fresh address has no checkpoint seen: the bundle's key is pinned.
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

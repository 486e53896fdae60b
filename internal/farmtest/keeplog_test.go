package farmtest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAFailedTestsLogIsCopiedOutOfItsTemporaryDirectory(t *testing.T) {
	kept := t.TempDir()
	t.Setenv(KeptLogsEnv, kept)
	src := filepath.Join(t.TempDir(), "metaserver.log")
	if err := os.WriteFile(src, []byte("line 1\nline 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := keepLog(t, src)
	want := filepath.Join(kept, "TestAFailedTestsLogIsCopiedOutOfItsTemporaryDirectory", "metaserver.log")
	if got != want {
		t.Fatalf("kept at %q, want %q", got, want)
	}
	if b, err := os.ReadFile(want); err != nil || string(b) != "line 1\nline 2\n" {
		t.Fatalf("kept log = %q, %v", b, err)
	}
}

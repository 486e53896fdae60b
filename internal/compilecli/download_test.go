package compilecli

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// goodArchive is a small artifact: a directory, an executable, a data file
// and a relative symlink.
func goodArchive(t *testing.T) []byte {
	return makeTarGz(t,
		tarEntry{name: "./", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "usr/bin/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "usr/bin/hello", typ: tar.TypeReg, body: "\x7fELF binary", mode: 0o4755},
		tarEntry{name: "usr/share/doc/README", typ: tar.TypeReg, body: "read me\n"},
		tarEntry{name: "usr/bin/hi", typ: tar.TypeSymlink, linkname: "hello"},
	)
}

// entries lists what is under dir, relative, sorted.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestDownloadVerifiesAndUnpacksTheArtifact(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	f := startFake(t)
	f.submit = answerQueued(5)
	f.watch = script(upd(final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)))
	data := goodArchive(t)
	f.downloads["build:5"] = artifactStream(5, data, data, 100, nil)
	dir := filepath.Join(t.TempDir(), "out")
	stdout, stderr, code := f.run(t, "--project", "hello", "--download", dir, email)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	want := []string{filepath.Join(dir, "usr/bin/hello"), filepath.Join(dir, "usr/share/doc/README"), filepath.Join(dir, "usr/bin/hi")}
	if got := lines(stdout); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stdout lists\n%s\nwant\n%s", stdout, strings.Join(want, "\n"))
	}
	b, err := os.ReadFile(filepath.Join(dir, "usr/bin/hello"))
	if err != nil || string(b) != "\x7fELF binary" {
		t.Fatalf("hello: %q %v", b, err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "usr/bin/hello"))
	if fi.Mode().Perm()&0o111 == 0 || fi.Mode()&os.ModeSetuid != 0 {
		t.Fatalf("hello mode %v, want executable without setuid", fi.Mode())
	}
	if l, err := os.Readlink(filepath.Join(dir, "usr/bin/hi")); err != nil || l != "hello" {
		t.Fatalf("symlink hi -> %q %v", l, err)
	}
	if left := entries(t, os.Getenv("TMPDIR")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestDownloadOfATamperedStreamExitsThreeAndLeavesNothing(t *testing.T) {
	good := goodArchive(t)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0xff
	tests := []struct {
		name string
		msgs []*kilnv1.DownloadArtifactResponse
		want string
	}{
		{"a flipped byte fails the sha256", artifactStream(5, flipped, good, 64, nil), "sha256"},
		{"a short stream fails the size", artifactStream(5, good[:len(good)-10], good, 64, nil), "received"},
		{"a long stream fails the size", artifactStream(5, append(bytes.Clone(good), 0), good, 64, nil), "more than the announced"},
		{"a stream without header is refused", artifactStream(5, good, good, 64, nil)[1:], "header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("TMPDIR", t.TempDir())
			f := startFake(t)
			f.submit = answerQueued(5)
			f.watch = script(upd(final(5, kilnv1.BuildState_BUILD_STATE_SUCCEEDED)))
			f.downloads["build:5"] = tt.msgs
			dir := t.TempDir()
			_, stderr, code := f.run(t, "--project", "hello", "--download", dir, email)
			if code != ExitInfra || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, want 3 with %q; stderr:\n%s", code, tt.want, stderr)
			}
			if got := entries(t, dir); len(got) != 0 {
				t.Fatalf("download dir holds %v", got)
			}
			if left := entries(t, os.Getenv("TMPDIR")); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
}

func TestPinnedDownloadFetchesByNameWithoutBuilding(t *testing.T) {
	f := startFake(t)
	data := goodArchive(t)
	f.downloads["pin:stable"] = artifactStream(8, data, data, 1<<20, nil)
	dir := t.TempDir()
	stdout, stderr, code := f.run(t, "--pin", "stable", "--download", dir, "--json", email)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if len(f.submits) != 0 || len(f.dlReqs) != 1 || f.dlReqs[0].GetPin() != "stable" {
		t.Fatalf("submits %d, downloads %v", len(f.submits), f.dlReqs)
	}
	if !strings.Contains(stdout, `"build_id":8`) || !strings.Contains(stdout, `"usr/bin/hello"`) || !strings.Contains(stdout, `"download_dir"`) {
		t.Fatalf("JSON %s", stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "usr/share/doc/README")); err != nil {
		t.Fatal(err)
	}
}

func TestExtractRefusesUnsafeArchivesAndWritesNothing(t *testing.T) {
	big := strings.Repeat("x", 2048)
	tests := []struct {
		name    string
		entries []tarEntry
		limits  Limits
	}{
		{"an absolute path", []tarEntry{{name: "/etc/passwd", typ: tar.TypeReg, body: "x"}}, DefaultLimits},
		{"a dot-dot component", []tarEntry{{name: "ok", typ: tar.TypeReg, body: "x"}, {name: "a/../../x", typ: tar.TypeReg, body: "x"}}, DefaultLimits},
		{"a symlink with an absolute target", []tarEntry{{name: "l", typ: tar.TypeSymlink, linkname: "/etc"}}, DefaultLimits},
		{"a symlink escaping the directory", []tarEntry{{name: "a/l", typ: tar.TypeSymlink, linkname: "../../etc"}}, DefaultLimits},
		{"a file below a symlink of the archive", []tarEntry{{name: "l", typ: tar.TypeSymlink, linkname: "sub"}, {name: "sub/", typ: tar.TypeDir}, {name: "l/x", typ: tar.TypeReg, body: "x"}}, DefaultLimits},
		// Red team: each link looks inside on its own text; followed
		// through the other, the first reaches /etc.
		{"a chain of links escaping the directory", []tarEntry{
			{name: "a/b/c/esc", typ: tar.TypeSymlink, linkname: "p/../../../../etc"},
			{name: "a/b/c/p", typ: tar.TypeSymlink, linkname: "../../.."},
			{name: "passwd", typ: tar.TypeSymlink, linkname: "a/b/c/esc/passwd"}}, DefaultLimits},
		{"a loop of links", []tarEntry{{name: "x", typ: tar.TypeSymlink, linkname: "y/z"}, {name: "y", typ: tar.TypeSymlink, linkname: "x"}}, DefaultLimits},
		{"a hard link", []tarEntry{{name: "f", typ: tar.TypeReg, body: "x"}, {name: "h", typ: tar.TypeLink, linkname: "f"}}, DefaultLimits},
		{"a character device", []tarEntry{{name: "null", typ: tar.TypeChar}}, DefaultLimits},
		{"a fifo", []tarEntry{{name: "p", typ: tar.TypeFifo}}, DefaultLimits},
		{"a name given twice", []tarEntry{{name: "f", typ: tar.TypeReg, body: "x"}, {name: "./f", typ: tar.TypeReg, body: "y"}}, DefaultLimits},
		{"a file below a file", []tarEntry{{name: "f", typ: tar.TypeReg, body: "x"}, {name: "f/g", typ: tar.TypeReg, body: "y"}}, DefaultLimits},
		{"contents above the size cap", []tarEntry{{name: "a", typ: tar.TypeReg, body: big}, {name: "b", typ: tar.TypeReg, body: big}},
			Limits{MaxArchiveBytes: 1 << 20, MaxExtractBytes: 3000, MaxEntries: 10}},
		{"more entries than allowed", []tarEntry{{name: "a", typ: tar.TypeReg}, {name: "b", typ: tar.TypeReg}, {name: "c", typ: tar.TypeReg}},
			Limits{MaxArchiveBytes: 1 << 20, MaxExtractBytes: 1 << 20, MaxEntries: 2}},
	}
	for _, tt := range tests {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Extract(bytes.NewReader(makeTarGz(t, tt.entries...)), dir, tt.limits)
			if !errors.Is(err, ErrUnsafeArchive) {
				t.Fatalf("Extract = %v, want ErrUnsafeArchive", err)
			}
			if got := entries(t, dir); len(got) != 0 {
				t.Fatalf("wrote %v", got)
			}
		})
	}
}

func TestExtractRefusesAGarbageStream(t *testing.T) {
	_, err := Extract(bytes.NewReader([]byte("not gzip at all")), t.TempDir(), DefaultLimits)
	if !errors.Is(err, ErrUnsafeArchive) {
		t.Fatalf("Extract = %v", err)
	}
}

func TestExtractNeverWritesThroughAnExistingSymlink(t *testing.T) {
	outside := t.TempDir()
	dir := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "usr")); err != nil {
		t.Fatal(err)
	}
	_, err := Extract(bytes.NewReader(goodArchive(t)), dir, DefaultLimits)
	if err == nil {
		t.Fatal("Extract wrote below a symlink that was already in the directory")
	}
	if got := entries(t, outside); len(got) != 0 {
		t.Fatalf("wrote through the symlink: %v", got)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Fatalf("directory holds %v, want only the old symlink", got)
	}
}

func TestExtractReplacesFilesButNotTheTargetsOfSymlinks(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(outside, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "z"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	arch := makeTarGz(t,
		tarEntry{name: "z", typ: tar.TypeReg, body: "new", mode: 0o700},
		tarEntry{name: "l", typ: tar.TypeReg, body: "through?"},
	)
	if _, err := Extract(bytes.NewReader(arch), dir, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "z")); string(b) != "new" {
		t.Fatalf("z holds %q, want the archive's", b)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "z")); fi.Mode().Perm() != 0o755 {
		t.Fatalf("z mode %v, want 0755", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(outside); string(b) != "precious" {
		t.Fatalf("wrote through the symlink: %q", b)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "l")); !fi.Mode().IsRegular() {
		t.Fatalf("l is %v, want the archive's regular file in place of the symlink", fi.Mode())
	}
	if got := entries(t, dir); strings.Join(got, " ") != "l z" {
		t.Fatalf("directory holds %v (temporary files left?)", got)
	}
}

func TestExtractUndoesWhatItCreatedWhenADirectoryIsInTheWay(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "z", "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	arch := makeTarGz(t,
		tarEntry{name: "a/b", typ: tar.TypeReg, body: "new"},
		tarEntry{name: "z", typ: tar.TypeReg, body: "file where a directory is"},
	)
	if _, err := Extract(bytes.NewReader(arch), dir, DefaultLimits); err == nil {
		t.Fatal("Extract replaced a directory by a file")
	}
	if got := entries(t, dir); strings.Join(got, " ") != "z z/keep" {
		t.Fatalf("half-done extraction left %v", got)
	}
}

func TestDownloadingTwiceIntoTheSameDirectoryWorks(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		if _, err := Extract(bytes.NewReader(goodArchive(t)), dir, DefaultLimits); err != nil {
			t.Fatalf("extraction %d: %v", i+1, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "usr/bin/hi")); err != nil || l != "hello" {
		t.Fatalf("symlink hi -> %q %v", l, err)
	}
}

func TestExtractReusesExistingDirectories(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := Extract(bytes.NewReader(goodArchive(t)), dir, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(files, " ") != "usr/bin/hello usr/share/doc/README usr/bin/hi" {
		t.Fatalf("files %v", files)
	}
}

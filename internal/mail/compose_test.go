package mail

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }

func s390x() *kilnv1.SystemInfo {
	return &kilnv1.SystemInfo{
		Os: "linux", Arch: "s390x", Endian: "big", DataModel: "LP64", CharBit: 8,
		SizeofShort: 2, SizeofInt: 4, SizeofLong: 8, SizeofLongLong: 8, SizeofPointer: 8,
		Libc: "glibc", LibcVersion: "2.36", Compiler: "gcc", CompilerVersion: "12.2.0",
		Tools: map[string]string{"make": "4.3"}, Cpus: 2, MemoryBytes: 4 << 30, Emulated: true,
	}
}

func succeededBuild() *kilnv1.Build {
	return &kilnv1.Build{
		Id: 42, Project: "hello", Revision: "main", Commit: "0123456789abcdef0123456789abcdef01234567",
		Options:     map[string]string{"opt": "2", "debug": "yes", "cflags": "-O2 -g"},
		Constraints: &kilnv1.PlatformConstraints{Arch: "s390x", Endian: "big"},
		State:       kilnv1.BuildState_BUILD_STATE_SUCCEEDED,
		CreatedAt:   ts(0), StartedAt: ts(90 * time.Second), FinishedAt: ts(5*time.Minute + 3*time.Second),
		Attempts: []*kilnv1.Attempt{
			{Id: 7, BuildServer: "lost-one", TargetId: "native", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_LOST},
			{Id: 9, BuildServer: "volunteer-1", TargetId: "cross:s390x-linux-gnu", Outcome: kilnv1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCEEDED},
		},
		Platform: s390x(),
		Artifact: &kilnv1.Artifact{
			Sha256: "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12",
			Size:   3 << 20, Files: []string{"bin/hello", "share/doc/hello/README", "share/man/man1/hello.1"},
		},
		CacheKey: "ffee",
	}
}

func failedBuild() *kilnv1.Build {
	return &kilnv1.Build{
		Id: 43, Project: "hello", Revision: "v1.2..v1.3", Commit: "fedcba9876543210fedcba9876543210fedcba98",
		State:     kilnv1.BuildState_BUILD_STATE_FAILED,
		CreatedAt: ts(0), StartedAt: ts(time.Second), FinishedAt: ts(61 * time.Second),
		Attempts: []*kilnv1.Attempt{{Id: 11, BuildServer: "volunteer-2", TargetId: "native"}},
		Platform: &kilnv1.SystemInfo{
			Os: "linux", Arch: "x86_64", Endian: "little", DataModel: "LP64", CharBit: 8,
			SizeofShort: 2, SizeofInt: 4, SizeofLong: 8, SizeofLongLong: 8, SizeofPointer: 8,
			Libc: "musl", LibcVersion: "1.2.3", Compiler: "gcc", CompilerVersion: "12.2.0",
		},
		Failure:     "make exited with status 2 <script>alert(1)</script>\r\nInjected: header",
		FailingStep: "build",
	}
}

func cancelledQueuedBuild() *kilnv1.Build {
	return &kilnv1.Build{
		Id: 44, Project: "tiny", Revision: "deadbeef", Commit: "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
		Constraints: &kilnv1.PlatformConstraints{Arch: "ppc", Endian: "big", DataModel: "ILP32"},
		State:       kilnv1.BuildState_BUILD_STATE_CANCELLED,
		CreatedAt:   ts(0), FinishedAt: ts(10 * time.Minute),
		Failure: "cancelled by an administrator",
	}
}

func failureLog() string {
	var b strings.Builder
	for i := 1; i <= 45; i++ {
		fmt.Fprintf(&b, "line %d of the log\n", i)
	}
	b.WriteString("cc -c hello.c\n\tgcc: error: <b>bold</b> & \x1b[31mred\x1b[0m\r\n")
	return b.String()
}

func TestCompose(t *testing.T) {
	opts := ComposeOptions{PublicURL: "http://127.0.0.1:8080/", MetaserverAddr: "127.0.0.1:7070"}
	tests := []struct {
		name        string
		golden      string
		build       *kilnv1.Build
		opts        ComposeOptions
		wantSubject string
	}{
		{"a success shows the artifact, the download command and the artifact link", "succeeded",
			succeededBuild(), opts,
			"[kiln] hello main on linux/s390x big LP64 glibc-2.36 gcc-12.2.0 (emulated) : succeeded"},
		{"a failure shows the reason, the step and the last 40 lines of the log", "failed",
			failedBuild(), ComposeOptions{PublicURL: opts.PublicURL, MetaserverAddr: opts.MetaserverAddr, LogTail: failureLog()},
			"[kiln] hello v1.2..v1.3 on linux/x86_64 little LP64 musl-1.2.3 gcc-12.2.0 : failed"},
		{"a build cancelled in the queue names the pinned platform and has no links without a public URL", "cancelled",
			cancelledQueuedBuild(), ComposeOptions{},
			"[kiln] tiny deadbeef on arch=ppc endian=big data_model=ILP32 : cancelled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subject, text, html := Compose(tt.build, tt.opts)
			if subject != tt.wantSubject {
				t.Errorf("subject = %q, want %q", subject, tt.wantSubject)
			}
			checkGolden(t, "compose/"+tt.golden+".txt", text)
			checkGolden(t, "compose/"+tt.golden+".html", html)
			if strings.Contains(text+html, "@") {
				t.Errorf("the mail contains an @, as an address would")
			}
			for _, part := range []string{subject, text, html} {
				if strings.ContainsAny(part, "\r\x1b\x00") {
					t.Errorf("a control character leaked into %.40q...", part)
				}
			}
		})
	}
}

func TestComposeEscapesHTMLAndKeepsTextLiteral(t *testing.T) {
	_, text, html := Compose(failedBuild(), ComposeOptions{LogTail: failureLog()})
	if strings.Contains(html, "<script>") || strings.Contains(html, "<b>bold</b>") {
		t.Errorf("HTML part carries unescaped markup from the build server")
	}
	if !strings.Contains(html, "&lt;script&gt;") {
		t.Errorf("HTML part lost the escaped failure reason")
	}
	if !strings.Contains(text, "<script>alert(1)</script>") {
		t.Errorf("text part should show the reason literally")
	}
	if strings.Contains(text, "\nInjected: header") {
		t.Errorf("a newline in the failure reason started a new line in the text part")
	}
	if strings.Contains(text, "line 7 of the log") || !strings.Contains(text, "line 8 of the log") {
		t.Errorf("the log tail is not the last %d lines", LogTailLines)
	}
}

func TestComposeShowsLogOnlyForBuildsThatDidNotSucceed(t *testing.T) {
	_, text, _ := Compose(succeededBuild(), ComposeOptions{LogTail: "secret-ish line\n"})
	if strings.Contains(text, "secret-ish line") {
		t.Errorf("a successful build's mail shows its log")
	}
}

func TestHeaderSafeBoundsAndFlattens(t *testing.T) {
	got := headerSafe("a\r\nBcc: x\t" + strings.Repeat("é", 400))
	if strings.ContainsAny(got, "\r\n\t") {
		t.Fatalf("headerSafe kept a control character: %q", got)
	}
	if len(got) > 400+len("…") {
		t.Fatalf("headerSafe returned %d bytes", len(got))
	}
	if !strings.HasSuffix(got, "…") || !strings.HasPrefix(got, "a Bcc: x é") {
		t.Fatalf("headerSafe = %.40q...", got)
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", filepath.FromSlash(name))
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

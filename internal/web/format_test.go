package web

import (
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

func TestRelativeTimes(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		ago  time.Duration
		want string
	}{
		{"under a second is just now", 300 * time.Millisecond, "just now"},
		{"seconds count in seconds", 3 * time.Second, "3s ago"},
		{"minutes round down", 119 * time.Second, "1m ago"},
		{"hours up to two days", 47 * time.Hour, "47h ago"},
		{"days after that", 72 * time.Hour, "3d ago"},
		{"the future says in", -90 * time.Second, "in 1m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := relative(now.Add(-tt.ago), now); got != tt.want {
				t.Errorf("relative(-%s) = %q, want %q", tt.ago, got, tt.want)
			}
		})
	}
	if got := string(timeHTML(timestamppb.New(now.Add(-3*time.Second)), now)); got != `<time datetime="2026-01-02T03:04:02Z">2026-01-02T03:04:02Z</time> <span class="rel">(3s ago)</span>` {
		t.Errorf("timeHTML = %s", got)
	}
	if got := timeHTML(nil, now); got != "—" {
		t.Errorf("timeHTML(nil) = %s", got)
	}
}

func TestDurationsAndSizes(t *testing.T) {
	for d, want := range map[time.Duration]string{
		250 * time.Millisecond:                    "0.25s",
		4 * time.Second:                           "4s",
		125 * time.Second:                         "2m05s",
		time.Hour + 2*time.Minute + 3*time.Second: "1h02m03s",
		-time.Second:                              "0.00s",
	} {
		if got := exactDuration(d); got != want {
			t.Errorf("exactDuration(%s) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 300 << 10: "300.0 KiB", 8 << 30: "8.0 GiB", 3 << 50: "3.0 PiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSplitUTF8KeepsCharactersWhole(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		whole, rest string
	}{
		{"ASCII is whole", "abc\n", "abc\n", ""},
		{"a complete two-byte character is whole", "grü", "grü", ""},
		{"the first byte of ü is carried", "gr\xc3", "gr", "\xc3"},
		{"two of three bytes of → are carried", "a\xe2\x86", "a", "\xe2\x86"},
		{"invalid bytes are not held back", "a\xff", "a\xff", ""},
		{"a lone continuation byte is not held back", "a\x86", "a\x86", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, r := splitUTF8([]byte(tt.in))
			if string(w) != tt.whole || string(r) != tt.rest {
				t.Errorf("splitUTF8(%q) = %q, %q; want %q, %q", tt.in, w, r, tt.whole, tt.rest)
			}
		})
	}
}

func TestStateWords(t *testing.T) {
	for _, w := range stateWords() {
		st, ok := parseState(w)
		if !ok || st.Word() != w {
			t.Errorf("state word %q does not round-trip (%v, %v)", w, st, ok)
		}
	}
	if _, ok := parseState("BUILD_STATE_RUNNING"); ok {
		t.Error("the enum's full name is accepted as a state word")
	}
	if st, ok := parseState("any"); !ok || st != kilnv1.BuildState_BUILD_STATE_UNSPECIFIED {
		t.Error("any is not the empty filter")
	}
}

func TestWantsJSON(t *testing.T) {
	for accept, want := range map[string]bool{
		"": false,
		"text/html,application/xhtml+xml,*/*;q=0.8": false,
		"application/json":                          true,
		"text/html;q=0.9, application/json":         true,
		"application/json;q=0":                      false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Accept", accept)
		if got := wantsJSON(r); got != want {
			t.Errorf("wantsJSON(%q) = %v, want %v", accept, got, want)
		}
	}
}

func TestArtifactNameIsSafe(t *testing.T) {
	for project, want := range map[string]string{
		"hello":            "hello-7.tar.gz",
		"../../etc/passwd": "build.._.._etc_passwd-7.tar.gz",
		"a b\"c":           "a_b_c-7.tar.gz",
		"":                 "build-7.tar.gz",
	} {
		if got := artifactName(&kilnv1.Build{Id: 7, Project: project}); got != want {
			t.Errorf("artifactName(%q) = %q, want %q", project, got, want)
		}
	}
}

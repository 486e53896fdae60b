package sysinfo

import (
	"context"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

var regexpDigits = regexp.MustCompile(`^\d+$`)

func TestParseToolVersion(t *testing.T) {
	tests := []struct{ name, out, want string }{
		{"GNU make's banner gives its version", "GNU Make 4.3\nBuilt for x86_64-pc-linux-gnu\n", "4.3"},
		{"go version drops the go prefix", "go version go1.26.8 linux/amd64\n", "1.26.8"},
		{"perl's leading blank line is skipped", "\nThis is perl 5, version 36, subversion 0 (v5.36.0) built for x86_64\n", "5.36.0"},
		{"cmake's banner gives its version", "cmake version 3.25.1\n\nCMake suite maintained", "3.25.1"},
		{"a bare version is taken", "1.11.1\n", "1.11.1"},
		{"GNU m4's banner gives its version", "m4 (GNU M4) 1.4.19\nCopyright", "1.4.19"},
		{"only the first line counts", "no numbers here\nversion 2.0\n", ""},
		{"an undotted number is a fallback", "tool release 7\n", "7"},
		{"empty output has no version", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseToolVersion(tt.out); got != tt.want {
				t.Errorf("parseToolVersion = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestToolsFindsInstalledToolsOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tools := Tools(ctx)
	present := 0
	for _, name := range ProbedTools {
		_, err := exec.LookPath(name)
		v, ok := tools[name]
		switch {
		case err == nil && (!ok || v == ""):
			t.Errorf("%s is installed but Tools has %q", name, v)
		case err == nil:
			present++
			if v != unknownVersion && !versionRE.MatchString(v) && !regexpDigits.MatchString(v) {
				t.Errorf("%s version %q does not look like a version", name, v)
			}
		case ok:
			t.Errorf("%s is not installed but Tools has %q", name, v)
		}
	}
	if len(tools) != present {
		t.Errorf("Tools returned %d entries, %d tools installed: %v", len(tools), present, tools)
	}
	// git and make are on every Kiln machine (ENVIRONMENT.md).
	for _, name := range []string{"git", "make"} {
		if !versionRE.MatchString(tools[name]) {
			t.Errorf("%s version = %q", name, tools[name])
		}
	}
}

func TestParseMemTotal(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want uint64
		ok   bool
	}{
		{"kB are converted to bytes", "MemTotal:       16384 kB\nMemFree: 1 kB\n", 16384 * 1024, true},
		{"MemTotal need not come first", "Foo: 1 kB\nMemTotal: 2 kB\n", 2048, true},
		{"a missing MemTotal is an error", "MemFree: 1 kB\n", 0, false},
		{"a garbled number is an error", "MemTotal: lots kB\n", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMemTotal([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("parseMemTotal = %d, %v; want %d (ok %v)", got, err, tt.want, tt.ok)
			}
		})
	}
}

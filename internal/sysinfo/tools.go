package sysinfo

import (
	"bufio"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ProbedTools are the host tools Tools looks for, by command name.
var ProbedTools = []string{"make", "cmake", "autoconf", "automake", "perl", "python3", "go", "git", "pkg-config", "ninja", "meson", "bison", "flex", "m4"}

// toolVersionArgs are the arguments that make a tool print its version,
// where "--version" is not it.
var toolVersionArgs = map[string][]string{"go": {"version"}}

// toolTimeout bounds one tool's version query.
const toolTimeout = 3 * time.Second

// unknownVersion is recorded for a tool that is present but whose version
// could not be read, so that its presence still counts.
const unknownVersion = "unknown"

var (
	dottedVersionRE = regexp.MustCompile(`\d+(?:\.\d+)+`)
	anyNumberRE     = regexp.MustCompile(`\d+`)
)

// Tools returns the ProbedTools found in PATH with their versions, e.g.
// make -> "4.3", go -> "1.26.8". It runs each tool's `--version` (`go
// version`) concurrently with a short timeout and takes the first
// version-looking token (preferably dotted) of the first non-empty output
// line. Absent tools are omitted; a tool that is present but says nothing
// usable is recorded as "unknown". ctx cancellation returns what is known.
func Tools(ctx context.Context) map[string]string {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out = make(map[string]string)
	)
	for _, name := range ProbedTools {
		path, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := toolVersion(ctx, name, path)
			mu.Lock()
			out[name] = v
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// toolVersion runs one tool for its version.
func toolVersion(ctx context.Context, name, path string) string {
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	args := toolVersionArgs[name]
	if args == nil {
		args = []string{"--version"}
	}
	stdout, stderr, _ := run(ctx, "", append([]string{path}, args...), []string{"LC_ALL=C"})
	if v := parseToolVersion(string(stdout)); v != "" {
		return v
	}
	if v := parseToolVersion(stderr); v != "" {
		return v
	}
	return unknownVersion
}

// parseToolVersion returns the first dotted number of the first non-empty
// line of out ("GNU Make 4.3" -> "4.3", "go version go1.26.8 linux/amd64" ->
// "1.26.8"), else its first number, else "".
func parseToolVersion(out string) string {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if v := dottedVersionRE.FindString(line); v != "" {
			return v
		}
		return anyNumberRE.FindString(line)
	}
	return ""
}

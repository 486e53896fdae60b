package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// noopManifest is the kiln.yaml of the load project: the step `true`, one
// small committed file as the artifact, and an int option n so that every
// request with a new n is a distinct build (a cache miss). It requires no
// tools, so every target matches.
const noopManifest = `# Kiln load-test project: a no-op build.
options:
  n: {type: int, default: 0}
build:
  - "true"
artifacts:
  - out.txt
timeout: 1m
`

// slowManifest is the kiln.yaml of the redispatch scenario: a build that
// runs until it is killed or cancelled (its step sleeps for 5 minutes).
const slowManifest = `# Kiln load-test project: a build that runs until stopped.
options:
  n: {type: int, default: 0}
build:
  - sleep 300
artifacts:
  - out.txt
timeout: 10m
`

// projectName is the load project's registered name.
const projectName = "noop"

// makeProject creates a git repository under dir holding the no-op
// kiln.yaml and a 1 KiB out.txt, and returns its path and the full commit id.
func makeProject(ctx context.Context, dir string) (path, commit string, err error) {
	return makeProjectWith(ctx, dir, noopManifest)
}

// makeProjectWith is makeProject with the given kiln.yaml.
func makeProjectWith(ctx context.Context, dir, manifest string) (path, commit string, err error) {
	path = filepath.Join(dir, "noop-src")
	if err := os.MkdirAll(path, 0o755); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(path, "kiln.yaml"), []byte(manifest), 0o644); err != nil {
		return "", "", err
	}
	out := strings.Repeat("kiln no-op artifact line....................................\n", 16) // 1 KiB
	if err := os.WriteFile(filepath.Join(path, "out.txt"), []byte(out), 0o644); err != nil {
		return "", "", err
	}
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = path
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=load", "GIT_AUTHOR_EMAIL=load@example.com",
			"GIT_COMMITTER_NAME=load", "GIT_COMMITTER_EMAIL=load@example.com")
		b, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, b)
		}
		return strings.TrimSpace(string(b)), nil
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "kiln.yaml", "out.txt"}, {"commit", "-qm", "no-op project"}} {
		if _, err := git(args...); err != nil {
			return "", "", err
		}
	}
	commit, err = git("rev-parse", "HEAD")
	return path, commit, err
}

package server

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnbuild/kiln/internal/manifest"
)

// gitRepo makes a repository with one commit of files and returns its URL
// and commit id.
func gitRepo(t *testing.T, files map[string]string) (url, commit string) {
	t.Helper()
	dir := t.TempDir()
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("add", "-A")
	git("commit", "-q", "-m", "x")
	return "file://" + dir, git("rev-parse", "HEAD")
}

func TestMirrors_Manifest_DetectsTheDefaultRecipe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		name    string
		files   map[string]string
		summary string
		key     string
	}{
		{"a CMake tree", map[string]string{"CMakeLists.txt": "project(x C)\n", "src/meson.build": "x"}, "cmake — found CMakeLists.txt", "default-" + manifest.DefaultRecipeVersion + "/cmake"},
		{"a Meson tree", map[string]string{"meson.build": "project('x', 'c')\n"}, "meson — found meson.build", "default-" + manifest.DefaultRecipeVersion + "/meson"},
		{"kiln.yaml wins over detection", map[string]string{"CMakeLists.txt": "x", "kiln.yaml": "build: [make]\nartifacts: [x]\n"}, "kiln.yaml", ""},
	}
	ms := newMirrors(t.TempDir())
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, commit := gitRepo(t, tt.files)
			project := "p" + string(rune('a'+i))
			mir := ms.get(project, url)
			if err := mir.EnsureCommit(ctx, commit); err != nil {
				t.Fatal(err)
			}
			man, err := ms.manifest(ctx, project, mir, commit)
			if err != nil {
				t.Fatal(err)
			}
			if man.Summary() != tt.summary || man.RecipeKey() != tt.key {
				t.Errorf("manifest summary %q key %q, want %q %q", man.Summary(), man.RecipeKey(), tt.summary, tt.key)
			}
			if tt.key != "" && man.Recipe().GetSummary() != tt.summary {
				t.Errorf("recipe summary %q", man.Recipe().GetSummary())
			}
		})
	}
}

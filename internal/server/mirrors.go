package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/kilnbuild/kiln/internal/gitmirror"
	"github.com/kilnbuild/kiln/internal/manifest"
)

// mirrors holds one bare mirror per project under dir, and the manifests
// already read (a commit's manifest never changes).
type mirrors struct {
	dir string

	mu        sync.Mutex
	byProject map[string]*gitmirror.Mirror
	manifests map[string]*manifest.Manifest
}

const maxCachedManifests = 4096

func newMirrors(dir string) *mirrors {
	return &mirrors{dir: dir, byProject: map[string]*gitmirror.Mirror{}, manifests: map[string]*manifest.Manifest{}}
}

// get returns the mirror of a project (no I/O).
func (m *mirrors) get(project, url string) *gitmirror.Mirror {
	m.mu.Lock()
	defer m.mu.Unlock()
	mir, ok := m.byProject[project]
	if !ok || mir.URL() != url {
		mir = gitmirror.New(filepath.Join(m.dir, project+".git"), url)
		m.byProject[project] = mir
	}
	return mir
}

// manifest returns the manifest of project at commit, or, when the commit
// has no kiln.yaml, the default recipe manifest.Detect chooses from the
// names at the top of its tree.
func (m *mirrors) manifest(ctx context.Context, project string, mir *gitmirror.Mirror, commit string) (*manifest.Manifest, error) {
	key := project + "\x00" + commit
	m.mu.Lock()
	man, ok := m.manifests[key]
	m.mu.Unlock()
	if ok {
		return man, nil
	}
	data, err := mir.ReadFile(ctx, commit, manifest.FileName)
	switch {
	case errors.Is(err, os.ErrNotExist):
		names, lerr := mir.RootNames(ctx, commit)
		if lerr != nil {
			return nil, lerr
		}
		man = manifest.Detect(names)
	case err != nil:
		return nil, err
	default:
		man, err = manifest.Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s at %.12s: %w", manifest.FileName, commit, err)
		}
	}
	m.mu.Lock()
	if len(m.manifests) >= maxCachedManifests {
		m.manifests = map[string]*manifest.Manifest{}
	}
	m.manifests[key] = man
	m.mu.Unlock()
	return man, nil
}

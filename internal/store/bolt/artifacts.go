package bolt

import (
	"fmt"

	"github.com/kilnbuild/kiln/internal/store"
)

func artifactSourceKey(a *store.Artifact) []byte {
	return append(strKey(a.GetSourceKey()), a.GetCacheKey()...)
}

// PutArtifact creates or replaces the cache entry a.CacheKey (non-empty) and
// moves its artifacts_by_source entry when a.SourceKey changed.
func (t *tx) PutArtifact(a *store.Artifact) error {
	if err := t.write(); err != nil {
		return err
	}
	if a.GetCacheKey() == "" {
		return invalid("artifact without a cache key")
	}
	key := []byte(a.CacheKey)
	var prevSource string
	pv := t.bucket(bucketArtifacts).Get(key)
	hadPrev := pv != nil
	if hadPrev {
		var err error
		if prevSource, err = scanArtifactSourceKey(pv); err != nil {
			return fmt.Errorf("bolt: decode %s/%x: %w", bucketArtifacts, key, err)
		}
	}
	if hadPrev && prevSource != a.SourceKey {
		if err := t.del(bucketArtifactsBySource, append(strKey(prevSource), a.CacheKey...)); err != nil {
			return err
		}
	}
	if !hadPrev || prevSource != a.SourceKey {
		if err := t.mark(bucketArtifactsBySource, artifactSourceKey(a)); err != nil {
			return err
		}
	}
	return t.put(bucketArtifacts, key, a)
}

// Artifact returns the cache entry cacheKey.
func (t *tx) Artifact(cacheKey string) (*store.Artifact, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return t.artifact(cacheKey)
}

func (t *tx) artifact(cacheKey string) (*store.Artifact, error) {
	a := new(store.Artifact)
	found, err := t.get(bucketArtifacts, []byte(cacheKey), a)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("artifact", cacheKey)
	}
	return a, nil
}

// ArtifactsBySource returns the cache entries with sourceKey, ordered by
// cache key.
func (t *tx) ArtifactsBySource(sourceKey string) ([]*store.Artifact, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	prefix := strKey(sourceKey)
	var out []*store.Artifact
	for _, k := range t.keysWithPrefix(bucketArtifactsBySource, prefix) {
		a, err := t.artifact(string(k[len(prefix):]))
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// DeleteArtifact removes the cache entry cacheKey and its index entry. It
// fails with ErrNotFound when there is none. Pins naming it are untouched.
func (t *tx) DeleteArtifact(cacheKey string) error {
	if err := t.write(); err != nil {
		return err
	}
	a, err := t.artifact(cacheKey)
	if err != nil {
		return err
	}
	if err := t.del(bucketArtifactsBySource, artifactSourceKey(a)); err != nil {
		return err
	}
	return t.del(bucketArtifacts, []byte(cacheKey))
}

// Artifacts calls fn for every cache entry in cache key order. fn may put
// or delete artifacts as it goes.
func (t *tx) Artifacts(fn func(*store.Artifact) error) error {
	if err := t.read(); err != nil {
		return err
	}
	return t.each(bucketArtifacts, nil, func(k, v []byte) error {
		a := new(store.Artifact)
		if err := decode(bucketArtifacts, k, v, a); err != nil {
			return err
		}
		return fn(a)
	})
}

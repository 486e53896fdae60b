package pgstore

import (
	"errors"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
)

// PutRequest creates or replaces request r.Id (non-zero), indexed by its
// build id.
func (t *tx) PutRequest(r *store.Request) error {
	if err := t.write(); err != nil {
		return err
	}
	if r.GetId() == 0 || r.GetId() > maxID || r.GetBuildId() > maxID {
		return invalid("request with id %d for build %d", r.GetId(), r.GetBuildId())
	}
	v, err := encode("request", r)
	if err != nil {
		return err
	}
	err = t.later("put request", `INSERT INTO requests (id, build_id, rec) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET build_id = EXCLUDED.build_id, rec = EXCLUDED.rec`, int64(r.Id), int64(r.BuildId), v)
	return err
}

// Request returns request id.
func (t *tx) Request(id uint64) (*store.Request, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	r := new(store.Request)
	found := false
	var err error
	if id <= maxID {
		found, err = t.getRec("request", r, `SELECT rec FROM requests WHERE id = $1`, int64(id))
	}
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("request", id)
	}
	return r, nil
}

// RequestsForBuild returns the requests with BuildId buildID in ascending
// request id order.
func (t *tx) RequestsForBuild(buildID uint64) ([]*store.Request, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	if buildID > maxID {
		return nil, nil
	}
	if recs, ok := t.pageRequests[int64(buildID)]; ok {
		out := make([]*store.Request, 0, len(recs))
		for _, v := range recs {
			r := new(store.Request)
			if err := decode("request", v, r); err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	return collect(t, "requests for build", func() *store.Request { return new(store.Request) },
		`SELECT rec FROM requests WHERE build_id = $1 ORDER BY id`, int64(buildID))
}

// PutArtifact creates or replaces the cache entry a.CacheKey (non-empty),
// indexed by its source key.
func (t *tx) PutArtifact(a *store.Artifact) error {
	if err := t.write(); err != nil {
		return err
	}
	if a.GetCacheKey() == "" {
		return invalid("artifact without a cache key")
	}
	v, err := encode("artifact", a)
	if err != nil {
		return err
	}
	err = t.later("put artifact", `INSERT INTO artifacts (cache_key, source_key, rec) VALUES ($1, $2, $3)
		ON CONFLICT (cache_key) DO UPDATE SET source_key = EXCLUDED.source_key, rec = EXCLUDED.rec`, a.CacheKey, a.SourceKey, v)
	return err
}

// Artifact returns the cache entry cacheKey.
func (t *tx) Artifact(cacheKey string) (*store.Artifact, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	a := new(store.Artifact)
	found, err := t.getRec("artifact", a, `SELECT rec FROM artifacts WHERE cache_key = $1`, cacheKey)
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
	return collect(t, "artifacts by source", func() *store.Artifact { return new(store.Artifact) },
		`SELECT rec FROM artifacts WHERE source_key = $1 ORDER BY cache_key`, sourceKey)
}

// DeleteArtifact removes the cache entry cacheKey; ErrNotFound when there
// is none. Pins naming it are untouched.
func (t *tx) DeleteArtifact(cacheKey string) error {
	if err := t.write(); err != nil {
		return err
	}
	tag, err := t.exec("delete artifact", `DELETE FROM artifacts WHERE cache_key = $1`, cacheKey)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return notFound("artifact", cacheKey)
	}
	return nil
}

// Artifacts calls fn for every cache entry in cache key order, a page at a
// time after the last key visited, so fn may put or delete artifacts as it
// goes.
func (t *tx) Artifacts(fn func(*store.Artifact) error) error {
	if err := t.read(); err != nil {
		return err
	}
	first, after := true, ""
	for {
		page, err := collect(t, "artifacts", func() *store.Artifact { return new(store.Artifact) },
			`SELECT rec FROM artifacts WHERE $1 OR cache_key > $2 ORDER BY cache_key LIMIT 256`, first, after)
		if err != nil {
			return err
		}
		first = false
		for _, a := range page {
			after = a.GetCacheKey()
			if err := fn(a); err != nil {
				if errors.Is(err, store.ErrStop) {
					return nil
				}
				return err
			}
		}
		if len(page) < 256 {
			return nil
		}
	}
}

// PutOutbox creates or replaces message m.Id (non-zero), due at
// m.NextAttemptAt (nil: at once).
func (t *tx) PutOutbox(m *store.Outbox) error {
	if err := t.write(); err != nil {
		return err
	}
	if m.GetId() == 0 || m.GetId() > maxID {
		return invalid("outbox message with id %d", m.GetId())
	}
	v, err := encode("outbox message", m)
	if err != nil {
		return err
	}
	err = t.later("put outbox message", `INSERT INTO outbox (id, due_s, due_n, rec) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET due_s = EXCLUDED.due_s, due_n = EXCLUDED.due_n, rec = EXCLUDED.rec`,
		int64(m.Id), m.GetNextAttemptAt().GetSeconds(), m.GetNextAttemptAt().GetNanos(), v)
	return err
}

// DueOutbox returns up to limit (none when limit <= 0) messages whose next
// attempt is at or before now, earliest first, ties by id.
func (t *tx) DueOutbox(now time.Time, limit int) ([]*store.Outbox, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	return collect(t, "due outbox", func() *store.Outbox { return new(store.Outbox) },
		`SELECT rec FROM outbox WHERE (due_s, due_n) <= ($1, $2) ORDER BY due_s, due_n, id LIMIT $3`,
		now.Unix(), int32(now.Nanosecond()), limit)
}

// DeleteOutbox removes message id; ErrNotFound when there is none.
func (t *tx) DeleteOutbox(id uint64) error {
	if err := t.write(); err != nil {
		return err
	}
	if id > maxID {
		return notFound("outbox message", id)
	}
	tag, err := t.exec("delete outbox message", `DELETE FROM outbox WHERE id = $1`, int64(id))
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return notFound("outbox message", id)
	}
	return nil
}

// OutboxLen counts the messages waiting.
func (t *tx) OutboxLen() (int, error) {
	if err := t.read(); err != nil {
		return 0, err
	}
	var n int64
	if err := t.queryRow(`SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		return 0, classify("outbox length", err)
	}
	return int(n), nil
}

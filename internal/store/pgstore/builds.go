package pgstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// MaxListLimit caps the limit of ListBuilds so one call holds a bounded
// number of records in memory (as bolt's).
const MaxListLimit = 1000

// pageSize is how many ids an iteration reads per query.
const pageSize = 256

// Build returns build id.
func (t *tx) Build(id uint64) (*store.Build, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return t.build(id)
}

func (t *tx) build(id uint64) (*store.Build, error) {
	if id > maxID {
		return nil, notFound("build", id)
	}
	b := new(store.Build)
	found, err := t.getRec("build", b, `SELECT rec FROM builds WHERE id = $1`, int64(id))
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("build", id)
	}
	return b, nil
}

// PutBuild creates or replaces build b.Build.Id (non-zero, with a state);
// its index columns come from b in the same statement, and a trigger keeps
// build_counts in step.
func (t *tx) PutBuild(b *store.Build) error {
	if err := t.write(); err != nil {
		return err
	}
	id := b.GetBuild().GetId()
	if id == 0 || id > maxID {
		return invalid("build with id %d", id)
	}
	state := b.GetBuild().GetState()
	if state <= kilnv1.BuildState_BUILD_STATE_UNSPECIFIED || state > 255 {
		return invalid("build %d has state %v", id, state)
	}
	v, err := encode("build", b)
	if err != nil {
		return err
	}
	if t.wroteBuild == nil {
		t.wroteBuild = make(map[int64]bool)
	}
	t.wroteBuild[int64(id)] = true
	t.buildsWritten++
	err = t.later("put build", `INSERT INTO builds (id, state, project, arch, source_key, rec) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, project = EXCLUDED.project, arch = EXCLUDED.arch,
			source_key = EXCLUDED.source_key, rec = EXCLUDED.rec`,
		int64(id), int32(state), b.GetBuild().GetProject(), store.BuildArch(b), b.GetSourceKey(), v)
	return err
}

// BuildsByState calls fn for each build in state in ascending id order,
// reading a page of records per query. fn may change builds (even move
// them out of state) as it goes: a build this transaction wrote since its
// page was read is read afresh (and skipped if it left state) just before
// its call.
func (t *tx) BuildsByState(state kilnv1.BuildState, fn func(*store.Build) error) error {
	if err := t.read(); err != nil {
		return err
	}
	if state <= kilnv1.BuildState_BUILD_STATE_UNSPECIFIED || state > 255 {
		return invalid("no builds are indexed in state %v", state)
	}
	var after int64
	defer func() { t.pageRequests = nil }()
	for {
		page, err := t.buildPage(state, after)
		if err != nil {
			return err
		}
		if err := t.prefetchRequests(page); err != nil {
			return err
		}
		written := t.buildsWritten
		for _, b := range page {
			id := int64(b.GetBuild().GetId())
			after = id
			if t.buildsWritten != written && t.wroteBuild[id] {
				b = new(store.Build)
				found, err := t.getRec("build", b, `SELECT rec FROM builds WHERE id = $1 AND state = $2`, id, int32(state))
				if err != nil {
					return err
				}
				if !found {
					continue
				}
			}
			if err := fn(b); err != nil {
				if errors.Is(err, store.ErrStop) {
					return nil
				}
				return err
			}
		}
		if len(page) < pageSize {
			return nil
		}
	}
}

// prefetchRequests reads, in a read-only transaction, the requests of
// every build of page in one query, for RequestsForBuild to answer while
// the page is visited (startup recovery reads each queued and running
// build's requests). A writable transaction could change them meanwhile,
// so it reads them one build at a time.
func (t *tx) prefetchRequests(page []*store.Build) error {
	t.pageRequests = nil
	if t.writable || len(page) == 0 {
		return nil
	}
	ids := make([]int64, len(page))
	got := make(map[int64][][]byte, len(page))
	for i, b := range page {
		ids[i] = int64(b.GetBuild().GetId())
		got[ids[i]] = nil
	}
	rows, err := t.query(`SELECT build_id, rec FROM requests WHERE build_id = ANY($1) ORDER BY build_id, id`, ids)
	if err != nil {
		return classify("requests of builds", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var v []byte
		if err := rows.Scan(&id, &v); err != nil {
			return classify("requests of builds", err)
		}
		got[id] = append(got[id], v)
	}
	if err := rows.Err(); err != nil {
		return classify("requests of builds", err)
	}
	t.pageRequests = got
	return nil
}

// buildPage reads up to pageSize builds in state with ids above after.
func (t *tx) buildPage(state kilnv1.BuildState, after int64) ([]*store.Build, error) {
	return collect(t, "builds by state", func() *store.Build { return new(store.Build) },
		`SELECT rec FROM builds WHERE state = $1 AND id > $2 ORDER BY id LIMIT `+fmt.Sprint(pageSize), int32(state), after)
}

// ActiveBuildsBySource returns the QUEUED and RUNNING builds with sourceKey,
// in ascending id order.
func (t *tx) ActiveBuildsBySource(sourceKey string) ([]*store.Build, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return collect(t, "active builds by source", func() *store.Build { return new(store.Build) },
		`SELECT rec FROM builds WHERE state IN ($1, $2) AND source_key = $3 ORDER BY id`,
		int32(kilnv1.BuildState_BUILD_STATE_QUEUED), int32(kilnv1.BuildState_BUILD_STATE_RUNNING), sourceKey)
}

// ListBuilds returns up to limit (at most MaxListLimit; none when limit <= 0)
// builds matching f with ids below beforeID (0: no bound), newest first. The
// indexed fields (state, project, arch) select in SQL; the other platform
// fields are checked on each record (store.BuildFilter.Matches), a page at
// a time, until limit builds matched.
func (t *tx) ListBuilds(f store.BuildFilter, beforeID uint64, limit int) ([]*store.Build, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	limit = min(limit, MaxListLimit)
	var where []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.State != kilnv1.BuildState_BUILD_STATE_UNSPECIFIED {
		if f.State < 0 || f.State > 255 {
			return nil, invalid("no builds are indexed in state %v", f.State)
		}
		arg("state = $%d", int32(f.State))
	}
	if f.Project != "" {
		arg("project = $%d", f.Project)
	}
	if a := f.Platform.GetArch(); a != "" {
		arg("arch = $%d", a)
	}
	before := int64(maxID)
	if beforeID > 0 && beforeID <= maxID {
		before = int64(beforeID)
	} else if beforeID > maxID {
		before = maxID
	}
	args = append(args, before)
	where = append(where, fmt.Sprintf("id < $%d", len(args)))
	pos := len(args) - 1
	sql := `SELECT id, rec FROM builds WHERE ` + strings.Join(where, " AND ") + ` ORDER BY id DESC LIMIT ` + fmt.Sprint(max(limit, pageSize))
	var out []*store.Build
	for {
		rows, err := t.query(sql, args...)
		if err != nil {
			return nil, classify("list builds", err)
		}
		n := 0
		for rows.Next() {
			var id int64
			var v []byte
			if err := rows.Scan(&id, &v); err != nil {
				rows.Close()
				return nil, classify("list builds", err)
			}
			n++
			args[pos] = id
			b := new(store.Build)
			if err := decode("build", v, b); err != nil {
				rows.Close()
				return nil, err
			}
			if f.Matches(b) && len(out) < limit {
				out = append(out, b)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, classify("list builds", err)
		}
		if len(out) >= limit || n < max(limit, pageSize) {
			return out, nil
		}
	}
}

// CountBuildsByState returns the number of builds in each state, from the
// counts the trigger on builds keeps (this transaction's own changes
// included); states without builds are absent from the map.
func (t *tx) CountBuildsByState() (map[kilnv1.BuildState]uint64, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	rows, err := t.query(`SELECT state, n FROM build_counts WHERE n > 0`)
	if err != nil {
		return nil, classify("count builds", err)
	}
	defer rows.Close()
	out := make(map[kilnv1.BuildState]uint64)
	for rows.Next() {
		var s int32
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			return nil, classify("count builds", err)
		}
		out[kilnv1.BuildState(s)] = uint64(n)
	}
	return out, classifyNil("count builds", rows.Err())
}

// classifyNil is classify for an error that may be nil.
func classifyNil(op string, err error) error {
	if err == nil {
		return nil
	}
	return classify(op, err)
}

package bolt

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/kilnbuild/kiln/internal/store"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// MaxListLimit caps the limit of ListBuilds so one call holds a bounded
// number of records in memory.
const MaxListLimit = 1000

// Build returns build id.
func (t *tx) Build(id uint64) (*store.Build, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return t.build(id)
}

func (t *tx) build(id uint64) (*store.Build, error) {
	b := new(store.Build)
	found, err := t.get(bucketBuilds, u64(id), b)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("build", id)
	}
	return b, nil
}

// buildIndexKeys are the index entries of one version of a build record.
type buildIndexKeys struct {
	state, project, arch []byte
}

func stateByte(s kilnv1.BuildState) (byte, bool) {
	if s <= kilnv1.BuildState_BUILD_STATE_UNSPECIFIED || s > 255 {
		return 0, false
	}
	return byte(s), true
}

func indexKeys(b *store.Build) buildIndexKeys {
	v := b.GetBuild()
	sb, _ := stateByte(v.GetState())
	return buildIndexKeys{
		state:   binary.BigEndian.AppendUint64([]byte{sb}, v.GetId()),
		project: strIDKey(v.GetProject(), v.GetId()),
		arch:    strIDKey(store.BuildArch(b), v.GetId()),
	}
}

// PutBuild creates or replaces build b.Build.Id (non-zero, with a state) and
// moves its index entries and state counts from the previous version of the
// record, read in the same transaction (only the fields they derive from:
// scanBuildIndexFields).
func (t *tx) PutBuild(b *store.Build) error {
	if err := t.write(); err != nil {
		return err
	}
	id := b.GetBuild().GetId()
	if id == 0 {
		return invalid("build without an id")
	}
	state := b.GetBuild().GetState()
	if _, ok := stateByte(state); !ok {
		return invalid("build %d has state %v", id, state)
	}
	key := u64(id)
	var prev buildIndexFields
	pv := t.bucket(bucketBuilds).Get(key)
	hadPrev := pv != nil
	if hadPrev {
		var err error
		if prev, err = scanBuildIndexFields(pv); err != nil {
			return fmt.Errorf("bolt: decode %s/%x: %w", bucketBuilds, key, err)
		}
	}
	next := indexKeys(b)
	var old buildIndexKeys
	if hadPrev {
		old = prev.keys(id)
	}
	for _, ix := range []struct {
		bucket    []byte
		old, next []byte
	}{
		{bucketBuildsByState, old.state, next.state},
		{bucketBuildsByProject, old.project, next.project},
		{bucketBuildsByArch, old.arch, next.arch},
	} {
		if bytes.Equal(ix.old, ix.next) {
			continue
		}
		if ix.old != nil {
			if err := t.del(ix.bucket, ix.old); err != nil {
				return err
			}
		}
		if ix.next != nil {
			if err := t.mark(ix.bucket, ix.next); err != nil {
				return err
			}
		}
	}
	if !hadPrev || prev.state != state {
		if hadPrev {
			t.countBuild(byte(prev.state), -1)
		}
		t.countBuild(byte(state), 1)
	}
	return t.put(bucketBuilds, key, b)
}

// BuildsByState calls fn for each build in state in ascending id order. fn
// may change builds (even move them out of state) as it goes: the index is
// sought afresh after each call.
func (t *tx) BuildsByState(state kilnv1.BuildState, fn func(*store.Build) error) error {
	if err := t.read(); err != nil {
		return err
	}
	sb, ok := stateByte(state)
	if !ok {
		return invalid("no builds are indexed in state %v", state)
	}
	return t.each(bucketBuildsByState, []byte{sb}, func(k, _ []byte) error {
		b, err := t.build(trailingID(k))
		if err != nil {
			return err
		}
		return fn(b)
	})
}

// ActiveBuildsBySource returns the QUEUED and RUNNING builds with sourceKey,
// in ascending id order. It reads every active build (through
// builds_by_state): no index by source is kept, since keeping one cost each
// build two writes to a random page and the metaserver holds its active
// builds in memory anyway (see SchemaVersion 2).
func (t *tx) ActiveBuildsBySource(sourceKey string) ([]*store.Build, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var out []*store.Build
	for _, state := range []kilnv1.BuildState{kilnv1.BuildState_BUILD_STATE_QUEUED, kilnv1.BuildState_BUILD_STATE_RUNNING} {
		sb, _ := stateByte(state)
		c := t.bucket(bucketBuildsByState).Cursor()
		prefix := []byte{sb}
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			b, err := t.build(trailingID(k))
			if err != nil {
				return nil, err
			}
			if b.GetSourceKey() == sourceKey {
				out = append(out, b)
			}
		}
	}
	slices.SortFunc(out, func(a, b *store.Build) int { return cmp.Compare(a.GetBuild().GetId(), b.GetBuild().GetId()) })
	return out, nil
}

// ListBuilds returns up to limit (at most MaxListLimit; none when limit <= 0)
// builds matching f with ids below beforeID (0: no bound), newest first. It
// walks the most selective index backwards (project, then state, then arch,
// else all builds) and stops as soon as limit builds matched, so the work is
// proportional to the builds skipped by the other filters.
func (t *tx) ListBuilds(f store.BuildFilter, beforeID uint64, limit int) ([]*store.Build, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	limit = min(limit, MaxListLimit)
	bucket, prefix := bucketBuilds, []byte(nil)
	switch {
	case f.Project != "":
		bucket, prefix = bucketBuildsByProject, strKey(f.Project)
	case f.State != kilnv1.BuildState_BUILD_STATE_UNSPECIFIED:
		sb, ok := stateByte(f.State)
		if !ok {
			return nil, invalid("no builds are indexed in state %v", f.State)
		}
		bucket, prefix = bucketBuildsByState, []byte{sb}
	case f.Platform.GetArch() != "":
		bucket, prefix = bucketBuildsByArch, strKey(f.Platform.GetArch())
	}
	primary := prefix == nil

	c := t.bucket(bucket).Cursor()
	var k, v []byte
	var start []byte
	if beforeID > 0 {
		start = binary.BigEndian.AppendUint64(bytes.Clone(prefix), beforeID)
	} else {
		start = successor(prefix)
	}
	if start == nil {
		k, v = c.Last()
	} else if k, v = c.Seek(start); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	var out []*store.Build
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Prev() {
		var b *store.Build
		if primary {
			b = new(store.Build)
			if err := decode(bucketBuilds, k, v, b); err != nil {
				return nil, err
			}
		} else {
			var err error
			if b, err = t.build(trailingID(k)); err != nil {
				return nil, err
			}
		}
		if matches(f, b) {
			out = append(out, b)
		}
	}
	return out, nil
}

func matches(f store.BuildFilter, b *store.Build) bool { return f.Matches(b) }

// CountBuildsByState returns the number of builds in each state, from
// counters PutBuild keeps (with this transaction's own changes, written when
// its closure returns); states without builds are absent from the map.
func (t *tx) CountBuildsByState() (map[kilnv1.BuildState]uint64, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	out := make(map[kilnv1.BuildState]uint64)
	err := t.bucket(bucketBuildCounts).ForEach(func(k, v []byte) error {
		if len(k) == 1 && len(v) == 8 {
			out[kilnv1.BuildState(k[0])] = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	for sb, d := range t.counts { // this transaction's own PutBuilds
		st := kilnv1.BuildState(sb)
		if n := int64(out[st]) + d; n > 0 {
			out[st] = uint64(n)
		} else {
			delete(out, st)
		}
	}
	return out, err
}

package bolt

import (
	"bytes"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/kilnbuild/kiln/internal/store"
)

// PutSample stores s under its time, replacing a sample taken at the same
// instant, then deletes the oldest samples until at most keep remain.
func (t *tx) PutSample(s *store.Sample, keep int) error {
	if err := t.write(); err != nil {
		return err
	}
	if s.GetAt() == nil {
		return invalid("sample without a time")
	}
	if keep < 1 {
		return invalid("keep %d samples: at least 1", keep)
	}
	if err := t.put(bucketSamples, dueTime(s.GetAt()), s); err != nil {
		return err
	}
	// Count from the newest: past keep, every older key goes. A sample a
	// minute and a day kept is 1,440 keys to step over: the whole
	// transaction takes ~150 µs without its fsync (BenchmarkPutSampleFullRing;
	// a fsynced build commit took 3.3 ms in the same run), once a minute.
	c := t.bucket(bucketSamples).Cursor()
	n := 0
	var stale [][]byte
	for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
		if n++; n > keep {
			stale = append(stale, bytes.Clone(k))
		}
	}
	for _, k := range stale {
		if err := t.del(bucketSamples, k); err != nil {
			return err
		}
	}
	return nil
}

// Samples calls fn for each sample taken at or after since, oldest first.
func (t *tx) Samples(since time.Time, fn func(*store.Sample) error) error {
	if err := t.read(); err != nil {
		return err
	}
	c := t.bucket(bucketSamples).Cursor()
	for k, v := c.Seek(dueTime(timestamppb.New(since))); k != nil; k, v = c.Next() {
		s := new(store.Sample)
		if err := decode(bucketSamples, k, v, s); err != nil {
			return err
		}
		if err := fn(s); err != nil {
			if errors.Is(err, store.ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

// RequestGroup returns the request group id.
func (t *tx) RequestGroup(id string) (*store.RequestGroup, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	g := new(store.RequestGroup)
	found, err := t.get(bucketRequestGroups, []byte(id), g)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("request group", id)
	}
	return g, nil
}

// PutRequestGroup creates or replaces g under g.Id.
func (t *tx) PutRequestGroup(g *store.RequestGroup) error {
	if err := t.write(); err != nil {
		return err
	}
	if g.GetId() == "" {
		return invalid("request group without an id")
	}
	return t.put(bucketRequestGroups, []byte(g.GetId()), g)
}

// DeleteRequestGroup removes the request group id.
func (t *tx) DeleteRequestGroup(id string) error {
	if err := t.write(); err != nil {
		return err
	}
	if t.bucket(bucketRequestGroups).Get([]byte(id)) == nil {
		return notFound("request group", id)
	}
	return t.del(bucketRequestGroups, []byte(id))
}

// RequestGroups calls fn for every request group in id order.
func (t *tx) RequestGroups(fn func(*store.RequestGroup) error) error {
	if err := t.read(); err != nil {
		return err
	}
	return t.each(bucketRequestGroups, nil, func(k, v []byte) error {
		g := new(store.RequestGroup)
		if err := decode(bucketRequestGroups, k, v, g); err != nil {
			return err
		}
		return fn(g)
	})
}

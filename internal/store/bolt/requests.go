package bolt

import (
	"fmt"

	"github.com/kilnbuild/kiln/internal/store"
)

// PutRequest creates or replaces request r.Id (non-zero) and moves its
// requests_by_build entry when r.BuildId changed.
func (t *tx) PutRequest(r *store.Request) error {
	if err := t.write(); err != nil {
		return err
	}
	if r.GetId() == 0 {
		return invalid("request without an id")
	}
	key := u64(r.Id)
	var prevBuild uint64
	pv := t.bucket(bucketRequests).Get(key)
	hadPrev := pv != nil
	if hadPrev {
		var err error
		if prevBuild, err = scanRequestBuildID(pv); err != nil {
			return fmt.Errorf("bolt: decode %s/%x: %w", bucketRequests, key, err)
		}
	}
	if hadPrev && prevBuild != r.BuildId {
		if err := t.del(bucketRequestsByBuild, idIDKey(prevBuild, r.Id)); err != nil {
			return err
		}
	}
	if !hadPrev || prevBuild != r.BuildId {
		if err := t.mark(bucketRequestsByBuild, idIDKey(r.BuildId, r.Id)); err != nil {
			return err
		}
	}
	return t.put(bucketRequests, key, r)
}

// Request returns request id.
func (t *tx) Request(id uint64) (*store.Request, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return t.request(id)
}

func (t *tx) request(id uint64) (*store.Request, error) {
	r := new(store.Request)
	found, err := t.get(bucketRequests, u64(id), r)
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
	var out []*store.Request
	for _, k := range t.keysWithPrefix(bucketRequestsByBuild, u64(buildID)) {
		r, err := t.request(trailingID(k))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

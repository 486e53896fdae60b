package bolt

import (
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
	prev := new(store.Request)
	hadPrev, err := t.get(bucketRequests, u64(r.Id), prev)
	if err != nil {
		return err
	}
	if hadPrev && prev.BuildId != r.BuildId {
		if err := t.del(bucketRequestsByBuild, idIDKey(prev.BuildId, r.Id)); err != nil {
			return err
		}
	}
	if !hadPrev || prev.BuildId != r.BuildId {
		if err := t.mark(bucketRequestsByBuild, idIDKey(r.BuildId, r.Id)); err != nil {
			return err
		}
	}
	return t.put(bucketRequests, u64(r.Id), r)
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

package pgstore

import (
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kilnbuild/kiln/internal/store"
)

// Operator returns the operator called name, or an error wrapping
// store.ErrNotFound.
func (t *tx) Operator(name string) (*store.Operator, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	o := new(store.Operator)
	found, err := t.getRec("operator", o, `SELECT rec FROM operators WHERE name = $1`, name)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, notFound("operator", name)
	}
	return o, nil
}

// CreateOperator stores o under o.Name; store.ErrExists when it is taken.
func (t *tx) CreateOperator(o *store.Operator) error {
	if err := t.write(); err != nil {
		return err
	}
	if o.GetName() == "" {
		return invalid("operator without a name")
	}
	taken, err := t.exists("operator", `SELECT 1 FROM operators WHERE name = $1`, o.GetName())
	if err != nil {
		return err
	}
	if taken {
		return existsErr("operator", o.GetName())
	}
	v, err := encode("operator", o)
	if err != nil {
		return err
	}
	_, err = t.exec("create operator", `INSERT INTO operators (name, rec) VALUES ($1, $2)`, o.GetName(), v)
	return err
}

// Operators returns every operator, ordered by name.
func (t *tx) Operators() ([]*store.Operator, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	return collect(t, "operators", func() *store.Operator { return new(store.Operator) }, `SELECT rec FROM operators ORDER BY name`)
}

// Pins calls fn for every pin in name order.
func (t *tx) Pins(fn func(*store.Pin) error) error {
	if err := t.read(); err != nil {
		return err
	}
	pins, err := collect(t, "pins", func() *store.Pin { return new(store.Pin) }, `SELECT rec FROM pins ORDER BY name`)
	if err != nil {
		return err
	}
	return each(pins, fn)
}

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
	v, err := encode("sample", s)
	if err != nil {
		return err
	}
	if err := t.later("put sample", `INSERT INTO samples (at_s, at_n, rec) VALUES ($1, $2, $3)
		ON CONFLICT (at_s, at_n) DO UPDATE SET rec = EXCLUDED.rec`, s.GetAt().GetSeconds(), s.GetAt().GetNanos(), v); err != nil {
		return err
	}
	err = t.later("trim samples", `DELETE FROM samples WHERE (at_s, at_n) IN (
		SELECT at_s, at_n FROM samples ORDER BY at_s DESC, at_n DESC OFFSET $1)`, keep)
	return err
}

// Samples calls fn for each sample taken at or after since, oldest first.
func (t *tx) Samples(since time.Time, fn func(*store.Sample) error) error {
	if err := t.read(); err != nil {
		return err
	}
	samples, err := collect(t, "samples", func() *store.Sample { return new(store.Sample) },
		`SELECT rec FROM samples WHERE (at_s, at_n) >= ($1, $2) ORDER BY at_s, at_n`, since.Unix(), int32(since.Nanosecond()))
	if err != nil {
		return err
	}
	return each(samples, fn)
}

// RequestGroup returns the request group id.
func (t *tx) RequestGroup(id string) (*store.RequestGroup, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	g := new(store.RequestGroup)
	found, err := t.getRec("request group", g, `SELECT rec FROM request_groups WHERE id = $1`, id)
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
	v, err := encode("request group", g)
	if err != nil {
		return err
	}
	err = t.later("put request group", `INSERT INTO request_groups (id, rec) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET rec = EXCLUDED.rec`, g.GetId(), v)
	return err
}

// DeleteRequestGroup removes the request group id.
func (t *tx) DeleteRequestGroup(id string) error {
	if err := t.write(); err != nil {
		return err
	}
	tag, err := t.exec("delete request group", `DELETE FROM request_groups WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return notFound("request group", id)
	}
	return nil
}

// RequestGroups calls fn for every request group in id order.
func (t *tx) RequestGroups(fn func(*store.RequestGroup) error) error {
	if err := t.read(); err != nil {
		return err
	}
	groups, err := collect(t, "request groups", func() *store.RequestGroup { return new(store.RequestGroup) }, `SELECT rec FROM request_groups ORDER BY id`)
	if err != nil {
		return err
	}
	return each(groups, fn)
}

// each calls fn for every record until fn returns an error (returned as
// is) or store.ErrStop (nil). The records are read before the first call:
// a query's rows cannot stay open while fn uses the same connection.
func each[T proto.Message](recs []T, fn func(T) error) error {
	for _, r := range recs {
		if err := fn(r); err != nil {
			if errors.Is(err, store.ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

package bolt

import "github.com/kilnbuild/kiln/internal/store"

// Operator returns the operator called name, or an error wrapping
// store.ErrNotFound.
func (t *tx) Operator(name string) (*store.Operator, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	o := new(store.Operator)
	found, err := t.get(bucketOperators, []byte(name), o)
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
	if t.bucket(bucketOperators).Get([]byte(o.GetName())) != nil {
		return exists("operator", o.GetName())
	}
	return t.put(bucketOperators, []byte(o.GetName()), o)
}

// Operators returns every operator, ordered by name.
func (t *tx) Operators() ([]*store.Operator, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	var out []*store.Operator
	err := t.bucket(bucketOperators).ForEach(func(k, v []byte) error {
		o := new(store.Operator)
		if err := decode(bucketOperators, k, v, o); err != nil {
			return err
		}
		out = append(out, o)
		return nil
	})
	return out, err
}

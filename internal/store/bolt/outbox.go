package bolt

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/kilnbuild/kiln/internal/store"
)

// PutOutbox creates or replaces message m.Id (non-zero) and moves its
// outbox_due entry to m.NextAttemptAt (nil: due at once).
func (t *tx) PutOutbox(m *store.Outbox) error {
	if err := t.write(); err != nil {
		return err
	}
	if m.GetId() == 0 {
		return invalid("outbox message without an id")
	}
	prev := new(store.Outbox)
	hadPrev, err := t.get(bucketOutbox, u64(m.Id), prev)
	if err != nil {
		return err
	}
	oldKey, newKey := []byte(nil), dueKey(m.NextAttemptAt, m.Id)
	if hadPrev {
		oldKey = dueKey(prev.NextAttemptAt, m.Id)
	} else if err := t.add(bucketMeta, keyOutboxLen, 1); err != nil {
		return err
	}
	if !bytes.Equal(oldKey, newKey) {
		if oldKey != nil {
			if err := t.del(bucketOutboxDue, oldKey); err != nil {
				return err
			}
		}
		if err := t.mark(bucketOutboxDue, newKey); err != nil {
			return err
		}
	}
	return t.put(bucketOutbox, u64(m.Id), m)
}

// DueOutbox returns up to limit (none when limit <= 0) messages whose next
// attempt is at or before now, earliest first, ties by id.
func (t *tx) DueOutbox(now time.Time, limit int) ([]*store.Outbox, error) {
	if err := t.read(); err != nil {
		return nil, err
	}
	bound := dueBound(now)
	var out []*store.Outbox
	c := t.bucket(bucketOutboxDue).Cursor()
	for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
		if len(k) != dueLen+8 || bytes.Compare(k[:dueLen], bound) > 0 {
			break
		}
		id := binary.BigEndian.Uint64(k[dueLen:])
		m := new(store.Outbox)
		found, err := t.get(bucketOutbox, u64(id), m)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, notFound("outbox message (indexed as due)", id)
		}
		out = append(out, m)
	}
	return out, nil
}

// DeleteOutbox removes message id. It fails with ErrNotFound when there is
// none (already delivered by another caller, say).
func (t *tx) DeleteOutbox(id uint64) error {
	if err := t.write(); err != nil {
		return err
	}
	m := new(store.Outbox)
	found, err := t.get(bucketOutbox, u64(id), m)
	if err != nil {
		return err
	}
	if !found {
		return notFound("outbox message", id)
	}
	if err := t.del(bucketOutboxDue, dueKey(m.NextAttemptAt, id)); err != nil {
		return err
	}
	if err := t.add(bucketMeta, keyOutboxLen, -1); err != nil {
		return err
	}
	return t.del(bucketOutbox, u64(id))
}

// OutboxLen returns the number of messages waiting, from a counter kept by
// PutOutbox and DeleteOutbox.
func (t *tx) OutboxLen() (int, error) {
	if err := t.read(); err != nil {
		return 0, err
	}
	v := t.bucket(bucketMeta).Get(keyOutboxLen)
	if len(v) != 8 {
		return 0, nil
	}
	return int(binary.BigEndian.Uint64(v)), nil
}

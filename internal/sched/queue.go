package sched

import "sort"

// queue keeps queued builds ordered by id: the oldest request goes first,
// and a build put back after a lost attempt regains its place.
type queue struct {
	builds []*Build
}

func (q *queue) len() int { return len(q.builds) }

func (q *queue) search(id uint64) int {
	return sort.Search(len(q.builds), func(i int) bool { return q.builds[i].ID >= id })
}

func (q *queue) insert(b *Build) {
	i := q.search(b.ID)
	if i < len(q.builds) && q.builds[i] == b {
		return
	}
	q.builds = append(q.builds, nil)
	copy(q.builds[i+1:], q.builds[i:])
	q.builds[i] = b
}

func (q *queue) remove(b *Build) {
	i := q.search(b.ID)
	if i < len(q.builds) && q.builds[i] == b {
		copy(q.builds[i:], q.builds[i+1:])
		q.builds[len(q.builds)-1] = nil
		q.builds = q.builds[:len(q.builds)-1]
	}
}

func (q *queue) position(b *Build) int { return q.search(b.ID) }

func (q *queue) first() *Build {
	if len(q.builds) == 0 {
		return nil
	}
	return q.builds[0]
}

// snapshot returns the queued builds in order; the slice is the caller's.
func (q *queue) snapshot() []*Build {
	return append([]*Build(nil), q.builds...)
}

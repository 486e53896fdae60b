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

// remove takes b out of the queue. The oldest build, the one dispatch
// takes, goes in O(1): the slice is cut at its front, so that a deep queue
// does not cost a copy of itself per dispatch.
func (q *queue) remove(b *Build) {
	i := q.search(b.ID)
	if i == 0 && len(q.builds) > 0 && q.builds[0] == b {
		q.builds[0] = nil
		q.builds = q.builds[1:]
		return
	}
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

// after returns the queued build with the smallest id greater than id, or
// nil: a cursor that stays valid while builds are removed or inserted.
func (q *queue) after(id uint64) *Build {
	i := sort.Search(len(q.builds), func(i int) bool { return q.builds[i].ID > id })
	if i == len(q.builds) {
		return nil
	}
	return q.builds[i]
}

package kilnv1

// This file is written by hand, beside the generated code: the one
// definition of the attempt number people read.

// AttemptNumber returns the 1-based number of the attempt with store id id
// within b: 1 for its first attempt, 2 for the retry after it, and so on.
// People read these numbers (startcompile's progress and status lines, the
// build pages); the store ids (Attempt.Id, which fence results and are
// unique across builds) stay in the JSON fields named after them. It
// relies on the metaserver appending attempts in the order they start. It
// returns 0 when b has no attempt with that id, or b is nil.
func (b *Build) AttemptNumber(id uint64) int {
	for i, a := range b.GetAttempts() {
		if a.GetId() == id {
			return i + 1
		}
	}
	return 0
}

package cas

import (
	"os"
	"sync"
	"time"
)

// Reading a blob hashes it (see [Store.Open]). Hashing a large blob again on
// every read costs as much CPU as sending it, and a read served from the page
// cache does not even look at the disk. So the store remembers, in memory,
// which blob files were hashed completely and found intact, together with
// their file identity (device, inode, size, modification and change times).
// A later Open of the same, unchanged file within [DefaultReverifyAfter]
// still checks the size but does not hash again. Any write to the file, a
// replacement, a truncation, even a chmod or a touch, changes its change time
// (ctime), which no unprivileged process can set back, so a changed file is
// always hashed again.
//
// The file system stamps times from a coarse clock, so a change made within
// the same tick as the stat that recorded the identity would leave it
// unchanged. As git does with "racily clean" index entries, a verification
// is therefore remembered only if the file's ctime was at least racyMargin
// older than the moment the hashing began; a blob written or changed just
// before is hashed again on its next read, and remembered then.
//
// What the memo cannot see is the disk silently flipping bits under an
// unchanged inode once the page cache dropped the file; such a blob is found
// at its next verification after DefaultReverifyAfter, and every client
// checks the sha256 it was announced anyway (startcompile does).

// DefaultReverifyAfter is how long a verified, unchanged blob is trusted
// before it is hashed again on read.
const DefaultReverifyAfter = time.Hour

// racyMargin is how much older than the verification a file's ctime must be
// for the verification to be remembered; it covers coarse file-system clocks
// (jiffies, or whole seconds on some file systems).
const racyMargin = 2 * time.Second

// maxMemo bounds the memo's entries (about 100 bytes each).
const maxMemo = 1 << 16

// fileID identifies one state of a blob file: any change to the file gives
// a different fileID.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds since the epoch
}

// verified is one remembered verification.
type verified struct {
	id fileID
	at time.Time // when the hashing began
}

// memo is the set of blobs verified intact, by digest.
type memo struct {
	mu            sync.Mutex
	m             map[string]verified
	reverifyAfter time.Duration
	now           func() time.Time
}

func newMemo() *memo {
	return &memo{m: make(map[string]verified), reverifyAfter: DefaultReverifyAfter, now: time.Now}
}

// trusted reports whether the file of sha, in state id, was verified intact
// recently enough not to be hashed again.
func (m *memo) trusted(sha string, id fileID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[sha]
	if !ok {
		return false
	}
	if v.id != id || m.now().Sub(v.at) >= m.reverifyAfter {
		delete(m.m, sha)
		return false
	}
	return true
}

// remember records that the file of sha, in state id both when the hashing
// began (at) and when it ended, hashed to sha. A file changed too shortly
// before at is not remembered (see racyMargin).
func (m *memo) remember(sha string, id fileID, at time.Time) {
	if at.UnixNano()-id.ctime < int64(racyMargin) || m.reverifyAfter <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.m) >= maxMemo {
		for k := range m.m { // drop an arbitrary entry: it is only hashed again
			delete(m.m, k)
			break
		}
	}
	m.m[sha] = verified{id: id, at: at}
}

// forget drops sha's entry (the blob was deleted or found corrupt).
func (m *memo) forget(sha string) {
	m.mu.Lock()
	delete(m.m, sha)
	m.mu.Unlock()
}

// SetReverifyAfter sets how long a verified, unchanged blob is trusted on
// read without hashing it again; 0 hashes on every read. The default is
// DefaultReverifyAfter. It applies to verifications made from now on.
func (s *Store) SetReverifyAfter(d time.Duration) {
	s.memo.mu.Lock()
	s.memo.reverifyAfter = d
	clear(s.memo.m)
	s.memo.mu.Unlock()
}

// identify returns f's identity, or ok false where the platform gives none
// (then nothing is remembered and every read hashes).
func identify(f *os.File) (id fileID, ok bool) {
	fi, err := f.Stat()
	if err != nil {
		return fileID{}, false
	}
	return statID(fi)
}

package cas

import (
	"encoding/binary"
	"os"
	"sync"
	"time"
)

// Every read of a blob is verified, but not always with the same hash.
// Hashing a large blob with sha256 on every read costs as much CPU as sending
// it. So when a blob's content is verified against its sha256 (by a read
// that hashed it completely, or by the Writer that stored it), the store
// remembers, in memory, the file's identity (device, inode, size,
// modification and change times) and the CRC-32C of its content. A later
// read of the same, unchanged file within [DefaultReverifyAfter] checks the
// content against that CRC-32C instead (hardware-accelerated, ~20 times
// cheaper than sha256), which catches what the disk can do to a file behind
// the file system's back: flipped bits, torn or lost blocks, truncation.
//
// What a CRC cannot catch is a deliberate change made to match it; but any
// write to the file, a replacement, a truncation, even a chmod or a touch,
// changes its change time (ctime), which no unprivileged process can set
// back, and a changed file is hashed with sha256 again.
//
// The file system stamps times from a coarse clock (jiffies, or whole
// seconds on some file systems), so a change made within the same tick as
// the stat that recorded the identity would leave it unchanged.
//
// Verified by a read. A file whose ctime is recent is being changed by
// someone, and the next step of that change may land in the tick of our
// stat. As git does with "racily clean" index entries, a read's
// verification is therefore remembered only if the file's ctime was at least
// racyMargin older than the moment the hashing began; a blob changed just
// before is hashed with sha256 again on its next read, and remembered then.
//
// Verified by the Writer (rememberWritten). The Writer hashes every byte
// with sha256 and CRC-32C as it writes them to a file of its own, under a
// fresh name in tmp/ created with O_EXCL and mode 0600, and checks the
// digest before linking the file into place; the identity it records is
// the placed file's, stat'd after the last change the Writer itself makes
// (removing the temporary name), and checked to be the very inode it wrote.
// Here the recent ctime is our own, not a sign of someone else changing the
// file: until the link nobody else had a name for it, and the content
// remembered is the content we wrote and hashed, not what another process
// might have left. What the margin would still cover is a change made
// within the one tick after that stat, by a process with write permission
// on the file (the metaserver's own user, who can as well rewrite the
// store's database), starting within that tick of the blob appearing. Such
// a change is not hidden from the read: every trusted read still checks the
// content's CRC-32C, which catches any accidental change (a partial
// rewrite, a tool writing the wrong bytes); only a change crafted to keep
// the CRC-32C and timed into that tick would pass, the same attack that
// stays possible after any read-verification's stat. So the Writer's own
// verification is remembered without the margin, and the first download
// after an upload checks the CRC-32C instead of hashing 1 GiB again.
//
// When Commit finds the blob already in place it keeps the existing file
// and refreshes its modification time; then nothing is remembered (and any
// earlier verification of that file is forgotten): the bytes the Writer
// verified are in its own temporary file, not in the existing one, which
// this commit never read; and the refresh, our own change, moves the
// file's ctime to now, so its identity could not tell whether anyone else
// changed the file meanwhile. Its next read hashes it with sha256.

// DefaultReverifyAfter is how long a blob verified with sha256, and
// unchanged since, is checked with its CRC-32C on read before sha256 again.
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

// key is the fileID as a Memo identity.
func (id fileID) key() string {
	b := make([]byte, 0, 40)
	for _, x := range []uint64{id.dev, id.ino, uint64(id.size), uint64(id.mtime), uint64(id.ctime)} {
		b = binary.BigEndian.AppendUint64(b, x)
	}
	return string(b)
}

// verified is one remembered verification.
type verified struct {
	id  string    // the stored object's identity when verified
	crc uint32    // CRC-32C (Castagnoli) of the content
	at  time.Time // when the hashing began
}

// Memo is a set of remembered verifications: for a blob, the identity of
// the stored object's state when its content was found to hash to its name
// (an opaque string that every change to the object alters), the CRC-32C of
// that content, and when. A later read of the same object, in the same
// state, within the reverification period (DefaultReverifyAfter) may check
// the content's CRC-32C instead of its sha256. The directory [Store] keeps
// one, with file identities (the rules above); package s3blob keeps one
// with the object store's metadata. The caller chooses the identity and
// answers for it: a Memo only compares it. Safe for concurrent use.
type Memo struct {
	mu            sync.Mutex
	m             map[string]verified
	reverifyAfter time.Duration
	now           func() time.Time
}

// NewMemo returns an empty Memo with the reverification period
// DefaultReverifyAfter.
func NewMemo() *Memo {
	return &Memo{m: make(map[string]verified), reverifyAfter: DefaultReverifyAfter, now: time.Now}
}

// Trusted returns the CRC-32C of blob sha's content if the object, in the
// state named by id, was verified recently enough not to be hashed with
// sha256 again. A differing identity, an expired verification or one
// stamped later than now is forgotten.
func (m *Memo) Trusted(sha, id string) (crc uint32, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[sha]
	if !ok {
		return 0, false
	}
	// An entry stamped in the future (a clock that ran ahead when it was
	// saved, then was set back) has no age to trust: hashed again.
	if age := m.now().Sub(v.at); v.id != id || age < 0 || age >= m.reverifyAfter {
		delete(m.m, sha)
		return 0, false
	}
	return v.crc, true
}

// Remember records that the object of sha, in the state named by id, had
// content hashing to sha with CRC-32C crc, verified at at (when the hashing
// began). The caller must know that the object's state was id throughout
// the hashing.
func (m *Memo) Remember(sha, id string, crc uint32, at time.Time) {
	m.put(sha, verified{id: id, crc: crc, at: at})
}

// Forget drops sha's entry (the blob was deleted or found corrupt).
func (m *Memo) Forget(sha string) {
	m.mu.Lock()
	delete(m.m, sha)
	m.mu.Unlock()
}

// SetReverifyAfter sets how long a verification is trusted; 0 remembers
// nothing (every read hashes with sha256). It forgets what was remembered.
func (m *Memo) SetReverifyAfter(d time.Duration) {
	m.mu.Lock()
	m.reverifyAfter = d
	clear(m.m)
	m.mu.Unlock()
}

// Now reads the Memo's clock (time.Now, but for tests), for the at of
// Remember.
func (m *Memo) Now() time.Time { return m.now() }

// trusted is Trusted for a blob file in state id.
func (m *Memo) trusted(sha string, id fileID) (crc uint32, ok bool) {
	return m.Trusted(sha, id.key())
}

// remember records that the file of sha, in state id both when the hashing
// began (at) and when it ended, hashed to sha and has CRC-32C crc. A file
// changed too shortly before at is not remembered (see racyMargin).
func (m *Memo) remember(sha string, id fileID, crc uint32, at time.Time) {
	if at.UnixNano()-id.ctime < int64(racyMargin) {
		return
	}
	m.Remember(sha, id.key(), crc, at)
}

// rememberWritten records that a Writer wrote the file of sha, whose
// identity after the Writer's last change to it is id, with content that
// hashed to sha and has CRC-32C crc; at is when the Writer's verification
// ended. Unlike remember it applies no racy margin (see the comment atop
// this file for why that is sound for a file the Writer wrote itself).
func (m *Memo) rememberWritten(sha string, id fileID, crc uint32, at time.Time) {
	m.Remember(sha, id.key(), crc, at)
}

// put stores v as sha's entry, unless remembering is disabled.
func (m *Memo) put(sha string, v verified) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reverifyAfter <= 0 {
		return
	}
	if _, ok := m.m[sha]; !ok && len(m.m) >= maxMemo {
		for k := range m.m { // drop an arbitrary entry: it is only hashed again
			delete(m.m, k)
			break
		}
	}
	m.m[sha] = v
}

// forget is Forget.
func (m *Memo) forget(sha string) { m.Forget(sha) }

// SetReverifyAfter sets how long a blob verified with sha256 and unchanged
// since is read with a CRC-32C check instead of sha256; 0 hashes with sha256
// on every read. The default is
// DefaultReverifyAfter. It applies to verifications made from now on.
func (s *Store) SetReverifyAfter(d time.Duration) { s.memo.SetReverifyAfter(d) }

// identify returns f's identity, or ok false where the platform gives none
// (then nothing is remembered and every read hashes).
func identify(f *os.File) (id fileID, ok bool) {
	fi, err := f.Stat()
	if err != nil {
		return fileID{}, false
	}
	return statID(fi)
}

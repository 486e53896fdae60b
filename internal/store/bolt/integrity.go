package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/kilnbuild/kiln/internal/store"
)

// DamagedError says why a store file was refused or a read of it failed:
// empty, shorter than its meta page says, without a valid meta page, or
// with pages bbolt cannot decode. It wraps store.ErrDamaged. Open and
// CheckFile return it before anything is written to the file.
type DamagedError struct {
	Path string
	// Reason is what is wrong, in words an operator can act on.
	Reason string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("store %s is damaged: %s", e.Path, e.Reason)
}

// Unwrap makes errors.Is(err, store.ErrDamaged) hold.
func (e *DamagedError) Unwrap() error { return store.ErrDamaged }

// bbolt's on-disk meta page (go.etcd.io/bbolt/internal/common, format
// version 2): a 16-byte page header, then the meta fields in the machine's
// byte order, the last one an FNV-64a checksum of the ones before it.
const (
	pageHeaderSize = 16
	metaMagic      = 0xED0CDAED
	metaVersion    = 2
	metaSize       = 64 // magic, version, page size, flags, root, sequence, freelist, pgid, txid, checksum
	noFreelist     = ^uint64(0)
)

// meta is the part of a meta page the pre-check reads.
type meta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high water mark: pages below it are in the file
	txid     uint64
}

// parseMeta decodes the meta at the start of b (just after a page header)
// and says why it is not valid.
func parseMeta(b []byte) (meta, error) {
	if len(b) < metaSize {
		return meta{}, errors.New("cut short")
	}
	le := binary.NativeEndian
	if le.Uint32(b[0:]) != metaMagic {
		return meta{}, errors.New("no bbolt magic number")
	}
	if v := le.Uint32(b[4:]); v != metaVersion {
		return meta{}, fmt.Errorf("bbolt format version %d, want %d", v, metaVersion)
	}
	h := fnv.New64a()
	h.Write(b[:56])
	if h.Sum64() != le.Uint64(b[56:]) {
		return meta{}, errors.New("checksum mismatch")
	}
	return meta{
		pageSize: le.Uint32(b[8:]),
		root:     le.Uint64(b[16:]),
		freelist: le.Uint64(b[32:]),
		pgid:     le.Uint64(b[40:]),
		txid:     le.Uint64(b[48:]),
	}, nil
}

// precheck refuses an existing file that bbolt would take for a new store
// (a zero-length file, which it would silently initialise) or could not map
// without crashing (shorter than the pages its meta page counts: bbolt's
// freelist load then dies of SIGBUS). It reads only, and takes no lock: a
// file being written by a running metaserver still passes (its size never
// drops below its committed meta page's). A missing file passes: Open
// creates it.
func precheck(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bolt: open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("bolt: stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return &DamagedError{Path: path, Reason: fmt.Sprintf("not a regular file (%s)", fi.Mode().Type())}
	}
	size := fi.Size()
	if size == 0 {
		return &DamagedError{Path: path, Reason: "the file is empty (0 bytes); a store holds at least its meta pages, so it was truncated or replaced, and opening it would start an empty farm"}
	}
	m, err := readMeta(f, size)
	if err != nil {
		return &DamagedError{Path: path, Reason: err.Error()}
	}
	ps := uint64(m.pageSize)
	if m.pgid < 2 || m.pgid > uint64(size)/ps+(1<<40) { // absurd high water mark
		return &DamagedError{Path: path, Reason: fmt.Sprintf("its meta page counts %d pages", m.pgid)}
	}
	if need := m.pgid * ps; uint64(size) < need {
		return &DamagedError{Path: path, Reason: fmt.Sprintf(
			"the file is %d bytes but its meta page (transaction %d) counts %d pages of %d bytes (%d bytes): it was truncated",
			size, m.txid, m.pgid, ps, need)}
	}
	if m.root < 2 || m.root >= m.pgid || (m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid)) {
		return &DamagedError{Path: path, Reason: fmt.Sprintf("its meta page points outside the file (root page %d, freelist page %d, %d pages)", m.root, m.freelist, m.pgid)}
	}
	return nil
}

// readMeta returns the meta page bbolt would use: of the two, the valid one
// with the higher transaction id.
func readMeta(f *os.File, size int64) (meta, error) {
	buf := make([]byte, pageHeaderSize+metaSize)
	read := func(off int64) (meta, error) {
		if off+int64(len(buf)) > size {
			return meta{}, fmt.Errorf("the file ends at %d bytes", size)
		}
		if _, err := f.ReadAt(buf, off); err != nil {
			return meta{}, err
		}
		return parseMeta(buf[pageHeaderSize:])
	}
	m0, err0 := read(0)
	ps := int64(os.Getpagesize())
	if err0 == nil {
		if m0.pageSize < 512 || m0.pageSize > 1<<16 || m0.pageSize&(m0.pageSize-1) != 0 {
			return meta{}, fmt.Errorf("meta page 0 gives a page size of %d bytes", m0.pageSize)
		}
		ps = int64(m0.pageSize)
	}
	m1, err1 := read(ps)
	switch {
	case err0 == nil && err1 == nil:
		if m1.txid > m0.txid && m1.pageSize == m0.pageSize {
			return m1, nil
		}
		return m0, nil
	case err0 == nil:
		return m0, nil
	case err1 == nil && m1.pageSize == uint32(ps):
		return m1, nil
	}
	return meta{}, fmt.Errorf("neither meta page is valid (page 0: %v; page 1: %v): not a bbolt file, or its first pages were overwritten", err0, err1)
}

// guard runs fn and turns a panic raised inside bbolt, which panics on a
// page it cannot decode ("Page expected to be: 5, but self identifies as
// …"), or a memory fault reading the mapped file, into a *DamagedError.
// A panic raised elsewhere (a caller's bug) is not bbolt's word on the file
// and goes on. bbolt's View and Update roll back their transaction on the
// way out, so the store stays usable for what it can still read.
func guard(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		if _, fault := p.(interface{ Addr() uintptr }); !fault && !raisedInBolt() {
			panic(p)
		}
		err = &DamagedError{Path: path, Reason: fmt.Sprintf("reading it failed: %v", p)}
	}()
	return fn()
}

// raisedInBolt reports whether the panic being recovered was raised by
// bbolt's own code: the first frame below the runtime's panic frames. Called
// from a deferred function, whose stack still holds the panicking frames.
func raisedInBolt() bool {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	inPanic := false
	for {
		fr, more := frames.Next()
		switch {
		case strings.HasPrefix(fr.Function, "runtime."):
			inPanic = inPanic || fr.Function == "runtime.gopanic"
		case inPanic:
			return strings.HasPrefix(fr.Function, "go.etcd.io/bbolt.") || strings.HasPrefix(fr.Function, "go.etcd.io/bbolt/")
		}
		if !more {
			return false
		}
	}
}

// noSpace makes a commit error caused by a full disk or quota wrap
// store.ErrNoSpace. bbolt rolls the transaction back before returning it.
func noSpace(err error) error {
	if err != nil && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		return fmt.Errorf("%w: %w", store.ErrNoSpace, err)
	}
	return err
}

// maxProblems bounds what a check reports: a badly damaged file yields one
// error per page.
const maxProblems = 10

// check runs bbolt's consistency check (Tx.Check: every page reachable once
// or free, page types, key order) in btx and returns a *DamagedError with up
// to maxProblems findings.
func check(path string, btx *bbolt.Tx) error {
	var problems []string
	n := 0
	for err := range btx.Check() {
		if n++; n <= maxProblems {
			// bbolt's check reports an assertion it recovered from as
			// "panic: …"; it is a finding like the others.
			problems = append(problems, strings.TrimPrefix(err.Error(), "panic: "))
		}
	}
	if n == 0 {
		return nil
	}
	if n > maxProblems {
		problems = append(problems, fmt.Sprintf("and %d more", n-maxProblems))
	}
	return &DamagedError{Path: path, Reason: "consistency check: " + strings.Join(problems, "; ")}
}

// CheckFile checks the store file at path without writing to it: the
// pre-check of Open (size against the meta page), then bbolt's consistency
// check of every page, then the schema version. It returns nil for a whole
// store, a *DamagedError (wrapping store.ErrDamaged) or *SchemaVersionError
// for one that Open would refuse, and another error when the file cannot be
// read at all: missing, or locked by a running metaserver for longer than
// timeout (bbolt's ErrTimeout). It takes a shared lock, so it may run beside
// other checks but not beside `metaserver serve`: check a backup instead.
func CheckFile(path string, timeout time.Duration) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("bolt: %w", err)
	}
	if err := precheck(path); err != nil {
		return err
	}
	bdb, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeout, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return fmt.Errorf("bolt: %s is locked by another process (a running metaserver?): %w", path, err)
		}
		return &DamagedError{Path: path, Reason: err.Error()}
	}
	defer bdb.Close()
	return guard(path, func() error {
		return bdb.View(func(btx *bbolt.Tx) error {
			if err := check(path, btx); err != nil {
				return err
			}
			_, err := storedVersion(btx, path)
			return err
		})
	})
}

// Backup writes a consistent copy of the whole store, as of one read
// transaction, to w and returns the bytes written. Other transactions go on
// meanwhile (the copy is read through the open file, not the map). The copy
// is a store file that Open and CheckFile accept.
func (db *DB) Backup(w io.Writer) (int64, error) {
	var n int64
	err := guard(db.path, func() error {
		return db.db.View(func(btx *bbolt.Tx) error {
			var err error
			n, err = btx.WriteTo(w)
			return err
		})
	})
	return n, err
}

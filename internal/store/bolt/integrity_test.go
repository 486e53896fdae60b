package bolt_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/kilnbuild/kiln/internal/store"
	"github.com/kilnbuild/kiln/internal/store/bolt"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// filledStore writes a closed store at a new path holding n projects and
// n builds, with records large enough that their buckets span many pages.
func filledStore(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kiln.db")
	db := openT(t, path, bolt.Options{NoSync: true})
	pad := strings.Repeat("x", 200)
	err := db.Update(func(tx store.Tx) error {
		for i := 1; i <= n; i++ {
			p := &store.Project{Project: &kilnv1.Project{Name: fmt.Sprintf("p%04d", i), GitUrl: "https://example.invalid/" + pad}}
			if err := tx.CreateProject(p); err != nil {
				return err
			}
			b := &store.Build{Build: &kilnv1.Build{Id: uint64(i), Project: "p", State: kilnv1.BuildState_BUILD_STATE_SUCCEEDED, Failure: pad}}
			if err := tx.PutBuild(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// bucketRootPage returns the page id of the root page of a top-level bucket.
func bucketRootPage(t *testing.T, path, name string) (pgid uint64, pageSize int) {
	t.Helper()
	rawView(t, path, func(tx *bbolt.Tx) error {
		pgid = uint64(tx.Bucket([]byte(name)).Root())
		pageSize = tx.DB().Info().PageSize
		return nil
	})
	if pgid == 0 {
		t.Fatalf("bucket %s is inline: the test needs it on its own page", name)
	}
	return pgid, pageSize
}

// damagePage overwrites the header of page pgid so that it names another
// page, as a misdirected write would.
func damagePage(t *testing.T, path string, pgid uint64, pageSize int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bogus := []byte{0x39, 0x05, 0, 0, 0, 0, 0, 0} // page id 1337, little-endian
	if _, err := f.WriteAt(bogus, int64(pgid)*int64(pageSize)); err != nil {
		t.Fatal(err)
	}
}

func TestOpen_DamagedFile_RefusedUntouched(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string // in the message
	}{
		{"a zero-length file", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, "empty"},
		{"a file truncated to half its size", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, "truncated"},
		{"a file cut inside its second meta page", func(t *testing.T, path string) {
			if err := os.Truncate(path, 4096+20); err != nil {
				t.Fatal(err)
			}
		}, "truncated"},
		{"a file whose both meta pages were overwritten", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := bytes.Repeat([]byte{0xAB}, 2*4096)
			if _, err := f.WriteAt(junk, 0); err != nil {
				t.Fatal(err)
			}
		}, "meta page"},
		{"a file with a misdirected page", func(t *testing.T, path string) {
			pgid, ps := bucketRootPage(t, path, "projects")
			damagePage(t, path, pgid, ps)
		}, "consistency check"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filledStore(t, 300)
			c.damage(t, path)
			before := fileSum(t, path)
			_, err := bolt.Open(path, bolt.Options{Timeout: time.Second})
			var d *bolt.DamagedError
			if !errors.As(err, &d) || !errors.Is(err, store.ErrDamaged) || d.Path != path {
				t.Fatalf("Open: got %v, want a DamagedError for %s", err, path)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("Open: %q does not say %q", err, c.want)
			}
			if fileSum(t, path) != before {
				t.Fatal("Open wrote to the file it refused")
			}
			if err := bolt.CheckFile(path, time.Second); !errors.Is(err, store.ErrDamaged) {
				t.Errorf("CheckFile: got %v, want ErrDamaged", err)
			}
			if fileSum(t, path) != before {
				t.Fatal("CheckFile wrote to the file")
			}
		})
	}
}

func TestOpen_MissingFile_CreatedAndChecksClean(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln.db")
	db := openT(t, path, bolt.Options{})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bolt.CheckFile(path, time.Second); err != nil {
		t.Fatalf("CheckFile of a new store: %v", err)
	}
	openT(t, path, bolt.Options{}) // and it opens again, checked
}

func TestOpen_ForeignBboltFile_Refused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	rawUpdate(t, path, func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucket([]byte("someone-elses"))
		return err
	})
	before := fileSum(t, path)
	_, err := bolt.Open(path, bolt.Options{})
	var sv *bolt.SchemaVersionError
	if !errors.As(err, &sv) || sv.Found != 0 {
		t.Fatalf("Open: got %v, want a SchemaVersionError", err)
	}
	if fileSum(t, path) != before {
		t.Fatal("Open wrote to a file that is not a Kiln store")
	}
}

func TestCheckFile(t *testing.T) {
	t.Run("a whole store checks clean", func(t *testing.T) {
		if err := bolt.CheckFile(filledStore(t, 300), time.Second); err != nil {
			t.Fatalf("CheckFile: %v", err)
		}
	})
	t.Run("a missing file is an error, not damage", func(t *testing.T) {
		err := bolt.CheckFile(filepath.Join(t.TempDir(), "nope.db"), time.Second)
		if err == nil || errors.Is(err, store.ErrDamaged) {
			t.Fatalf("CheckFile: got %v, want a not-exist error", err)
		}
	})
	t.Run("a store held by a running opener is reported locked", func(t *testing.T) {
		path := filledStore(t, 1)
		openT(t, path, bolt.Options{})
		err := bolt.CheckFile(path, 200*time.Millisecond)
		if err == nil || errors.Is(err, store.ErrDamaged) || !strings.Contains(err.Error(), "locked") {
			t.Fatalf("CheckFile: got %v, want a lock error", err)
		}
	})
}

func TestDB_View_DamagedPage_ErrorNotPanic(t *testing.T) {
	path := filledStore(t, 300)
	pgid, ps := bucketRootPage(t, path, "projects")
	damagePage(t, path, pgid, ps)
	db := openT(t, path, bolt.Options{NoCheck: true}) // only the cheap pre-check
	err := db.View(func(tx store.Tx) error {
		_, err := tx.Projects()
		return err
	})
	if !errors.Is(err, store.ErrDamaged) {
		t.Fatalf("View over a damaged page: got %v, want ErrDamaged", err)
	}
	// What is not on the damaged page still reads.
	err = db.View(func(tx store.Tx) error {
		_, err := tx.Build(1)
		return err
	})
	if err != nil {
		t.Fatalf("View of an undamaged bucket: %v", err)
	}
}

func TestDB_View_CallersPanic_NotSwallowed(t *testing.T) {
	db := openT(t, filepath.Join(t.TempDir(), "kiln.db"), bolt.Options{NoSync: true})
	defer func() {
		if p := recover(); p != "caller's bug" {
			t.Fatalf("recovered %v, want the caller's own panic", p)
		}
	}()
	_ = db.View(func(store.Tx) error { panic("caller's bug") })
	t.Fatal("View returned after its closure panicked")
}

func TestDB_BackupFile_WhileWriting(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, filepath.Join(dir, "kiln.db"), bolt.Options{NoSync: true})
	put := func(id uint64) error {
		return db.Update(func(tx store.Tx) error {
			return tx.PutBuild(&store.Build{Build: &kilnv1.Build{Id: id, State: kilnv1.BuildState_BUILD_STATE_QUEUED}})
		})
	}
	for id := uint64(1); id <= 100; id++ {
		if err := put(id); err != nil {
			t.Fatal(err)
		}
	}
	// A writer goes on during the backup.
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for id := uint64(101); id < 100000 && !stop.Load(); id++ {
			if err := put(id); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	backup := filepath.Join(dir, "backup.db")
	n, err := db.BackupFile(backup)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatalf("BackupFile: %v", err)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Size() != n || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want %d bytes, mode 0600", fi, err, n)
	}
	copyDB := openT(t, backup, bolt.Options{})
	err = copyDB.View(func(tx store.Tx) error {
		counts, err := tx.CountBuildsByState()
		if err != nil {
			return err
		}
		if q := counts[kilnv1.BuildState_BUILD_STATE_QUEUED]; q < 100 {
			t.Errorf("the backup holds %d builds, want at least the 100 committed before it", q)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.BackupFile(backup); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("a second BackupFile to the same path: got %v, want a refusal", err)
	}
	if _, err := db.BackupFile(db.Path()); err == nil {
		t.Fatal("BackupFile over the store itself was accepted")
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory and unmounts
// it when the test ends. It skips the test when it cannot (not root, or no
// permission to mount in this container).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a real full disk needs a tmpfs mount: run as root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): a real full disk needs it", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the file system is full.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for i := 0; i < 1<<16; i++ { // bounded: 4 GiB at most
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
	t.Fatal("the file system never filled up")
	return ""
}

func TestDB_Update_FullDisk_RefusedThenRecovers(t *testing.T) {
	dir := mountTmpfs(t, 4<<20)
	db := openT(t, filepath.Join(dir, "kiln.db"), bolt.Options{})
	big := strings.Repeat("y", 64<<10)
	put := func(id uint64) error {
		return db.Update(func(tx store.Tx) error {
			return tx.PutBuild(&store.Build{Build: &kilnv1.Build{Id: id, State: kilnv1.BuildState_BUILD_STATE_QUEUED, Failure: big}})
		})
	}
	if err := put(1); err != nil {
		t.Fatal(err)
	}
	filler := fillDisk(t, dir)
	var err error
	for id := uint64(2); id < 200 && err == nil; id++ { // the file's slack fills first
		err = put(id)
	}
	if !errors.Is(err, store.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Update on a full disk: got %v, want ErrNoSpace", err)
	}
	// Reads go on.
	if err := db.View(func(tx store.Tx) error { _, err := tx.Build(1); return err }); err != nil {
		t.Fatalf("View on a full disk: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := put(1000); err != nil {
		t.Fatalf("Update once space is back: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bolt.CheckFile(filepath.Join(dir, "kiln.db"), time.Second); err != nil {
		t.Fatalf("the store after a full disk: %v", err)
	}
	db2 := openT(t, filepath.Join(dir, "kiln.db"), bolt.Options{})
	if err := db2.View(func(tx store.Tx) error { _, err := tx.Build(1000); return err }); err != nil {
		t.Fatalf("the write made once space was back: %v", err)
	}
}

package bolt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// BackupFile writes a consistent copy of the store (Backup) to a new file
// at path, made durable and checked before it appears under that name: it
// is written to a temporary file beside path, fsynced, checked with
// CheckFile, then linked to path, which must not exist (a backup never
// replaces a file, least of all the store itself), and the directory is
// fsynced. It returns the copy's size. On error no file is left at path;
// a path that exists fails with an error wrapping fs.ErrExist.
func (db *DB) BackupFile(path string) (int64, error) {
	if _, err := os.Lstat(path); err == nil {
		return 0, fmt.Errorf("bolt: backup: %s: %w", path, fs.ErrExist)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return 0, fmt.Errorf("bolt: backup: %w", err)
	}
	defer os.Remove(tmp.Name())
	n, err := db.Backup(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, noSpace(fmt.Errorf("bolt: backup to %s: %w", path, err))
	}
	if err := CheckFile(tmp.Name(), time.Second); err != nil {
		return 0, fmt.Errorf("bolt: backup: the copy does not check: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return 0, fmt.Errorf("bolt: backup: %s: %w", path, fs.ErrExist)
		}
		return 0, fmt.Errorf("bolt: backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return 0, fmt.Errorf("bolt: backup: sync %s: %w", filepath.Dir(path), err)
		}
	}
	return n, nil
}

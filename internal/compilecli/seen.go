package compilecli

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/kilnbuild/kiln/internal/translog"
)

// seenLog is what this user last saw of a metaserver's transparency log:
// the log's verifier key, pinned at first sight, and the latest checkpoint
// checked. Kept under the user's config directory, one directory per
// metaserver address:
//
//	$XDG_CONFIG_HOME/kiln/logs/<address, escaped>/verifier    note verifier key
//	$XDG_CONFIG_HOME/kiln/logs/<address, escaped>/checkpoint  signed note
//
// ($HOME/.config when XDG_CONFIG_HOME is unset.) A log that later shows a
// checkpoint another key signed, or a tree that does not extend this one,
// is refused. Deleting the directory forgets the log.
type seenLog struct {
	vkey string
	tree tlog.Tree
}

// seenDir is the directory of metaserver's log.
func seenDir(env Env, metaserver string) (string, error) {
	base := env.Getenv("XDG_CONFIG_HOME")
	if base == "" {
		home := env.Getenv("HOME")
		if home == "" {
			return "", errors.New("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the log's checkpoint")
		}
		base = filepath.Join(home, ".config")
	}
	return filepath.Join(base, "kiln", "logs", url.PathEscape(metaserver)), nil
}

// loadSeen returns what was seen of metaserver's log, nil when nothing.
func loadSeen(env Env, metaserver string) (*seenLog, error) {
	dir, err := seenDir(env, metaserver)
	if err != nil {
		return nil, nil //nolint:nilerr // nothing can have been kept; saveSeen says why
	}
	vkey, err := os.ReadFile(filepath.Join(dir, "verifier"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s := &seenLog{vkey: strings.TrimSpace(string(vkey))}
	cp, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if s.tree, err = translog.OpenCheckpoint(cp, s.vkey); err != nil {
		return nil, fmt.Errorf("the checkpoint kept in %s: %w", dir, err)
	}
	return s, nil
}

// saveSeen records vkey (kept when already there) and checkpoint.
func saveSeen(env Env, metaserver, vkey string, checkpoint []byte) error {
	dir, err := seenDir(env, metaserver)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	vpath := filepath.Join(dir, "verifier")
	if _, err := os.Stat(vpath); errors.Is(err, fs.ErrNotExist) {
		if err := writeFileAtomic(vpath, []byte(vkey+"\n")); err != nil {
			return err
		}
	}
	return writeFileAtomic(filepath.Join(dir, "checkpoint"), checkpoint)
}

// writeFileAtomic replaces path with data through a temporary file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

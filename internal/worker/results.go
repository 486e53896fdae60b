package worker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// resultStore keeps unacknowledged AttemptResults as DIR/<attempt id>.pb so
// that they survive a lost connection and a restart of the build server.
type resultStore struct{ dir string }

// path names the file of one attempt's result.
func (s resultStore) path(id uint64) string {
	return filepath.Join(s.dir, strconv.FormatUint(id, 10)+".pb")
}

// save writes r before it is sent: into tmp when that names an existing
// file (the build directory's prepared result file, see buildDirs), else into
// a new temporary file, which is then renamed to the result's name.
//
// The file is not fsynced. It exists so that a result survives a lost
// connection and a crash or restart of the buildserver process, and the
// page cache outlives the process. What it cannot survive is a crash of the
// machine, and that costs nothing: the machine's crash also ends the session
// and with it the lease, so the metaserver gives the attempt to someone else
// and fences this attempt id off; a result file from before the crash would
// be refused anyway. A file the crash leaves empty or torn is discarded by
// load (an empty message has attempt id 0). An fsync here cost 0.5-2 ms of
// every build on the project's machine, in series before the result is sent.
func (s resultStore) save(r *kilnv1.AttemptResult, tmp string) error {
	data, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding result of attempt %d: %w", r.GetAttemptId(), err)
	}
	dst := s.path(r.GetAttemptId())
	if tmp != "" {
		if err := writeExisting(tmp, data); err == nil {
			if err := os.Rename(tmp, dst); err == nil {
				return nil
			}
		}
	}
	f, err := os.CreateTemp(s.dir, "result-*.tmp")
	if err != nil {
		return fmt.Errorf("saving result of attempt %d: %w", r.GetAttemptId(), err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), dst)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("saving result of attempt %d: %w", r.GetAttemptId(), err)
	}
	return nil
}

// writeExisting replaces the content of the existing file path with data:
// written over the old content, then cut to its length. Cutting a file to
// zero and rewriting it costs several times more on ext4, which writes such
// a file back when it is closed (auto_da_alloc).
func writeExisting(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Truncate(int64(len(data)))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// remove deletes a result once acknowledged; a missing file is not an
// error. When keep is not "" (the result file's place in the attempt's
// build directory, which must be on the same file system), the file is
// moved there instead, so that recycling the build directory finds its
// result file and need not create one: creating and deleting an inode is
// the dear part of a build directory on the project's disk (see
// buildDirs.recycle). Either way the result is gone from the store when
// remove returns, as a restart would see it.
func (s resultStore) remove(id uint64, keep string) error {
	if keep != "" && os.Rename(s.path(id), keep) == nil {
		return nil
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing result of attempt %d: %w", id, err)
	}
	return nil
}

// load reads every saved result. Leftover temporary files are removed;
// unreadable results are returned as errors (joined) and skipped.
func (s resultStore) load() ([]*kilnv1.AttemptResult, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading saved results: %w", err)
	}
	var out []*kilnv1.AttemptResult
	var errs []error
	for _, e := range entries {
		name := e.Name()
		full := filepath.Join(s.dir, name)
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(full)
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(name, ".pb"), 10, 64)
		if err != nil || !strings.HasSuffix(name, ".pb") {
			continue
		}
		data, err := os.ReadFile(full)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading saved result %s: %w", name, err))
			continue
		}
		r := &kilnv1.AttemptResult{}
		if err := proto.Unmarshal(data, r); err != nil || r.GetAttemptId() != id {
			errs = append(errs, fmt.Errorf("saved result %s is corrupt (%v); discarding it", name, err))
			os.Remove(full)
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

package gitmirror

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// MaxFileSize is the largest file [Mirror.ReadFile] returns.
const MaxFileSize = 1 << 20

// ReadFile returns the content of the file at path in the tree of commit (a
// full commit id), without fetching. path is slash-separated and relative to
// the repository root, as "kiln.yaml" or "dir/file"; a symbolic link yields
// its target, not the file it points to. A path absent at that commit (or
// naming a directory) fails with an error wrapping [os.ErrNotExist]; a commit
// not in the mirror with [ErrUnknownRevision]; a file larger than
// [MaxFileSize] with [ErrFileTooLarge]. One git process.
func (m *Mirror) ReadFile(ctx context.Context, commit, path string) ([]byte, error) {
	if err := checkCommitID("commit", commit); err != nil {
		return nil, err
	}
	if !fs.ValidPath(path) || path == "." || strings.ContainsAny(path, "\n\r\x00") {
		return nil, fmt.Errorf("gitmirror: read %q: %w", path, fs.ErrInvalid)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args := []string{"cat-file", "--batch"}
	cmd, stderr := command(ctx, m.dir, args...)
	// First the commit itself (to tell a missing commit from a missing
	// file), then the file; both answers come back in order.
	cmd.Stdin = strings.NewReader(commit + "^{commit}\n" + commit + ":" + path + "\n")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("gitmirror: cat-file: %w", err)
	}
	data, rerr := readBatch(bufio.NewReader(stdout), commit, path)
	if rerr != nil && isSentinel(rerr) {
		cancel() // the answer is known; do not wait for git to drain
		_ = cmd.Wait()
		return nil, rerr
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("gitmirror: read %s at %s: %w", path, commit, gitErr(ctx, args, err, stderr))
	}
	if rerr != nil {
		return nil, rerr
	}
	return data, nil
}

// isSentinel reports the errors readBatch classified itself.
func isSentinel(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrUnknownRevision) || errors.Is(err, ErrFileTooLarge)
}

// readBatch reads cat-file --batch's answers to the commit and file queries.
func readBatch(r *bufio.Reader, commit, path string) ([]byte, error) {
	typ, size, err := readBatchHeader(r)
	if err != nil {
		return nil, fmt.Errorf("gitmirror: read %s at %s: %w", path, commit, err)
	}
	if typ != "commit" {
		return nil, fmt.Errorf("%w: commit %s is not in the mirror", ErrUnknownRevision, commit)
	}
	if _, err := r.Discard(int(size) + 1); err != nil {
		return nil, fmt.Errorf("gitmirror: read %s at %s: %w", path, commit, err)
	}
	typ, size, err = readBatchHeader(r)
	if err != nil {
		return nil, fmt.Errorf("gitmirror: read %s at %s: %w", path, commit, err)
	}
	switch {
	case typ == "missing":
		return nil, fmt.Errorf("gitmirror: %s at %s: %w", path, commit, os.ErrNotExist)
	case typ != "blob":
		return nil, fmt.Errorf("gitmirror: %s at %s is a %s, not a file: %w", path, commit, typ, os.ErrNotExist)
	case size > MaxFileSize:
		return nil, fmt.Errorf("%w: %s at %s has %d bytes, more than %d", ErrFileTooLarge, path, commit, size, MaxFileSize)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("gitmirror: read %s at %s: %w", path, commit, err)
	}
	return data, nil
}

// readBatchHeader parses "<oid> <type> <size>" or "<name> missing".
func readBatchHeader(r *bufio.Reader) (typ string, size int64, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", 0, fmt.Errorf("cat-file: %w", err)
	}
	line = strings.TrimSuffix(line, "\n")
	if strings.HasSuffix(line, " missing") || strings.HasSuffix(line, " ambiguous") {
		return "missing", 0, nil
	}
	f := strings.Fields(line)
	if len(f) != 3 {
		return "", 0, fmt.Errorf("cat-file: unexpected header %q", line)
	}
	size, err = strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return "", 0, fmt.Errorf("cat-file: unexpected header %q", line)
	}
	return f[1], size, nil
}

// maxRootNames bounds how many top-level names [Mirror.RootNames] returns;
// build-system detection only needs the few it looks for.
const maxRootNames = 10000

// RootNames returns the names of the entries (files, directories, links) at
// the top of the tree of commit (a full commit id), without fetching, in
// git's order. A commit not in the mirror fails with an error wrapping
// [ErrUnknownRevision]. At most 10,000 names; one git process.
func (m *Mirror) RootNames(ctx context.Context, commit string) ([]string, error) {
	if err := checkCommitID("commit", commit); err != nil {
		return nil, err
	}
	if !m.HasCommit(ctx, commit) {
		return nil, fmt.Errorf("gitmirror: list %s: %w", commit, ErrUnknownRevision)
	}
	out, err := run(ctx, m.dir, nil, "ls-tree", "-z", "--name-only", commit+"^{tree}")
	if err != nil {
		return nil, fmt.Errorf("gitmirror: list %s: %w", commit, err)
	}
	var names []string
	for _, n := range strings.Split(string(out), "\x00") {
		if n != "" && len(names) < maxRootNames {
			names = append(names, n)
		}
	}
	return names, nil
}

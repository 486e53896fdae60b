package gitmirror

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// MaxRangeLength bounds how many commits [Mirror.FirstParentRange] returns.
const MaxRangeLength = 10000

// Resolve returns the full commit id a revision names: a branch, a tag
// (peeled to its commit), an abbreviated or full commit id, or any other
// single-revision syntax git accepts; "" means the head of the default
// branch. A full commit id already present resolves without fetching (no git
// process at all once this Mirror has seen it); an absent one is looked up
// after a fetch that started after the call; anything else is looked up
// after a fetch, skipped when the last successful fetch started less than
// FetchFreshness ago (so a branch may resolve to a head that old).
//
// Within that window a ref name ("HEAD", a branch, a tag, "tags/v1",
// "refs/heads/main", a remote-tracking name) costs no git process: the
// mirror's refs are listed once after each successful fetch (by any method
// of this Mirror) and names are answered from that list, in git's own order
// (gitrevisions(7): the name itself, then refs/, refs/tags/, refs/heads/,
// refs/remotes/, so a tag wins over a branch of the same name). Other
// revisions (abbreviated ids, expressions such as "main~1", tags of tags)
// run one rev-parse. Refs another process writes into the same directory
// are therefore seen only after this Mirror's next fetch.
//
// Malformed revisions fail with [ErrBadRevision] before any I/O; a revision
// naming no commit fails with [ErrUnknownRevision]; a failed fetch wraps
// [ErrUnreachable].
func (m *Mirror) Resolve(ctx context.Context, rev string) (string, error) {
	if err := checkRevision(rev); err != nil {
		return "", err
	}
	if rev == "" {
		rev = "HEAD"
	}
	notBefore := time.Now().Add(-m.freshness)
	if id := strings.ToLower(rev); isCommitID(id) {
		if m.isKnown(id) {
			return id, nil
		}
		if m.isRepo() {
			if got, ok, err := m.revParse(ctx, id); err != nil {
				return "", err
			} else if ok {
				return got, nil
			}
		}
		// An absent full id needs refs newer than the call: it was
		// probably pushed just now.
		rev, notBefore = id, time.Now()
	}
	if err := m.fetch(ctx, notBefore, m.freshness > 0); err != nil {
		return "", err
	}
	// Within the freshness window a ref name is answered from the refs
	// listed after the last fetch. Without a window every Resolve fetches,
	// so a listing per call would cost more than the one rev-parse.
	if m.freshness > 0 && !isCommitID(rev) && isPlainRefName(rev) {
		if t := m.currentRefs(ctx); t != nil {
			if id, ok := t.lookup(rev); ok {
				m.remember(id)
				return id, nil
			}
		}
	}
	got, ok, err := m.revParse(ctx, rev)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%w: %q in %s", ErrUnknownRevision, rev, m.url)
	}
	return got, nil
}

// revParse resolves rev to a commit locally. ok is false when rev names no
// commit; err is for failures of git itself.
func (m *Mirror) revParse(ctx context.Context, rev string) (id string, ok bool, err error) {
	args := []string{"rev-parse", "--verify", "--quiet", "--end-of-options", rev + "^{commit}"}
	m.localProcs.Add(1)
	out, err := run(ctx, m.dir, nil, args...)
	if err != nil {
		if exitCode(err) == 1 && ctx.Err() == nil {
			return "", false, nil
		}
		return "", false, fmt.Errorf("gitmirror: resolve %q: %w", rev, err)
	}
	id = strings.TrimSpace(string(out))
	if !isCommitID(id) {
		return "", false, fmt.Errorf("gitmirror: resolve %q: unexpected output %q", rev, out)
	}
	m.remember(id)
	return id, true, nil
}

// isKnown reports whether commit was seen present in this mirror.
func (m *Mirror) isKnown(commit string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.known[commit]
	return ok
}

// remember records commit as present. Commits are never removed from a
// mirror by a fetch; only a gc of unreachable objects could, long after a
// force-push, and then the build fails cleanly when reading the commit.
func (m *Mirror) remember(commit string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.known) >= maxKnown {
		clear(m.known)
	}
	m.known[commit] = struct{}{}
}

// HasCommit reports whether the full commit id is present in the mirror,
// without fetching. It is false for anything that is not a full lowercase
// commit id, and when the mirror does not exist or git fails.
func (m *Mirror) HasCommit(ctx context.Context, commit string) bool {
	if !isCommitID(commit) {
		return false
	}
	if m.isKnown(commit) {
		return true
	}
	if !m.isRepo() {
		return false
	}
	_, ok, err := m.revParse(ctx, commit)
	return ok && err == nil
}

// EnsureCommit makes sure the full commit id is present, fetching (or
// cloning) when it is not: the fetch used is one that started after the
// call, so a commit pushed before the call is found. A commit still missing
// afterwards fails with [ErrUnknownRevision]; a commit argument that is not a
// full id fails with [ErrBadRevision].
func (m *Mirror) EnsureCommit(ctx context.Context, commit string) error {
	if err := checkCommitID("commit", commit); err != nil {
		return err
	}
	if m.HasCommit(ctx, commit) {
		return nil
	}
	if err := m.fetch(ctx, time.Now(), true); err != nil {
		return err
	}
	_, ok, err := m.revParse(ctx, commit)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: commit %s is not in %s", ErrUnknownRevision, commit, m.url)
	}
	return nil
}

// FirstParentRange returns the commits on the first-parent history from
// from to to, both included, newest first: to, its first parent, and so on
// down to from. from == to gives one commit. Both must be full commit ids
// (resolved with [Mirror.Resolve]); from must be a first-parent ancestor of
// to (a commit that only arrived through a merged branch is not), else the
// error wraps [ErrBadRevision]. At most [MaxRangeLength] commits are
// returned; a longer range is an error wrapping [ErrBadRevision]. One git
// process, no fetch.
func (m *Mirror) FirstParentRange(ctx context.Context, from, to string) ([]string, error) {
	if err := checkCommitID("range start", from); err != nil {
		return nil, err
	}
	if err := checkCommitID("range end", to); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops rev-list once from is found
	args := []string{"rev-list", "--first-parent", "--max-count=" + strconv.Itoa(MaxRangeLength+1), "--end-of-options", to}
	cmd, stderr := command(ctx, m.dir, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("gitmirror: rev-list: %w", err)
	}
	var commits []string
	found := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		id := sc.Text()
		commits = append(commits, id)
		if id == from {
			found = true
			break
		}
	}
	if found {
		cancel()
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		if len(commits) > MaxRangeLength {
			return nil, fmt.Errorf("%w: range %s..%s has more than %d commits", ErrBadRevision, from, to, MaxRangeLength)
		}
		return commits, nil
	}
	if err := cmd.Wait(); err != nil {
		if exitCode(err) == 128 && ctx.Err() == nil {
			return nil, fmt.Errorf("%w: commit %s is not in %s: %w", ErrUnknownRevision, to, m.url, gitErr(ctx, args, err, stderr))
		}
		return nil, fmt.Errorf("gitmirror: first-parent range: %w", gitErr(ctx, args, err, stderr))
	}
	if len(commits) > MaxRangeLength {
		return nil, fmt.Errorf("%w: %s is not within the %d newest first-parent commits of %s", ErrBadRevision, from, MaxRangeLength, to)
	}
	return nil, fmt.Errorf("%w: %s is not a first-parent ancestor of %s (a range A..B needs A on the first-parent history of B)", ErrBadRevision, from, to)
}
